//! `quire bench`: the service in-process on a temporary file database, a fixed Spec, N generated
//! documents through the API, throughput from server timestamps, and the raw SQLite ceiling
//! measured in the same process. It checks its own results and fails loudly when they are wrong.

use crate::store::bench::BenchDb;
use crate::testing::TestServer;
use crate::tools::client::{id, Client as Http};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub docs: usize,
    pub workers: Option<usize>,
    pub db: Option<String>,
    /// Every Nth document is held for review (50 by default).
    pub held_every: usize,
    /// Subscribe a webhook to every event, delivered to a local receiver, while measuring.
    pub webhook_sink: bool,
    /// Also measure PDF intake and OCR.
    pub documents: bool,
    /// Nodes serving the database (PostgreSQL only): this process and `nodes - 1` children.
    pub nodes: usize,
    /// Requests per minute per key (0: no limit), on every node.
    pub rate_limit: u32,
}

/// The other nodes of a several-node bench: `quire serve` children on the same database, killed
/// when the bench ends however it ends.
struct Nodes(Vec<std::process::Child>);

impl Nodes {
    fn start(db: &str, extra: usize, workers: usize, rate_limit: u32) -> Result<Nodes, String> {
        use std::io::BufRead;
        let exe = std::env::current_exe().map_err(|e| format!("the quire binary: {e}"))?;
        let mut nodes = Nodes(Vec::new());
        for k in 2..extra + 2 {
            let mut child = std::process::Command::new(&exe)
                .args(["--db", db, "serve", "--port", "0", "--ready-json"])
                .args(["--node-id", &format!("bench-{k}")])
                .args(["--workers", &workers.to_string()])
                .args(["--rate-limit", &rate_limit.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start node bench-{k}: {e}"))?;
            let ready = child.stdout.take().and_then(|out| {
                std::io::BufReader::new(out)
                    .lines()
                    .next()
                    .and_then(Result::ok)
            });
            nodes.0.push(child);
            if ready.is_none() {
                return Err(format!("node bench-{k} did not start (see its log above)"));
            }
        }
        Ok(nodes)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fields the data policy normalizes are declared text, so extraction keeps them as printed
/// and the policy writes their typed versions: the same work per document as in the earlier
/// rounds' figures (typed fields would be typed at extraction already).
const FIELDS: [(&str, &str); 20] = [
    ("invoice_number", "string"),
    ("supplier", "string"),
    ("issue_date", "string"),
    ("due_date", "string"),
    ("currency", "string"),
    ("net", "string"),
    ("tax", "string"),
    ("total", "string"),
    ("discount", "string"),
    ("shipping", "string"),
    ("po_number", "string"),
    ("customer", "string"),
    ("customer_id", "string"),
    ("iban", "string"),
    ("bic", "string"),
    ("payment_terms", "string"),
    ("country", "string"),
    ("city", "string"),
    ("postal_code", "string"),
    ("vat_id", "string"),
];

/// Every `every`th document (at offset 7, by default every 50th) has a total that does not add
/// up: the blocking gate holds it.
fn failing(i: usize, every: usize) -> bool {
    i % every == 7 % every
}

fn grouped(cents: u64) -> String {
    let mut s = (cents / 100).to_string();
    let mut i = s.len() as i64 - 3;
    while i > 0 {
        s.insert(i as usize, ',');
        i -= 3;
    }
    format!("{s}.{:02}", cents % 100)
}

/// A 20-field invoice. Every document yields the same number of versions: 1 transfer, 19
/// extraction and 8 resolution versions, and 20 verdicts.
fn document(i: usize, held_every: usize) -> Value {
    let net = 1_000_000 + (i as u64 * 7919) % 9_000_000;
    let tax = net * 19 / 100;
    let total = if failing(i, held_every) {
        net + tax + 12_345
    } else {
        net + tax
    };
    let (d, m) = (1 + i % 28, 1 + i % 12);
    let text = format!(
        "INVOICE\nInvoice Number: INV-{i}\nSupplier: Supplier {s}\nIssue Date: {d:02}.{m:02}.2024\nDue Date: {d:02}.{m:02}.2025\n\
         Currency: {cur}\nNet: {net}\nTax: {tax}\nTotal: {total}\nDiscount: {disc}\nShipping: {ship}\nPO Number: PO-{i}\n\
         Customer: Customer {c}\nIBAN: DE89370400440532013{i:03}\nBIC: COBADEFFXXX\nPayment Terms: 30 days net\n\
         Country: Germany\nCity: Berlin\nPostal Code: {pc}\nVAT ID: DE{vat}\n",
        s = i % 97,
        cur = if i.is_multiple_of(3) { "$" } else { "€" },
        net = grouped(net),
        tax = grouped(tax),
        total = grouped(total),
        disc = grouped(100_000 + (i as u64 % 50) * 100),
        ship = grouped(150_000 + (i as u64 % 20) * 100),
        c = i % 1000,
        pc = 10_000 + i % 89_999,
        vat = 100_000_000 + i,
    );
    json!({ "filename": format!("bench-{i}.txt"), "content": text, "metadata": { "customer_id": format!("C-{}", i % 5000) } })
}

fn setup_spec(h: &Http) -> Result<String, String> {
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|(n, t)| json!({"field_name": n, "data_type": t}))
        .collect();
    let schema = id(&h.post(
        "/v1/schemas",
        &json!({"name": "Bench invoices", "fields": fields}),
    )?)?;
    let policy = id(&h.post("/v1/data-policies", &json!({"name": "Bench normalize"}))?)?;
    for f in [
        "issue_date",
        "due_date",
        "currency",
        "net",
        "tax",
        "total",
        "discount",
        "shipping",
    ] {
        h.post(
            &format!("/v1/data-policies/{policy}/fields"),
            &json!({"field_key": f, "type": "string"}),
        )?;
    }
    let rules = [
        ("issue_date", "date", json!({"day_first": true})),
        ("due_date", "date", json!({"day_first": true})),
        ("currency", "currency", json!({})),
        ("net", "number", json!({})),
        ("tax", "number", json!({})),
        ("total", "number", json!({})),
        ("total", "compute", json!({"expr": "round(total, 2)"})),
        ("discount", "number", json!({})),
        ("discount", "default", json!({"value": 0})),
        ("shipping", "number", json!({})),
    ];
    for (f, t, c) in rules {
        h.post(
            &format!("/v1/data-policies/{policy}/rules"),
            &json!({"field_key": f, "rule_type": t, "config": c}),
        )?;
    }
    let first: Vec<&str> = FIELDS[..10].iter().map(|f| f.0).collect();
    let second: Vec<&str> = FIELDS[10..].iter().map(|f| f.0).collect();
    let g1 = id(&h.post(
        &format!("/v1/schemas/{schema}/validation-stages"),
        &json!({
        "name": "Amounts", "severity": "blocking", "field_scope": first,
        "mechanisms": [
            {"type": "business_rules", "rules": [
                {"field": "invoice_number", "check": "regex", "pattern": "^INV-\\d+$"},
                {"field": "supplier", "check": "length", "min": 2, "max": 80},
                {"field": "issue_date", "check": "range", "min": "2000-01-01", "max": "2100-01-01"},
                {"field": "due_date", "check": "required"},
                {"field": "currency", "check": "enum", "values": ["EUR", "USD"]},
                {"field": "net", "check": "range", "min": 0},
                {"check": "compare", "left": "tax", "op": "<=", "right": "net"},
                {"check": "sum", "fields": ["net", "tax"], "equals": "total", "tolerance": 0.01},
                {"field": "discount", "check": "range", "min": 0},
                {"field": "shipping", "check": "range", "min": 0}]},
            {"type": "min_confidence", "threshold": 0.5}]}),
    )?)?;
    let g2 = id(&h.post(
        &format!("/v1/schemas/{schema}/validation-stages"),
        &json!({
        "name": "Parties", "severity": "warning", "field_scope": second,
        "mechanisms": [
            {"type": "business_rules", "rules": [
                {"field": "po_number", "check": "regex", "pattern": "^PO-"},
                {"field": "customer", "check": "required"},
                {"field": "customer_id", "check": "required"},
                {"field": "iban", "check": "length", "min": 15, "max": 34},
                {"field": "bic", "check": "length", "min": 8, "max": 11},
                {"field": "payment_terms", "check": "required"},
                {"field": "country", "check": "required"},
                {"field": "city", "check": "required"},
                {"field": "postal_code", "check": "regex", "pattern": "^\\d+$"},
                {"field": "vat_id", "check": "regex", "pattern": "^[A-Z]{2}"}]},
            {"type": "min_confidence", "threshold": 0.9}]}),
    )?)?;
    let rail = json!({"rail": [
        {"type": "registry", "name": "Field Registry"}, {"type": "schema", "name": "Extraction"},
        {"type": "resolve", "name": "Normalize", "json": {"policy_ids": [policy]}},
        {"type": "valid", "name": "Checks", "json": {"stage_ids": [g1, g2]}}]});
    h.call("PUT", &format!("/v1/schemas/{schema}/rail"), Some(&rail))?;
    Ok(schema)
}

pub(super) fn upload_all(
    base: &str,
    key: &str,
    n: usize,
    held_every: usize,
) -> Result<Vec<String>, String> {
    let threads = 4;
    let results: Vec<Result<Vec<(usize, String)>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let h = Http::new(base, key);
                    let mut out = Vec::new();
                    for i in (t..n).step_by(threads) {
                        out.push((i, id(&h.post("/v1/documents", &document(i, held_every))?)?));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("an upload thread panicked".into()))
            })
            .collect()
    });
    let mut ids = vec![String::new(); n];
    for r in results {
        for (i, d) in r? {
            ids[i] = d;
        }
    }
    Ok(ids)
}

pub(super) fn seconds_between(a: &str, b: &str) -> Result<f64, String> {
    let p =
        |s: &str| chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("bad time {s}: {e}"));
    Ok(((p(b)? - p(a)?).num_milliseconds() as f64 / 1000.0).max(0.001))
}

pub(super) fn wait_settled(h: &Http, pid: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let p = h.get(&format!("/v1/pipelines/{pid}"))?;
        if p["status"] != "active" {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err("the run did not finish within an hour".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// 32 connections hitting one GET for 5 seconds.
fn load(base: &str, key: &str, path: &str) -> Load {
    let stop = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    // One client for the 32 connections: its pool keeps one connection per thread, and one
    // runtime thread of its own serves them (a client per thread was 32 runtimes on 2 cores).
    let h = Http::new(base, key);
    let h = &h;
    let mut lat: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    while Instant::now() < stop {
                        let t = Instant::now();
                        if h.get(path).is_ok() {
                            out.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Load {
        rps: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

pub(super) fn note(stage: &str) {
    eprintln!(
        "bench: {stage} (resident {:.0} MB, peak {:.0} MB)",
        status_mb("VmRSS:"),
        peak_rss_mb()
    );
}

pub(super) fn check(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("benchmark self-check failed: {}", what.into()))
    }
}

/// Bytes this process has sent to storage so far (the kernel's `write_bytes`, counted when a
/// page is dirtied): WAL appends and checkpoints, which is what a write costs the disk.
fn written_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// One client asking for the run's progress every 10 ms while the run goes on (the answers of a
/// settled run come from a cache, so only these measure progress against a busy writer).
struct ProgressDuringRun {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl ProgressDuringRun {
    fn start(base: &str, key: &str, pid: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, path, stopping) = (
            Http::new(base, key),
            format!("/v1/pipelines/{pid}/progress"),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut lat = Vec::new();
            // At least one answer, however short the run.
            loop {
                let t = Instant::now();
                if h.get(&path).is_ok() {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break lat;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        ProgressDuringRun { stop, thread }
    }

    fn p99_ms(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut lat = self.thread.join().unwrap_or_default();
        lat.sort_by(f64::total_cmp);
        quantile(&lat, 0.99)
    }
}

/// The `q` quantile of sorted latencies (NaN for none).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get((sorted.len() as f64 * q) as usize)
        .or(sorted.last())
        .copied()
        .unwrap_or(f64::NAN)
}

/// How long the pages of a walk took, in ms: the median tells a slow page from a slow walk.
struct PageTimes {
    p50: f64,
    p99: f64,
    max: f64,
}

/// Walks every page of the run's results (50 rows, the review queue's page) by cursor.
fn results_pages(h: &Http, pid: &str, n: usize) -> Result<PageTimes, String> {
    let mut times = Vec::new();
    let mut cursor: Option<String> = None;
    let mut rows = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/pipelines/{pid}/results?limit=50&cursor={c}"),
            None => format!("/v1/pipelines/{pid}/results?limit=50"),
        };
        let t = Instant::now();
        let page = h.get(&path)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        rows += page["data"].as_array().map_or(0, Vec::len);
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    check(rows == n, format!("{rows} result rows paged, expected {n}"))?;
    Ok(PageTimes::of(times))
}

impl PageTimes {
    fn of(mut times: Vec<f64>) -> PageTimes {
        times.sort_by(f64::total_cmp);
        PageTimes {
            p50: quantile(&times, 0.5),
            p99: quantile(&times, 0.99),
            max: times.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The summary a bench run printed last, read back from a file that holds it (the whole output
/// of an earlier run, or only its last line).
pub fn read_summary(path: &std::path::Path) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--compare {}: {e}", path.display()))?;
    text.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .ok_or_else(|| {
            format!(
                "--compare {}: no benchmark summary (a JSON object on one line) in the file",
                path.display()
            )
        })
}

/// Every numeric figure of `now` beside the same figure of `earlier`, with the change.
pub fn print_comparison(earlier: &Value, now: &Value) {
    println!("Against the earlier run");
    println!(
        "{:<40} {:>14} {:>14} {:>9}",
        "figure", "earlier", "now", "change"
    );
    let Some(fields) = now.as_object() else {
        return;
    };
    for (key, v) in fields {
        let (Some(b), Some(a)) = (earlier[key].as_f64(), v.as_f64()) else {
            continue;
        };
        let change = if b == 0.0 {
            "-".to_string()
        } else {
            format!("{:+.1}%", 100.0 * (a - b) / b.abs())
        };
        println!("{key:<40} {b:>14} {a:>14} {change:>9}");
    }
}

/// A timed rerun: (call ms, documents/s, rows/s).
fn timed_rerun(
    h: &Http,
    pid: &str,
    phase: &str,
    db: &BenchDb,
    generation: i64,
    n: usize,
) -> Result<(f64, f64, f64), String> {
    let t = Instant::now();
    let r = h.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": phase}),
    )?;
    let call_ms = t.elapsed().as_secs_f64() * 1000.0;
    note(&format!("rerun from {phase} called: {call_ms:.1} ms"));
    check(
        r["enqueued"] == n,
        format!("rerun enqueued {} of {n}", r["enqueued"]),
    )?;
    wait_settled(h, pid)?;
    let history = h.get(&format!("/v1/pipelines/{pid}/reruns"))?;
    let last = &history["data"][0];
    let secs = seconds_between(
        last["requested_at"].as_str().unwrap_or(""),
        last["finished_at"].as_str().unwrap_or(""),
    )?;
    let (c, v) = db.rows_of(generation)?;
    let (docs_per_s, rows_per_s) = (n as f64 / secs, (c + v) as f64 / secs);
    note(&format!(
        "rerun from {phase} done: {docs_per_s:.0} docs/s, {rows_per_s:.0} rows/s"
    ));
    Ok((call_ms, docs_per_s, rows_per_s))
}

pub fn run(args: BenchArgs) -> Result<Value, String> {
    let n = args.docs.max(1);
    if let Some(db) = &args.db {
        if !crate::store::bench::is_fresh(db)? {
            return Err(format!("--db {} exists (a file, or a PostgreSQL schema with tables); the benchmark needs a fresh one so it measures only its own work", crate::store::shown_db(db)));
        }
    }
    let nodes = args.nodes.max(1);
    if nodes > 1
        && !args
            .db
            .as_deref()
            .is_some_and(crate::store::is_postgres_url)
    {
        return Err("--nodes needs --db postgres://…: several nodes share a PostgreSQL database (a SQLite file has one)".into());
    }
    let cores = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(2);
    // The cores are shared: each node gets its part, so one and several nodes compare at the
    // same compute.
    let workers = args.workers.unwrap_or((cores / nodes).max(1)).max(1);
    let sink = match args.webhook_sink {
        true => Some(
            crate::tools::webhook_sink::WebhookSink::start()
                .map_err(|e| format!("webhook receiver: {e}"))?,
        ),
        false => None,
    };
    let srv = TestServer::start_with(|c| {
        c.rate_limit = args.rate_limit;
        c.webhooks.allow_private = sink.is_some();
        c.max_pipeline_documents = n.max(10_000);
        c.max_body = 64 * 1024 * 1024;
        c.workers = workers;
        if nodes > 1 {
            c.node_id = "bench-1".into();
        }
        if let Some(db) = &args.db {
            c.db = db.clone();
        }
    });
    let _others = match (&args.db, nodes) {
        (Some(db), 2..) => Some(Nodes::start(db, nodes - 1, workers, args.rate_limit)?),
        _ => None,
    };
    if nodes > 1 {
        eprintln!("bench: {nodes} nodes of {workers} worker(s) each");
    }
    let h = Http::new(&srv.url, &srv.api_key);
    eprintln!(
        "bench: {n} documents, database {}",
        crate::store::shown_db(args.db.as_deref().unwrap_or(&srv.db_arg()))
    );
    let db_path = args.db.clone().unwrap_or_else(|| srv.db_arg());
    let db = BenchDb::open(&db_path)?;
    // What the database's writes cost the disk: this process's writes for SQLite, the
    // server's WAL for PostgreSQL.
    let written_bytes = || {
        db.server_written_bytes()
            .ok()
            .flatten()
            .unwrap_or_else(written_bytes)
    };
    let schema = setup_spec(&h)?;
    let hook = match &sink {
        Some(s) => Some(id(
            &h.post("/v1/webhooks", &json!({"url": s.url, "events": ["*"]}))?
        )?),
        None => None,
    };
    let t = Instant::now();
    let ids = upload_all(&srv.url, &srv.api_key, n, args.held_every)?;
    let upload_s = t.elapsed().as_secs_f64();
    note(&format!("uploaded in {upload_s:.1} s"));
    let mut body = format!("{{\"schema_id\":\"{schema}\",\"name\":\"bench\",\"document_ids\":[");
    for (i, d) in ids.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('"');
        body.push_str(d);
        body.push('"');
    }
    body.push_str("]}");
    drop(ids);
    let written = written_bytes();
    let t = Instant::now();
    let p = h.post_raw("/v1/pipelines", &body)?;
    note(&format!(
        "run created in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    ));
    drop(body);
    let pid = id(&p)?;
    let during = ProgressDuringRun::start(&srv.url, &srv.api_key, &pid);
    let done = wait_settled(&h, &pid)?;
    let progress_during_p99_ms = during.p99_ms();
    let first_s = seconds_between(
        done["created_at"].as_str().unwrap_or(""),
        done["completed_at"].as_str().unwrap_or(""),
    )?;
    let first_written = written_bytes() - written;
    let per_node = db.finished_by_node(&pid)?;
    // Each figure is printed as soon as it is known, so a long run stopped early keeps them.
    note(&format!("first run done: {:.0} docs/s", n as f64 / first_s));
    // Pages in use, not the file: the WAL's size says when the checkpointer last ran.
    let stored_after_first = db.used_bytes()? as f64;

    // Self-checks: every document terminal, the expected partial count, the expected rows.
    let progress = h.get(&format!("/v1/pipelines/{pid}/progress"))?;
    check(
        progress["completedDocuments"] == n,
        format!(
            "{} of {n} documents complete or partial",
            progress["completedDocuments"]
        ),
    )?;
    check(
        progress["errorDocuments"] == 0,
        format!("{} error documents", progress["errorDocuments"]),
    )?;
    let expected_partial = (0..n).filter(|i| failing(*i, args.held_every)).count() as i64;
    let partial = db.partial_count(&pid)?;
    if partial != expected_partial {
        let sample = h.get(&format!(
            "/v1/pipelines/{pid}/results?limit=1&include=cells"
        ))?;
        eprintln!("bench: a sample row: {}", sample["data"][0]);
    }
    check(
        partial == expected_partial,
        format!("{partial} partial documents, expected {expected_partial}"),
    )?;
    let (cells, verdicts) = db.rows_of(1)?;
    check(
        cells == 28 * n as i64,
        format!("{cells} versions, expected {}", 28 * n),
    )?;
    check(
        verdicts == 20 * n as i64,
        format!("{verdicts} verdicts, expected {}", 20 * n),
    )?;
    let per_phase = db.cells_per_phase(1)?;
    let first_rows = (cells + verdicts) as f64;
    let ceiling_rps = db.ceiling(cells, verdicts, n)?;
    note(&format!(
        "ceiling measured: {ceiling_rps:.0} rows/s, the first run at {:.1}% of it",
        100.0 * first_rows / first_s / ceiling_rps
    ));

    let written = written_bytes();
    let (val_call, val_dps, val_rps) = timed_rerun(&h, &pid, "validation", &db, 2, n)?;
    let val_written = written_bytes() - written;
    let (res_call, res_dps, res_rps) = timed_rerun(&h, &pid, "resolution", &db, 3, n)?;
    let res_written = written_bytes() - written - val_written;
    let after_reruns = db.partial_count(&pid)?;
    check(
        after_reruns == expected_partial,
        format!("{after_reruns} partial documents after the reruns, expected {expected_partial}"),
    )?;

    note("reruns done");
    let review = review(&h, &pid, expected_partial)?;
    note(&format!(
        "queue pages read: the slowest in {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
        review.pages.max, review.pages.p50, review.pages.p99
    ));
    let pages = results_pages(&h, &pid, n)?;
    note(&format!(
        "results pages read: the slowest in {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
        pages.max, pages.p50, pages.p99
    ));
    // Retention: what the two reruns superseded, purged at once.
    let t = Instant::now();
    let purge = crate::engine::retention::purge(
        &srv.state().db,
        None,
        Duration::ZERO,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .and_then(|mut r| {
        // As the operator's purge does: the vacuum's moved pages leave the WAL for the file.
        r.bytes_after = crate::engine::retention::truncate_wal(&srv.state().db)?;
        Ok(r)
    })
    .map_err(|e| format!("purge: {e}"))?;
    let purge_s = t.elapsed().as_secs_f64();
    check(
        purge.versions > 0 && purge.verdicts > 0,
        format!("the purge removed {purge:?}"),
    )?;
    note("superseded generations purged");
    let docs = match args.documents {
        true => {
            let d = documents(&h)?;
            note("documents read");
            Some(d)
        }
        false => None,
    };
    let progress_load = load(
        &srv.url,
        &srv.api_key,
        &format!("/v1/pipelines/{pid}/progress"),
    );
    let health_load = load(&srv.url, &srv.api_key, "/healthz");
    let webhooks = match (&hook, &sink) {
        (Some(hook), Some(sink)) => Some(drain(&h, hook, sink)?),
        _ => None,
    };
    let rss = peak_rss_mb();

    let first_dps = n as f64 / first_s;
    let first_rps = first_rows / first_s;
    println!(
        "Quire benchmark — {n} documents, {} cores",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(0)
    );
    println!("{:<34} {:>14} {:>14}", "figure", "value", "target");
    let row = |name: &str, v: String, t: &str| println!("{name:<34} {v:>14} {t:>14}");
    row(
        "upload (client side)",
        format!("{:.0} docs/s", n as f64 / upload_s),
        "-",
    );
    row("first run", format!("{first_dps:.0} docs/s"), ">= 2000");
    row("first run rows/s", format!("{first_rps:.0}"), "-");
    row("raw ceiling rows/s", format!("{ceiling_rps:.0}"), "-");
    row(
        "first run / ceiling",
        format!("{:.1}%", 100.0 * first_rps / ceiling_rps),
        ">= 30%",
    );
    row(
        "rerun from validation",
        format!("{val_dps:.0} docs/s"),
        ">= 5000",
    );
    row(
        "rerun validation / ceiling",
        format!("{:.1}%", 100.0 * val_rps / ceiling_rps),
        ">= 40%",
    );
    row("rerun from resolution", format!("{res_dps:.0} docs/s"), "-");
    row(
        "rerun resolution / ceiling",
        format!("{:.1}%", 100.0 * res_rps / ceiling_rps),
        "-",
    );
    row(
        "rerun call (validation)",
        format!("{val_call:.0} ms"),
        "<= 1000",
    );
    row(
        "rerun call (resolution)",
        format!("{res_call:.0} ms"),
        "<= 1000",
    );
    row(
        "GET progress, 32 conns",
        format!("{:.0} req/s", progress_load.rps),
        "-",
    );
    row(
        "GET progress p50 / p99",
        format!(
            "{:.1} / {:.1} ms",
            progress_load.p50_ms, progress_load.p99_ms
        ),
        "p99 <= 10",
    );
    row(
        "GET progress p99 during the run",
        format!("{progress_during_p99_ms:.1} ms"),
        "<= 10",
    );
    row(
        "GET healthz, 32 conns",
        format!("{:.0} req/s", health_load.rps),
        "-",
    );
    row(
        "progress / healthz",
        format!("{:.1}%", 100.0 * progress_load.rps / health_load.rps),
        ">= 30%",
    );
    row(
        "queue page (50), any depth",
        format!(
            "{:.1} ms max (p50 {:.1}, p99 {:.1})",
            review.pages.max, review.pages.p50, review.pages.p99
        ),
        "<= 10",
    );
    row(
        "review decision p50 / max",
        format!(
            "{:.1} / {:.1} ms",
            review.decision_p50_ms, review.decision_max_ms
        ),
        "< 100",
    );
    row(
        "results page (50), any depth",
        format!("{:.1} ms max", pages.max),
        "<= 10",
    );
    row(
        "results page p50 / p99",
        format!("{:.1} / {:.1} ms", pages.p50, pages.p99),
        "-",
    );
    row("peak RSS", format!("{rss:.0} MB"), "<= 150");
    let per_doc = |b: f64| b / n as f64;
    row(
        "purge of superseded generations",
        format!("{:.1} s", purge_s),
        "-",
    );
    row(
        "database size before / after purge",
        format!(
            "{:.0} / {:.0} MB",
            purge.bytes_before as f64 / 1e6,
            purge.bytes_after as f64 / 1e6
        ),
        "-",
    );
    row(
        "database bytes per document",
        format!("{:.0}", per_doc(stored_after_first)),
        "-",
    );
    row(
        "bytes written / doc, first run",
        format!("{:.0}", per_doc(first_written)),
        "-",
    );
    row(
        "bytes written / doc, rerun valid.",
        format!("{:.0}", per_doc(val_written)),
        "-",
    );
    row(
        "bytes written / doc, rerun resol.",
        format!("{:.0}", per_doc(res_written)),
        "-",
    );
    for (phase, count) in &per_phase {
        row(
            &format!("versions written by phase {phase}"),
            count.to_string(),
            "-",
        );
    }
    row("verdicts written", verdicts.to_string(), "-");
    if let Some(docs) = &docs {
        row(
            "PDF intake",
            format!("{:.1} pages/s", docs.pdf_pages_per_s),
            "-",
        );
        row(
            "PDF field accuracy",
            format!("{:.1}%", 100.0 * docs.pdf_field_accuracy),
            "-",
        );
        match (docs.ocr_pages_per_s, docs.ocr_field_accuracy) {
            (Some(rate), Some(acc)) => {
                row("OCR intake", format!("{rate:.2} pages/s"), "-");
                row("OCR field accuracy", format!("{:.1}%", 100.0 * acc), "-");
            }
            _ => row("OCR", "not installed".into(), "-"),
        }
    }
    if let Some(w) = &webhooks {
        row(
            "webhook deliveries",
            format!("{} in {:.1} s", w.delivered, w.drain_s),
            "all",
        );
    }
    let out = json!({
        "webhook_deliveries": webhooks.as_ref().map(|w| w.delivered),
        "docs": n,
        "store": if crate::store::is_postgres_url(&db_path) { "postgres" } else { "sqlite" },
        "nodes": nodes,
        "rate_limit": args.rate_limit,
        "workers_per_node": workers,
        "first_run_finished_by_node": per_node.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "first_run_docs_per_s": first_dps.round(),
        "first_run_rows_per_s": first_rps.round(),
        "ceiling_rows_per_s": ceiling_rps.round(),
        "first_run_ratio_to_ceiling": (first_rps / ceiling_rps * 1000.0).round() / 1000.0,
        "rerun_validation_docs_per_s": val_dps.round(),
        "rerun_validation_ratio_to_ceiling": (val_rps / ceiling_rps * 1000.0).round() / 1000.0,
        "rerun_resolution_docs_per_s": res_dps.round(),
        "rerun_call_ms": val_call.max(res_call).round(),
        "progress_rps": progress_load.rps.round(),
        "progress_p99_ms": (progress_load.p99_ms * 10.0).round() / 10.0,
        "progress_during_run_p99_ms": (progress_during_p99_ms * 10.0).round() / 10.0,
        "healthz_rps": health_load.rps.round(),
        "progress_to_healthz_ratio": (progress_load.rps / health_load.rps * 1000.0).round() / 1000.0,
        "peak_rss_mb": rss.round(),
        "queue_page_max_ms": (review.pages.max * 10.0).round() / 10.0,
        "queue_page_p50_ms": (review.pages.p50 * 10.0).round() / 10.0,
        "queue_page_p99_ms": (review.pages.p99 * 10.0).round() / 10.0,
        "decision_p50_ms": (review.decision_p50_ms * 10.0).round() / 10.0,
        "decision_max_ms": (review.decision_max_ms * 10.0).round() / 10.0,
        "results_page_max_ms": (pages.max * 10.0).round() / 10.0,
        "results_page_p50_ms": (pages.p50 * 10.0).round() / 10.0,
        "results_page_p99_ms": (pages.p99 * 10.0).round() / 10.0,
        "purged_versions": purge.versions,
        "purged_verdicts": purge.verdicts,
        "purge_s": (purge_s * 10.0).round() / 10.0,
        "bytes_before_purge": purge.bytes_before,
        "bytes_after_purge": purge.bytes_after,
        "bytes_per_doc": per_doc(stored_after_first).round(),
        "written_bytes_per_doc_first_run": per_doc(first_written).round(),
        "written_bytes_per_doc_rerun_validation": per_doc(val_written).round(),
        "written_bytes_per_doc_rerun_resolution": per_doc(res_written).round(),
        "pdf_pages_per_s": docs.as_ref().map(|d| (d.pdf_pages_per_s * 10.0).round() / 10.0),
        "pdf_field_accuracy": docs.as_ref().map(|d| (d.pdf_field_accuracy * 1000.0).round() / 1000.0),
        "ocr_pages_per_s": docs.as_ref().and_then(|d| d.ocr_pages_per_s).map(|r| (r * 100.0).round() / 100.0),
        "ocr_field_accuracy": docs.as_ref().and_then(|d| d.ocr_field_accuracy).map(|a| (a * 1000.0).round() / 1000.0)
    });
    drop(db);
    drop(srv);
    Ok(out)
}

/// Webhook deliveries made during the measured work.
struct WebhookFigures {
    delivered: i64,
    /// From the end of the measured work until nothing was pending.
    drain_s: f64,
}

/// Waits until every delivery is made, and checks the receiver got each one.
fn drain(
    h: &Http,
    hook: &str,
    sink: &crate::tools::webhook_sink::WebhookSink,
) -> Result<WebhookFigures, String> {
    let t = Instant::now();
    let total = |status: &str| -> Result<i64, String> {
        let page = h.get(&format!(
            "/v1/webhooks/{hook}/deliveries?status={status}&limit=1"
        ))?;
        Ok(page["pagination"]["total"].as_i64().unwrap_or(-1))
    };
    while total("pending")? != 0 {
        check(
            t.elapsed() < Duration::from_secs(300),
            "webhook deliveries still pending after 300 s",
        )?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain_s = t.elapsed().as_secs_f64();
    let delivered = total("delivered")?;
    check(total("failed")? == 0, "failed webhook deliveries")?;
    check(
        sink.received() as i64 == delivered,
        format!(
            "the receiver got {} deliveries, {delivered} recorded",
            sink.received()
        ),
    )?;
    Ok(WebhookFigures { delivered, drain_s })
}

/// What a reviewer waits for on the run: pages of its queue and decisions (client side, so an
/// upper bound of the server's time).
struct ReviewFigures {
    pages: PageTimes,
    decision_p50_ms: f64,
    decision_max_ms: f64,
}

/// Walks the run's whole queue oldest first, a page of 50 at a time, then approves 20 items one
/// by one, as the workbench does.
fn review(h: &Http, pid: &str, held: i64) -> Result<ReviewFigures, String> {
    let mut page_times = Vec::new();
    let mut cursor: Option<String> = None;
    let mut items: Vec<(String, String)> = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/field-reviews?pipeline_id={pid}&order=asc&limit=50&cursor={c}"),
            None => format!("/v1/field-reviews?pipeline_id={pid}&order=asc&limit=50"),
        };
        let t = Instant::now();
        let page = h.get(&path)?;
        page_times.push(t.elapsed().as_secs_f64() * 1000.0);
        for it in page["data"].as_array().into_iter().flatten() {
            let pd = it["pipeline_document_id"].as_str().unwrap_or_default();
            let f = it["field_key"].as_str().unwrap_or_default();
            items.push((pd.to_string(), f.to_string()));
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    check(
        items.len() as i64 >= held,
        format!(
            "{} items in the queue, expected at least {held}",
            items.len()
        ),
    )?;
    let mut times = Vec::new();
    for (pd, f) in items.iter().take(20) {
        let t = Instant::now();
        let r = h.post(
            &format!("/v1/field-reviews/{pd}/{f}/resolve"),
            &json!({"action": "approve", "reason": "bench"}),
        )?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        check(
            r["resolveAction"] == "approve",
            format!("a decision answered {r}"),
        )?;
    }
    times.sort_by(f64::total_cmp);
    Ok(ReviewFigures {
        pages: PageTimes::of(page_times),
        decision_p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        decision_max_ms: times.last().copied().unwrap_or(0.0),
    })
}

/// What the documents part of the benchmark measured.
struct DocFigures {
    pdf_pages_per_s: f64,
    pdf_field_accuracy: f64,
    /// `None` where Tesseract or poppler is not installed.
    ocr_pages_per_s: Option<f64>,
    ocr_field_accuracy: Option<f64>,
}

/// Generated PDF invoices read at intake (pages per second, client side, one at a time) and
/// run through the default rules extractor (fields right / fields expected); the same invoices'
/// first pages rendered to PNG and read through OCR where Tesseract and poppler are installed.
fn documents(h: &Http) -> Result<DocFigures, String> {
    use base64::Engine;
    const PDFS: u64 = 30;
    const SCANS: u64 = 6;
    let schema = id(&h.post(
        "/v1/schemas",
        &json!({"name": "bench documents", "fields": crate::tools::fixtures::pdf_invoice_fields()}),
    )?)?;
    h.put(
        &format!("/v1/schemas/{schema}/rail"),
        &json!({"rail": [{"type": "registry"}, {"type": "schema"}]}),
    )?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let invoices: Vec<_> = (0..PDFS).map(crate::tools::fixtures::pdf_invoice).collect();
    let t = Instant::now();
    let mut ids = Vec::new();
    for (i, inv) in invoices.iter().enumerate() {
        let d = h.post(
            "/v1/documents",
            &json!({"filename": format!("invoice-{i}.pdf"), "content_base64": b64(&inv.pdf)}),
        )?;
        ids.push(id(&d)?);
    }
    let pdf_pages_per_s = (2 * PDFS) as f64 / t.elapsed().as_secs_f64();
    let all = ["invoice_number", "issue_date", "total", "currency"];
    let pdf_field_accuracy = accuracy(h, &schema, &ids, &invoices, &all)?;
    let Some(scans) = render_first_pages(&invoices[..SCANS as usize]) else {
        return Ok(DocFigures {
            pdf_pages_per_s,
            pdf_field_accuracy,
            ocr_pages_per_s: None,
            ocr_field_accuracy: None,
        });
    };
    let t = Instant::now();
    let mut ids = Vec::new();
    for (i, png) in scans.iter().enumerate() {
        let d = h.post(
            "/v1/documents",
            &json!({"filename": format!("scan-{i}.png"), "content_base64": b64(png)}),
        )?;
        ids.push(id(&d)?);
    }
    let ocr_pages_per_s = SCANS as f64 / t.elapsed().as_secs_f64();
    let first_page = ["invoice_number", "issue_date", "currency"];
    let ocr = accuracy(h, &schema, &ids, &invoices[..SCANS as usize], &first_page)?;
    Ok(DocFigures {
        pdf_pages_per_s,
        pdf_field_accuracy,
        ocr_pages_per_s: Some(ocr_pages_per_s),
        ocr_field_accuracy: Some(ocr),
    })
}

/// Runs the documents and counts the fields whose value is what was printed.
fn accuracy(
    h: &Http,
    schema: &str,
    ids: &[String],
    invoices: &[crate::tools::fixtures::PdfInvoice],
    fields: &[&str],
) -> Result<f64, String> {
    let p = h.post(
        "/v1/pipelines",
        &json!({"schema_id": schema, "document_ids": ids}),
    )?;
    let pid = id(&p)?;
    wait_settled(h, &pid)?;
    let rows = h.get(&format!("/v1/pipelines/{pid}/results?limit=200"))?;
    let rows = rows["data"].as_array().cloned().unwrap_or_default();
    let mut right = 0;
    for (row, inv) in rows.iter().zip(invoices) {
        for f in fields {
            if row["fields"][f] == inv.expected[f] {
                right += 1;
            }
        }
    }
    Ok(right as f64 / (invoices.len() * fields.len()) as f64)
}

/// Page 1 of each invoice as a 150 dpi PNG (poppler's `pdftoppm`), as a scanner would give it;
/// `None` where poppler or Tesseract is missing.
fn render_first_pages(invoices: &[crate::tools::fixtures::PdfInvoice]) -> Option<Vec<Vec<u8>>> {
    crate::intake::ocr::languages(&crate::intake::Limits::default())?;
    invoices
        .iter()
        .map(|inv| {
            crate::intake::render::pdf_page_png(&inv.pdf, 1, 150, Duration::from_secs(60)).ok()
        })
        .collect()
}
