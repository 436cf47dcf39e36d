//! The rules extractor on real invoices other people made (`.ci/fetch-invoices` gathers them
//! from PyPI packages' test data, with their known values): the default extractor, no data
//! policy, no per-issuer template. The `heldout` set's layouts were never looked at while the
//! extractor was tuned; at least 70 % of its fields must be right.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;

fn invoices() -> Option<PathBuf> {
    match std::env::var_os("QUIRE_INVOICES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("truth.json").is_file(),
                "QUIRE_INVOICES names no invoice set: {}",
                dir.display()
            );
            Some(dir)
        }
        None => {
            assert!(
                std::env::var_os("QUIRE_REQUIRE_OPTIONAL").is_none(),
                "the real-invoice set is required here: run .ci/fetch-invoices DIR and set QUIRE_INVOICES=DIR"
            );
            eprintln!(
                "notice: QUIRE_INVOICES is not set (see .ci/fetch-invoices); this test is skipped"
            );
            None
        }
    }
}

/// Whether an extracted value is the known one: text exactly, dates as `YYYY-MM-DD`, amounts
/// to the cent (the grand total, or the amount due where the invoice says it differs).
fn right(field: &str, got: &Value, truth: &Value) -> bool {
    match field {
        "total" => got.as_f64().is_some_and(|g| {
            [&truth["total"], &truth["amount_due"]]
                .iter()
                .filter_map(|t| t.as_f64())
                .any(|t| (g - t).abs() < 0.005)
        }),
        f => got.as_str().map(str::trim) == truth[f].as_str(),
    }
}

#[test]
fn the_rules_extractor_gets_most_fields_of_real_invoices_right() {
    let Some(dir) = invoices() else { return };
    let truth: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
    let api = start();
    let mut ids = Vec::new();
    for t in &truth {
        let file = t["file"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let r = upload_bytes(&api, file, &bytes, None);
        assert_eq!(r.status, 201, "{file}: {}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let (_, rows) = run_rules(&api, invoice_fields(), &ids);
    let fields = ["invoice_number", "invoice_date", "total", "currency"];
    let mut score: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in &truth {
        let file = t["file"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|r| r["filename"] == file)
            .unwrap_or_else(|| panic!("{file} in the results"));
        let set = t["set"].as_str().unwrap().to_string();
        let mut marks = Vec::new();
        for f in fields {
            let got = &row["fields"][f];
            let ok = right(f, got, t);
            for key in [set.clone(), format!("{set} {f}")] {
                let s = score.entry(key).or_default();
                s.0 += usize::from(ok);
                s.1 += 1;
            }
            marks.push(if ok {
                format!("{f} ok")
            } else {
                format!("{f} {got} (want {})", t[f])
            });
        }
        // The held-out set is judged, not studied: only the tuning set's misses are shown.
        if set == "tune" {
            eprintln!("{set:8} {file:45} {}", marks.join(" | "));
        }
    }
    for (set, (ok, all)) in &score {
        eprintln!(
            "{set}: {ok}/{all} fields right ({:.0} %)",
            100.0 * *ok as f64 / *all as f64
        );
    }
    let (ok, all) = score["heldout"];
    assert!(
        ok * 10 >= all * 7,
        "held-out accuracy {ok}/{all} is below the 70 % target"
    );
}
