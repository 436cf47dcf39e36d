//! `quire bench --model-stub`: the engine around a model extractor. A stub model server
//! (`model_stub`) answers each request after a fixed latency, reading the document the prompt
//! carries; the benchmark measures documents per second against the bound that latency and the
//! calls in flight allow (in flight / latency), and checks that a rerun from resolution makes
//! no call at all.

use super::bench::{check, note, seconds_between, upload_all, wait_settled};
use super::client::{id, Client as Http};
use super::model_stub::{ModelStub, StubCall, StubReply};
use crate::domain::reading;
use crate::models::ModelConfig;
use crate::testing::TestServer;
use serde_json::{json, Map, Value};
use std::time::Duration;

pub struct ModelBenchArgs {
    pub docs: usize,
    pub latency: Duration,
    pub in_flight: usize,
    pub workers: Option<usize>,
}

/// What a model would read in a benchmark invoice (`tools::bench::document`), with the quote it
/// read it from.
fn answer(call: &StubCall) -> String {
    let mut fields = Map::new();
    for line in call.prompt.lines() {
        let Some((label, printed)) = line.split_once(": ") else {
            continue;
        };
        let value = match label {
            "Invoice Number" => json!(printed),
            "Total" => json!(reading::number(printed)),
            "Issue Date" => json!(reading::date(printed, true).map(|d| d.to_string())),
            "Currency" => json!(reading::currency_code(printed)),
            _ => continue,
        };
        let name = match label {
            "Invoice Number" => "invoice_number",
            "Total" => "total",
            "Issue Date" => "issue_date",
            _ => "currency",
        };
        fields
            .entry(name)
            .or_insert(json!({"value": value, "quote": line}));
    }
    json!({ "fields": fields }).to_string()
}

pub fn run(a: ModelBenchArgs) -> Result<Value, String> {
    let n = a.docs.max(1);
    let latency = a.latency;
    let stub =
        ModelStub::try_start(move |call| StubReply::json_content(&answer(call)).after(latency))
            .map_err(|e| format!("cannot start the stub model server: {e}"))?;
    let model = ModelConfig::parse(&format!(
        "stub={},concurrency={},timeout=60",
        stub.url(),
        a.in_flight.max(1)
    ))?;
    let srv = TestServer::start_with(|c| {
        c.rate_limit = 0;
        c.max_pipeline_documents = n.max(10_000);
        c.max_body = 64 * 1024 * 1024;
        c.models = vec![model];
        if let Some(w) = a.workers {
            c.workers = w.max(1);
        }
    });
    let h = Http::new(&srv.url, &srv.api_key);
    eprintln!(
        "bench: {n} documents through a stub model answering after {} ms, {} calls in flight",
        latency.as_millis(),
        a.in_flight
    );
    let schema = id(&h.post(
        "/v1/schemas",
        &json!({"name": "Model bench", "fields": [
            {"field_name": "invoice_number"},
            {"field_name": "issue_date", "data_type": "date"},
            {"field_name": "total", "data_type": "number"},
            {"field_name": "currency", "data_type": "currency"}
        ]}),
    )?)?;
    let policy = id(&h.post(
        "/v1/data-policies",
        &json!({"name": "Model bench rounding"}),
    )?)?;
    h.post(
        &format!("/v1/data-policies/{policy}/fields"),
        &json!({"field_key": "total", "type": "number"}),
    )?;
    h.post(
        &format!("/v1/data-policies/{policy}/rules"),
        &json!({"field_key": "total", "rule_type": "compute", "config": {"expr": "round(total, 2)"}}),
    )?;
    h.put(
        &format!("/v1/schemas/{schema}/rail"),
        &json!({"rail": [
            {"type": "registry"},
            {"type": "schema", "json": {"extractor": "model", "model": "stub"}},
            {"type": "resolve", "json": {"policy_ids": [policy]}}
        ]}),
    )?;
    let ids = upload_all(&srv.url, &srv.api_key, n, 50)?;
    note("uploaded");
    let p = h.post(
        "/v1/pipelines",
        &json!({"schema_id": schema, "name": "model bench", "document_ids": ids}),
    )?;
    let pid = id(&p)?;
    let done = wait_settled(&h, &pid)?;
    let seconds = seconds_between(
        done["created_at"].as_str().unwrap_or(""),
        done["completed_at"].as_str().unwrap_or(""),
    )?;
    let progress = h.get(&format!("/v1/pipelines/{pid}/progress"))?;
    check(
        progress["completedDocuments"] == n,
        format!(
            "{} of {n} documents complete",
            progress["completedDocuments"]
        ),
    )?;
    let first = h.get(&format!("/v1/pipelines/{pid}/results?limit=1"))?;
    check(
        first["data"][0]["fields"]["invoice_number"] == "INV-0",
        format!("the first document read as {}", first["data"][0]["fields"]),
    )?;
    let calls = stub.calls();
    check(calls == n, format!("{calls} model calls for {n} documents"))?;
    h.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    )?;
    wait_settled(&h, &pid)?;
    let rerun_calls = stub.calls() - calls;
    note("rerun done");

    let dps = n as f64 / seconds;
    let bound = a.in_flight as f64 / latency.as_secs_f64().max(0.001);
    let ratio = dps / bound;
    println!("Quire model benchmark — {n} documents");
    println!("{:<34} {:>14} {:>14}", "figure", "value", "target");
    let row = |name: &str, v: String, t: &str| println!("{name:<34} {v:>14} {t:>14}");
    row("model extraction", format!("{dps:.1} docs/s"), "-");
    row(
        "bound (in flight / latency)",
        format!("{bound:.1} docs/s"),
        "-",
    );
    row(
        "ratio to the bound",
        format!("{:.1}%", ratio * 100.0),
        ">= 90%",
    );
    row("model calls, first run", format!("{calls}"), "= docs");
    row(
        "model calls, rerun from resolution",
        format!("{rerun_calls}"),
        "0",
    );
    Ok(json!({
        "model_docs": n,
        "model_docs_per_s": (dps * 10.0).round() / 10.0,
        "model_bound_docs_per_s": (bound * 10.0).round() / 10.0,
        "model_ratio_to_bound": (ratio * 1000.0).round() / 1000.0,
        "model_calls": calls,
        "rerun_resolution_model_calls": rerun_calls,
    }))
}
