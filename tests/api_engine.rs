//! The engine over HTTP: rails, policies, gates, pipelines, progress and results.

mod common;

use common::*;
use quire::fixtures;
use serde_json::{json, Value};

/// Schema + fixture policy + rail (registry, schema, resolve, valid with the given gates).
pub fn fixture_spec(api: &Api, gates: &[Value]) -> (String, String) {
    let schema = api.create_schema(&json!({"name": "Invoices", "fields": fixtures::schema_fields()}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Normalize"}));
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    for (field, t) in [("issue_date", "date"), ("currency", "string"), ("net", "number"), ("tax", "number"), ("total", "number")] {
        let r = api.post(&format!("/v1/data-policies/{pid}/fields"), &json!({"field_key": field, "type": t}));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for (field, rule, config) in fixtures::policy_rules() {
        let r = api.post(&format!("/v1/data-policies/{pid}/rules"), &json!({"field_key": field, "rule_type": rule, "config": config}));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut gate_ids = Vec::new();
    for g in gates {
        let r = api.post(&format!("/v1/schemas/{sid}/validation-stages"), g);
        assert_eq!(r.status, 201, "{}", r.text);
        gate_ids.push(r.body["id"].clone());
    }
    let mut rail = vec![json!({"type": "registry", "name": "Field Registry"}), json!({"type": "schema", "name": "Extraction"}), json!({"type": "resolve", "name": "Normalize", "json": {"policy_ids": [pid]}})];
    if !gate_ids.is_empty() {
        rail.push(json!({"type": "valid", "name": "Checks", "json": {"stage_ids": gate_ids}}));
    }
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": rail}));
    assert_eq!(r.status, 200, "{}", r.text);
    (sid, pid)
}

pub fn inline_docs(seed: u64, n: u64) -> (Vec<Value>, Vec<Value>) {
    let mut docs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..n {
        let f = fixtures::invoice(seed, i);
        docs.push(json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type, "metadata": f.metadata}));
        expected.push(f.expected);
    }
    (docs, expected)
}

/// Polls progress until terminal, checking that the counts add up at every poll.
pub fn wait_terminal(api: &Api, pid: &str, secs: u64) -> Value {
    wait_for(secs, || {
        let r = api.get(&format!("/v1/pipelines/{pid}/progress"));
        assert_eq!(r.status, 200, "{}", r.text);
        let p = r.body;
        let total = p["totalDocuments"].as_i64().unwrap();
        for ph in p["phases"].as_array().unwrap() {
            let errored_before: i64 = 0;
            let sum = ph["completed"].as_i64().unwrap() + ph["running"].as_i64().unwrap() + ph["pending"].as_i64().unwrap() + ph["errors"].as_i64().unwrap();
            assert!(sum + errored_before <= total && sum >= 0, "phase counts exceed the total: {p}");
            assert!(ph["pending"].as_i64().unwrap() >= 0, "{p}");
        }
        let done = p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap();
        assert!(done <= total);
        (done == total && p["status"] != "active").then_some(p)
    })
}

pub fn all_results(api: &Api, pid: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/pipelines/{pid}/results?limit=200&cursor={c}"),
            None => format!("/v1/pipelines/{pid}/results?limit=200"),
        };
        let r = api.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[test]
fn a_run_of_generated_documents_ends_with_every_value_right() {
    let api = start();
    let (sid, _) = fixture_spec(&api, &[]);
    let (docs, expected) = inline_docs(42, 48);
    let r = api.post("/v1/pipelines", &json!({"schema_id": sid, "documents": docs, "name": "batch"}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["phase_count"], 3);
    assert_eq!(r.body["document_count"], 48);
    assert_eq!(r.body["enqueued_documents"], 48);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let progress = wait_terminal(&api, &pid, 60);
    assert_eq!(progress["completedDocuments"], 48, "{progress}");
    for ph in progress["phases"].as_array().unwrap() {
        assert_eq!(ph["completed"], 48, "{progress}");
    }
    let rows = all_results(&api, &pid);
    assert_eq!(rows.len(), 48);
    let (mut right, mut cells) = (0, 0);
    for (row, want) in rows.iter().zip(&expected) {
        assert_eq!(row["status"], "complete", "{row}");
        for (k, v) in want.as_object().unwrap() {
            cells += 1;
            if &row["fields"][k] == v {
                right += 1;
            } else {
                eprintln!("{} {k}: got {} want {v}", row["filename"], row["fields"][k]);
            }
        }
    }
    println!("rules extractor accuracy on generated documents: {right}/{cells} = {:.1}%", 100.0 * right as f64 / cells as f64);
    assert_eq!(right, cells);
    let p = api.get(&format!("/v1/pipelines/{pid}"));
    assert_eq!(p.body["status"], "completed");
    assert!(p.body["completed_at"].is_string());
}
