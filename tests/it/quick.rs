//! The quick tier as Talonic's clients use it: `POST /v1/extract`, extractions, corrections,
//! re-extract, jobs, the Field Registry's lookups, search, filter and the account answers.

use crate::common::*;
use quire::tools::pdf_writer::{pdf, Line};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{json, Value};

const INVOICE: &str =
    "Invoice Number: INV-7\nInvoice Date: 2024-03-05\nTotal: 1,234.50\nVendor: Acme Corp\n";

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "invoice_number": {"type": "string", "title": "Invoice No"},
        "total": {"type": "number"},
        "vendor": {"type": "string"}}})
}

/// `POST /v1/extract` as multipart: a file and the text parts given.
fn extract_multipart(
    api: &Api,
    key: &str,
    name: &str,
    bytes: Vec<u8>,
    parts: &[(&str, String)],
) -> Resp {
    let mut form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_string()));
    for (k, v) in parts {
        form = form.text(k.to_string(), v.clone());
    }
    send(
        api.http
            .post(api.url("/v1/extract"))
            .bearer_auth(key)
            .multipart(form),
    )
}

fn id_of(r: &Resp) -> String {
    r.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {}", r.text))
        .to_string()
}

fn poll_extraction(api: &Api, id: &str) -> Value {
    wait_for(60, || {
        let r = api.get(&format!("/v1/extractions/{id}"));
        (r.body["status"] != "processing").then_some(r.body)
    })
}

#[test]
fn a_small_document_is_extracted_at_once_with_values_confidence_and_talonic_headers() {
    let api = start();
    let schema_text = schema().to_string();
    let r = extract_multipart(
        &api,
        api.key(),
        "inv.txt",
        INVOICE.as_bytes().to_vec(),
        &[
            ("schema", schema_text.clone()),
            ("include_markdown", "True".into()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let b = &r.body;
    assert_eq!(b["status"], "complete");
    assert_eq!(b["id"], b["extraction_id"]);
    assert!(b["request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(
        b["data"],
        json!({"invoice_number": "INV-7", "total": 1234.5, "vendor": "Acme Corp"})
    );
    assert_eq!(b["confidence"]["fields"]["total"], 0.95);
    assert_eq!(b["confidence"]["overall"], 0.95);
    assert_eq!(b["locked_fields"], json!([]));
    assert_eq!(b["document"]["filename"], "inv.txt");
    assert_eq!(b["document"]["pages"], 1);
    assert_eq!(b["schema"]["source"], "inline");
    assert_eq!(
        b["schema"]["definition"]["properties"]["invoice_number"]["title"],
        "Invoice No"
    );
    assert!(b["markdown"].as_str().unwrap().contains("INV-7"));
    assert_eq!(b["processing"]["pages_processed"], 1);
    for (h, v) in [
        ("x-talonic-cost-credits", "0"),
        ("x-talonic-cells-resolved-ai", "3"),
        ("x-talonic-cells-resolved-registry", "0"),
    ] {
        assert_eq!(r.header(h).as_deref(), Some(v), "{h}");
    }
    // The inline schema is a spec of its own, kept out of the schema list and reused.
    assert_eq!(api.get("/v1/schemas").body["pagination"]["total"], 0);
    let again = extract_multipart(
        &api,
        api.key(),
        "inv2.txt",
        b"Total: 5".to_vec(),
        &[("schema", schema_text)],
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["schema"]["id"], b["schema"]["id"]);
    assert_eq!(again.body["data"]["total"], 5);
    assert_eq!(again.body["confidence"]["overall"], 0.95);
    // An extraction is a run: its cells and versions are readable like any pipeline's.
    let id = id_of(&r);
    let docs = api.get(&format!("/v1/pipelines/{id}/documents"));
    assert_eq!(docs.body["data"][0]["status"], "complete", "{}", docs.text);
    // Governed pipelines are listed; extractions are not.
    assert_eq!(api.get("/v1/pipelines").body["pagination"]["total"], 0);
}

#[test]
fn a_saved_schema_by_short_id_a_stored_document_and_the_three_schema_forms_extract_alike() {
    let api = start();
    let s = api.create_schema(&json!({"name": "inv", "definition": schema()}));
    let doc = upload(&api, "inv.txt", INVOICE);
    let by_short = api.post(
        "/v1/extract",
        &json!({"document_id": doc, "schema_id": s["short_id"]}),
    );
    assert_eq!(by_short.status, 200, "{}", by_short.text);
    assert_eq!(by_short.body["schema"]["source"], "saved");
    assert_eq!(by_short.body["schema"]["id"], s["id"]);
    // A governed pipeline, a rail and a read take the short id too.
    let short = s["short_id"].as_str().unwrap();
    let rail = api.put(
        &format!("/v1/schemas/{short}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    assert_eq!(rail.status, 200, "{}", rail.text);
    assert_eq!(api.get(&format!("/v1/schemas/{short}")).body["id"], s["id"]);
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": short, "document_ids": [doc]}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    assert_eq!(p.body["schema"]["id"], s["id"]);
    let forms = [
        json!({"invoice_number": "string", "total": "number", "vendor": "string"}),
        json!([{"field_name": "invoice_number"}, {"field_name": "total", "data_type": "number"},
               {"field_name": "vendor"}]),
        schema(),
    ];
    for form in forms {
        let r = api.post("/v1/extract", &json!({"document_id": doc, "schema": form}));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["data"], by_short.body["data"], "{form}");
    }
    // Inline content in JSON, as POST /v1/documents takes it.
    let r = api.post(
        "/v1/extract",
        &json!({"filename": "x.txt", "content": "Vendor: Initech", "schema": {"vendor": "string"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["vendor"], "Initech");
}

#[test]
fn bad_extract_requests_are_refused_and_change_nothing() {
    let api = start();
    let doc = upload(&api, "inv.txt", INVOICE);
    let s = api.create_schema(&json!({"name": "inv", "fields": {"total": "number"}}));
    let cases = [
        (json!({"document_id": doc}), 400, "bad_request"),
        (
            json!({"document_id": doc, "schema": {"total": "number"}, "schema_id": s["id"]}),
            400,
            "bad_request",
        ),
        (
            json!({"file_url": "https://example.com/a.pdf", "schema": {"total": "number"}}),
            400,
            "bad_request",
        ),
        (
            json!({"schema": {"total": "number"}}),
            400,
            "missing_document",
        ),
        (
            json!({"document_id": "nope", "schema": {"total": "number"}}),
            400,
            "bad_request",
        ),
        (
            json!({"document_id": doc, "schema": {"Total!": "number"}}),
            400,
            "bad_request",
        ),
        (
            json!({"document_id": doc, "schema_id": "SCH-00000000"}),
            404,
            "not_found",
        ),
        (
            json!({"document_id": "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01", "schema_id": s["id"]}),
            404,
            "not_found",
        ),
        (
            json!({"document_id": doc, "schema_id": s["id"], "options": {"async": "yes"}}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        assert_envelope(&api.post("/v1/extract", &body), status, code);
    }
    let r = extract_multipart(
        &api,
        api.key(),
        "a.exe",
        vec![0x4d, 0x5a, 0, 1],
        &[("schema", "{\"total\":\"number\"}".into())],
    );
    assert_envelope(&r, 415, "unsupported_media_type");
    let r = extract_multipart(
        &api,
        api.key(),
        "a.txt",
        b"Total: 1".to_vec(),
        &[("schema", "{not json".into())],
    );
    assert_envelope(&r, 400, "bad_request");
    assert_eq!(api.get("/v1/extractions").body["pagination"]["total"], 0);
    assert_eq!(api.get("/v1/documents").body["pagination"]["total"], 1);
}

#[test]
fn a_long_document_or_an_async_request_is_answered_202_and_polled() {
    let api = start();
    let pages: Vec<Vec<Line>> = (1..=6)
        .map(|n| {
            vec![
                Line::at(50.0, 50.0, format!("Page {n}")),
                Line::at(50.0, 80.0, "Total: 42.00"),
            ]
        })
        .collect();
    let r = extract_multipart(
        &api,
        api.key(),
        "long.pdf",
        pdf(&pages),
        &[("schema", "{\"total\":\"number\"}".into())],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["status"], "processing");
    assert_eq!(r.body["job"]["status"], "queued");
    let id = id_of(&r);
    assert_eq!(r.body["job"]["poll_url"], format!("/v1/extractions/{id}"));
    let done = poll_extraction(&api, &id);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["document"]["pages"], 6);
    assert_eq!(done["data"]["total"], 42.0);
    let doc = upload(&api, "inv.txt", INVOICE);
    let r = api.post(
        "/v1/extract",
        &json!({"document_id": doc, "schema": {"total": "number"}, "options": {"async": true}}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(poll_extraction(&api, &id_of(&r))["data"]["total"], 1234.5);
}

#[test]
fn a_correction_is_a_human_version_locked_at_full_confidence_with_a_decision() {
    let api = start();
    let doc = upload(&api, "inv.txt", INVOICE);
    let x = api.post(
        "/v1/extract",
        &json!({"document_id": doc, "schema": schema()}),
    );
    let id = id_of(&x);
    let r = api.patch(
        &format!("/v1/extractions/{id}/data"),
        &json!({"corrections": [{"field": "total", "value": 1300, "reason": "credit note"},
                                {"path": "vendor", "value": "=ACME"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["locked_fields"], json!(["total", "vendor"]));
    assert_eq!(r.body["confidence"]["fields"]["total"], 1.0);
    assert_eq!(r.body["data"]["total"], 1300);
    let data = api.get(&format!("/v1/extractions/{id}/data"));
    assert_eq!(
        data.body,
        json!({"invoice_number": "INV-7", "total": 1300, "vendor": "=ACME"})
    );
    let csv = api.get(&format!("/v1/extractions/{id}/data?format=csv"));
    assert_eq!(
        csv.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        csv.text,
        "\u{feff}invoice_number,total,vendor\r\nINV-7,1300,'=ACME\r\n"
    );
    let log = api.get("/v1/field-reviews/decisions");
    let entries = log.body["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{}", log.text);
    let total = entries.iter().find(|e| e["fieldKey"] == "total").unwrap();
    assert_eq!(total["action"], "correct");
    assert_eq!(total["triggerType"], "correction");
    assert_eq!(
        (total["priorValue"].clone(), total["finalValue"].clone()),
        (json!(1234.5), json!(1300))
    );
    assert_eq!(total["reason"], "credit note");
    assert!(total["decidedBy"].is_string() && total["decidedByName"].is_string());
    let pd = api.get(&format!("/v1/pipelines/{id}/documents")).body["data"][0]["id"].clone();
    let cells = field_cells(&api, &id, pd.as_str().unwrap(), "total");
    let last = cells["versions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["source"].clone(), last["confidence"].clone()),
        (json!("human_review"), json!(1.0))
    );
    // Confirming a value as it stands is a correction too: locked at 1.0.
    let r = api.patch(
        &format!("/v1/extractions/{id}/data"),
        &json!({"corrections": [{"field": "invoice_number", "value": "INV-7"}]}),
    );
    assert_eq!(
        r.body["confidence"]["fields"]["invoice_number"], 1.0,
        "{}",
        r.text
    );
    assert_eq!(
        r.body["locked_fields"],
        json!(["invoice_number", "total", "vendor"])
    );
    // A batch is one change: a bad item refuses the good one before it too.
    let r = api.patch(
        &format!("/v1/extractions/{id}/data"),
        &json!({"corrections": [{"field": "total", "value": 1}, {"field": "total", "value": "x"}]}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert_eq!(
        api.get(&format!("/v1/extractions/{id}/data")).body["total"],
        1300
    );
    // Bad corrections change nothing.
    for body in [
        json!({"corrections": []}),
        json!({"corrections": [{"field": "total", "value": "lots"}]}),
        json!({"corrections": [{"field": "nope", "value": 1}]}),
        json!({"corrections": [{"value": 1}]}),
    ] {
        assert_envelope(
            &api.patch(&format!("/v1/extractions/{id}/data"), &body),
            400,
            "bad_request",
        );
    }
    assert_eq!(api.get("/v1/field-reviews/decisions").body["total"], 3);
}

#[test]
fn extractions_are_listed_filtered_and_re_extracted() {
    let api = start();
    let a = upload(&api, "a.txt", INVOICE);
    let b = upload(&api, "b.txt", "Total: 9");
    let first = id_of(&api.post(
        "/v1/extract",
        &json!({"document_id": a, "schema": {"total": "number"}}),
    ));
    id_of(&api.post(
        "/v1/extract",
        &json!({"document_id": b, "schema": {"total": "number"}}),
    ));
    let all = api.get("/v1/extractions");
    assert_eq!(all.body["pagination"]["total"], 2);
    assert_eq!(
        all.body["data"][0]["document_filename"], "b.txt",
        "newest first"
    );
    let of_a = api.get(&format!("/v1/extractions?document_id={a}&status=complete"));
    assert_eq!(of_a.body["data"][0]["id"], first.as_str());
    assert_eq!(of_a.body["data"][0]["confidence_overall"], 0.95);
    assert_eq!(
        api.get("/v1/extractions?status=failed").body["pagination"]["total"],
        0
    );
    assert_envelope(&api.get("/v1/extractions?status=done"), 400, "bad_request");
    assert_envelope(&api.get("/v1/extractions?schema=x"), 400, "bad_request");
    // Re-extract without a schema runs the document's latest extraction's spec again.
    let again = api.post(&format!("/v1/documents/{a}/re-extract"), &json!({}));
    assert_eq!(again.status, 200, "{}", again.text);
    assert_ne!(again.body["id"], first.as_str());
    assert_eq!(again.body["data"]["total"], 1234.5);
    let of_doc = api.get(&format!("/v1/documents/{a}/extractions"));
    assert_eq!(of_doc.body["pagination"]["total"], 2);
    let fresh = upload(&api, "c.txt", "Total: 1");
    assert_envelope(
        &api.post(&format!("/v1/documents/{fresh}/re-extract"), &json!({})),
        400,
        "bad_request",
    );
    assert_envelope(
        &api.get("/v1/extractions/0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01"),
        404,
        "not_found",
    );
}

#[test]
fn the_extract_scope_is_granted_by_write_and_alone_allows_only_extraction() {
    let api = start();
    let reader = api.new_org_key("default", "read", &[]);
    let writer = api.new_org_key("default", "read,write", &[]);
    let extractor = api.new_org_key("default", "extract", &[]);
    let body = json!({"filename": "a.txt", "content": "Total: 3", "schema": {"total": "number"}});
    let r = api.post_as(&reader, "/v1/extract", &body);
    assert_envelope(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scopes"], json!(["extract"]));
    assert_eq!(api.post_as(&writer, "/v1/extract", &body).status, 200);
    assert_eq!(api.post_as(&extractor, "/v1/extract", &body).status, 200);
    assert_envelope(
        &api.post_as(
            &extractor,
            "/v1/documents",
            &json!({"filename": "b.txt", "content": "x"}),
        ),
        403,
        "insufficient_scope",
    );
}

#[test]
fn a_job_runs_every_completed_document_reports_its_grid_and_cancels_idempotently() {
    let api = start();
    let s = api
        .create_schema(&json!({"name": "inv", "fields": {"total": "number", "vendor": "string"}}));
    upload(&api, "a.txt", INVOICE);
    upload(&api, "b.txt", "Total: 9");
    let created = api.post("/v1/jobs", &json!({"schema_id": s["id"]}));
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["status"], "pending");
    assert_eq!(created.body["document_count"], 2);
    assert_eq!(created.body["name"], "inv job");
    let id = id_of(&created);
    let job = wait_for(60, || {
        let j = api.get(&format!("/v1/jobs/{id}")).body;
        (j["status"] == "complete").then_some(j)
    });
    assert_eq!(job["progress"], 100);
    assert_eq!(job["completed_documents"], 2);
    assert_eq!(job["current_phase"], "completed");
    assert_eq!(
        job["grid_stats"],
        json!({"total_cells": 4, "filled": 3, "empty": 1, "fill_rate": 0.75})
    );
    assert!(job["links"].get("cancel").is_none());
    let results = api.get(&format!("/v1/jobs/{id}/results"));
    assert_eq!(results.body["total_rows"], 2);
    assert_eq!(results.body["job_status"], "complete");
    assert_eq!(
        results.body["data"][0]["values"],
        json!({"total": 1234.5, "vendor": "Acme Corp"})
    );
    assert_eq!(
        results.body["data"][1]["values"],
        json!({"total": 9, "vendor": null})
    );
    // Cancelling a finished job answers it unchanged.
    let c = api.post(&format!("/v1/jobs/{id}/cancel"), &json!({}));
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["status"], "complete");
    assert_eq!(
        api.get("/v1/jobs?status=complete").body["pagination"]["total"],
        1
    );
    assert_eq!(
        api.get("/v1/jobs?status=failed").body["pagination"]["total"],
        0
    );
    // A job is a pipeline of the fixed rail, listed with the governed runs.
    assert_eq!(api.get("/v1/pipelines").body["pagination"]["total"], 1);
    for (body, status) in [
        (json!({}), 400),
        (json!({"schema_id": "SCH-00000000"}), 404),
        (
            json!({"schema_id": s["id"], "document_ids": ["0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01"]}),
            404,
        ),
        (json!({"schema_id": s["id"], "name": ""}), 400),
    ] {
        assert_eq!(api.post("/v1/jobs", &body).status, status, "{body}");
    }
    assert_envelope(&api.get("/v1/jobs?order=asc"), 400, "bad_request");
}

#[test]
fn an_active_job_is_cancelled_and_reads_failed_with_the_reason() {
    let api = start();
    let s = api.create_schema(&json!({"name": "inv", "fields": {"total": "number"}}));
    let docs: Vec<String> = (0..40)
        .map(|i| upload(&api, &format!("d{i}.txt"), &format!("Total: {i}")))
        .collect();
    api.srv.pause_executor();
    let id = id_of(&api.post(
        "/v1/jobs",
        &json!({"schema_id": s["id"], "document_ids": docs}),
    ));
    let queued = api.get(&format!("/v1/jobs/{id}")).body;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["current_phase"], "phase_1_resolve");
    assert!(queued["links"]["cancel"].is_string());
    let c = api.post(&format!("/v1/jobs/{id}/cancel"), &json!({}));
    api.srv.resume_executor();
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["status"], "failed");
    assert_eq!(c.body["error"]["code"], "cancelled");
}

#[test]
fn lists_apply_the_clients_filters_and_refuse_unknown_ones() {
    let api = start();
    let a = api.post(
        "/v1/documents",
        &json!({"filename": "Alpha invoice.txt", "content": "Total: 1",
        "metadata": {"source_id": "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0a"}}),
    );
    let b = upload(&api, "beta.txt", "Total: 2");
    let names = |q: &str| -> Vec<String> {
        let r = api.get(&format!("/v1/documents{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["filename"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("?status=error"), Vec::<String>::new());
    assert_eq!(
        names("?status=completed&order=asc"),
        vec!["Alpha invoice.txt", "beta.txt"]
    );
    assert_eq!(names("?search=ALPHA"), vec!["Alpha invoice.txt"]);
    assert_eq!(
        names("?source_id=0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0a"),
        vec!["Alpha invoice.txt"]
    );
    let created = a.body["created_at"].as_str().unwrap();
    assert_eq!(
        names(&format!("?after={created}&order=asc")),
        vec!["beta.txt"]
    );
    assert_eq!(names(&format!("?before={created}")), Vec::<String>::new());
    assert_eq!(names("?after=2000-01-01&limit=1").len(), 1);
    // A cursor of one order is not taken by the other.
    let page = api.get("/v1/documents?order=asc&limit=1");
    let cursor = page.body["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        names(&format!("?order=asc&limit=1&cursor={cursor}")),
        vec!["beta.txt"]
    );
    assert_envelope(
        &api.get(&format!("/v1/documents?cursor={cursor}")),
        400,
        "bad_request",
    );
    for q in [
        "?state=error",
        "?status=done",
        "?order=newest",
        "?after=yesterday",
        "?source_id=x",
    ] {
        assert_envelope(&api.get(&format!("/v1/documents{q}")), 400, "bad_request");
    }
    assert_envelope(&api.get("/v1/schemas?search=x"), 400, "bad_request");
    let _ = b;
}

#[test]
fn fields_are_found_by_search_cluster_and_likeness() {
    let api = start();
    api.create_schema(&json!({"name": "a", "fields": [
        {"field_name": "invoice_number"}, {"field_name": "rechnungsnummer"},
        {"field_name": "ship_date", "data_type": "date"}, {"field_name": "ship_port"},
        {"field_name": "colour", "synonyms": ["Farbe"]}]}));
    let fields = api.get("/v1/fields?limit=100").body["data"]
        .as_array()
        .unwrap()
        .clone();
    let by_name = |n: &str| {
        fields
            .iter()
            .find(|f| f["canonical_name"] == n)
            .unwrap()
            .clone()
    };
    let inv = by_name("invoice_number");
    assert_eq!(
        (inv["tier"].clone(), inv["cluster_name"].clone()),
        (json!(1), json!("invoice number"))
    );
    assert_eq!(by_name("colour")["cluster_name"], Value::Null);
    let one = api.get(&format!("/v1/fields/{}", inv["id"].as_str().unwrap()));
    assert_eq!(one.body["canonical_name"], "invoice_number");
    let search = |q: &str| -> Vec<String> {
        api.get(&format!("/v1/fields?{q}")).body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["canonical_name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(search("search=farbe"), vec!["colour"]);
    let mut clustered = search("cluster=Invoice%20Number");
    clustered.sort();
    assert_eq!(clustered, vec!["invoice_number", "rechnungsnummer"]);
    assert_eq!(search("tier=2").len(), 0);
    assert_envelope(&api.get("/v1/fields?tier=top"), 400, "bad_request");
    assert_envelope(&api.get("/v1/fields?kind=x"), 400, "bad_request");
    let similar = api.get(&format!(
        "/v1/fields/{}/similar",
        by_name("ship_date")["id"].as_str().unwrap()
    ));
    assert_eq!(
        similar.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        similar.text
    );
    assert_eq!(similar.body["data"][0]["canonical_name"], "ship_port");
    let s = similar.body["data"][0]["similarity"].as_f64().unwrap();
    assert!((s - 1.0 / 3.0).abs() < 1e-9, "{s}");
    let alike = api.get(&format!(
        "/v1/fields/{}/similar",
        inv["id"].as_str().unwrap()
    ));
    assert_eq!(alike.body["data"][0]["canonical_name"], "rechnungsnummer");
    assert_eq!(alike.body["data"][0]["similarity"], 1.0);
    assert_envelope(
        &api.get("/v1/fields/0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01"),
        404,
        "not_found",
    );
}

#[test]
fn search_and_filter_read_documents_and_their_current_values() {
    let api = start();
    let fields = json!({"invoice_number": "string", "total": "number", "vendor": "string"});
    for (name, text) in [
        (
            "a.txt",
            "Invoice Number: A-1\nTotal: 100\nVendor: Acme Corp",
        ),
        ("b.txt", "Invoice Number: B-2\nTotal: 250\nVendor: Globex"),
        ("c.txt", "Invoice Number: C-3\nVendor: Acme Labs"),
    ] {
        let r = api.post(
            "/v1/extract",
            &json!({"filename": name, "content": text, "schema": fields}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let s = api.get("/v1/search?q=acme");
    assert_eq!(s.status, 200, "{}", s.text);
    let docs: Vec<&str> = s.body["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(docs, vec!["c.txt", "a.txt"]);
    let matches = s.body["fieldMatches"].as_array().unwrap();
    assert_eq!(matches.len(), 2, "{}", s.text);
    assert!(matches.iter().all(|m| m["fieldName"] == "vendor"
        && m["documentCount"] == 1
        && m["resolvedFieldId"].is_string()));
    assert_eq!(s.body["sources"], json!([]));
    let v = api.get("/v1/search?query=vend");
    assert_eq!(v.body["fields"][0]["canonicalName"], "vendor");
    assert_eq!(v.body["fields"][0]["documentCount"], 3);
    assert_eq!(api.get("/v1/search?q=").body["documents"], json!([]));
    let filter = |body: Value| -> Resp {
        let r = api.post("/v1/documents/filter", &body);
        assert!(r.status == 200 || r.status == 400, "{}", r.text);
        r
    };
    let names = |r: &Resp| -> Vec<String> {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["filename"].as_str().unwrap().to_string())
            .collect()
    };
    let r = filter(json!({"conditions": [{"fieldId": "total", "operator": "gt", "value": 150}]}));
    assert_eq!(names(&r), vec!["b.txt"]);
    assert_eq!(r.body["data"][0]["fields"]["vendor"], "Globex");
    let r = filter(
        json!({"conditions": [{"field": "vendor", "operator": "contains", "value": "acme"}],
                          "sort": {"fieldId": "invoice_number", "direction": "desc"}}),
    );
    assert_eq!(names(&r), vec!["c.txt", "a.txt"]);
    let r = filter(
        json!({"conditions": [{"fieldId": "total", "operator": "between", "value": 50, "valueTo": 300}],
                          "sort": {"field": "total", "direction": "asc"}, "limit": 1, "page": 2}),
    );
    assert_eq!(
        (names(&r), r.body["total"].clone()),
        (vec!["b.txt".to_string()], json!(2))
    );
    assert_eq!(r.body["pagination"]["has_more"], false);
    // Pages by number or by the cursor the SDK sends; a page size over 500 reads as 500.
    let first =
        filter(json!({"sort": {"field": "invoice_number", "direction": "asc"}, "limit": 2}));
    assert_eq!(names(&first), vec!["a.txt", "b.txt"]);
    let cursor = first.body["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let next = filter(
        json!({"sort": {"field": "invoice_number", "direction": "asc"}, "limit": 2, "cursor": cursor}),
    );
    assert_eq!(
        (names(&next), next.body["page"].clone()),
        (vec!["c.txt".to_string()], json!(2))
    );
    assert_eq!(next.body["pagination"]["next_cursor"], Value::Null);
    assert_eq!(
        filter(json!({"limit": 600})).body["pagination"]["limit"],
        500
    );
    let r = filter(json!({"conditions": [{"fieldId": "total", "operator": "is_empty"}]}));
    assert_eq!(names(&r), vec!["c.txt"]);
    let r = filter(json!({"conditions": [{"fieldId": "vendor", "operator": "gt", "value": "B"}]}));
    assert_eq!(r.body["warnings"][0]["code"], "ordering_on_text");
    assert_eq!(names(&r), vec!["b.txt"]);
    let r =
        filter(json!({"conditions": [{"fieldId": "colour", "operator": "eq", "value": "red"}]}));
    assert_eq!(
        (names(&r).len(), r.body["warnings"][0]["code"].clone()),
        (0, json!("unknown_field"))
    );
    let vendor_id = v.body["fields"][0]["id"].clone();
    let r = filter(
        json!({"conditions": [{"fieldId": vendor_id, "operator": "eq", "value": "globex"}]}),
    );
    assert_eq!(names(&r), vec!["b.txt"]);
    for bad in [
        json!({"conditions": [{"fieldId": "total", "operator": "like", "value": 1}]}),
        json!({"conditions": [{"fieldId": "total", "operator": "between", "value": 1}]}),
        json!({"conditions": [{"operator": "eq", "value": 1}]}),
        json!({"limit": 0}),
        json!({"page": 0}),
        json!({"page": 9_223_372_036_854_775_807_i64}),
        json!({"cursor": "not-a-cursor"}),
        json!({"page": 2, "cursor": "x"}),
    ] {
        assert_envelope(&api.post("/v1/documents/filter", &bad), 400, "bad_request");
    }
    // Like every POST, it refuses a malformed Idempotency-Key.
    let r = send(
        api.http
            .post(api.url("/v1/documents/filter"))
            .bearer_auth(api.key())
            .header("Idempotency-Key", "")
            .json(&json!({})),
    );
    assert_envelope(&r, 400, "bad_request");
    // A filter is a query: a read key may send it.
    let reader = api.new_org_key("default", "read", &[]);
    assert_eq!(
        api.post_as(&reader, "/v1/documents/filter", &json!({}))
            .status,
        200
    );
}

#[test]
fn credits_usage_and_pricing_answer_in_talonics_shapes_with_nothing_charged() {
    let api = start();
    api.post(
        "/v1/extract",
        &json!({"filename": "a.txt", "content": "Total: 1", "schema": {"total": "number"}}),
    );
    let b = api.get("/v1/credits/balance");
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["balance_credits"], 0.0);
    assert_eq!(b.body["projected_runway_days"], -1.0);
    assert_eq!(b.body["tier"], "self_hosted");
    assert!(b.body["tier_resets_at"]
        .as_str()
        .unwrap()
        .ends_with("-01T00:00:00.000Z"));
    let u = api.get("/v1/usage?days=7");
    assert_eq!(u.body["period_days"], 7);
    assert_eq!(u.body["total_credits"], 0.0);
    assert_eq!(
        u.body["by_function"],
        json!([{"operation_type": "extraction", "operations": 1, "credits": 0.0}])
    );
    assert_eq!(u.body["totals"]["calls"], 0);
    assert_envelope(&api.get("/v1/usage?days=0"), 400, "bad_request");
    let p = api.get("/v1/pricing");
    assert_eq!(p.body["currency"], "EUR");
    assert!(p.body["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["free"] == true && u["credits"] == 0.0));
}
