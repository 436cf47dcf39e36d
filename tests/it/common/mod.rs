#![allow(dead_code)]
//! Helpers shared by the black-box API tests: a real server per test, spoken to over HTTP.

use quire::config::Config;
use quire::testing::TestServer;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

pub use quire::tools::model_stub;
pub mod receiver;
pub mod world;

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub struct Api {
    pub srv: TestServer,
    pub http: Client,
}

/// `TEST_LOG=debug` (or any `RUST_LOG`-style filter) shows the in-process servers' logs, captured
/// per test by the harness; without it tests log nothing.
fn test_log() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Whether this run's store is PostgreSQL (`QUIRE_TEST_STORE=postgres`, `testing::TestDb`).
pub fn on_postgres() -> bool {
    quire::testing::testing_postgres()
}

/// True, with a notice, when the store is PostgreSQL: for tests of what only a SQLite file has
/// (a page cap, file permissions, a damaged file, the online backup).
pub fn sqlite_only(what: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("notice: {what} is SQLite's own; skipped on PostgreSQL");
    }
    skip
}

pub fn start() -> Api {
    start_with(|_| {})
}

pub fn start_with(tune: impl FnOnce(&mut Config)) -> Api {
    test_log();
    let srv = TestServer::start_with(tune);
    Api {
        srv,
        http: client(30),
    }
}

/// A client whose pooled connections idle out before the server's keep-alive (5 s) does: a
/// request sent on a connection the server is closing at that instant fails with "connection
/// closed before message completed", which says nothing about Quire.
pub fn client(timeout_secs: u64) -> Client {
    Client::builder()
        .timeout(Duration::from_secs(timeout_secs))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

pub fn send(rb: RequestBuilder) -> Resp {
    let r = rb.send().expect("request failed");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

impl Api {
    pub fn key(&self) -> &str {
        &self.srv.api_key
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.srv.url, path)
    }
    pub fn get_as(&self, key: &str, path: &str) -> Resp {
        send(self.http.get(self.url(path)).bearer_auth(key))
    }
    pub fn get(&self, path: &str) -> Resp {
        self.get_as(self.key(), path)
    }
    pub fn post_as(&self, key: &str, path: &str, body: &Value) -> Resp {
        send(self.http.post(self.url(path)).bearer_auth(key).json(body))
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_as(self.key(), path, body)
    }
    pub fn put(&self, path: &str, body: &Value) -> Resp {
        send(
            self.http
                .put(self.url(path))
                .bearer_auth(self.key())
                .json(body),
        )
    }
    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        send(
            self.http
                .patch(self.url(path))
                .bearer_auth(self.key())
                .json(body),
        )
    }
    pub fn delete_as(&self, key: &str, path: &str) -> Resp {
        send(self.http.delete(self.url(path)).bearer_auth(key))
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.delete_as(self.key(), path)
    }

    /// Runs the real `quire` binary against this server's database (as an operator would).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_quire"))
            .arg("--db")
            .arg(self.srv.db_arg())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run quire")
    }

    /// A new organization with a key of the given scopes, made through the CLI.
    /// A write with a raw JSON body (any bytes) and this server's key.
    pub fn send_json_bytes(&self, method: &str, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        let url = self.url(path);
        let rb = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "PATCH" => self.http.patch(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        send(
            rb.bearer_auth(self.key())
                .header("content-type", "application/json")
                .body(body.into()),
        )
    }

    pub fn new_org_key(&self, org: &str, scopes: &str, extra: &[&str]) -> String {
        let out = self.cli(&["orgs", "create", org]);
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("already exists")
        );
        let mut args = vec!["keys", "create", "--org", org, "--scopes", scopes];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_schema(&self, body: &Value) -> Value {
        let r = self.post("/v1/schemas", body);
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }
}

/// Polls `f` until it returns `Some`, failing after `secs`.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the error envelope's shape and code.
pub fn assert_envelope(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let b = &r.body;
    assert_eq!(b["statusCode"], status, "{}", r.text);
    assert_eq!(b["code"], code, "{}", r.text);
    assert!(
        b["error"].is_string() && b["message"].is_string(),
        "{}",
        r.text
    );
    assert!(b["retryable"].is_boolean());
    assert!(b["request_id"].is_string() && b["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(b["path"].is_string());
    assert_eq!(
        r.header("x-request-id").as_deref(),
        b["request_id"].as_str()
    );
}

/// The real binary serving `db` on an ephemeral port with a bootstrap key; returns it and its port.
/// A server started by a test dies with the test's thread, even when the test panics before it
/// could kill it (Linux: the parent-death signal is tied to the spawning thread).
pub fn die_with_test(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only sets a flag of the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
}

pub fn spawn_server(db: &str, key: &str, extra: &[&str]) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    die_with_test(&mut cmd);
    let mut child = cmd
        .args(["--db", db, "serve", "--port", "0"])
        .args(extra)
        .env("QUIRE_BOOTSTRAP_KEY", key)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn quire");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut port = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        seen.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            port = rest
                .split(' ')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            break;
        }
    }
    // Keep draining the log so the child never blocks on a full pipe; its warnings and errors
    // go to the test's captured output, so a failing test shows what the server said.
    let pid = child.id();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked") {
                println!("[quire {pid}] {line}");
            }
        }
    });
    match port {
        Some(p) => (child, p),
        None => {
            let _ = child.kill();
            panic!("quire did not start:\n{}", seen.join("\n"));
        }
    }
}

/// An `Api`-like client for a server started with `spawn_server`.
pub struct Remote {
    pub base: String,
    pub key: String,
    pub http: Client,
}

impl Remote {
    pub fn new(port: u16, key: &str) -> Self {
        Remote {
            base: format!("http://127.0.0.1:{port}"),
            key: key.to_string(),
            // Generous: these servers are debug builds, and the memory test's data product
            // (a replay over 100,000 fields, 7 s in a release build) took over a minute in a
            // loaded CI run. A request that hangs still fails, later.
            http: client(240),
        }
    }
    pub fn get(&self, path: &str) -> Resp {
        send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.key),
        )
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .json(body),
        )
    }
    pub fn put(&self, path: &str, body: &Value) -> Resp {
        send(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .json(body),
        )
    }
}

/// The invoice Spec the crash and node tests run on a spawned server: the fixtures' fields, a
/// data policy normalizing them, `gate` as its validation stage; the schema's id.
pub fn invoice_spec(api: &Remote, gate: &Value) -> String {
    use quire::tools::fixtures;
    use serde_json::json;
    let s = api.post(
        "/v1/schemas",
        &json!({"name": "Invoices", "fields": fixtures::schema_fields()}),
    );
    assert_eq!(s.status, 201, "{}", s.text);
    let sid = s.body["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Normalize"}));
    let pid = p.body["id"].as_str().unwrap().to_string();
    for (field, rule, config) in fixtures::policy_rules() {
        let f = api.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": field, "type": "string"}),
        );
        assert_eq!(f.status, 201, "{}", f.text);
        let r = api.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": field, "rule_type": rule, "config": config}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), gate);
    assert_eq!(g.status, 201, "{}", g.text);
    let rail = json!({"rail": [{"type": "registry"}, {"type": "schema"},
        {"type": "resolve", "json": {"policy_ids": [pid]}}, {"type": "valid"}]});
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &rail);
    assert_eq!(r.status, 200, "{}", r.text);
    sid
}

/// Uploads a text document; its id.
pub fn upload(api: &Api, name: &str, content: &str) -> String {
    let r = api.post(
        "/v1/documents",
        &serde_json::json!({"filename": name, "content": content}),
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// Waits until the run settled and every document is terminal; its progress.
pub fn settle(api: &Api, pid: &str) -> Value {
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        let done =
            p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap();
        (p["status"] != "active" && done == p["totalDocuments"].as_i64().unwrap()).then_some(p)
    })
}

/// Whether the optional outside program `name` is installed. When it is not, the test that
/// needs it prints a notice and skips, unless `QUIRE_REQUIRE_OPTIONAL` is set (as `.ci/run`
/// does, having installed them all), where a missing program fails the test.
pub fn optional(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("QUIRE_REQUIRE_OPTIONAL").is_none(),
            "{name} is required here (QUIRE_REQUIRE_OPTIONAL is set) but not installed"
        );
        eprintln!("notice: {name} is not installed; this test is skipped");
    }
    found
}

/// Uploads bytes as base64 JSON; the answer whatever it is.
pub fn upload_bytes(api: &Api, name: &str, bytes: &[u8], mime: Option<&str>) -> Resp {
    use base64::Engine;
    let mut body = serde_json::json!({
        "filename": name,
        "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    if let Some(m) = mime {
        body["mime_type"] = serde_json::json!(m);
    }
    api.post("/v1/documents", &body)
}

/// A valid white PNG of `w` × `h` pixels (grayscale, stored deflate), for image uploads that
/// must decode but need no content.
pub fn blank_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for b in bytes {
            crc ^= *b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for _ in 0..h {
        raw.push(0u8); // no filter
        raw.extend(std::iter::repeat_n(255u8, w as usize));
    }
    // zlib: one stored block per 65,535 bytes, then the Adler-32 of the raw data.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for x in &raw {
        a = (a + *x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The four fields of an invoice the rules extractor is measured on.
pub fn invoice_fields() -> Value {
    serde_json::json!([
        {"field_name": "invoice_number"},
        {"field_name": "invoice_date", "data_type": "date"},
        {"field_name": "total", "data_type": "number"},
        {"field_name": "currency", "data_type": "currency"}
    ])
}

/// A settled run of the default rail (registry, then the rules extractor) with `fields` over
/// stored documents: the pipeline's id and its results (up to 100 rows).
pub fn run_rules(api: &Api, fields: Value, docs: &[String]) -> (String, Vec<Value>) {
    let schema = api.create_schema(&serde_json::json!({"name": "Rules run", "fields": fields}));
    let sid = schema["id"].as_str().unwrap();
    let rail = serde_json::json!({"rail": [{"type": "registry"}, {"type": "schema"}]});
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &rail);
    assert_eq!(r.status, 200, "{}", r.text);
    let pid = run_pipeline(api, sid, docs);
    let rows = api
        .get(&format!("/v1/pipelines/{pid}/results?limit=100"))
        .body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (pid, rows)
}

/// Starts a run of the schema `sid` over stored documents and waits until it settles; its id.
pub fn run_pipeline(api: &Api, sid: &str, docs: &[String]) -> String {
    let r = api.post(
        "/v1/pipelines",
        &serde_json::json!({"schema_id": sid, "document_ids": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(api, &pid);
    pid
}

/// Resolves a held field (or, for an array field, one element: `lines[3].amount`) as the
/// reviewer "Ada".
pub fn resolve(api: &Api, pd: &str, field: &str, body: Value) -> Resp {
    send(
        api.http
            .post(api.url(&format!("/v1/field-reviews/{pd}/{field}/resolve")))
            .bearer_auth(api.key())
            .header("X-Reviewer", "Ada")
            .json(&body),
    )
}

/// One field of a pipeline document's cells answer: its status, pin and every version.
pub fn field_cells(api: &Api, pid: &str, pd: &str, field: &str) -> Value {
    let r = api.get(&format!("/v1/pipelines/{pid}/documents/{pd}/cells"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_key"] == field)
        .unwrap_or_else(|| panic!("{field} in {}", r.text))
        .clone()
}

/// `count(*)`-like answer of `sql` (one `?1`, bound to `arg`) on the database `db` names.
pub fn db_count(db: &str, sql: &str, arg: &str) -> i64 {
    quire::testing::connect(db)
        .unwrap()
        .query_row(sql, [arg], |r| r.get(0))
        .unwrap()
}

/// A review-queue page's items as `(pipeline document, field)`.
pub fn queue_items(page: &Resp) -> Vec<(String, String)> {
    page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["pipeline_document_id"].as_str().unwrap().to_string(),
                i["field_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
