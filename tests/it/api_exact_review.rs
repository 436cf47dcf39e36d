//! Exact review semantics (issue 11): after a resolve, a reopen or a rerun, every value is the
//! one a person would compute by hand from the extracted values, the pins and the policies.

use crate::common::*;
use serde_json::{json, Value};

fn id(r: &Resp) -> String {
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    r.body["id"].as_str().expect("an id").to_string()
}

fn schema(api: &Api, fields: Value) -> String {
    api.create_schema(&json!({"name": "exact", "fields": fields}))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn numbers(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"field_name": n, "data_type": "number"}))
            .collect(),
    )
}

/// A policy of `(field, rule type, config)` rules.
fn policy(api: &Api, rules: &[(&str, &str, Value)]) -> String {
    let pid = id(&api.post("/v1/data-policies", &json!({"name": "p"})));
    let mut fields: Vec<&str> = rules.iter().map(|r| r.0).collect();
    for (_, _, c) in rules {
        let expr = c["expr"].as_str().unwrap_or("");
        fields.extend(["net", "tax"].into_iter().filter(|f| expr.contains(f)));
    }
    fields.sort();
    fields.dedup();
    for f in fields {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": f, "type": "number"}),
        );
        assert!(r.status < 300, "{}", r.text);
    }
    for (f, t, c) in rules {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": f, "rule_type": t, "config": c}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    pid
}

fn gate(api: &Api, sid: &str, name: &str, severity: &str, rules: Value) -> String {
    id(&api.post(
        &format!("/v1/schemas/{sid}/validation-stages"),
        &json!({"name": name, "severity": severity, "mechanisms": [{"type": "business_rules", "rules": rules}]}),
    ))
}

fn resolve_stage(policy: &str) -> Value {
    json!({"type": "resolve", "json": {"policy_ids": [policy]}})
}

fn valid_stage(gate: &str) -> Value {
    json!({"type": "valid", "json": {"stage_ids": [gate]}})
}

/// Saves the rail (after `schema`) and answers its compiled phases.
fn rail(api: &Api, sid: &str, stages: Vec<Value>) -> Vec<Value> {
    let mut all = vec![json!({"type": "schema"})];
    all.extend(stages);
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": all}));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["phases"].as_array().unwrap().clone()
}

fn phase_named(phases: &[Value], name: &str) -> String {
    phases
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {phases:?}"))["phase_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until no document of the run is queued or processing (the run itself may stay cancelled).
fn drain(api: &Api, pid: &str) {
    wait_for(60, || {
        let docs = api
            .get(&format!("/v1/pipelines/{pid}/documents?limit=100"))
            .body["data"]
            .as_array()
            .unwrap()
            .clone();
        docs.iter()
            .all(|d| !matches!(d["status"].as_str(), Some("queued" | "processing")))
            .then_some(())
    });
}

fn run(api: &Api, sid: &str, docs: &[(&str, &str)]) -> String {
    let docs: Vec<Value> = docs
        .iter()
        .map(|(n, c)| json!({"filename": n, "content": c}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(api, &pid);
    pid
}

fn rows(api: &Api, pid: &str) -> Vec<Value> {
    let r = api.get(&format!(
        "/v1/pipelines/{pid}/results?include=cells&limit=200"
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn row(api: &Api, pid: &str, filename: &str) -> Value {
    rows(api, pid)
        .into_iter()
        .find(|r| r["filename"] == filename)
        .unwrap_or_else(|| panic!("no row {filename}"))
}

fn pd(api: &Api, pid: &str, filename: &str) -> String {
    row(api, pid, filename)["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn resolve(api: &Api, pd: &str, field: &str, body: Value) -> Resp {
    api.post(&format!("/v1/field-reviews/{pd}/{field}/resolve"), &body)
}

fn correct(api: &Api, pd: &str, field: &str, value: Value) -> Value {
    let r = resolve(
        api,
        pd,
        field,
        json!({"action": "correct", "corrected_value": value}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// `gross = net + tax` at resolution, then a blocking gate that holds `tax` above 50.
fn gross_spec(api: &Api, fields: Value, rules: &[(&str, &str, Value)]) -> (String, Vec<Value>) {
    let sid = schema(api, fields);
    let pol = policy(api, rules);
    let g = gate(
        api,
        &sid,
        "Tax",
        "blocking",
        json!([{"field": "tax", "check": "range", "max": 50}]),
    );
    let phases = rail(api, &sid, vec![resolve_stage(&pol), valid_stage(&g)]);
    (sid, phases)
}

#[test]
fn a_recompute_equal_to_the_stated_value_replaces_the_first_pass_result() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        numbers(&["net", "tax", "gross"]),
        &[("gross", "compute", json!({"expr": "net + tax"}))],
    );
    let pid = run(&api, &sid, &[("a.txt", "Net: 100\nTax: 99\nGross: 119")]);
    let pd = pd(&api, &pid, "a.txt");
    assert_eq!(
        row(&api, &pid, "a.txt")["cells"]["gross"]["status"],
        "waiting"
    );
    correct(&api, &pd, "tax", json!(19));
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "complete");
    assert_eq!(r["fields"]["gross"], json!(119), "{r}");
    let cells = field_cells(&api, &pid, &pd, "gross");
    let live_199: Vec<&Value> = cells["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["value"] == json!(199))
        .collect();
    assert_eq!(live_199.len(), 1, "the first pass's 199 stays in history");
    assert_eq!(live_199[0]["live"], false, "but no longer counts");
}

#[test]
fn a_failing_recompute_after_a_correction_leaves_null_with_a_note_as_a_rerun_does() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        numbers(&["net", "tax", "ratio"]),
        &[("ratio", "compute", json!({"expr": "net / tax"}))],
    );
    let pid = run(&api, &sid, &[("a.txt", "Net: 100\nTax: 99")]);
    let pd = pd(&api, &pid, "a.txt");
    correct(&api, &pd, "tax", json!(0));
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["fields"]["ratio"], Value::Null, "{r}");
    let note = field_cells(&api, &pid, &pd, "ratio")["note"].clone();
    assert!(
        note.as_str().unwrap_or("").contains("division by zero"),
        "{note}"
    );
    // The same inputs through a rerun give the same answer.
    let rr = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(rr.status, 200, "{}", rr.text);
    settle(&api, &pid);
    assert_eq!(row(&api, &pid, "a.txt")["fields"], r["fields"]);
}

#[test]
fn a_resumed_rule_reads_values_as_the_rules_before_it_normalized_them() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        json!([{"field_name": "net"}, {"field_name": "tax", "data_type": "number"}, {"field_name": "gross", "data_type": "number"}]),
        &[
            ("net", "number", json!({})),
            ("gross", "compute", json!({"expr": "net + tax"})),
        ],
    );
    let pid = run(&api, &sid, &[("a.txt", "Net: 1,000.50\nTax: 99")]);
    let first = row(&api, &pid, "a.txt");
    assert_eq!(first["fields"]["net"], json!(1000.5), "{first}");
    let pd = pd(&api, &pid, "a.txt");
    correct(&api, &pd, "tax", json!(19));
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["fields"]["gross"], json!(1019.5), "{r}");
    assert_eq!(field_cells(&api, &pid, &pd, "gross")["note"], Value::Null);
}

#[test]
fn one_bulk_resolve_of_two_inputs_recomputes_their_dependent_from_both() {
    let api = start();
    let sid = schema(&api, numbers(&["net", "tax", "gross"]));
    let pol = policy(&api, &[("gross", "compute", json!({"expr": "net + tax"}))]);
    let g = gate(
        &api,
        &sid,
        "Limits",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 100}, {"field": "tax", "check": "range", "max": 50}]),
    );
    rail(&api, &sid, vec![resolve_stage(&pol), valid_stage(&g)]);
    let pid = run(&api, &sid, &[("a.txt", "Net: 500\nTax: 60")]);
    let pd = pd(&api, &pid, "a.txt");
    let r = api.post(
        "/v1/field-reviews/bulk-resolve",
        &json!({"items": [{"pipeline_document_id": pd, "field_key": "net"}, {"pipeline_document_id": pd, "field_key": "tax"}],
                "action": "correct", "corrected_value": 40}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["resolved"], 2, "{}", r.text);
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "complete");
    assert_eq!(
        r["fields"],
        json!({"net": 40, "tax": 40, "gross": 80}),
        "{r}"
    );
}

/// Rail `schema, valid[Net], resolve, valid[Tax]`: net is held at the first gate, tax at the last.
fn two_gate_spec(api: &Api) -> (String, Vec<Value>) {
    let sid = schema(api, numbers(&["net", "tax", "gross"]));
    let pol = policy(api, &[("gross", "compute", json!({"expr": "net + tax"}))]);
    let g1 = gate(
        api,
        &sid,
        "Net",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 100}]),
    );
    let g2 = gate(
        api,
        &sid,
        "Tax",
        "blocking",
        json!([{"field": "tax", "check": "range", "max": 50}]),
    );
    let phases = rail(
        api,
        &sid,
        vec![valid_stage(&g1), resolve_stage(&pol), valid_stage(&g2)],
    );
    (sid, phases)
}

#[test]
fn a_bulk_correction_at_an_earlier_gate_after_a_later_one_is_judged_again_there() {
    let api = start();
    let (sid, _) = two_gate_spec(&api);
    let pid = run(&api, &sid, &[("a.txt", "Net: 500\nTax: 60")]);
    let pd = pd(&api, &pid, "a.txt");
    let cells = row(&api, &pid, "a.txt")["cells"].clone();
    assert_eq!(
        (
            cells["net"]["status"].clone(),
            cells["tax"]["status"].clone()
        ),
        (json!("blocked"), json!("blocked"))
    );
    // Later gate first, then the earlier one; 200 fails both gates.
    let r = api.post(
        "/v1/field-reviews/bulk-resolve",
        &json!({"items": [{"pipeline_document_id": pd, "field_key": "tax"}, {"pipeline_document_id": pd, "field_key": "net"}],
                "action": "correct", "corrected_value": 200}),
    );
    assert_eq!(r.body["resolved"], 2, "{}", r.text);
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(r["cells"]["net"]["status"], "blocked", "{r}");
    assert_eq!(r["cells"]["tax"]["status"], "blocked", "{r}");
    let item = api.get(&format!("/v1/field-reviews/{pd}/net")).body;
    assert_eq!(item["item"]["current_value"], json!(200), "{item}");
}

#[test]
fn a_correction_while_a_rerun_holds_the_document_queued_runs_its_own_gate() {
    let api = start();
    let (sid, phases) = two_gate_spec(&api);
    let pid = run(&api, &sid, &[("a.txt", "Net: 500\nTax: 6")]);
    let pd = pd(&api, &pid, "a.txt");
    api.srv.pause_executor();
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let answer = correct(&api, &pd, "net", json!(300));
    assert_eq!(answer["status"], "progressing", "{answer}");
    assert_eq!(
        answer["currentPhaseId"],
        json!(phase_named(&phases, "Net")),
        "{answer}"
    );
    api.srv.resume_executor();
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["cells"]["net"]["status"], "blocked", "judged again: {r}");
    // A value that passes goes through and its dependent is computed from it.
    correct(&api, &pd, "net", json!(30));
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(
        r["fields"],
        json!({"net": 30, "tax": 6, "gross": 36}),
        "{r}"
    );
}

#[test]
fn a_reopened_field_whose_gate_lies_before_the_restart_stays_in_review_through_a_rerun() {
    let api = start();
    let sid = schema(
        &api,
        json!([{"field_name": "vendor"}, {"field_name": "net", "data_type": "number"}]),
    );
    let pol = policy(&api, &[("net", "compute", json!({"expr": "net * 2"}))]);
    let g1 = gate(
        &api,
        &sid,
        "Vendor",
        "blocking",
        json!([{"field": "vendor", "check": "regex", "pattern": "^ACME"}]),
    );
    let g2 = gate(
        &api,
        &sid,
        "Net",
        "warning",
        json!([{"field": "net", "check": "range", "max": 1000}]),
    );
    rail(
        &api,
        &sid,
        vec![valid_stage(&g1), resolve_stage(&pol), valid_stage(&g2)],
    );
    let pid = run(&api, &sid, &[("a.txt", "Vendor: Foo\nNet: 10")]);
    let pd = pd(&api, &pid, "a.txt");
    correct(&api, &pd, "vendor", json!("ACME Ltd"));
    settle(&api, &pid);
    assert_eq!(row(&api, &pid, "a.txt")["status"], "complete");
    let r = resolve(&api, &pd, "vendor", json!({"action": "reopen"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "pending_review");
    let dry = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution", "dry_run": true}),
    );
    assert_eq!(dry.body["plan"]["keptBlockedFields"], 1, "{}", dry.text);
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(r["cells"]["vendor"]["status"], "pending_review", "{r}");
    assert_eq!(r["fields"]["net"], json!(20));
    let queue = api
        .get(&format!("/v1/field-reviews?pipeline_id={pid}"))
        .body;
    assert_eq!(queue["data"].as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue["data"][0]["field_key"], "vendor");
}

#[test]
fn every_reader_shows_nothing_for_fields_being_recomputed_by_a_rerun() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        numbers(&["net", "tax", "gross"]),
        &[("gross", "compute", json!({"expr": "net + tax"}))],
    );
    let pid = run(&api, &sid, &[("a.txt", "Net: 100\nTax: 9\nGross: 1")]);
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert!(dp.status == 201 || dp.status == 200, "{}", dp.text);
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();
    let before = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    assert_eq!(before["data"][0]["fields"]["gross"], json!(109), "{before}");
    api.srv.pause_executor();
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let results = row(&api, &pid, "a.txt");
    let dp_rows = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    let csv = api
        .get(&format!("/v1/data-products/{dpid}/export/plain"))
        .text;
    let audit = api
        .get(&format!("/v1/data-products/{dpid}/export/audit"))
        .text;
    let pd = results["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cells = field_cells(&api, &pid, &pd, "gross");
    api.srv.resume_executor();
    assert_eq!(results["fields"]["gross"], Value::Null, "{results}");
    assert_eq!(
        dp_rows["data"][0]["fields"]["gross"],
        Value::Null,
        "{dp_rows}"
    );
    let line: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(line, vec!["", "", ""], "{csv}");
    assert!(!audit.contains("109") && !audit.contains(",1,"), "{audit}");
    assert_eq!(cells["canonical_version"], Value::Null, "{cells}");
    settle(&api, &pid);
    let after = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    assert_eq!(after["data"][0]["fields"], before["data"][0]["fields"]);
}

#[test]
fn a_cancelled_run_stays_cancelled_when_a_finished_document_is_resolved() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        numbers(&["net", "tax", "gross"]),
        &[("gross", "compute", json!({"expr": "net + tax"}))],
    );
    let pid = run(
        &api,
        &sid,
        &[("a.txt", "Net: 100\nTax: 99"), ("b.txt", "Net: 1\nTax: 2")],
    );
    let (a, b) = (pd(&api, &pid, "a.txt"), pd(&api, &pid, "b.txt"));
    api.srv.pause_executor();
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution", "document_ids": [b]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    api.srv.resume_executor();
    correct(&api, &a, "tax", json!(19));
    drain(&api, &pid);
    let p = api.get(&format!("/v1/pipelines/{pid}")).body;
    assert_eq!(p["status"], "cancelled", "{p}");
    let a_row = row(&api, &pid, "a.txt");
    assert_eq!(
        a_row["status"], "complete",
        "the resolved document finishes"
    );
    assert_eq!(a_row["fields"]["gross"], json!(119));
    let b_row = row(&api, &pid, "b.txt");
    assert_eq!(
        (b_row["status"].clone(), b_row["error"].clone()),
        (json!("error"), json!("cancelled"))
    );
}

#[test]
fn posting_a_data_product_again_without_a_name_keeps_its_name() {
    let api = start();
    let (sid, _) = gross_spec(
        &api,
        numbers(&["net", "tax", "gross"]),
        &[("gross", "compute", json!({"expr": "net + tax"}))],
    );
    let pid = run(&api, &sid, &[("a.txt", "Net: 1\nTax: 2")]);
    let path = format!("/v1/pipelines/{pid}/data-product");
    let first = api.post(&path, &json!({"name": "Q3 invoices"}));
    assert_eq!(first.status, 201, "{}", first.text);
    let again = api.post(&path, &json!({}));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["dataProduct"]["name"], "Q3 invoices");
    let renamed = api.post(&path, &json!({"name": "Q3 final"}));
    assert_eq!(renamed.body["dataProduct"]["name"], "Q3 final");
}

#[test]
fn a_correction_drops_warning_flags_that_judged_the_old_value() {
    let api = start();
    let sid = schema(&api, numbers(&["net", "tax"]));
    let w = gate(
        &api,
        &sid,
        "Soft",
        "warning",
        json!([{"field": "tax", "check": "range", "max": 50}]),
    );
    let b = gate(
        &api,
        &sid,
        "Hard",
        "blocking",
        json!([{"field": "tax", "check": "range", "max": 80}]),
    );
    rail(&api, &sid, vec![valid_stage(&w), valid_stage(&b)]);
    let pid = run(&api, &sid, &[("a.txt", "Net: 1\nTax: 99")]);
    let pd = pd(&api, &pid, "a.txt");
    let flags = row(&api, &pid, "a.txt")["cells"]["tax"]["flags"].clone();
    assert_eq!(flags.as_array().unwrap().len(), 1, "{flags}");
    // Corrected to a value that fails the soft gate too: judged again at the hard gate only,
    // it keeps no flag from the soft gate's verdict on 99.
    correct(&api, &pd, "tax", json!(10));
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["fields"]["tax"], json!(10));
    assert_eq!(r["cells"]["tax"]["flags"], json!([]), "{r}");
}

#[test]
fn results_count_pending_reviews_as_the_queue_does_without_errored_documents() {
    let api = start();
    let sid = schema(&api, numbers(&["net", "tax", "gross"]));
    let pol = policy(&api, &[("gross", "compute", json!({"expr": "net + tax"}))]);
    let g = gate(
        &api,
        &sid,
        "Net",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 100}]),
    );
    rail(&api, &sid, vec![valid_stage(&g), resolve_stage(&pol)]);
    let pid = run(&api, &sid, &[("a.txt", "Net: 500\nTax: 1")]);
    let pending = |api: &Api| {
        api.get(&format!("/v1/pipelines/{pid}/results")).body["pending_review_count"].clone()
    };
    assert_eq!(pending(&api), json!(1));
    api.srv.pause_executor();
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}))
            .status,
        200
    );
    api.srv.resume_executor();
    let queue = api
        .get(&format!("/v1/field-reviews?pipeline_id={pid}"))
        .body;
    assert_eq!(queue["data"].as_array().unwrap().len(), 0, "{queue}");
    assert_eq!(pending(&api), json!(0));
}

#[test]
fn a_field_held_on_a_value_computed_from_a_corrected_input_is_computed_again_and_judged_again() {
    let api = start();
    let sid = schema(&api, numbers(&["net", "tax", "gross"]));
    let pol = policy(&api, &[("gross", "compute", json!({"expr": "net + tax"}))]);
    let g = gate(
        &api,
        &sid,
        "Limits",
        "blocking",
        json!([{"field": "tax", "check": "range", "max": 40}, {"field": "gross", "check": "range", "max": 250}]),
    );
    rail(&api, &sid, vec![resolve_stage(&pol), valid_stage(&g)]);
    let pid = run(&api, &sid, &[("a.txt", "Net: 300\nTax: 60")]);
    let pd = pd(&api, &pid, "a.txt");
    let item = |api: &Api| api.get(&format!("/v1/field-reviews/{pd}/gross")).body["item"].clone();
    assert_eq!(item(&api)["status"], "blocked");
    assert_eq!(item(&api)["current_value"], json!(360));
    correct(&api, &pd, "tax", json!(10));
    settle(&api, &pid);
    let held = item(&api);
    assert_eq!(held["status"], "blocked", "310 fails again: {held}");
    assert_eq!(
        held["current_value"],
        json!(310),
        "judged on the new value: {held}"
    );
    let r = resolve(&api, &pd, "gross", json!({"action": "approve"}));
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(r["fields"], json!({"net": 300, "tax": 10, "gross": 310}));
}

#[test]
fn a_reopened_computed_field_is_computed_again_from_todays_inputs_before_it_is_reviewed() {
    let api = start();
    let sid = schema(&api, numbers(&["net", "tax", "gross"]));
    let pol = policy(&api, &[("gross", "compute", json!({"expr": "net + tax"}))]);
    let g = gate(
        &api,
        &sid,
        "Limits",
        "blocking",
        json!([{"field": "tax", "check": "range", "max": 40}, {"field": "gross", "check": "range", "max": 250}]),
    );
    let phases = rail(&api, &sid, vec![resolve_stage(&pol), valid_stage(&g)]);
    let pid = run(&api, &sid, &[("a.txt", "Net: 300\nTax: 60")]);
    let pd = pd(&api, &pid, "a.txt");
    // The human fixes gross first (pinned), then tax: gross, pinned, is not recomputed.
    correct(&api, &pd, "gross", json!(100));
    settle(&api, &pid);
    correct(&api, &pd, "tax", json!(10));
    settle(&api, &pid);
    assert_eq!(
        row(&api, &pid, "a.txt")["fields"],
        json!({"net": 300, "tax": 10, "gross": 100})
    );
    let r = resolve(&api, &pd, "gross", json!({"action": "reopen"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "progressing", "{}", r.text);
    assert_eq!(
        r.body["currentPhaseId"],
        phases.iter().find(|p| p["type"] == "resolution").unwrap()["phase_id"]
    );
    settle(&api, &pid);
    let item = api.get(&format!("/v1/field-reviews/{pd}/gross")).body["item"].clone();
    assert_eq!(item["status"], "pending_review", "{item}");
    assert_eq!(
        item["current_value"],
        json!(310),
        "not the 360 of the old tax: {item}"
    );
    let r = resolve(&api, &pd, "gross", json!({"action": "approve"}));
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    let r = row(&api, &pid, "a.txt");
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(r["fields"], json!({"net": 300, "tax": 10, "gross": 310}));
}
