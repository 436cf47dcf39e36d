//! The reviewer's workbench in a real browser: Debian's headless Chromium driven through
//! WebDriver (chromedriver) by a small client written here on the test suite's HTTP client.
//! Without Chromium and chromedriver the tests print a notice and skip (unless
//! `QUIRE_REQUIRE_OPTIONAL` is set). A failing test saves a screenshot under
//! `target/browser-failures/`.

use crate::common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const ENTER: &str = "\u{E007}";

/// One headless Chromium session, and the chromedriver that serves it.
struct Browser {
    http: Client,
    base: String,
    driver: Child,
    downloads: tempfile::TempDir,
    name: &'static str,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// A fresh browser, or `None` (with a notice) where Chromium or chromedriver is missing.
    fn start(name: &'static str) -> Option<Browser> {
        if !optional("chromedriver") || !optional("chromium") {
            return None;
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = crate::common::client(60);
        let base = format!("http://127.0.0.1:{port}");
        wait_for(20, || {
            http.get(format!("{base}/status"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        let downloads = tempfile::tempdir().expect("a download folder");
        let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"],
            "prefs": {"download.default_directory": downloads.path(),
                      "download.prompt_for_download": false}
        }}}});
        let mut b = Browser {
            http,
            base,
            driver,
            downloads,
            name,
        };
        let s = b.raw("POST", "/session", caps);
        let id = s["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {s}"))
            .to_string();
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    fn raw(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        rb.send().and_then(|r| r.json()).unwrap_or(Value::Null)
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self.raw(method, path, body);
        if let Some(e) = v["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {e}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` matches, waiting up to 15 s for it to appear.
    fn find(&self, css: &str) -> String {
        wait_for(15, || {
            let v = self.raw(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            );
            v["value"][ELEMENT].as_str().map(str::to_string)
        })
    }

    fn count(&self, css: &str) -> usize {
        let v = self.raw(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        v["value"].as_array().map(Vec::len).unwrap_or(0)
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `css`'s text satisfies `ok`; the text.
    fn text_until(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        wait_for(20, || {
            let v = self.raw(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            );
            let e = v["value"][ELEMENT].as_str()?.to_string();
            let t = self.raw("GET", &format!("/element/{e}/text"), Value::Null)["value"]
                .as_str()?
                .to_string();
            ok(&t).then_some(t)
        })
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    /// Keys typed where the focus is, as a person would.
    fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
        self.cmd("DELETE", "/actions", Value::Null);
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    fn screenshot(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        let v = self.raw("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str()?)
            .ok()
    }

    /// Saves a screenshot of the page as it is, under `target/browser-shots/NAME.png`.
    fn save(&self, dir: &str, name: &str) -> Option<PathBuf> {
        let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(dir);
        std::fs::create_dir_all(&folder).ok()?;
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, self.screenshot()?).ok()?;
        Some(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(p) = self.save("browser-failures", self.name) {
                eprintln!("screenshot of the failure: {}", p.display());
            }
        }
        self.raw("DELETE", "", Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const XSS: &str = "<img src=x onerror=alert(1)>";

/// A run whose gate holds `net` over 100: five documents held, one of them carrying markup in
/// its invoice number, and one that passes.
fn held_run(api: &Api) -> String {
    let s = api.create_schema(&json!({"name": "invoices", "fields": [
        {"field_name": "invoice_number"}, {"field_name": "net", "data_type": "number"},
        {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"}]}));
    let schema = s["id"].as_str().unwrap().to_string();
    let policy = api.post("/v1/data-policies", &json!({"name": "totals"}));
    let policy = policy.body["id"].as_str().unwrap().to_string();
    for f in ["net", "tax", "total"] {
        let r = api.post(
            &format!("/v1/data-policies/{policy}/fields"),
            &json!({"field_key": f, "type": "number"}),
        );
        assert!(r.status < 300, "{}", r.text);
    }
    let r = api.post(
        &format!("/v1/data-policies/{policy}/rules"),
        &json!({"field_key": "total", "rule_type": "compute", "config": {"expr": "net + tax"}}),
    );
    assert!(r.status < 300, "{}", r.text);
    let stage = api.post(
        &format!("/v1/schemas/{schema}/validation-stages"),
        &json!({"name": "Net limit", "severity": "blocking", "mechanisms": [
            {"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 100}]}]}),
    );
    assert_eq!(stage.status, 201, "{}", stage.text);
    let rail = json!({"rail": [{"type": "schema"},
        {"type": "resolve", "json": {"policy_ids": [policy]}},
        {"type": "valid", "json": {"stage_ids": [stage.body["id"]]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{schema}/rail"), &rail).status,
        200
    );
    let mut docs = Vec::new();
    for (i, net) in [600, 700, 800, 900, 50].iter().enumerate() {
        docs.push(upload(
            api,
            &format!("inv{i}.txt"),
            &format!("Invoice Number: INV-{i}\nNet: {net}\nTax: 1"),
        ));
    }
    docs.push(upload(
        api,
        "xss.txt",
        &format!("Invoice Number: {XSS}\nNet: 999\nTax: 1"),
    ));
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": schema, "document_ids": docs, "name": "April invoices"}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    p.body["id"].as_str().unwrap().to_string()
}

#[test]
fn a_reviewer_works_the_queue_by_keyboard_reruns_after_the_plan_and_downloads_a_csv() {
    let Some(b) = Browser::start("workbench") else {
        return;
    };
    let api = start();
    // The executor waits until the reviewer watches: the run is seen active, then finishing.
    api.srv.pause_executor();
    let pid = held_run(&api);
    // Sign in; the key stays in the tab's session storage, never in the URL.
    b.goto(&api.url("/"));
    b.type_into("#key", api.key());
    b.type_into("#reviewer", "Ada");
    b.click("#signin button[type=submit]");
    b.text_until("#pipelines", |t| {
        t.contains("April invoices") && t.contains("active")
    });
    b.text_until("#pipelines", |t| t.contains("0 / 6"));
    api.srv.resume_executor();
    b.text_until("#pipelines", |t| {
        t.contains("April invoices") && t.contains("completed")
    });
    assert!(!b.url().contains(api.key()));
    assert_eq!(
        b.script("return sessionStorage.getItem('quire.key')"),
        json!(api.key())
    );
    // The run: held cells are marked, markup in a value is text.
    b.click("#pipelines a");
    let results = b.text_until("#results", |t| t.contains("held"));
    assert!(results.contains(XSS), "{results}");
    assert_eq!(b.count("img"), 0);
    b.save("browser-shots", "pipeline");
    // The queue, oldest first: j/k move, Enter opens, `a` then Enter approves.
    b.goto(&api.url("/ui/#/queue"));
    b.text_until("#counts", |t| t.starts_with("5 waiting"));
    b.save("browser-shots", "queue");
    b.click("body");
    b.keys("jk");
    b.keys(ENTER);
    let held = |seen: &[String]| -> String {
        b.text_until("#held-value", |t| {
            ["600", "700", "800", "900", "999"].contains(&t) && !seen.iter().any(|s| s == t)
        })
    };
    let mut seen = vec![held(&[])];
    b.text_until("#source-text", |t| t.contains("Net: "));
    assert!(b.text("#source-mark").contains(&seen[0]));
    b.save("browser-shots", "item");
    b.keys("a");
    b.keys(ENTER);
    // The next item opens by itself: correct it, a bad value refused in the form first.
    seen.push(held(&seen));
    b.keys("c");
    b.type_into("#value", "lots");
    b.keys(ENTER);
    b.text_until("#value-error", |t| t.contains("number"));
    b.type_into("#value", "70");
    b.keys(ENTER);
    seen.push(held(&seen));
    b.keys("o");
    b.keys("\u{E004}");
    b.keys("signed off by finance");
    b.keys(ENTER);
    seen.push(held(&seen));
    // Back to the queue: select the last two and approve them in bulk.
    b.keys("\u{E00C}");
    b.text_until("#counts", |t| t.starts_with("2 waiting"));
    b.click("body");
    b.keys("kkxjx");
    b.click("#bulk-approve");
    b.text_until("#flash", |t| t.contains("2 resolved, 0 failed"));
    let log = api.get("/v1/field-reviews/decisions");
    let actions: Vec<&str> = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["approve", "approve", "override", "correct", "approve"],
        "{}",
        log.text
    );
    assert!(log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["decidedByName"] == "Ada"));
    // Reopen a decided field.
    let first = &log.body["entries"].as_array().unwrap()[4];
    b.goto(&api.url(&format!(
        "/ui/#/queue/{}/net",
        first["pipelineDocumentId"].as_str().unwrap()
    )));
    b.find("#act-reopen");
    b.click("body");
    b.keys("r");
    b.keys(ENTER);
    b.text_until("#flash", |t| t.contains("reopen recorded"));
    assert_eq!(api.get("/v1/field-reviews").body["pagination"]["total"], 1);
    // Rerun from resolution (the picker's default), after seeing the plan.
    b.goto(&api.url(&format!("/ui/#/pipelines/{pid}")));
    b.find("#rerun-phase");
    assert_eq!(
        b.script("return document.getElementById('rerun-phase').value"),
        json!("resolution")
    );
    b.click("#rerun-preview");
    let plan = b.text_until("#rerun-plan", |t| t.contains("decisions are preserved"));
    assert!(plan.contains("6 documents"), "{plan}");
    b.save("browser-shots", "rerun-plan");
    b.click("#rerun-confirm");
    b.text_until("#flash", |t| t.contains("Rerun started: 6 documents"));
    b.text_until("#run-status", |t| t == "completed");
    // The data product and its CSV, downloaded by the browser.
    b.click("#make-product");
    b.click("#csv-plain");
    let csv = wait_for(20, || {
        std::fs::read_dir(b.downloads.path())
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "csv"))
            .and_then(|p| std::fs::read_to_string(p).ok())
    });
    assert!(csv.contains("INV-4"), "{csv}");
    // Markup a document carries is shown as text in an item too.
    let docs = api.get(&format!("/v1/pipelines/{pid}/documents"));
    let xss_pd = docs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["filename"] == "xss.txt")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&api.url(&format!("/ui/#/queue/{xss_pd}/invoice_number")));
    b.text_until("#held-value", |t| t == XSS);
    assert_eq!(b.count("img"), 0);
    assert!(b.text("#source-text").contains(XSS));
    // The decision log shows every decision, newest first.
    b.goto(&api.url("/ui/#/decisions"));
    b.text_until("#decision-log", |t| {
        t.contains("reopen") && t.contains("override")
    });
    // A PDF's held value: its page, with the value's box drawn on it.
    if optional("pdftoppm") {
        use quire::tools::pdf_writer::{pdf, Line};
        let bytes = pdf(&[vec![
            Line::at(50.0, 60.0, "ACME Supplies GmbH"),
            Line::at(50.0, 120.0, "Invoice Number: INV-9"),
            Line::at(50.0, 150.0, "Net: 950"),
        ]]);
        let doc = upload_bytes(&api, "scan.pdf", &bytes, None);
        assert_eq!(doc.status, 201, "{}", doc.text);
        let schema = api.get(&format!("/v1/pipelines/{pid}")).body["schema"]["id"].clone();
        let run = api.post(
            "/v1/pipelines",
            &json!({"schema_id": schema, "document_ids": [doc.body["id"]]}),
        );
        let run = run.body["id"].as_str().unwrap().to_string();
        settle(&api, &run);
        let item = api.get(&format!("/v1/field-reviews?pipeline_id={run}"));
        let pd = item.body["data"][0]["pipeline_document_id"]
            .as_str()
            .unwrap_or_else(|| panic!("nothing held: {}", item.text))
            .to_string();
        b.goto(&api.url(&format!("/ui/#/queue/{pd}/net")));
        b.find("#page img");
        b.find("#source-box");
        b.save("browser-shots", "item-pdf");
    }
}

#[test]
fn the_explorer_renders_the_openapi_document() {
    let Some(b) = Browser::start("explorer") else {
        return;
    };
    let api = start();
    b.goto(&api.url("/docs"));
    let ops = b.text_until("#explorer", |t| {
        t.contains("/v1/extract") && t.contains("/v1/pipelines")
    });
    assert!(ops.contains("Quire"), "{}", &ops[..ops.len().min(400)]);
    b.save("browser-shots", "explorer");
}

#[test]
fn the_workbench_is_served_with_a_strict_policy_and_cors_is_off_unless_allowed() {
    let api = start();
    let root = send(
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(api.url("/")),
    );
    assert_eq!(root.status, 302);
    assert_eq!(root.header("location").as_deref(), Some("/ui/"));
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/docs", "text/html"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
    ] {
        let r = send(api.http.get(api.url(path)));
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'self' 'unsafe-inline'"));
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    // The workbench's own files carry no inline script or style the policy would block.
    let html = send(api.http.get(api.url("/ui/"))).text;
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    assert_envelope(
        &send(api.http.get(api.url("/ui/nope.js"))),
        404,
        "not_found",
    );
    // No CORS by default: a preflight is not answered for any origin.
    let origin = "https://review.example.com";
    let pre = send(
        api.http
            .request(reqwest::Method::OPTIONS, api.url("/v1/schemas"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET"),
    );
    assert!(pre.header("access-control-allow-origin").is_none());
    let allowed = start_with(|c| c.cors_origins = vec![origin.to_string()]);
    let pre = send(
        allowed
            .http
            .request(reqwest::Method::OPTIONS, allowed.url("/v1/schemas"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET"),
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert!(pre
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    let get = send(
        allowed
            .http
            .get(allowed.url("/v1/schemas"))
            .bearer_auth(allowed.key())
            .header("Origin", origin),
    );
    assert_eq!(
        get.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let other = send(
        allowed
            .http
            .get(allowed.url("/v1/schemas"))
            .bearer_auth(allowed.key())
            .header("Origin", "https://evil.example.com"),
    );
    assert!(other.header("access-control-allow-origin").is_none());
    assert_eq!(
        other.header("vary").as_deref(),
        Some("Origin"),
        "the answer varies by origin"
    );
    // A refusal is readable by the allowed front-end too.
    let refused = send(
        allowed
            .http
            .get(allowed.url("/v1/schemas"))
            .header("Origin", origin),
    );
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    // So is one a middleware answers before any handler runs (an oversized head here; the
    // per-client limit and a panic leave the same way).
    let oversized = send(
        allowed
            .http
            .get(allowed.url("/v1/schemas"))
            .bearer_auth(allowed.key())
            .header("Origin", origin)
            .header("X-Padding", "a".repeat(20 * 1024)),
    );
    assert_envelope(&oversized, 400, "bad_request");
    assert_eq!(
        oversized.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert_eq!(oversized.header("vary").as_deref(), Some("Origin"));
}

#[test]
fn a_reviewer_sees_a_tables_failing_element_and_corrects_it_alone() {
    let Some(b) = Browser::start("line-items") else {
        return;
    };
    let api = start();
    let schema = api.create_schema(&json!({"name": "Tables", "fields": {
        "lines": [{"description": "string", "amount": "number"}]}}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "No negative amounts", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"check": "range", "field": "lines[].amount", "min": 0}]}]}));
    let gate = g.body["id"].as_str().unwrap().to_string();
    let rail =
        json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [gate]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let doc = upload(
        &api,
        "t.md",
        "| Description | Amount |\n|---|---|\n| A | 40 |\n| B | -10 |\n",
    );
    let pid = run_pipeline(&api, &sid, &[doc]);
    let pd = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0]
        ["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&api.url("/"));
    b.type_into("#key", api.key());
    b.type_into("#reviewer", "Ada");
    b.click("#signin button[type=submit]");
    b.text_until("#pipelines", |t| t.contains("Tables"));
    b.goto(&api.url(&format!("/ui/#/queue/{pd}/lines")));
    let failing = b.text_until("#failing", |t| t.contains("lines[1]"));
    assert!(
        failing.contains("-10") && failing.contains("| B | -10 |"),
        "{failing}"
    );
    assert!(
        !failing.contains("lines[0]"),
        "only the failing element: {failing}"
    );
    b.save("browser-shots", "failing-element");
    b.click("#fix-1");
    assert!(b.text("#value-label").contains("lines[1]"));
    b.type_into("#value", r#"{"description": "B", "amount": 10}"#);
    b.click("#confirm");
    let row = wait_for(20, || {
        let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
        (row["status"] == "complete").then_some(row)
    });
    assert_eq!(
        row["fields"]["lines"],
        json!([{"description": "A", "amount": 40}, {"description": "B", "amount": 10}])
    );
    let log = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body;
    assert_eq!(log["entries"][0]["element"], "lines[1]", "{log}");
    assert_eq!(log["entries"][0]["decidedByName"], "Ada", "{log}");
}
