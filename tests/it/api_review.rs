//! Human review and data products over HTTP.

use crate::common::*;
use serde_json::{json, Value};

struct Spec {
    sid: String,
    gate: String,
}

/// schema → resolve(total = net + tax) → valid(blocking: net <= 100, invoice number pattern).
fn spec(api: &Api, severity: &str) -> Spec {
    let s = api.create_schema(&json!({"name": "inv", "fields": [
        {"field_name": "invoice_number"}, {"field_name": "net", "data_type": "number"},
        {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"},
        {"field_name": "note"}]}));
    let sid = s["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "sum"}));
    let pid = p.body["id"].as_str().unwrap().to_string();
    for f in ["net", "tax", "total"] {
        api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": f, "type": "number"}),
        );
    }
    let r = api.post(
        &format!("/v1/data-policies/{pid}/rules"),
        &json!({"field_key": "total", "rule_type": "compute", "config": {"expr": "net + tax"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Checks", "severity": severity, "mechanisms": [
        {"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 100}, {"field": "invoice_number", "check": "regex", "pattern": "^INV-\\d+$"}]}]}));
    assert_eq!(g.status, 201, "{}", g.text);
    let gate = g.body["id"].as_str().unwrap().to_string();
    let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [pid]}}, {"type": "valid", "json": {"stage_ids": [gate]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    Spec { sid, gate }
}

fn run(api: &Api, sid: &str, docs: &[(&str, &str)]) -> String {
    let ids: Vec<String> = docs.iter().map(|(n, c)| upload(api, n, c)).collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": ids}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(api, &pid);
    pid
}

fn results(api: &Api, pid: &str) -> Vec<Value> {
    api.get(&format!(
        "/v1/pipelines/{pid}/results?include=cells&limit=200"
    ))
    .body["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn queue(api: &Api, query: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/field-reviews{query}"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn item<'a>(items: &'a [Value], doc: &str, field: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["document"]["name"] == doc && i["field_key"] == field)
        .unwrap_or_else(|| panic!("no item {doc}/{field} in {items:?}"))
}

const DOCS: [(&str, &str); 4] = [
    ("a.txt", "Invoice Number: INV-1\nNet: 500\nTax: 5"),
    ("b.txt", "Invoice Number: INV-2\nNet: 600\nTax: 6"),
    ("c.txt", "Invoice Number: X-3\nNet: 50\nTax: 5"),
    ("d.txt", "Invoice Number: INV-4\nNet: 700\nTax: 7"),
];

#[test]
fn a_full_review_loop_ends_complete_with_every_decision_logged_and_exports_matching() {
    let api = start();
    let spec = spec(&api, "blocking");
    let pid = run(&api, &spec.sid, &DOCS);
    let items = queue(&api, &format!("?pipeline_id={pid}"));
    assert_eq!(items.len(), 4, "{items:?}");
    let summary = api.get("/v1/field-reviews/summary").body;
    assert_eq!(summary["total"], 4);
    assert_eq!(summary["byTrigger"], json!({"gate": 4, "declarative": 0}));
    assert_eq!(summary["byPipeline"][0]["count"], 4);
    let a = item(&items, "a.txt", "net");
    assert_eq!(a["status"], "blocked");
    assert_eq!(a["current_value"], 500);
    assert_eq!(a["trigger"], "gate");
    assert_eq!(a["field_display_name"], "Net");
    // correct a's net, approve c's invoice number, override b's net, bulk-approve the rest.
    let r = resolve(
        &api,
        a["pipeline_document_id"].as_str().unwrap(),
        "net",
        json!({"action": "correct", "corrected_value": 50, "reason": "typo"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["resolveAction"], "correct");
    assert_eq!(r.body["fieldKey"], "net");
    let c = item(&items, "c.txt", "invoice_number");
    assert_eq!(
        resolve(
            &api,
            c["pipeline_document_id"].as_str().unwrap(),
            "invoice_number",
            json!({"action": "approve"})
        )
        .status,
        200
    );
    let b = item(&items, "b.txt", "net");
    assert_eq!(
        resolve(
            &api,
            b["pipeline_document_id"].as_str().unwrap(),
            "net",
            json!({"action": "override"})
        )
        .status,
        200
    );
    let d = item(&items, "d.txt", "net");
    let bulk = api.post(
        "/v1/field-reviews/bulk-resolve",
        &json!({"action": "approve", "items": [
        {"pipeline_document_id": d["pipeline_document_id"], "field_key": "net"},
        {"pipeline_document_id": "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e", "field_key": "net"}]}),
    );
    assert_eq!(bulk.status, 200, "{}", bulk.text);
    assert_eq!(
        (bulk.body["resolved"].clone(), bulk.body["failed"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        bulk.body["results"][1]["error"],
        "Pipeline document not found"
    );
    settle(&api, &pid);
    let rows = results(&api, &pid);
    assert!(rows.iter().all(|r| r["status"] == "complete"), "{rows:?}");
    assert_eq!(rows[0]["fields"]["net"], 50);
    assert_eq!(
        rows[0]["fields"]["total"], 55,
        "total recomputed from the corrected net"
    );
    assert_eq!(rows[1]["fields"]["net"], 600);
    assert_eq!(rows[1]["fields"]["total"], 606);
    assert!(queue(&api, "").is_empty());
    let log = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body;
    assert_eq!(log["total"], 4);
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<_> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["approve", "override", "approve", "correct"],
        "newest first"
    );
    let correct = &entries[3];
    assert_eq!(
        (correct["priorValue"].clone(), correct["finalValue"].clone()),
        (json!(500), json!(50))
    );
    assert_eq!(correct["decidedByName"], "Ada");
    assert_eq!(correct["stageName"], "Checks");
    assert_eq!(correct["triggerType"], "gate");
    assert_eq!(correct["reason"], "typo");
    // Data product: exports equal canonical values.
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert_eq!(dp.status, 201, "{}", dp.text);
    assert_eq!(
        dp.body["dataProduct"]["name"],
        format!(
            "{} — Data Product",
            api.get(&format!("/v1/pipelines/{pid}")).body["name"]
                .as_str()
                .unwrap()
        )
    );
    assert_eq!(dp.body["shareToken"], Value::Null);
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.post(
            &format!("/v1/pipelines/{pid}/data-product"),
            &json!({"name": "again"})
        )
        .status,
        200,
        "reactivate"
    );
    let dres = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    for (r, row) in dres["data"].as_array().unwrap().iter().zip(&rows) {
        assert_eq!(r["fields"], row["fields"]);
        assert_eq!(r["held"], json!([]));
    }
    let plain = send(
        api.http
            .get(api.url(&format!("/v1/data-products/{dpid}/export/plain")))
            .bearer_auth(api.key()),
    );
    assert_eq!(
        plain.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    let mut reader = csv::Reader::from_reader(plain.text.trim_start_matches('\u{feff}').as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        vec!["invoice_number", "net", "tax", "total", "note"]
    );
    let recs: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&recs[0][1], "50");
    assert_eq!(&recs[0][3], "55");
    assert_eq!(&recs[2][0], "X-3");
    let audit = send(
        api.http
            .get(api.url(&format!("/v1/data-products/{dpid}/export/audit")))
            .bearer_auth(api.key()),
    );
    let mut reader = csv::Reader::from_reader(audit.text.trim_start_matches('\u{feff}').as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        &header[0..4],
        &[
            "invoice_number",
            "invoice_number__source",
            "invoice_number__confidence",
            "invoice_number__reviewer"
        ]
    );
    let recs: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        (&recs[0][4], &recs[0][5], &recs[0][7]),
        ("50", "human_review", "Ada")
    );
}

#[test]
fn a_corrected_value_that_still_fails_is_blocked_again_and_an_approved_one_is_not() {
    let api = start();
    let spec = spec(&api, "blocking");
    let pid = run(&api, &spec.sid, &DOCS[..2]);
    let items = queue(&api, "");
    let a = item(&items, "a.txt", "net")["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = item(&items, "b.txt", "net")["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resolve(
            &api,
            &a,
            "net",
            json!({"action": "correct", "corrected_value": 400})
        )
        .status,
        200
    );
    assert_eq!(
        resolve(&api, &b, "net", json!({"action": "approve"})).status,
        200
    );
    settle(&api, &pid);
    let rows = results(&api, &pid);
    assert_eq!(rows[0]["status"], "partial");
    assert_eq!(rows[0]["cells"]["net"]["status"], "blocked");
    assert_eq!(rows[1]["status"], "complete");
    let items = queue(&api, "");
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["current_value"], 400,
        "a new review item for the corrected value"
    );
    let verdicts = api
        .get(&format!("/v1/pipelines/{pid}/documents/{b}/verdicts"))
        .body;
    let suppressed = verdicts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["fieldKey"] == "net" && v["pass"] == 2)
        .unwrap()
        .clone();
    assert_eq!(
        (
            suppressed["outcome"].clone(),
            suppressed["suppressed"].clone()
        ),
        (json!("fail"), json!(true))
    );
}

#[test]
fn reopen_undoes_the_pin_and_puts_the_field_back_in_review() {
    let api = start();
    let spec = spec(&api, "blocking");
    let pid = run(&api, &spec.sid, &DOCS[..1]);
    let pd = queue(&api, "")[0]["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_envelope(
        &resolve(&api, &pd, "tax", json!({"action": "reopen"})),
        400,
        "bad_request",
    );
    assert_eq!(
        resolve(
            &api,
            &pd,
            "net",
            json!({"action": "correct", "corrected_value": 40})
        )
        .status,
        200
    );
    settle(&api, &pid);
    assert_eq!(results(&api, &pid)[0]["fields"]["net"], 40);
    let r = resolve(
        &api,
        &pd,
        "net",
        json!({"action": "reopen", "reason": "check again"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "pending_review");
    let rows = results(&api, &pid);
    assert_eq!(rows[0]["status"], "partial");
    assert_eq!(rows[0]["fields"]["net"], Value::Null);
    assert_eq!(rows[0]["cells"]["total"]["status"], "waiting");
    let cells = api
        .get(&format!("/v1/pipelines/{pid}/documents/{pd}/cells"))
        .body;
    let net = cells["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_key"] == "net")
        .unwrap()
        .clone();
    assert_eq!(net["pinned"], false);
    let human = net["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["source"] == "human_review")
        .unwrap()
        .clone();
    assert_eq!(
        human["live"], false,
        "reopen ends the human version's liveness"
    );
    let items = queue(&api, "?status=pending_review");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["current_value"], 500);
    let detail = api.get(&format!("/v1/field-reviews/{pd}/net")).body;
    assert_eq!(detail["priorDecisions"].as_array().unwrap().len(), 2);
    assert_eq!(detail["priorDecisions"][1]["action"], "reopen");
    assert_eq!(detail["priorDecisions"][1]["finalValue"], Value::Null);
    assert_eq!(
        detail["matchedSpan"],
        json!({"text": "Net: 500", "approximate": false})
    );
    assert!(detail["cellHistory"].as_array().unwrap().len() >= 2);
    assert_eq!(detail["field"]["field_name"], "net");
    assert!(!detail["verdicts"].as_array().unwrap().is_empty());
    // Approving the reopened field (its last decision was at the gate) passes it under a guard.
    assert_eq!(
        resolve(&api, &pd, "net", json!({"action": "approve"})).status,
        200
    );
    settle(&api, &pid);
    assert_eq!(results(&api, &pid)[0]["status"], "complete");
    assert_eq!(results(&api, &pid)[0]["fields"]["net"], 500);
}

#[test]
fn held_cells_are_pending_review_in_the_audit_export_empty_in_plain_and_null_in_results() {
    let api = start();
    let spec = spec(&api, "blocking");
    let pid = run(&api, &spec.sid, &DOCS[..1]);
    let dp = api.post(
        &format!("/v1/pipelines/{pid}/data-product"),
        &json!({"name": "P"}),
    );
    assert_eq!(dp.status, 201, "{}", dp.text);
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap();
    let res = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    assert_eq!(res["data"][0]["held"], json!(["net", "total"]));
    assert_eq!(res["data"][0]["fields"]["net"], Value::Null);
    let plain = send(
        api.http
            .get(api.url(&format!("/v1/data-products/{dpid}/export/plain")))
            .bearer_auth(api.key()),
    )
    .text;
    assert!(plain.starts_with('\u{feff}'));
    assert!(!plain.contains("500"), "{plain}");
    let mut reader = csv::Reader::from_reader(plain.trim_start_matches('\u{feff}').as_bytes());
    let rec = reader.records().next().unwrap().unwrap();
    assert_eq!((&rec[1], &rec[3], &rec[2]), ("", "", "5"));
    let audit = send(
        api.http
            .get(api.url(&format!("/v1/data-products/{dpid}/export/audit")))
            .bearer_auth(api.key()),
    )
    .text;
    assert!(!audit.contains("500"), "never the held value: {audit}");
    let mut reader = csv::Reader::from_reader(audit.trim_start_matches('\u{feff}').as_bytes());
    let rec = reader.records().next().unwrap().unwrap();
    assert_eq!(&rec[4], "PENDING_REVIEW");
    assert_eq!(&rec[12], "PENDING_REVIEW");
    assert_eq!(results(&api, &pid)[0]["fields"]["net"], Value::Null);
    assert_eq!(api.get("/v1/data-products").body["pagination"]["total"], 1);
    assert_eq!(
        api.get(&format!("/v1/data-products/{dpid}")).body["pipeline_id"],
        pid.as_str()
    );
}

#[test]
fn a_gate_turned_blocking_and_a_new_data_product_blocks_exactly_the_failing_fields_and_turning_it_back_releases_them(
) {
    let api = start();
    let spec = spec(&api, "warning");
    let pid = run(&api, &spec.sid, &DOCS);
    assert!(results(&api, &pid)
        .iter()
        .all(|r| r["status"] == "complete"));
    let gate_path = format!("/v1/schemas/{}/validation-stages/{}", spec.sid, spec.gate);
    assert_eq!(
        api.patch(&gate_path, &json!({"severity": "blocking"}))
            .status,
        200
    );
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert_eq!(dp.status, 201, "{}", dp.text);
    let rows = results(&api, &pid);
    let statuses: Vec<_> = rows.iter().map(|r| r["status"].clone()).collect();
    assert_eq!(
        statuses,
        vec![
            json!("partial"),
            json!("partial"),
            json!("partial"),
            json!("partial")
        ]
    );
    assert_eq!(rows[0]["cells"]["net"]["status"], "blocked");
    assert_eq!(rows[0]["cells"]["total"]["status"], "waiting");
    assert_eq!(rows[2]["cells"]["invoice_number"]["status"], "blocked");
    assert_eq!(rows[2]["cells"]["net"]["status"], "completed");
    assert_eq!(queue(&api, "").len(), 4);
    // Decide one of them, then replay: the decision is newer than the verdict, so no re-block.
    let pd0 = rows[0]["pipeline_document_id"].as_str().unwrap();
    assert_eq!(
        resolve(&api, pd0, "net", json!({"action": "approve"})).status,
        200
    );
    settle(&api, &pid);
    let r = api.post(
        &format!("{gate_path}/replay-blocking"),
        &json!({"pipeline_id": pid}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["newlyBlocked"], 0);
    assert_eq!(results(&api, &pid)[0]["status"], "complete");
    // Back to warning: the rest are released and their documents finish.
    assert_eq!(
        api.patch(&gate_path, &json!({"severity": "warning"}))
            .status,
        200
    );
    let r = api.post(&format!("{gate_path}/replay-blocking"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["released"], 3, "{}", r.text);
    settle(&api, &pid);
    let rows = results(&api, &pid);
    assert!(rows.iter().all(|r| r["status"] == "complete"), "{rows:?}");
    assert_eq!(rows[1]["fields"]["total"], 606);
    assert!(queue(&api, "").is_empty());
}

#[test]
fn resolving_a_field_that_is_not_held_or_in_an_errored_document_is_400_and_writes_nothing() {
    let api = start();
    let spec = spec(&api, "blocking");
    let pid = run(&api, &spec.sid, &[DOCS[0], ("e.json", "{bad")]);
    let rows = results(&api, &pid);
    let pd = rows[0]["pipeline_document_id"].as_str().unwrap();
    let err_pd = rows[1]["pipeline_document_id"].as_str().unwrap();
    assert_envelope(
        &resolve(&api, pd, "tax", json!({"action": "approve"})),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(&api, err_pd, "net", json!({"action": "approve"})),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(
            &api,
            pd,
            "net",
            json!({"action": "approve", "corrected_value": 5}),
        ),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(&api, pd, "net", json!({"action": "correct"})),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(
            &api,
            pd,
            "net",
            json!({"action": "correct", "corrected_value": "fifty"}),
        ),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(&api, pd, "net", json!({"action": "bless"})),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(&api, pd, "net", json!({"action": "approve", "dry": true})),
        400,
        "bad_request",
    );
    assert_envelope(
        &resolve(&api, pd, "ghost", json!({"action": "approve"})),
        404,
        "not_found",
    );
    assert_envelope(
        &resolve(
            &api,
            "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e",
            "net",
            json!({"action": "approve"}),
        ),
        404,
        "not_found",
    );
    let other = api.new_org_key("other", "read,write", &[]);
    let r = send(
        api.http
            .post(api.url(&format!("/v1/field-reviews/{pd}/net/resolve")))
            .bearer_auth(&other)
            .json(&json!({"action": "approve"})),
    );
    assert_envelope(&r, 404, "not_found");
    assert_eq!(api.get("/v1/field-reviews/decisions").body["total"], 0);
    assert!(
        queue(&api, "")
            .iter()
            .all(|i| i["document"]["name"] != "e.json"),
        "error documents have no review items"
    );
    assert_envelope(
        &api.post(
            &format!("/v1/pipelines/{pid}/data-product"),
            &json!({"name": ""}),
        ),
        400,
        "bad_request",
    );
}

#[test]
fn the_decision_log_and_cells_refuse_update_and_delete_through_sql() {
    let api = start();
    let spec = spec(&api, "blocking");
    run(&api, &spec.sid, &DOCS[..1]);
    let pd = queue(&api, "")[0]["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resolve(
            &api,
            &pd,
            "net",
            json!({"action": "correct", "corrected_value": 1})
        )
        .status,
        200
    );
    let c = api.srv.store_connection();
    for sql in [
        "UPDATE review_decisions SET action = 'approve'",
        "DELETE FROM review_decisions",
        "UPDATE cells SET value = '0'",
        "DELETE FROM cells",
    ] {
        let err = c.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = c
        .query_row("SELECT count(*) FROM review_decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn csv_exports_survive_awkward_text_and_keep_negative_numbers_numeric() {
    let api = start();
    let s = api.create_schema(&json!({"name": "csv", "fields": [{"field_name": "label"}, {"field_name": "amount", "data_type": "number"}]}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let labels = [
        "Smith, \"Jr\"",
        "=HYPERLINK(\"x\")",
        "Grüße — naïve ☃",
        "+1 line",
        "@cmd",
        "-minus",
    ];
    let docs: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| json!({"filename": format!("{i}.json"), "content": json!({"label": l, "amount": -12.5 - i as f64}).to_string()}))
        .collect();
    let mut docs = docs;
    docs.push(json!({"filename": "nl.json", "content": json!({"label": "two\nlines", "amount": 3}).to_string()}));
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap();
    let plain = send(
        api.http
            .get(api.url(&format!("/v1/data-products/{dpid}/export/plain")))
            .bearer_auth(api.key()),
    )
    .text;
    let mut reader = csv::Reader::from_reader(plain.trim_start_matches('\u{feff}').as_bytes());
    let recs: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 7);
    assert_eq!(&recs[0][0], "Smith, \"Jr\"");
    assert_eq!(&recs[1][0], "'=HYPERLINK(\"x\")");
    assert_eq!(&recs[2][0], "Grüße — naïve ☃");
    assert_eq!(&recs[3][0], "'+1 line");
    assert_eq!(&recs[4][0], "'@cmd");
    assert_eq!(&recs[5][0], "'-minus");
    assert_eq!(&recs[6][0], "two\nlines");
    assert_eq!(&recs[0][1], "-12.5", "negative numbers stay numbers");
    assert_eq!(recs[5][1].parse::<f64>().unwrap(), -17.5);
}

#[test]
fn a_hold_gate_keeps_fields_out_of_the_queue_unless_asked_and_they_resolve_the_same() {
    let api = start();
    let s = api.create_schema(
        &json!({"name": "h", "fields": [{"field_name": "net", "data_type": "number"}]}),
    );
    let sid = s["id"].as_str().unwrap();
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Hold big", "severity": "blocking",
        "blocking_config": {"on_block": "hold"},
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 100}]}]}));
    assert_eq!(g.status, 201, "{}", g.text);
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}, {"type": "valid"}]}),
    );
    let pid = run(&api, sid, &[("big.txt", "Net: 500")]);
    assert!(
        queue(&api, "").is_empty(),
        "held fields are not listed by default"
    );
    assert_eq!(api.get("/v1/field-reviews/summary").body["total"], 0);
    let held = queue(&api, "?routing=hold");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["status"], "blocked");
    let pd = held[0]["pipeline_document_id"].as_str().unwrap();
    let r = resolve(
        &api,
        pd,
        "net",
        json!({"action": "override", "corrected_value": 90}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["fieldKey"], "net");
    settle(&api, &pid);
    assert_eq!(results(&api, &pid)[0]["fields"]["net"], 90);
    assert!(queue(&api, "?routing=hold").is_empty());
}

#[test]
fn a_requires_review_field_waits_in_the_queue_as_pending_review_until_approved() {
    let api = start();
    let s = api.create_schema(&json!({"name": "rr", "fields": [{"field_name": "vendor", "requires_review": true}, {"field_name": "note"}]}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let pid = run(&api, sid, &[("v.txt", "Vendor: Acme\nNote: hi")]);
    let items = queue(&api, "?trigger=declarative");
    assert_eq!(items.len(), 1);
    assert_eq!(
        (
            items[0]["status"].clone(),
            items[0]["current_value"].clone()
        ),
        (json!("pending_review"), json!("Acme"))
    );
    assert_eq!(results(&api, &pid)[0]["status"], "partial");
    let pd = items[0]["pipeline_document_id"].as_str().unwrap();
    let r = resolve(&api, pd, "vendor", json!({"action": "approve"}));
    assert_eq!(r.body["status"], "completed");
    assert!(r.body["deliveredAt"].is_string());
    let rows = results(&api, &pid);
    assert_eq!(rows[0]["status"], "complete");
    assert_eq!(rows[0]["fields"]["vendor"], "Acme");
    // A rerun keeps the decision: the value still matches it, so no new review item.
    assert_eq!(
        api.post(
            &format!("/v1/pipelines/{pid}/rerun"),
            &json!({"from_phase": "extraction"})
        )
        .status,
        200
    );
    settle(&api, &pid);
    assert_eq!(results(&api, &pid)[0]["status"], "complete");
    assert!(queue(&api, "").is_empty());
}

#[test]
fn the_queue_filters_by_field_and_gate_orders_oldest_first_and_an_item_names_its_waiting_dependents(
) {
    let api = start();
    let world = crate::common::world::World::build(&api);
    let q = |query: &str| -> Vec<(String, String)> {
        let r = api.get(&format!("/v1/field-reviews{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        queue_items(&r)
    };
    let all = q("");
    assert_eq!(all.len(), 1);
    assert_eq!(q(&format!("?field_key={}", world.held_field)), all);
    assert!(q("?field_key=tax").is_empty());
    assert_eq!(q(&format!("?stage_id={}", world.stage)), all);
    assert!(q("?stage_id=0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01").is_empty());
    assert_eq!(q("?order=asc"), all);
    for bad in ["?field_key=Net!", "?stage_id=x", "?order=oldest", "?gate=x"] {
        assert_envelope(
            &api.get(&format!("/v1/field-reviews{bad}")),
            400,
            "bad_request",
        );
    }
    // A second held item: newest first by default, oldest first on asking.
    let doc = upload(&api, "d.txt", "Invoice Number: INV-4\nNet: 900\nTax: 9");
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": world.schema, "document_ids": [doc]}),
    );
    let pid = p.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    let newest = q("");
    let oldest = q("?order=asc");
    assert_eq!(newest.len(), 2);
    assert_eq!(oldest, newest.iter().rev().cloned().collect::<Vec<_>>());
    let first = api.get("/v1/field-reviews?order=asc&limit=1");
    let cursor = first.body["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        q(&format!("?order=asc&limit=1&cursor={cursor}")),
        vec![oldest[1].clone()]
    );
    assert_envelope(
        &api.get(&format!("/v1/field-reviews?limit=1&cursor={cursor}")),
        400,
        "bad_request",
    );
    // The held net holds total, computed from it.
    let d = api.get(&format!(
        "/v1/field-reviews/{}/{}",
        world.held_pd, world.held_field
    ));
    assert_eq!(d.status, 200, "{}", d.text);
    assert!(d.body["waitingDependents"].is_array(), "{}", d.text);
}

#[test]
fn a_settled_run_s_queue_lists_what_it_counts_and_empties_when_every_item_is_resolved() {
    const KEY: &str = "tlnc_test_queuequeuequeuequeuequeuequeue01";
    let store = quire::testing::TestDb::fresh();
    let (mut child, port) = spawn_server(&store.db, KEY, &["--workers", "2"]);
    let api = Remote::new(port, KEY);
    let sid = invoice_spec(
        &api,
        &json!({"name": "Limit", "severity": "blocking",
            "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 5000}]}]}),
    );
    let docs: Vec<Value> = (0..200)
        .map(|i| {
            let f = quire::tools::fixtures::invoice(5, i);
            json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type})
        })
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let settled = || {
        wait_for(120, || {
            let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
            (p["status"] != "active" && p["status"] != "queued").then_some(p)
        })
    };
    settled();
    let rows = || {
        db_count(
            &store.db,
            "SELECT count(*) FROM held_fields WHERE pipeline_id = ?1",
            &pid,
        )
    };
    let held = rows();
    assert!(held > 0, "the run holds no field");
    // Every page lists what the count says, each item once.
    let mut items: Vec<(String, String)> = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api.get(&format!(
            "/v1/field-reviews?pipeline_id={pid}&limit=20&cursor={cursor}"
        ));
        assert_eq!(page.status, 200, "{}", page.text);
        assert_eq!(
            page.body["pagination"]["total"], held,
            "{}",
            page.body["pagination"]
        );
        items.extend(queue_items(&page));
        match page.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let listed = items.len();
    items.sort();
    items.dedup();
    assert_eq!((listed, items.len() as i64), (items.len(), held));
    for (pd, field) in &items {
        let r = api.post(
            &format!("/v1/field-reviews/{pd}/{field}/resolve"),
            &json!({"action": "override", "corrected_value": 4999, "reason": "checked"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    settled();
    assert_eq!(rows(), 0, "a resolved field leaves the queue's index");
    let queue = api.get(&format!("/v1/field-reviews?pipeline_id={pid}"));
    assert_eq!(queue.body["pagination"]["total"], 0, "{}", queue.text);
    assert!(queue_items(&queue).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}
