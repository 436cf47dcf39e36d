//! Model extraction against a stub OpenAI-compatible server (`common::model_stub`): Quire's own
//! client and dispatcher talk to it over HTTP, as they would to Ollama or vLLM.

use crate::common::model_stub::{ModelStub, StubCall, StubReply};
use crate::common::*;
use quire::models::ModelConfig;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DOC: &str = "ACME Supplies\nInvoice No: INV-7\nTotal due: 1.234,50 EUR\n";

/// The answer a good model gives for `DOC`-like documents: the invoice number the prompt
/// shows, and its total with the exact quote.
fn good_answer(call: &StubCall) -> String {
    let number = call
        .prompt
        .split("Invoice No: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("none")
        .to_string();
    json!({"fields": {
        "invoice_number": {"value": number, "quote": format!("Invoice No: {number}")},
        "total": {"value": 1234.5, "quote": "1.234,50 EUR"}
    }})
    .to_string()
}

/// `n` invoices like `DOC`, numbered INV-0…; their ids.
fn invoices(api: &Api, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            upload(
                api,
                &format!("{i}.txt"),
                &DOC.replace("INV-7", &format!("INV-{i}")),
            )
        })
        .collect()
}

fn with_model(stub: &ModelStub, options: &str) -> Api {
    let spec = format!("stub={}{options}", stub.url());
    start_with(move |c| {
        c.workers = 1;
        c.models = vec![ModelConfig::parse(&spec).unwrap()];
    })
}

/// A schema extracting with the stub model; its id.
fn model_schema(api: &Api) -> String {
    let schema = api.create_schema(&json!({"name": "Model invoices", "fields": [
        {"field_name": "invoice_number", "description": "the invoice's number"},
        {"field_name": "total", "data_type": "number"}
    ]}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let rail = json!({"rail": [{"type": "registry"},
        {"type": "schema", "json": {"extractor": "model", "model": "stub"}}]});
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &rail);
    assert_eq!(r.status, 200, "{}", r.text);
    sid
}

fn rows(api: &Api, pid: &str) -> Vec<Value> {
    api.get(&format!("/v1/pipelines/{pid}/results?limit=100"))
        .body["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn calls(api: &Api, pid: &str, row: &Value) -> Vec<Value> {
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let r = api.get(&format!("/v1/pipelines/{pid}/documents/{pd}/calls"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn rerun_from(api: &Api, pid: &str, phase: &str) {
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": phase}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    settle(api, pid);
}

#[test]
fn a_model_extracts_with_its_quotes_placed_and_reruns_never_pay_twice() {
    let stub = ModelStub::start(|call| StubReply::with_logprobs(&good_answer(call), -0.05));
    let api = with_model(&stub, ",model=stub-7b,price_in=1,price_out=2");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, std::slice::from_ref(&doc));
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(
        row["fields"],
        json!({"invoice_number": "INV-7", "total": 1234.5})
    );
    assert_eq!(stub.calls(), 1);
    let asked = &stub.requests()[0];
    assert_eq!(asked["model"], "stub-7b");
    assert_eq!(asked["response_format"]["type"], "json_schema");
    let prompt = asked["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("the invoice's number") && prompt.contains("Invoice No: INV-7"));

    let pd = row["pipeline_document_id"].as_str().unwrap();
    let total = field_cells(&api, &pid, pd, "total")["versions"][0].clone();
    assert_eq!(total["source"], "model_extraction");
    assert_eq!(
        total["source_text"], "Total due: 1.234,50 EUR",
        "the quote's line"
    );
    let expected = ((-0.05f64).exp() * 1000.0).round() / 1000.0;
    assert_eq!(total["confidence"].as_f64().unwrap(), expected);

    let log = calls(&api, &pid, row);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "ok");
    assert_eq!(log[0]["model"], "stub");
    let (tin, tout) = (
        log[0]["tokens_in"].as_f64().unwrap(),
        log[0]["tokens_out"].as_f64().unwrap(),
    );
    assert!(tin > 0.0 && tout > 0.0, "{log:?}");
    assert!((log[0]["cost"].as_f64().unwrap() - (tin + 2.0 * tout) / 1000.0).abs() < 1e-9);
    assert!(!api
        .get(&format!("/v1/pipelines/{pid}/documents/{pd}/calls"))
        .text
        .contains("api_key"));

    // A rerun from extraction with the same prompt and document reads the kept answer; so does
    // one from a later phase, which does not even look.
    rerun_from(&api, &pid, "extraction");
    assert_eq!(stub.calls(), 1, "a rerun never pays twice");
    // Unless it asks to read the documents again.
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "extraction", "refreshExtraction": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    assert_eq!(stub.calls(), 2, "refresh_extraction asks the model again");
    rerun_from(&api, &pid, "extraction");
    assert_eq!(stub.calls(), 2, "and keeps that answer for the next rerun");
    assert_eq!(rows(&api, &pid)[0]["fields"]["invoice_number"], "INV-7");
    // So does another run over the same content.
    let same = upload(&api, "copy.txt", DOC);
    run_pipeline(&api, &sid, &[same]);
    assert_eq!(stub.calls(), 2, "answers are kept by content");

    let models = api.get("/v1/models");
    assert_eq!(models.status, 200, "{}", models.text);
    let m = &models.body["data"][0];
    assert_eq!(
        (m["name"].as_str(), m["model"].as_str()),
        (Some("stub"), Some("stub-7b"))
    );
    assert!(m["health"]["last_success_at"].is_string(), "{m}");
    assert_eq!(m["health"]["structured_output"], true);
    let metrics = api.get("/metrics").text;
    assert!(
        metrics.contains("quire_model_calls_total{model=\"stub\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

#[test]
fn rate_limits_server_errors_and_an_unusable_answer_are_asked_again() {
    let stub = ModelStub::start(|call| match call.n {
        1 => StubReply::status(429, Some(1)),
        2 => StubReply::status(503, None),
        3 => StubReply::json_content("Sure! Here is the JSON you asked for."),
        _ => StubReply::json_content(&good_answer(call)),
    });
    let api = with_model(&stub, "");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["fields"]["invoice_number"], "INV-7", "{row}");
    let outcomes: Vec<Value> = calls(&api, &pid, row)
        .iter()
        .map(|c| c["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        vec![
            json!("rate_limited"),
            json!("server_error"),
            json!("invalid_output"),
            json!("ok")
        ]
    );
    let fourth = &stub.requests()[3];
    let feedback = fourth["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        feedback.contains("cannot be used") && feedback.contains("not JSON"),
        "{feedback}"
    );
}

#[test]
fn a_model_that_answers_nothing_usable_ends_the_document_in_error_with_why() {
    let stub = ModelStub::start(|call| match call.n % 2 {
        1 => StubReply::truncated(&good_answer(call)),
        _ => StubReply::json_content(r#"{"fields": {"colour": {"value": "red", "quote": null}}}"#),
    });
    let api = with_model(&stub, "");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["status"], "error", "{row}");
    let error = row["error"].as_str().unwrap();
    assert!(
        error.contains("model 'stub'")
            && error.contains("unusable twice")
            && error.contains("unknown field 'colour'"),
        "{error}"
    );
    assert_eq!(
        stub.calls(),
        2,
        "asked once more with the reason, then given up"
    );
    let outcomes: Vec<Value> = calls(&api, &pid, row)
        .iter()
        .map(|c| c["outcome"].clone())
        .collect();
    assert_eq!(outcomes, vec![json!("truncated"), json!("invalid_output")]);

    // A client error (a wrong key) is not asked again.
    let refusing = ModelStub::start(|_| StubReply::status(401, None));
    let api = with_model(&refusing, ",api_key_env=QUIRE_TEST_NO_SUCH_KEY");
    let sid = model_schema(&api);
    let doc = upload(&api, "b.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["status"], "error");
    assert!(row["error"].as_str().unwrap().contains("HTTP 401"), "{row}");
    assert_eq!(refusing.calls(), 1);
    let m = &api.get("/v1/models").body["data"][0];
    assert!(
        m["health"]["last_error"].as_str().unwrap().contains("401"),
        "{m}"
    );
}

#[test]
fn a_server_without_structured_output_is_asked_in_json_mode() {
    let stub = ModelStub::start(|call| {
        if call.body["response_format"]["type"] == "json_schema" {
            StubReply::status(400, None)
        } else {
            StubReply::json_content(&good_answer(call))
        }
    });
    let api = with_model(&stub, "");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    assert_eq!(rows(&api, &pid)[0]["fields"]["total"], 1234.5);
    let kinds: Vec<Value> = stub
        .requests()
        .iter()
        .map(|r| r["response_format"]["type"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("json_schema"), json!("json_object")]);
    assert_eq!(
        api.get("/v1/models").body["data"][0]["health"]["structured_output"],
        false
    );
}

#[test]
fn calls_in_flight_are_bounded_per_model_not_by_the_executors_workers() {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n2, m2) = (now.clone(), most.clone());
    let stub = ModelStub::start(move |call| {
        let here = n2.fetch_add(1, Ordering::SeqCst) + 1;
        m2.fetch_max(here, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        n2.fetch_sub(1, Ordering::SeqCst);
        StubReply::json_content(&good_answer(call))
    });
    // One executor worker, three calls in flight.
    let api = with_model(&stub, ",concurrency=3");
    let sid = model_schema(&api);
    let docs = invoices(&api, 9);
    let pid = run_pipeline(&api, &sid, &docs);
    let mut got: Vec<String> = rows(&api, &pid)
        .iter()
        .map(|r| r["fields"]["invoice_number"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let want: Vec<String> = (0..9).map(|i| format!("INV-{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(stub.calls(), 9);
    assert_eq!(most.load(Ordering::SeqCst), 3, "three at once, never more");
}

#[test]
fn an_unconfigured_model_is_refused_when_the_rail_is_saved() {
    let stub = ModelStub::start(|call| StubReply::json_content(&good_answer(call)));
    let api = with_model(&stub, "");
    let schema = api.create_schema(&json!({"name": "X", "fields": [{"field_name": "a"}]}));
    let sid = schema["id"].as_str().unwrap();
    let r = api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema", "json": {"extractor": "model", "model": "gpt-9"}}]}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.text.contains("gpt-9") && r.text.contains("configured: stub"),
        "{}",
        r.text
    );
    let none = start();
    let schema = none.create_schema(&json!({"name": "X", "fields": [{"field_name": "a"}]}));
    let sid = schema["id"].as_str().unwrap();
    let r = none.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema", "json": {"extractor": "model", "model": "stub"}}]}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(r.text.contains("--model NAME=URL"), "{}", r.text);
    assert_eq!(none.get("/v1/models").body["data"], json!([]));
}

#[test]
fn a_server_that_is_down_opens_the_circuit_documents_wait_visibly_and_resume_when_it_returns() {
    use std::sync::atomic::AtomicBool;
    let down = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicUsize::new(0));
    let (d2, s2) = (down.clone(), served.clone());
    let stub = ModelStub::start(move |call| {
        if d2.load(Ordering::SeqCst) {
            StubReply::status(503, None)
        } else {
            s2.fetch_add(1, Ordering::SeqCst);
            StubReply::json_content(&good_answer(call))
        }
    });
    let api = with_model(&stub, ",concurrency=2,breaker=0.3");
    let sid = model_schema(&api);
    let docs = invoices(&api, 4);
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    // The circuit opens after three failures in a row, and the documents say why they wait.
    let waiting = wait_for(30, || {
        let list = api.get(&format!("/v1/pipelines/{pid}/documents")).body;
        let why = list["data"]
            .as_array()?
            .iter()
            .find_map(|d| d["waiting_for"].as_str().map(str::to_string))?;
        why.contains("unavailable").then_some(why)
    });
    assert!(
        waiting.contains("model 'stub'") && waiting.contains("503"),
        "{waiting}"
    );
    let health = &api.get("/v1/models").body["data"][0]["health"];
    assert!(health["circuit_open_until"].is_string(), "{health}");
    let progress = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
    assert_eq!(
        progress["status"], "active",
        "waiting is not failing: {progress}"
    );
    // Probes, not retries: one call per open period.
    let at_open = stub.calls();
    wait_for(30, || (stub.calls() > at_open).then_some(()));
    let while_down = stub.calls();
    assert!(
        while_down < 10,
        "{while_down} calls while down (4 documents would spend 24 retries)"
    );
    down.store(false, Ordering::SeqCst);
    settle(&api, &pid);
    let got = rows(&api, &pid);
    assert!(got.iter().all(|r| r["status"] == "complete"), "{got:?}");
    assert_eq!(
        served.load(Ordering::SeqCst),
        4,
        "one call per document once it is back"
    );
    let health = &api.get("/v1/models").body["data"][0]["health"];
    assert!(health["circuit_open_until"].is_null(), "{health}");
}

#[test]
fn cancelling_a_run_drops_its_calls_in_flight() {
    // A server that takes a minute: the call is in flight when the run is cancelled.
    let stub = ModelStub::start(|call| {
        StubReply::json_content(&good_answer(call)).after(Duration::from_secs(60))
    });
    let api = with_model(&stub, ",concurrency=2");
    let sid = model_schema(&api);
    let docs = invoices(&api, 3);
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": docs}),
    );
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_for(30, || (stub.calls() == 2).then_some(()));
    let r = api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    // Well before the server would have answered, nothing is in flight any more.
    wait_for(20, || {
        let h = &api.get("/v1/models").body["data"][0]["health"];
        (h["in_flight"] == 0).then_some(())
    });
    let rows = rows(&api, &pid);
    let cancelled: Vec<Value> = rows
        .iter()
        .flat_map(|row| calls(&api, &pid, row))
        .filter(|c| c["outcome"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 2, "{rows:?}");
    assert_eq!(stub.calls(), 2, "the third document never asked");
    assert!(
        rows.iter()
            .all(|r| r["status"] == "error" && r["error"] == "cancelled"),
        "{rows:?}"
    );
}

#[test]
fn an_n_shot_gate_samples_the_model_at_extraction_and_holds_what_it_is_unsure_of() {
    // Sure of the number, unsure of the total: samples (temperature > 0) disagree on it.
    let stub = ModelStub::start(|call| {
        let sampled = call.body["temperature"].as_f64().unwrap_or(0.0) > 0.0;
        let total = if sampled && call.n % 2 == 0 {
            999.0
        } else {
            1234.5
        };
        let answer = good_answer(call).replace("1234.5", &total.to_string());
        StubReply::json_content(&answer)
    });
    let api = with_model(&stub, "");
    let sid = model_schema(&api);
    let gate = api.post(
        &format!("/v1/schemas/{sid}/validation-stages"),
        &json!({"name": "Agreement", "severity": "blocking",
                "mechanisms": [{"type": "n_shot", "n": 3}]}),
    );
    assert_eq!(gate.status, 201, "{}", gate.text);
    let gid = gate.body["id"].as_str().unwrap();
    let rail = json!({"rail": [{"type": "registry"},
        {"type": "schema", "json": {"extractor": "model", "model": "stub"}},
        {"type": "valid", "json": {"stage_ids": [gid]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    assert_eq!(stub.calls(), 3, "the answer and two samples, at extraction");
    let temps: Vec<Value> = stub
        .requests()
        .iter()
        .map(|r| r["temperature"].clone())
        .collect();
    assert_eq!(temps, vec![json!(0.0), json!(0.7), json!(0.7)]);
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["fields"]["invoice_number"], "INV-7", "{row}");
    assert!(
        row["fields"]["total"].is_null(),
        "held for a reviewer: {row}"
    );
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let detail = api.get(&format!("/v1/field-reviews/{pd}/total"));
    assert_eq!(detail.status, 200, "{}", detail.text);
    let reasoning = detail.body["verdicts"][0]["mechanisms"][0]["reasoning"].to_string();
    assert!(reasoning.contains("2 of 3 samples"), "{}", detail.text);
    // Validation only reads the samples: a rerun from it asks nothing.
    rerun_from(&api, &pid, "validation");
    assert_eq!(stub.calls(), 3);
    assert!(rows(&api, &pid)[0]["fields"]["total"].is_null());
}

#[test]
fn a_slow_answer_times_out_and_is_asked_again_and_a_wrong_quote_costs_confidence() {
    let stub = ModelStub::start(|call| {
        if call.n == 1 {
            // Longer than the model's timeout.
            return StubReply::json_content(&good_answer(call)).after(Duration::from_secs(5));
        }
        let answer = good_answer(call).replace("1.234,50 EUR", "Amount payable 1234.50");
        StubReply::json_content(&answer)
    });
    let api = with_model(&stub, ",timeout=1");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = &rows(&api, &pid)[0];
    assert_eq!(row["fields"]["total"], 1234.5, "{row}");
    let outcomes: Vec<Value> = calls(&api, &pid, row)
        .iter()
        .map(|c| c["outcome"].clone())
        .collect();
    assert_eq!(outcomes, vec![json!("timeout"), json!("ok")]);
    // The total's quote is nowhere in the document: kept, at half the confidence, with a note.
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let version = |field: &str| field_cells(&api, &pid, pd, field)["versions"][0].clone();
    let total = version("total");
    assert_eq!(
        total["confidence"], 0.45,
        "0.9 without log-probabilities, halved: {total}"
    );
    assert!(
        total["note"]
            .as_str()
            .unwrap()
            .contains("quote was not found"),
        "{total}"
    );
    assert_eq!(version("invoice_number")["confidence"], 0.9);
    assert!(version("invoice_number")["note"].is_null());
}

#[test]
fn a_value_of_the_wrong_type_is_asked_again_once_then_left_with_a_note() {
    let stub = ModelStub::start(|call| {
        StubReply::json_content(&good_answer(call).replace("1234.5", "\"about 1234\""))
    });
    let api = with_model(&stub, "");
    let sid = model_schema(&api);
    let doc = upload(&api, "a.txt", DOC);
    let pid = run_pipeline(&api, &sid, &[doc]);
    assert_eq!(stub.calls(), 2, "asked once more");
    let second = stub.requests()[1]["messages"].to_string();
    assert!(
        second.contains("wrong type") && second.contains("total"),
        "{second}"
    );
    let row = &rows(&api, &pid)[0];
    assert_eq!(
        row["fields"]["invoice_number"], "INV-7",
        "the usable part is kept: {row}"
    );
    assert!(row["fields"]["total"].is_null(), "{row}");
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let total = field_cells(&api, &pid, pd, "total");
    let note = total["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("model 'stub'") && note.contains("number field"),
        "{total}"
    );
}

#[test]
fn a_model_is_asked_for_a_table_row_by_row_and_each_row_keeps_its_quoted_line() {
    let stub = ModelStub::start(|_| {
        StubReply::json_content(
            &json!({"fields": {"lines": {"value": [
                {"description": "Widget", "amount": "25,00", "quote": "Widget | 25,00"},
                {"description": "Gadget", "amount": 7.5, "quote": "Gadget | 7,50", "colour": "red"}
            ], "quote": null}}})
            .to_string(),
        )
    });
    let api = with_model(&stub, "");
    let schema = api.create_schema(&json!({"name": "Model table", "fields": {
        "lines": [{"description": "string", "amount": "number"}]}}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let rail =
        json!({"rail": [{"type": "schema", "json": {"extractor": "model", "model": "stub"}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let doc = upload(
        &api,
        "t.txt",
        "Invoice\nDescription | Amount\nWidget | 25,00\nGadget | 7,50\n",
    );
    let pid = run_pipeline(&api, &sid, &[doc]);
    let asked = &stub.requests()[0];
    let value = &asked["response_format"]["json_schema"]["schema"]["properties"]["fields"]
        ["properties"]["lines"]["properties"]["value"];
    let columns: Vec<&String> = value["items"]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the rows' schema: {value}"))
        .keys()
        .collect();
    assert_eq!(columns, ["description", "amount", "quote"], "{value}");
    assert!(
        asked["messages"]
            .to_string()
            .contains("a table, one object per row"),
        "{asked}"
    );
    let row = &rows(&api, &pid)[0];
    assert_eq!(
        row["fields"]["lines"],
        json!([{"description": "Widget", "amount": 25}, {"description": "Gadget", "amount": 7.5}]),
        "typed like the rules' values, made-up keys dropped: {row}"
    );
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let cell = field_cells(&api, &pid, pd, "lines");
    let placed = &cell["versions"][0]["rows"];
    assert_eq!(placed[0]["source_text"], "Widget | 25,00", "{cell}");
    assert_eq!(placed[1]["source_text"], "Gadget | 7,50", "{cell}");
}
