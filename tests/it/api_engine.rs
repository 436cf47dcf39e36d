//! The engine over HTTP: rails, policies, gates, pipelines, progress and results.

use crate::common::*;
use quire::tools::fixtures;
use serde_json::{json, Value};

/// Schema + fixture policy + rail (registry, schema, resolve, valid with the given gates).
pub fn fixture_spec(api: &Api, gates: &[Value]) -> (String, String) {
    let schema =
        api.create_schema(&json!({"name": "Invoices", "fields": fixtures::schema_fields()}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Normalize"}));
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    for (field, t) in [
        ("issue_date", "date"),
        ("currency", "string"),
        ("net", "number"),
        ("tax", "number"),
        ("total", "number"),
    ] {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": field, "type": t}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for (field, rule, config) in fixtures::policy_rules() {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": field, "rule_type": rule, "config": config}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut gate_ids = Vec::new();
    for g in gates {
        let r = api.post(&format!("/v1/schemas/{sid}/validation-stages"), g);
        assert_eq!(r.status, 201, "{}", r.text);
        gate_ids.push(r.body["id"].clone());
    }
    let mut rail = vec![
        json!({"type": "registry", "name": "Field Registry"}),
        json!({"type": "schema", "name": "Extraction"}),
        json!({"type": "resolve", "name": "Normalize", "json": {"policy_ids": [pid]}}),
    ];
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
        // Per phase: completed + running + pending + errors + (errored at earlier phases) = total.
        let mut errored_before = 0;
        for ph in p["phases"].as_array().unwrap() {
            let n = |k: &str| ph[k].as_i64().unwrap();
            assert!(
                n("completed") >= 0 && n("running") >= 0 && n("pending") >= 0 && n("errors") >= 0,
                "{p}"
            );
            assert_eq!(
                n("completed") + n("running") + n("pending") + n("errors") + errored_before,
                total,
                "counts add up: {p}"
            );
            errored_before += n("errors");
        }
        let done =
            p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap();
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
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs, "name": "batch"}),
    );
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
    println!(
        "rules extractor accuracy on generated documents: {right}/{cells} = {:.1}%",
        100.0 * right as f64 / cells as f64
    );
    assert_eq!(right, cells);
    let p = api.get(&format!("/v1/pipelines/{pid}"));
    assert_eq!(p.body["status"], "completed");
    assert!(p.body["completed_at"].is_string());
}

#[test]
fn a_blocking_gate_holds_failing_fields_and_their_dependents() {
    let api = start();
    let schema = api.create_schema(&json!({"name": "s", "fields": [
        {"field_name": "net", "data_type": "number"},
        {"field_name": "total", "data_type": "number", "depends_on": ["net"]},
        {"field_name": "vendor"}]}));
    let sid = schema["id"].as_str().unwrap();
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({
        "name": "Net is small", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 100}]}]}));
    assert_eq!(g.status, 201, "{}", g.text);
    assert_eq!(
        g.body["blocking_config"],
        json!({"on_block": "review_queue"})
    );
    assert_eq!(g.body["ordinal"], 1);
    let w = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({
        "name": "Vendor known", "severity": "warning",
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "vendor", "check": "enum", "values": ["Acme"]}]}]}));
    assert_eq!(w.status, 201);
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": [{"type": "schema", "name": "Extraction"}, {"type": "valid", "name": "Checks"}]}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["phases"].as_array().unwrap().len(), 3);
    let ok = upload(&api, "ok.txt", "Net: 50\nTotal: 60\nVendor: Acme");
    let bad = upload(&api, "bad.txt", "Net: 500\nTotal: 600\nVendor: Other");
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": [ok, bad]}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    let progress = wait_terminal(&api, &pid, 30);
    assert_eq!(progress["completedDocuments"], 2);
    let r = api.get(&format!(
        "/v1/pipelines/{pid}/results?include=cells,provenance"
    ));
    let rows = r.body["data"].as_array().unwrap();
    assert_eq!(rows[0]["status"], "complete");
    assert_eq!(
        rows[0]["fields"],
        json!({"net": 50, "total": 60, "vendor": "Acme"})
    );
    assert_eq!(rows[1]["status"], "partial");
    assert_eq!(
        rows[1]["fields"],
        json!({"net": null, "total": null, "vendor": "Other"}),
        "held cells read null, warnings ship"
    );
    assert_eq!(rows[1]["cells"]["net"]["status"], "blocked");
    assert_eq!(rows[1]["cells"]["total"]["status"], "waiting");
    assert_eq!(
        rows[1]["cells"]["vendor"]["flags"][0]["severity"],
        "warning"
    );
    assert_eq!(
        rows[1]["cells"]["vendor"]["flags"][0]["stage_id"],
        w.body["id"]
    );
    assert_eq!(rows[1]["provenance"]["net"][0]["value"], 500);
    assert_eq!(r.body["pending_review_count"], 1);
    assert_eq!(
        r.body["columns"][0],
        json!({"field_key": "net", "display_name": "Net", "data_type": "number"})
    );

    let pd = rows[1]["pipeline_document_id"].as_str().unwrap();
    let v = api.get(&format!("/v1/pipelines/{pid}/documents/{pd}/verdicts"));
    let verdicts = v.body["data"].as_array().unwrap();
    let net = verdicts
        .iter()
        .find(|v| v["fieldKey"] == "net" && v["stageId"] == g.body["id"])
        .unwrap();
    assert_eq!(net["outcome"], "fail");
    assert_eq!(net["reason"], "failed_check");
    assert_eq!(net["phaseId"], "validation");
    assert_eq!(net["stageName"], "Net is small");
    assert_eq!(net["generation"], 1);
    assert_eq!(net["pass"], 1);
    assert_eq!(net["mechanisms"][0]["validatorType"], "business_rules");
    let c = api.get(&format!("/v1/pipelines/{pid}/documents/{pd}/cells"));
    let fields = c.body["fields"].as_array().unwrap();
    assert_eq!(fields[0]["field_key"], "net");
    assert_eq!(fields[0]["status"], "blocked");
    let v0 = &fields[0]["versions"][0];
    assert_eq!(
        (
            v0["source"].clone(),
            v0["phase_id"].clone(),
            v0["live"].clone(),
            v0["canonical"].clone()
        ),
        (
            json!("rules_extraction"),
            json!("extraction"),
            json!(true),
            json!(true)
        )
    );
    assert_eq!(v0["source_text"], "Net: 500");
    assert_eq!(v0["confidence"], 0.95);
}

#[test]
fn an_unreadable_document_ends_error_and_is_listed_in_progress() {
    let api = start();
    let (sid, _) = fixture_spec(&api, &[]);
    let (mut docs, _) = inline_docs(1, 3);
    docs.push(json!({"filename": "broken.json", "content": "{\"total\": 12,"}));
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    let progress = wait_terminal(&api, &pid, 30);
    assert_eq!(progress["completedDocuments"], 3);
    assert_eq!(progress["errorDocuments"], 1);
    let err = &progress["errors"][0];
    assert_eq!(err["filename"], "broken.json");
    assert_eq!(err["phaseId"], "extraction");
    assert!(
        err["message"].as_str().unwrap().contains("not valid JSON"),
        "{err}"
    );
    let ext = progress["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phaseId"] == "extraction")
        .unwrap()
        .clone();
    assert_eq!(
        (ext["completed"].clone(), ext["errors"].clone()),
        (json!(3), json!(1))
    );
    let transfer = &progress["phases"][0];
    assert_eq!(
        transfer["completed"], 4,
        "an error at extraction is past transfer"
    );
    let resolution = &progress["phases"][2];
    assert_eq!(
        (
            resolution["completed"].clone(),
            resolution["pending"].clone()
        ),
        (json!(3), json!(0))
    );
    let rows = all_results(&api, &pid);
    assert_eq!(rows[3]["status"], "error");
    assert!(rows[3]["fields"]
        .as_object()
        .unwrap()
        .values()
        .all(Value::is_null));
    let docs = api.get(&format!("/v1/pipelines/{pid}/documents"));
    assert_eq!(docs.body["data"][3]["status"], "error");
    assert_eq!(
        api.get(&format!("/v1/pipelines/{pid}")).body["status"],
        "completed"
    );
}

#[test]
fn cancel_stops_a_large_run() {
    let api = start();
    let (sid, _) = fixture_spec(&api, &[]);
    let (docs, _) = inline_docs(3, 300);
    // Held in `queued` so the cancel certainly meets unfinished documents.
    api.srv.pause_executor();
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    let r = api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    api.srv.resume_executor();
    let progress = wait_terminal(&api, &pid, 30);
    let errors = progress["errorDocuments"].as_i64().unwrap();
    assert!(errors > 0, "{progress}");
    assert_eq!(
        progress["completedDocuments"].as_i64().unwrap() + errors,
        300
    );
    // Nothing moves afterwards.
    let again = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
    assert_eq!(again["completedDocuments"], progress["completedDocuments"]);
    let r = api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}));
    assert_envelope(&r, 400, "bad_request");
}

#[test]
fn pipeline_creation_refuses_bad_requests() {
    let api = start();
    let bare = api.create_schema(&json!({"name": "no rail", "fields": {"a": "string"}}));
    let doc = upload(&api, "a.txt", "A: 1");
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": bare["id"], "document_ids": [doc]}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(r.body["message"].as_str().unwrap().contains("rail"));
    let (sid, _) = fixture_spec(&api, &[]);
    let missing = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e";
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": [missing]}),
    );
    assert_envelope(&r, 404, "not_found");
    assert!(r.body["message"].as_str().unwrap().contains(missing));
    assert_envelope(
        &api.post(
            "/v1/pipelines",
            &json!({"schema_id": missing, "document_ids": [doc]}),
        ),
        404,
        "not_found",
    );
    assert_envelope(
        &api.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "document_ids": [doc, doc]}),
        ),
        400,
        "bad_request",
    );
    assert_envelope(
        &api.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "document_ids": []}),
        ),
        400,
        "bad_request",
    );
    assert_envelope(
        &api.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "document_ids": ["nope"]}),
        ),
        400,
        "bad_request",
    );
    assert_envelope(
        &api.post("/v1/pipelines", &json!({"document_ids": [doc]})),
        400,
        "bad_request",
    );
    api.delete(&format!("/v1/schemas/{sid}"));
    assert_envelope(
        &api.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "document_ids": [doc]}),
        ),
        404,
        "not_found",
    );
    assert_eq!(api.get("/v1/pipelines").body["pagination"]["total"], 0);

    let small = start_with(|c| c.max_pipeline_documents = 2);
    let (sid, _) = fixture_spec(&small, &[]);
    let (docs, _) = inline_docs(1, 3);
    assert_envelope(
        &small.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "documents": docs}),
        ),
        400,
        "bad_request",
    );
}

#[test]
fn rail_policy_and_gate_endpoints_validate_and_round_trip() {
    let api = start();
    let (sid, pid) = fixture_spec(&api, &[]);
    let rail = api.get(&format!("/v1/schemas/{sid}/rail"));
    assert_eq!(rail.status, 200);
    let ids: Vec<_> = rail.body["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase_id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!("transfer"), json!("extraction"), json!("resolution")]
    );
    // GET answers in a form PUT accepts back unchanged.
    let again = api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": rail.body["rail"]}),
    );
    assert_eq!(again.body, rail.body);
    let inactive = api.post("/v1/data-policies", &json!({"name": "empty"}));
    assert_eq!(inactive.body["status"], "inactive");
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": [{"type": "schema"}, {"type": "resolve", "name": "R", "json": {"policy_ids": [inactive.body["id"]]}}]}));
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("stage 1"),
        "{}",
        r.text
    );
    assert_envelope(
        &api.put(
            &format!("/v1/schemas/{sid}/rail"),
            &json!({"rail": [{"type": "valid"}]}),
        ),
        400,
        "bad_request",
    );
    // The policy: versioned, active, rules in compiled order, bad rules named.
    let p = api.get(&format!("/v1/data-policies/{pid}"));
    assert_eq!(p.body["status"], "active");
    assert_eq!(p.body["version"], 11);
    let rules = api.get(&format!("/v1/data-policies/{pid}/rules"));
    assert_eq!(rules.body["data"].as_array().unwrap().len(), 5);
    for (cfg, rule_type, want) in [
        (json!({"expr": "net +"}), "compute", "config.expr"),
        (json!({"expr": "ghost * 2"}), "compute", "ghost"),
        (
            json!({"pattern": "(", "replacement": ""}),
            "regex_replace",
            "regular expression",
        ),
        (json!({}), "teleport", "unknown"),
    ] {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": "total", "rule_type": rule_type, "config": cfg}),
        );
        assert_envelope(&r, 400, "bad_request");
        assert!(
            r.body["message"].as_str().unwrap().contains(want),
            "{}",
            r.text
        );
    }
    let c1 = api.post(
        &format!("/v1/data-policies/{pid}/rules"),
        &json!({"field_key": "net", "rule_type": "compute", "config": {"expr": "total - tax"}}),
    );
    assert_eq!(c1.status, 201);
    let cyc = api.post(
        &format!("/v1/data-policies/{pid}/rules"),
        &json!({"field_key": "total", "rule_type": "compute", "config": {"expr": "net + tax"}}),
    );
    assert_envelope(&cyc, 400, "bad_request");
    assert!(
        cyc.body["message"].as_str().unwrap().contains("cycle"),
        "{}",
        cyc.text
    );
    let rid = c1.body["id"].as_str().unwrap();
    let patched = send(
        api.http
            .patch(api.url(&format!("/v1/data-policies/{pid}/rules/{rid}")))
            .bearer_auth(api.key())
            .json(&json!({"config": {"expr": "total - tax - 1"}})),
    );
    assert_eq!(patched.body["config"]["expr"], "total - tax - 1");
    assert_eq!(
        api.delete(&format!("/v1/data-policies/{pid}/rules/{rid}"))
            .status,
        200
    );
    // Referenced by a rail: cannot be deleted.
    assert_envelope(
        &api.delete(&format!("/v1/data-policies/{pid}")),
        400,
        "bad_request",
    );
    // Gates: validation, reorder, delete refused while referenced.
    let bad_scope = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "x", "severity": "blocking", "fieldScope": ["total"],
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "required"}]}]}));
    assert_envelope(&bad_scope, 400, "bad_request");
    let g1 = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "a", "severity": "info", "blockingConfig": {"on_block": "hold"}, "mechanisms": []}));
    assert_eq!(g1.body["blocking_config"], json!({"on_block": "hold"}));
    let g2 = api.post(
        &format!("/v1/schemas/{sid}/validation-stages"),
        &json!({"name": "b", "severity": "warning", "mechanisms": [{"type": "evidence"}]}),
    );
    let r = api.post(
        &format!("/v1/schemas/{sid}/validation-stages/reorder"),
        &json!({"stage_ids": [g2.body["id"], g1.body["id"]]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"][0]["name"], "b");
    let patched = api.patch(
        &format!(
            "/v1/schemas/{sid}/validation-stages/{}",
            g1.body["id"].as_str().unwrap()
        ),
        &json!({"severity": "blocking"}),
    );
    assert_eq!(
        (
            patched.body["severity"].clone(),
            patched.body["version"].clone()
        ),
        (json!("blocking"), json!(2))
    );
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [g1.body["id"]]}}]}));
    assert_eq!(r.status, 200);
    assert_envelope(
        &api.delete(&format!(
            "/v1/schemas/{sid}/validation-stages/{}",
            g1.body["id"].as_str().unwrap()
        )),
        400,
        "bad_request",
    );
    assert_eq!(
        api.delete(&format!(
            "/v1/schemas/{sid}/validation-stages/{}",
            g2.body["id"].as_str().unwrap()
        ))
        .status,
        200
    );
    // A field the rail's gate uses cannot be removed from the schema.
    let r = api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [pid]}}]}),
    );
    assert_eq!(r.status, 200);
    let r = api.put(
        &format!("/v1/schemas/{sid}"),
        &json!({"name": "Invoices", "fields": {"invoice_number": "string"}}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("issue_date"),
        "{}",
        r.text
    );
}

#[test]
fn rules_that_would_fail_every_document_are_refused_when_saved() {
    let api = start();
    let p = api.post("/v1/data-policies", &json!({"name": "Dates"}));
    let pid = p.body["id"].as_str().unwrap().to_string();
    for (field, t) in [("when", "date"), ("net", "number")] {
        let r = api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": field, "type": t}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let rules = format!("/v1/data-policies/{pid}/rules");
    for (field, rule_type, config, named) in [
        ("when", "date", json!({"output": "%d.%m.%Y %H:%M"}), "'%H'"),
        ("when", "date", json!({"output": "%s"}), "'%s'"),
        ("when", "date", json!({"output": "%Y-%m-%d%z"}), "'%z'"),
        ("when", "date", json!({"output": "%c"}), "'%c'"),
        (
            "net",
            "compute",
            json!({"expr": "round(net, -1000)"}),
            "-15 to 15",
        ),
    ] {
        let r = api.post(
            &rules,
            &json!({"field_key": field, "rule_type": rule_type, "config": config}),
        );
        assert_envelope(&r, 400, "bad_request");
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(named) && msg.contains("rule "), "{msg}");
    }
    let ok = api.post(
        &rules,
        &json!({"field_key": "when", "rule_type": "date", "config": {"output": "%d %B %Y"}}),
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    let rid = ok.body["id"].as_str().unwrap();
    let patched = api.patch(
        &format!("{rules}/{rid}"),
        &json!({"config": {"output": "%+"}}),
    );
    assert_envelope(&patched, 400, "bad_request");
    let listed = api.get(&rules);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["data"][0]["config"]["output"], "%d %B %Y");
}

#[test]
fn a_runs_document_ids_are_checked_and_a_refused_request_creates_nothing() {
    let api = start();
    let schema = api.create_schema(&json!({"name": "Ids", "fields": {"total": "number"}}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let r = api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "registry"}, {"type": "schema"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let a = upload(&api, "a.txt", "Total: 1");
    let b = upload(&api, "b.txt", "Total: 2");
    let create = |ids: Value| {
        api.post(
            "/v1/pipelines",
            &json!({"schema_id": sid, "document_ids": ids}),
        )
    };
    let message = |r: &Resp| r.body["message"].as_str().unwrap().to_string();

    let r = create(json!([a, b, a]));
    assert_envelope(&r, 400, "bad_request");
    assert!(
        message(&r).contains(&format!("{a} appears twice")),
        "{}",
        r.text
    );
    // A malformed id is named with its place in the list, and so is one in another UUID form.
    for bad in ["not-an-id", &b.replace('-', "")] {
        let r = create(json!([a, bad]));
        assert_envelope(&r, 400, "bad_request");
        let m = message(&r);
        assert!(m.contains("document_ids[1]") && m.contains(bad), "{m}");
    }
    let unknown = "0190b5f0-0000-7000-8000-000000000000";
    let r = create(json!([a, unknown]));
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(message(&r).contains(unknown), "{}", r.text);
    assert_eq!(
        api.get("/v1/pipelines").body["data"],
        json!([]),
        "nothing was created"
    );

    // The hyphenated form in capitals is the same id, stored as the canonical one.
    let r = create(json!([a.to_uppercase(), b]));
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_terminal(&api, &pid, 30);
    let docs = api.get(&format!("/v1/pipelines/{pid}/documents"));
    let stored: Vec<&str> = docs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, vec![a.as_str(), b.as_str()]);
}
