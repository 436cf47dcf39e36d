//! `quire demo`: a guided tour on a live, disposable instance. It builds a Spec, runs 200
//! generated invoices with a progress bar, shows and works the review queue, tunes the policy
//! and reruns from resolution, then leaves the service up for exploring until Ctrl-C.

use crate::testing::TestServer;
use crate::tools::client::{id, Client};
use crate::tools::fixtures;
use base64::Engine;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const DOCS: u64 = 200;
/// Invoices with a net above this are held at the gate for a reviewer (about a quarter).
const NET_LIMIT: u64 = 15_000;

fn say(line: &str) {
    println!("{line}");
}

/// A bar on stdout, drawn only on a terminal (indicatif hides it otherwise); the line that
/// follows it says the same in plain text, so a log or a pipe loses nothing.
fn progress_bar(label: &str, total: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    let template =
        format!("  {{prefix:<10}} [{{bar:30}}] {{pos:>3}}/{{len}} {unit}  {{elapsed}}  {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("#>."));
    }
    pb.set_prefix(label.to_string());
    pb
}

/// Polls progress, redrawing one bar, until the run settles.
fn follow(c: &Client, pid: &str, label: &str) -> Result<(Value, Duration), String> {
    let started = Instant::now();
    let mut pb: Option<ProgressBar> = None;
    loop {
        let p = c.get(&format!("/v1/pipelines/{pid}/progress"))?;
        let total = p["totalDocuments"].as_i64().unwrap_or(0);
        let done = p["completedDocuments"].as_i64().unwrap_or(0)
            + p["errorDocuments"].as_i64().unwrap_or(0);
        let phases: Vec<String> = p["phases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|ph| {
                format!(
                    "{} {}",
                    ph["phaseId"].as_str().unwrap_or("?"),
                    ph["completed"]
                )
            })
            .collect();
        let bar = pb.get_or_insert_with(|| progress_bar(label, total as u64, "documents"));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(phases.join(" · "));
        if p["status"] != "active" && done == total {
            bar.finish_and_clear();
            println!(
                "  {label:<10} {done}/{total} documents in {:.1}s  {}",
                started.elapsed().as_secs_f64(),
                phases.join(" · ")
            );
            return Ok((p, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Spec {
    schema: String,
    policy: String,
}

fn build_spec(c: &Client, model: bool) -> Result<Spec, String> {
    let schema = id(&c.post(
        "/v1/schemas",
        &json!({"name": "Invoices", "fields": fixtures::schema_fields()}),
    )?)?;
    let policy = id(&c.post("/v1/data-policies", &json!({"name": "Normalize invoices"}))?)?;
    for (field, rule, config) in fixtures::policy_rules() {
        c.post(
            &format!("/v1/data-policies/{policy}/fields"),
            &json!({"field_key": field, "type": "string"}),
        )?;
        c.post(
            &format!("/v1/data-policies/{policy}/rules"),
            &json!({"field_key": field, "rule_type": rule, "config": config}),
        )?;
    }
    let gate = id(&c.post(
        &format!("/v1/schemas/{schema}/validation-stages"),
        &json!({"name": "Plausibility", "severity": "blocking", "mechanisms": [
            {"type": "business_rules", "rules": [
                {"field": "net", "check": "range", "max": NET_LIMIT},
                {"check": "sum", "fields": ["net", "tax"], "equals": "total", "tolerance": 0.01}]}]}),
    )?)?;
    c.put(
        &format!("/v1/schemas/{schema}/rail"),
        &json!({"rail": [
            {"type": "registry", "name": "Field Registry"},
            if model {
                json!({"type": "schema", "name": "Extraction", "json": {"extractor": "model", "model": "demo"}})
            } else {
                json!({"type": "schema", "name": "Extraction"})
            },
            {"type": "resolve", "json": {"policy_ids": [policy]}},
            {"type": "valid", "json": {"stage_ids": [gate]}}]}),
    )?;
    Ok(Spec { schema, policy })
}

fn show_queue(c: &Client, pid: &str) -> Result<Vec<Value>, String> {
    let summary = c.get("/v1/field-reviews/summary")?;
    let items = c.get(&format!("/v1/field-reviews?pipeline_id={pid}&limit=100"))?["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    say(&format!(
        "\nReview queue: {} field(s) held for a human",
        summary["total"]
    ));
    say(&format!(
        "  {:<20} {:<8} {:>12}  {}",
        "document", "field", "value", "reason"
    ));
    for it in items.iter().take(8) {
        say(&format!(
            "  {:<20} {:<8} {:>12}  {}",
            it["document"]["name"].as_str().unwrap_or("?"),
            it["field_key"].as_str().unwrap_or("?"),
            it["current_value"].to_string(),
            it["reason"].as_str().unwrap_or("")
        ));
    }
    if items.len() > 8 {
        say(&format!("  … and {} more", items.len() - 8));
    }
    Ok(items)
}

/// Runs the demo on `db` (a file of its own, created if missing), or on a temporary database;
/// with `model` (`URL[,key=value…]` as `--model` takes after `NAME=`), extraction asks that
/// model server instead of the built-in rules.
pub fn run(db: Option<String>, model: Option<String>) -> Result<(), String> {
    let model = model
        .map(|m| crate::models::ModelConfig::parse(&format!("demo={m}")))
        .transpose()?;
    match &db {
        Some(path) => say(&format!(
            "Quire demo: a live instance on an ephemeral port with the database {path}.\n"
        )),
        None => {
            say("Quire demo: a live instance on an ephemeral port with a temporary database.\n")
        }
    }
    let with_model = model.is_some();
    if let Some(m) = &model {
        say(&format!(
            "Extraction by the model '{}' at {} (--model).\n",
            m.model, m.url
        ));
    }
    let srv = TestServer::start_with(|c| {
        c.rate_limit = 0;
        if let Some(path) = db {
            c.db = path;
        }
        c.models = model.into_iter().collect();
    });
    let c = Client::new(&srv.url, &srv.api_key);

    let spec = build_spec(&c, with_model)?;
    say("Spec: schema \"Invoices\" (7 fields) · policy \"Normalize invoices\" (5 rules) · gate \"Plausibility\" (blocking: net ≤ 15,000, net + tax = total)");
    say("Rail: registry → extraction → resolution → validation\n");

    let started = Instant::now();
    let mut ids = Vec::new();
    let pb = progress_bar("upload", DOCS, "documents");
    for i in 0..DOCS {
        let f = fixtures::invoice(2026, i);
        // Every other plain-text invoice goes in as the PDF it would have been.
        let body = if f.mime_type == "text/plain" && i % 8 == 0 {
            json!({"filename": f.filename.replace(".txt", ".pdf"),
                   "content_base64": base64::engine::general_purpose::STANDARD.encode(as_pdf(&f.content)),
                   "metadata": f.metadata})
        } else {
            json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type, "metadata": f.metadata})
        };
        ids.push(id(&c.post("/v1/documents", &body)?)?);
        pb.set_position(i + 1);
    }
    pb.finish_and_clear();
    println!(
        "  {:<10} {DOCS}/{DOCS} documents (PDF, text, Markdown, CSV, JSON) in {:.1}s",
        "upload",
        started.elapsed().as_secs_f64()
    );
    let run = c.post(
        "/v1/pipelines",
        &json!({"schema_id": spec.schema, "document_ids": ids, "name": "Demo invoices"}),
    )?;
    let pid = id(&run)?;
    let (first, first_took) = follow(&c, &pid, "run")?;

    let items = show_queue(&c, &pid)?;
    let held_before = items.len();
    // A reviewer approves three held values and corrects two.
    let mut decided = 0;
    for (n, it) in items.iter().take(5).enumerate() {
        let (pd, field) = (
            it["pipeline_document_id"].as_str().unwrap_or_default(),
            it["field_key"].as_str().unwrap_or_default(),
        );
        let body = if n < 3 {
            json!({"action": "approve", "reason": "checked against the PDF"})
        } else {
            json!({"action": "override", "reason": "approved over the limit by finance"})
        };
        c.post(&format!("/v1/field-reviews/{pd}/{field}/resolve"), &body)?;
        decided += 1;
    }
    say(&format!(
        "\nResolved {decided} item(s): 3 approved, 2 overridden; decisions go to the append-only log."
    ));
    follow(&c, &pid, "resume")?;

    let supplier = |c: &Client| -> Result<String, String> {
        Ok(
            c.get(&format!("/v1/pipelines/{pid}/results?limit=1"))?["data"][0]["fields"]
                ["supplier"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let supplier_before = supplier(&c)?;
    // Tune the policy: suppliers in upper case, then rerun from resolution.
    c.post(
        &format!("/v1/data-policies/{}/fields", spec.policy),
        &json!({"field_key": "supplier", "type": "string"}),
    )?;
    c.post(
        &format!("/v1/data-policies/{}/rules", spec.policy),
        &json!({"field_key": "supplier", "rule_type": "format", "config": {"op": "uppercase"}}),
    )?;
    let call = Instant::now();
    let rr = c.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    )?;
    let rerun_call = call.elapsed();
    say(&format!(
        "\nPolicy tuned (a rule writes suppliers in upper case); rerun from resolution: {} documents re-queued from phase {} in {} ms",
        rr["enqueued"],
        rr["fromPhaseIndex"],
        rerun_call.as_millis()
    ));
    let (after, rerun_took) = follow(&c, &pid, "rerun")?;
    let queue_after = c.get(&format!("/v1/field-reviews?pipeline_id={pid}&limit=100"))?["data"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let decisions = c.get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))?;
    let dp = c.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}))?;
    let dp_id = dp["dataProduct"]["id"].as_str().unwrap_or_default();

    say("\nSummary");
    let rows = [
        ("documents", format!("{}", first["totalDocuments"])),
        (
            "first run",
            format!(
                "{} complete or partial, {} errors, {:.1}s",
                first["completedDocuments"],
                first["errorDocuments"],
                first_took.as_secs_f64()
            ),
        ),
        (
            "held for review",
            format!("{held_before} after the first run, {queue_after} now"),
        ),
        (
            "decisions kept",
            format!(
                "{} (the rerun re-decided nothing a human decided)",
                decisions["total"]
            ),
        ),
        (
            "rerun",
            format!(
                "generation {}, call {} ms, {:.1}s to settle; extraction kept",
                after["generation"],
                rerun_call.as_millis(),
                rerun_took.as_secs_f64()
            ),
        ),
        (
            "policy change",
            format!("supplier \"{supplier_before}\" → \"{}\"", supplier(&c)?),
        ),
        ("data product", dp_id.to_string()),
    ];
    for (k, v) in rows {
        say(&format!("  {k:<16} {v}"));
    }
    let (u, k) = (&srv.url, &srv.api_key);
    say("\nKeep exploring (the service stays up until Ctrl-C):");
    say(&format!("  export QUIRE={u} KEY={k}"));
    let auth = "curl -s -H \"Authorization: Bearer $KEY\"";
    for path in [
        format!("$QUIRE/v1/pipelines/{pid}/progress"),
        format!("\"$QUIRE/v1/pipelines/{pid}/results?limit=5\""),
        "$QUIRE/v1/field-reviews/summary".to_string(),
        format!("$QUIRE/v1/pipelines/{pid}/reruns"),
        format!("$QUIRE/v1/data-products/{dp_id}/export/audit"),
    ] {
        say(&format!("  {auth} {path}"));
    }
    say("  curl -s $QUIRE/openapi.json");
    say("  curl -s $QUIRE/metrics");
    let _ = std::io::stdout().flush();
    srv.wait();
    Ok(())
}

/// A text invoice as a one-page PDF, a line of text per line of the invoice.
fn as_pdf(text: &str) -> Vec<u8> {
    use crate::tools::pdf_writer::{pdf, Line};
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| Line::at(50.0, 50.0 + 18.0 * i as f32, l))
        .collect();
    pdf(&[lines])
}
