//! Property test over random rails, documents, decisions and rerun starts (one server for all
//! cases; `PROPTEST_CASES` sets how many, 32 by default).

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

struct Fixture {
    api: Api,
    policies: [String; 2],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let api = start();
        let mk = |name: &str, fields: &[&str], rules: &[(&str, &str, Value)]| {
            let p = api.post("/v1/data-policies", &json!({"name": name}));
            let id = p.body["id"].as_str().unwrap().to_string();
            for f in fields {
                api.post(
                    &format!("/v1/data-policies/{id}/fields"),
                    &json!({"field_key": f, "type": "number"}),
                );
            }
            for (f, t, c) in rules {
                assert_eq!(
                    api.post(
                        &format!("/v1/data-policies/{id}/rules"),
                        &json!({"field_key": f, "rule_type": t, "config": c})
                    )
                    .status,
                    201
                );
            }
            id
        };
        let a = mk(
            "A",
            &["net", "tax", "total"],
            &[("total", "compute", json!({"expr": "net + tax"}))],
        );
        let b = mk(
            "B",
            &["tax"],
            &[("tax", "compute", json!({"expr": "round(tax * 1.5, 1)"}))],
        );
        Fixture {
            api,
            policies: [a, b],
        }
    })
}

#[derive(Debug, Clone)]
enum Stage {
    ResolveA,
    ResolveB,
    GateX,
    GateY,
}

#[derive(Debug, Clone)]
struct Case {
    registry: bool,
    stages: Vec<Stage>,
    docs: Vec<(u32, u32)>,
    decisions: Vec<(usize, u8, u32)>,
    from: u8,
    y_blocking: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let stage = prop_oneof![
        Just(Stage::ResolveA),
        Just(Stage::ResolveB),
        Just(Stage::GateX),
        Just(Stage::GateY)
    ];
    (
        any::<bool>(),
        proptest::collection::vec(stage, 0..4),
        proptest::collection::vec((0u32..300, 0u32..60), 1..4),
        proptest::collection::vec((0usize..4, 0u8..3, 0u32..200), 0..4),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(
            |(registry, mut stages, docs, decisions, from, y_blocking)| {
                // A policy or gate appears at most once in a rail.
                let mut seen = Vec::new();
                stages.retain(|s| {
                    let k = format!("{s:?}");
                    let fresh = !seen.contains(&k);
                    seen.push(k);
                    fresh
                });
                Case {
                    registry,
                    stages,
                    docs,
                    decisions,
                    from,
                    y_blocking,
                }
            },
        )
}

fn wait(api: &Api, pid: &str) {
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        let done =
            p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap();
        (p["status"] != "active" && done == p["totalDocuments"].as_i64().unwrap()).then_some(())
    });
}

struct Snapshot {
    fields: Vec<Value>,
    cells: Vec<Value>,
    decisions: Value,
}

fn snapshot(api: &Api, pid: &str) -> Snapshot {
    let rows = api
        .get(&format!("/v1/pipelines/{pid}/results?limit=200"))
        .body["data"]
        .as_array()
        .unwrap()
        .clone();
    let cells = rows
        .iter()
        .map(|r| {
            api.get(&format!(
                "/v1/pipelines/{pid}/documents/{}/cells",
                r["pipeline_document_id"].as_str().unwrap()
            ))
            .body
        })
        .collect();
    let decisions = api
        .get(&format!(
            "/v1/field-reviews/decisions?pipeline_id={pid}&limit=100"
        ))
        .body["entries"]
        .clone();
    Snapshot {
        fields: rows.iter().map(|r| r["fields"].clone()).collect(),
        cells,
        decisions,
    }
}

fn early_versions(cells: &Value, from: i64) -> Vec<Value> {
    cells["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["phase_index"].as_i64().unwrap() < from)
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn blocked_before(
    cells: &Value,
    from: i64,
    verdict_phase: &dyn Fn(&str) -> Option<i64>,
) -> Vec<String> {
    cells["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["status"] == "blocked"
                && verdict_phase(f["field_key"].as_str().unwrap()).is_some_and(|p| p < from)
        })
        .map(|f| f["field_key"].as_str().unwrap().to_string())
        .collect()
}

fn check(c: Case) -> Result<(), TestCaseError> {
    let fx = fixture();
    let api = &fx.api;
    let s = api.create_schema(&json!({"name": "prop", "fields": [{"field_name": "net", "data_type": "number"}, {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"}]}));
    let sid = s["id"].as_str().unwrap().to_string();
    let gate = |name: &str, severity: &str, rules: Value| {
        let r = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": name, "severity": severity, "mechanisms": [{"type": "business_rules", "rules": rules}]}));
        r.body["id"].as_str().unwrap().to_string()
    };
    let x = gate(
        "X",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 150}]),
    );
    let y = gate(
        "Y",
        if c.y_blocking { "blocking" } else { "warning" },
        json!([{"field": "total", "check": "range", "max": 250}, {"field": "tax", "check": "range", "max": 40}]),
    );
    let mut rail = Vec::new();
    if c.registry {
        rail.push(json!({"type": "registry"}));
    }
    rail.push(json!({"type": "schema"}));
    for st in &c.stages {
        rail.push(match st {
            Stage::ResolveA => json!({"type": "resolve", "json": {"policy_ids": [fx.policies[0]]}}),
            Stage::ResolveB => json!({"type": "resolve", "json": {"policy_ids": [fx.policies[1]]}}),
            Stage::GateX => json!({"type": "valid", "json": {"stage_ids": [x]}}),
            Stage::GateY => json!({"type": "valid", "json": {"stage_ids": [y]}}),
        });
    }
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": rail}));
    prop_assert_eq!(r.status, 200, "{}", r.text);
    let phases: Vec<Value> = r.body["phases"].as_array().unwrap().clone();
    let docs: Vec<Value> = c.docs.iter().enumerate().map(|(i, (n, t))| json!({"filename": format!("{sid}-{i}.txt"), "content": format!("Net: {n}\nTax: {t}\nTotal: {}", n + t)})).collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    prop_assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait(api, &pid);
    // Random decisions on whatever is held.
    let items = api
        .get(&format!("/v1/field-reviews?pipeline_id={pid}&limit=100"))
        .body["data"]
        .as_array()
        .unwrap()
        .clone();
    for (which, action, value) in &c.decisions {
        if items.is_empty() {
            break;
        }
        let it = &items[which % items.len()];
        let body = match action {
            0 => json!({"action": "approve"}),
            1 => json!({"action": "override"}),
            _ => json!({"action": "correct", "corrected_value": value}),
        };
        api.post(
            &format!(
                "/v1/field-reviews/{}/{}/resolve",
                it["pipeline_document_id"].as_str().unwrap(),
                it["field_key"].as_str().unwrap()
            ),
            &body,
        );
        wait(api, &pid);
    }
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = phases.iter().map(|p| p["type"].as_str().unwrap()).collect();
        k.dedup();
        k
    };
    let from_type = kinds[c.from as usize % kinds.len()];
    let from = phases.iter().find(|p| p["type"] == from_type).unwrap()["index"]
        .as_i64()
        .unwrap();
    let before = snapshot(api, &pid);
    let gate_phase = |f: &str| -> Option<i64> {
        // Which gate holds a field: X judges net, Y judges total and tax.
        let stage = if f == "net" { &x } else { &y };
        phases
            .iter()
            .find(|p| p["type"] == "validation" && p["name"] == if stage == &x { "X" } else { "Y" })
            .and_then(|p| p["index"].as_i64())
    };
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": from_type}),
    );
    prop_assert_eq!(r.status, 200, "{}", r.text);
    prop_assert_eq!(r.body["fromPhaseIndex"].as_i64().unwrap(), from);
    wait(api, &pid);
    let after = snapshot(api, &pid);
    for (b, a) in before.cells.iter().zip(&after.cells) {
        prop_assert_eq!(
            early_versions(b, from),
            early_versions(a, from),
            "versions before the start never change"
        );
        let kept = blocked_before(b, from, &gate_phase);
        for f in kept {
            let st = a["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["field_key"] == f.as_str())
                .unwrap()["status"]
                .clone();
            prop_assert_eq!(
                st,
                json!("blocked"),
                "kept-blocked field {} stays blocked",
                f
            );
        }
    }
    let (db, da) = (
        before.decisions.as_array().unwrap(),
        after.decisions.as_array().unwrap(),
    );
    prop_assert!(
        da.len() >= db.len() && da[da.len() - db.len()..] == db[..],
        "the decision log only grows"
    );
    prop_assert_eq!(
        before.fields,
        after.fields,
        "an unchanged spec reproduces the canonical values"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rerun_invariants_hold_for_random_rails_documents_and_decisions(c in case()) {
        check(c)?;
    }
}
