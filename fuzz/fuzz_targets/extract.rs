#![no_main]
//! The `rules` extractor over arbitrary bytes, read as each of the four text formats it knows.
//! Whatever arrives, it answers `Ok` or a message, and what it extracts is well formed: a
//! table field's value is a list of objects of its sub-fields, one row each.

use libfuzzer_sys::fuzz_target;
use quire::domain::extract::{extract_with, FieldSpec, Matcher};
use std::sync::OnceLock;

const MIMES: [&str; 4] = [
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

fn spec(name: &str, display: &str, data_type: &str, synonyms: &[&str]) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        display_name: display.into(),
        data_type: data_type.into(),
        synonyms: synonyms.iter().map(|s| s.to_string()).collect(),
        items: Vec::new(),
    }
}

fn fields() -> &'static (Vec<FieldSpec>, Matcher) {
    static FIELDS: OnceLock<(Vec<FieldSpec>, Matcher)> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let fields = vec![
            spec(
                "invoice_number",
                "Invoice Number",
                "string",
                &["Invoice No", "Rechnungsnummer"],
            ),
            spec("total", "Total", "number", &["Amount due", "Summe"]),
            spec("quantity", "Quantity", "integer", &["Qty"]),
            spec("paid", "Paid", "boolean", &[]),
            spec("issue_date", "Issue Date", "date", &["Datum"]),
            spec("notes", "Notes", "string", &["Größe", ""]),
            FieldSpec {
                items: vec![
                    spec("description", "Description", "string", &["Item"]),
                    spec("amount", "Amount", "number", &["Betrag"]),
                ],
                ..spec("lines", "Lines", "array", &["Positions"])
            },
        ];
        let matcher = Matcher::new(&fields);
        (fields, matcher)
    })
}

fuzz_target!(|data: &[u8]| {
    let (fields, matcher) = fields();
    let utf8 = std::str::from_utf8(data).is_ok();
    // Without a language, and for a document whose language puts the day first.
    for (mime, language) in MIMES.iter().flat_map(|m| [(m, None), (m, Some("de"))]) {
        let Ok(out) = extract_with(data, mime, fields, matcher, language) else {
            continue;
        };
        assert!(utf8, "{mime}: bytes that are not UTF-8 were read");
        for (name, got) in &out {
            assert!(
                fields.iter().any(|f| &f.name == name),
                "{mime}: '{name}' is not a field"
            );
            // 0.95 for a name down to 0.5 for a fuzzy label over its value's line.
            assert!(
                (0.49..=0.95).contains(&got.confidence),
                "{mime}: confidence {}",
                got.confidence
            );
            assert!(!got.value.is_null(), "{mime}: '{name}' extracted as null");
            assert!(
                got.source_text.chars().count() <= 500,
                "{mime}: long source"
            );
            if name == "lines" {
                let rows = got.value.as_array().expect("a table is a list");
                assert!(
                    !rows.is_empty() && rows.len() <= 10_000,
                    "{mime}: {} rows",
                    rows.len()
                );
                assert_eq!(rows.len(), got.rows.len(), "{mime}: one row each");
                for r in rows {
                    let keys: Vec<&String> = r
                        .as_object()
                        .expect("an element is an object")
                        .keys()
                        .collect();
                    assert_eq!(keys, ["description", "amount"], "{mime}: {r}");
                }
                assert!(
                    got.rows.iter().all(|r| r.chars().count() <= 500),
                    "{mime}: long row"
                );
            } else {
                assert!(got.rows.is_empty(), "{mime}: rows for a scalar");
            }
        }
    }
});
