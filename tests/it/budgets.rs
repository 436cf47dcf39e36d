//! Output budgets: no rule, extractor or document can grow a value or a document's output
//! past its budget; exceeding one is a note on the field or an `error` document, never an
//! allocation the process cannot survive.

use crate::common::*;
use serde_json::{json, Value};

fn setup(api: &Api, fields: Value, rule: Option<(&str, &str, Value)>) -> String {
    let s = api.create_schema(&json!({"name": "b", "fields": fields}));
    let sid = s["id"].as_str().unwrap().to_string();
    let mut rail = vec![json!({"type": "schema"})];
    if let Some((field, t, config)) = rule {
        let p = api.post("/v1/data-policies", &json!({"name": "amplify"}));
        let pid = p.body["id"].as_str().unwrap().to_string();
        let r = api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": field, "type": "string"}),
        );
        assert!(r.status < 300, "{}", r.text);
        let r = api.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": field, "rule_type": t, "config": config}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        rail.push(json!({"type": "resolve", "json": {"policy_ids": [pid]}}));
    }
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": rail}));
    assert_eq!(r.status, 200, "{}", r.text);
    sid
}

fn run_one(api: &Api, sid: &str, content: &str) -> (String, String) {
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": [{"filename": "a.txt", "content": content}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(())
    });
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    (
        pid,
        row["pipeline_document_id"].as_str().unwrap().to_string(),
    )
}

fn field(api: &Api, pid: &str, pd: &str, name: &str) -> Value {
    api.get(&format!("/v1/pipelines/{pid}/documents/{pd}/cells"))
        .body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_key"] == name)
        .unwrap()
        .clone()
}

#[test]
fn an_amplifying_regex_replace_stops_at_the_value_budget_with_a_note() {
    let api = start();
    let replacement = "x".repeat(1000);
    let sid = setup(
        &api,
        json!([{"field_name": "vendor"}]),
        Some((
            "vendor",
            "regex_replace",
            json!({"pattern": "", "replacement": replacement}),
        )),
    );
    // 100 KB in, 100 MB out without a budget.
    let text = format!("Vendor: {}", "a".repeat(100_000));
    let (pid, pd) = run_one(&api, &sid, &text);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    assert_eq!(row["status"], "complete", "{}", row["error"]);
    let f = field(&api, &pid, &pd, "vendor");
    assert!(
        f["note"].as_str().unwrap_or("").contains("over the budget"),
        "{}",
        f["note"]
    );
    let versions = f["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "only the extracted value is stored");
    assert_eq!(versions[0]["value"].as_str().unwrap().len(), 100_000);
}

#[test]
fn an_extracted_value_over_the_value_budget_is_not_written() {
    let api = start_with(|c| c.limits.budget.value = 2048);
    let sid = setup(
        &api,
        json!([{"field_name": "vendor"}, {"field_name": "city"}]),
        None,
    );
    let text = format!("Vendor: {}\nCity: Ghent", "v".repeat(5000));
    let (pid, pd) = run_one(&api, &sid, &text);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    assert_eq!(
        row["fields"],
        json!({"vendor": null, "city": "Ghent"}),
        "{row}"
    );
    let f = field(&api, &pid, &pd, "vendor");
    assert!(f["note"].as_str().unwrap_or("").contains("2048"), "{f}");
}

#[test]
fn a_document_writing_past_its_output_budget_ends_error_with_the_reason() {
    let api = start_with(|c| c.limits.budget.document = 4096);
    let fields: Vec<Value> = (0..8)
        .map(|i| json!({"field_name": format!("f{i}")}))
        .collect();
    let sid = setup(&api, Value::Array(fields), None);
    let text: String = (0..8)
        .map(|i| format!("F{i}: {}\n", "z".repeat(1000)))
        .collect();
    let (pid, _) = run_one(&api, &sid, &text);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    assert_eq!(row["status"], "error", "{row}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("over the budget of 4096 bytes per document"),
        "{row}"
    );
    let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
    assert_eq!(p["errors"][0]["phaseId"], "extraction", "{p}");
}
