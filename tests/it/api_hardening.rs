//! What a client can do to the service with odd requests (issue 12): bounded metrics and logs,
//! sealed cursors, rate-limit headers and per-organization limits, one Authorization header,
//! the decisions export's filter, and the refusals actix writes itself.

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn schema_body(name: &str) -> Value {
    json!({ "name": name, "fields": { "invoice_number": "string", "total": "number" } })
}

/// A method no standard names, `len` bytes long, distinct per `i`.
fn odd_method(i: usize, len: usize) -> Method {
    let name = format!("ODD{i}{}", "M".repeat(len));
    Method::from_bytes(name.as_bytes()).unwrap()
}

// --- 1. Metrics and the access log -----------------------------------------------------------

#[test]
fn metrics_labels_stay_closed_under_custom_methods_and_unknown_paths() {
    let api = start();
    assert_eq!(api.get("/v1/schemas").status, 200);
    let metrics = || send(api.http.get(api.url("/metrics"))).text;
    // Scraping is counted too: scrape once so that the series of /metrics exist from here on.
    metrics();
    let batch = |from: usize| {
        for i in from..from + 40 {
            // A long custom method on a route that exists (405), and on paths that do not (404).
            let r = send(
                api.http
                    .request(odd_method(i, 15_000), api.url("/v1/schemas"))
                    .bearer_auth(api.key()),
            );
            assert_envelope(&r, 405, "method_not_allowed");
            let r = send(
                api.http
                    .request(odd_method(i, 200), api.url(&format!("/v1/probe-{i}/xyz"))),
            );
            assert_envelope(&r, 404, "not_found");
            let r = send(api.http.get(api.url(&format!("/wp-admin/{i}.php"))));
            assert_envelope(&r, 404, "not_found");
            let r = send(
                api.http
                    .request(Method::from_bytes(b"PURGE").unwrap(), api.url("/healthz")),
            );
            assert_eq!(r.status, 405);
        }
    };
    batch(0);
    let after_first = metrics();
    batch(1000);
    let after_second = metrics();
    for text in [&after_first, &after_second] {
        assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
        for client_sent in ["ODD", "MMMM", "PURGE", "probe-", "wp-admin", ".php"] {
            assert!(
                !text.contains(client_sent),
                "/metrics repeats '{client_sent}'"
            );
        }
        assert!(text.contains(
            "quire_http_requests_total{route=\"/v1/schemas\",method=\"OTHER\",status=\"405\"}"
        ));
        assert!(text.contains("route=\"<unmatched>\",method=\"OTHER\",status=\"404\"}"));
        assert!(text.contains("route=\"<unmatched>\",method=\"GET\",status=\"404\"}"));
    }
    // The second batch added no series: the text grew by digits of counters at most.
    let series = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(series(&after_first), series(&after_second));
    // (Process figures such as CPU seconds may even print shorter the second time.)
    assert!(after_second.len().abs_diff(after_first.len()) < 512);
}

#[test]
fn the_access_log_repeats_at_most_a_bounded_prefix_of_what_the_client_sent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db").to_string_lossy().into_owned();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let key = "tlnc_test_accesslogaccesslogaccesslog000001";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["--db", &db, "serve", "--port", "0"])
        .env("QUIRE_BOOTSTRAP_KEY", key)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let port: u16 = wait_for(30, || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let rest = text.split("listening on http://").nth(1)?;
        rest.split(' ').next()?.rsplit(':').next()?.parse().ok()
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let long_path = format!("/v1/{}", "p".repeat(10_000));
    for (rid, method, path) in [
        (
            "long-method-known-route",
            odd_method(1, 15_000),
            "/v1/schemas",
        ),
        (
            "long-method-long-path",
            odd_method(2, 15_000),
            long_path.as_str(),
        ),
        ("get-long-path", Method::GET, long_path.as_str()),
    ] {
        let r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .header("X-Request-Id", rid)
            .send()
            .unwrap();
        assert!(r.status().is_client_error());
    }
    let text = wait_for(10, || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|t| t.contains("get-long-path"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("long-method-") || l.contains("get-long-path"))
        .collect();
    assert_eq!(ours.len(), 3, "{text}");
    for line in ours {
        assert!(line.len() < 400, "a log line of {} bytes", line.len());
        assert!(!line.contains(&"M".repeat(64)), "{line}");
        assert!(!line.contains(&"p".repeat(300)), "{line}");
    }
}

// --- 2. Cursors ------------------------------------------------------------------------------

/// Three schemas, and the cursor after the newest one.
fn first_page_cursor(api: &Api) -> String {
    for i in 0..3 {
        api.create_schema(&schema_body(&format!("s{i}")));
    }
    let r = api.get("/v1/schemas?limit=1");
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["pagination"]["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string()
}

#[test]
fn a_cursor_issued_to_another_organization_is_refused_with_400() {
    let api = start();
    let cursor = first_page_cursor(&api);
    let other = api.new_org_key("other", "read,write", &[]);
    for i in 0..3 {
        let r = api.post_as(&other, "/v1/schemas", &schema_body(&format!("o{i}")));
        assert_eq!(r.status, 201);
    }
    let r = api.get_as(&other, &format!("/v1/schemas?limit=1&cursor={cursor}"));
    assert_envelope(&r, 400, "bad_request");
    assert!(r.body["message"].as_str().unwrap().contains("cursor"));
    // The organization it was issued to still pages on with it.
    let r = api.get(&format!("/v1/schemas?limit=1&cursor={cursor}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"][0]["name"], "s1");
}

#[test]
fn a_re_encoded_or_altered_cursor_is_refused_with_400() {
    let api = start();
    let cursor = first_page_cursor(&api);
    let bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    let prefixed = |p: &[u8]| {
        let mut b = p.to_vec();
        b.extend_from_slice(&bytes);
        URL_SAFE_NO_PAD.encode(b)
    };
    let flipped = |i: usize| {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        URL_SAFE_NO_PAD.encode(b)
    };
    let variants = [
        // The same number written another way ("04", "+4").
        prefixed(b"0"),
        prefixed(b"+"),
        prefixed(b"00"),
        flipped(0),
        flipped(bytes.len() / 2),
        flipped(bytes.len() - 1),
        format!("{cursor}="),
        base64::engine::general_purpose::URL_SAFE.encode(&bytes),
        cursor[..cursor.len() - 1].to_string(),
    ];
    for v in variants.iter().filter(|v| **v != cursor) {
        let r = api.get(&format!("/v1/schemas?limit=1&cursor={}", urlencode(v)));
        assert_envelope(&r, 400, "bad_request");
    }
    // A cursor of one list is not a cursor of another.
    for list in [
        "/v1/fields",
        "/v1/data-policies",
        "/v1/documents",
        "/v1/pipelines",
    ] {
        let r = api.get(&format!("{list}?cursor={cursor}"));
        assert_envelope(&r, 400, "bad_request");
    }
    assert_eq!(
        api.get(&format!("/v1/schemas?limit=1&cursor={cursor}"))
            .status,
        200
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_cursor_does_not_carry_the_row_sequence_readably() {
    let api = start();
    // 1,000 registry fields: the newest has sequence 1000 in a fresh database, a number long
    // enough not to turn up by chance in 66 random characters.
    for prefix in ["a", "b"] {
        let fields: serde_json::Map<String, Value> = (0..500)
            .map(|i| (format!("{prefix}{i}"), json!("string")))
            .collect();
        api.create_schema(&json!({ "name": prefix, "fields": fields }));
    }
    let r = api.get("/v1/fields?limit=1");
    assert_eq!(r.body["pagination"]["total"], 1000, "{}", r.text);
    assert_eq!(r.body["data"][0]["canonical_name"], "b499");
    let cursor = r.body["pagination"]["next_cursor"].as_str().unwrap();
    assert!(!cursor.contains("1000"), "{cursor}");
    for engine in [
        URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        if let Ok(raw) = engine.decode(cursor) {
            assert!(
                !raw.windows(4).any(|w| w == b"1000"),
                "the cursor is base64 of text holding the position: {}",
                String::from_utf8_lossy(&raw)
            );
            assert!(!raw.windows(8).any(|w| w == 1000i64.to_le_bytes()));
            assert!(!raw.windows(8).any(|w| w == 1000i64.to_be_bytes()));
        }
    }
    // Two pages at the same position do not give the same cursor either: equal cursors would
    // still tell a caller where its rows stand.
    let again = api.get("/v1/fields?limit=1").body["pagination"]["next_cursor"].clone();
    assert_ne!(again.as_str(), Some(cursor));
    let next = api.get(&format!("/v1/fields?limit=1&cursor={cursor}"));
    assert_eq!(next.body["data"][0]["canonical_name"], "b498");
}

// --- 3. Rate limits, Authorization, the decisions export -------------------------------------

fn rate_headers(r: &Resp) -> (u64, u64, u64) {
    let h = |n: &str| {
        r.header(n)
            .unwrap_or_else(|| panic!("no {n} on a {} answer", r.status))
            .parse::<u64>()
            .unwrap()
    };
    (
        h("x-ratelimit-limit"),
        h("x-ratelimit-remaining"),
        h("x-ratelimit-reset"),
    )
}

#[test]
fn keys_without_a_limit_still_get_rate_limit_headers() {
    // Rate limiting off for the whole service…
    let api = start_with(|c| c.rate_limit = 0);
    for _ in 0..3 {
        let r = api.get("/v1/schemas");
        assert_eq!(r.status, 200);
        let (limit, remaining, reset) = rate_headers(&r);
        assert_eq!((limit, remaining), (4_294_967_295, 4_294_967_295));
        let now = unix_now();
        assert!(
            reset + 1 >= now && reset <= now + 1,
            "reset {reset}, now {now}"
        );
    }
    // …or for one key (`--rate-limit 0`) on a limited service; errors carry them too.
    let api = start();
    let free = api.new_org_key("free", "read", &["--rate-limit", "0"]);
    let r = api.get_as(&free, "/v1/schemas");
    assert_eq!(rate_headers(&r).0, 4_294_967_295);
    let r = api.post_as(&free, "/v1/schemas", &schema_body("x"));
    assert_envelope(&r, 403, "insufficient_scope");
    assert_eq!(rate_headers(&r).0, 4_294_967_295);
    let r = api.get_as(&free, "/v1/schemas/not-a-uuid");
    assert_envelope(&r, 400, "bad_request");
    assert_eq!(rate_headers(&r).1, 4_294_967_295);
}

#[test]
fn rate_limit_reset_is_when_the_next_request_passes_and_agrees_with_retry_after() {
    let api = start();
    // 3 per minute: one token back every 20 s.
    let key = api.new_org_key("slow", "read", &["--rate-limit", "3"]);
    let r = api.get_as(&key, "/v1/schemas");
    let (_, remaining, reset) = rate_headers(&r);
    assert_eq!(remaining, 2);
    assert!(
        reset <= unix_now(),
        "a token is there: reset is now, not {reset}"
    );
    api.get_as(&key, "/v1/schemas");
    let r = api.get_as(&key, "/v1/schemas");
    let (_, remaining, reset) = rate_headers(&r);
    assert_eq!(remaining, 0);
    let now = unix_now();
    // At most one refill period away (less if the requests took a while on a loaded machine).
    assert!(
        (now + 1..=now + 21).contains(&reset),
        "reset {reset}, now {now}"
    );
    let r = api.get_as(&key, "/v1/schemas");
    assert_envelope(&r, 429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let (_, _, reset) = rate_headers(&r);
    let now = unix_now();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert!(
        reset + 1 >= now + retry && reset <= now + retry + 1,
        "reset {reset} disagrees with retry-after {retry} at {now}"
    );
}

#[test]
fn an_organization_limit_is_shared_by_its_keys_and_off_by_default() {
    let api = start_with(|c| c.org_rate_limit = 4);
    let second = api.new_org_key("default", "read", &[]);
    let other_org = api.new_org_key("other", "read", &[]);
    for key in [api.key(), second.as_str(), api.key()] {
        assert_eq!(api.get_as(key, "/v1/schemas").status, 200);
    }
    let r = api.get_as(&second, "/v1/schemas");
    assert_eq!(r.status, 200);
    // The organization's bucket (4) is the tighter one now, and names the headers.
    assert_eq!(rate_headers(&r).0, 4);
    assert_eq!(rate_headers(&r).1, 0);
    for key in [api.key(), second.as_str()] {
        let r = api.get_as(key, "/v1/schemas");
        assert_envelope(&r, 429, "rate_limited");
        assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    }
    // Another organization has its own bucket.
    let r = api.get_as(&other_org, "/v1/schemas");
    assert_eq!(r.status, 200);
    assert_eq!(rate_headers(&r).1, 3);
    // The flag exists, documented, and is off unless given.
    let help = api.cli(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--org-rate-limit"), "{help}");
    let plain = start();
    for _ in 0..6 {
        assert_eq!(plain.get("/v1/schemas").status, 200);
    }
}

#[test]
fn two_authorization_headers_are_refused_with_400() {
    let api = start();
    let other = api.new_org_key("other", "read,write", &[]);
    let bearer = |k: &str| format!("Bearer {k}");
    for (first, second) in [
        (bearer(api.key()), bearer(&other)),
        (bearer(&other), bearer(api.key())),
        (bearer(api.key()), bearer(api.key())),
        (bearer(api.key()), "Basic dXNlcjpwYXNz".to_string()),
    ] {
        let r = send(
            api.http
                .get(api.url("/v1/schemas"))
                .header("Authorization", first)
                .header("Authorization", second),
        );
        assert_envelope(&r, 400, "bad_request");
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization"));
    }
    // Nothing was created under either key by a refused write.
    let r = send(
        api.http
            .post(api.url("/v1/schemas"))
            .header("Authorization", bearer(&other))
            .header("Authorization", bearer(api.key()))
            .json(&schema_body("twice")),
    );
    assert_envelope(&r, 400, "bad_request");
    assert_eq!(api.get("/v1/schemas").body["pagination"]["total"], 0);
    assert_eq!(
        api.get_as(&other, "/v1/schemas").body["pagination"]["total"],
        0
    );
}

#[test]
fn the_decisions_export_applies_its_pipeline_filter() {
    let api = start();
    let world = crate::common::world::World::build(&api);
    let second = api.post(
        "/v1/pipelines",
        &json!({"schema_id": world.schema, "document_ids": world.documents}),
    );
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.body["id"].as_str().unwrap().to_string();
    crate::common::world::wait_settled(&api, &second);
    for pipeline in [&world.pipeline, &second] {
        let q = api.get(&format!("/v1/field-reviews?pipeline_id={pipeline}"));
        let item = &q.body["data"][0];
        let r = api.post(
            &format!(
                "/v1/field-reviews/{}/{}/resolve",
                item["pipeline_document_id"].as_str().unwrap(),
                item["field_key"].as_str().unwrap()
            ),
            &json!({"action": "approve"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let export = |query: &str| {
        let r = api.get(&format!("/v1/field-reviews/decisions/export{query}"));
        assert_eq!(r.status, 200, "{}", r.text);
        let mut rows = csv::Reader::from_reader(r.text.trim_start_matches('\u{feff}').as_bytes());
        rows.records()
            .map(|rec| rec.unwrap().get(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(export("").len(), 2);
    assert_eq!(
        export(&format!("?pipeline_id={}", world.pipeline)),
        vec![world.pipeline.clone()]
    );
    assert_eq!(
        export(&format!("?pipeline_id={second}")),
        vec![second.clone()]
    );
    assert!(export("?pipeline_id=0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01").is_empty());
    let r = api.get("/v1/field-reviews/decisions/export?pipeline_id=nope");
    assert_envelope(&r, 400, "bad_request");
}

// --- 4. Refusals actix writes before any of our code runs ------------------------------------

/// Sends raw bytes and reads the whole answer (the server closes after these refusals).
fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The answer is exactly this status line, `content-length: 0`, `connection: close` and a date:
/// no body, no request id.
fn assert_bare(answer: &str, status_line: &str) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {answer:?}"));
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some(status_line), "{answer:?}");
    let mut names: Vec<String> = lines
        .map(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["connection", "content-length", "date"],
        "{answer:?}"
    );
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-length: 0"), "{answer:?}");
    assert!(head.contains("\r\nconnection: close"), "{answer:?}");
    assert_eq!(body, "", "{answer:?}");
}

/// These are documented exceptions to "every non-2xx is an error envelope" (README): actix-http
/// answers them from its parser and timers, with no hook for a body. If actix starts to offer
/// one, or changes what it sends, this test says so.
#[test]
fn refusals_written_by_actix_itself_are_bare_and_documented() {
    let api = start_with(|c| c.request_timeout = 1);
    let addr = api.srv.url.trim_start_matches("http://").to_string();
    let wait = Duration::from_secs(10);
    // A DEL byte in a header value.
    let a = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Odd: a\x7fb\r\n\r\n",
        wait,
    );
    assert_bare(&a, "HTTP/1.1 400 Bad Request");
    // Both Transfer-Encoding and Content-Length (a request-smuggling shape).
    let a = raw_exchange(
        &addr,
        b"POST /v1/schemas HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        wait,
    );
    assert_bare(&a, "HTTP/1.1 400 Bad Request");
    // More than 96 header lines.
    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_bare(
        &raw_exchange(&addr, &many, wait),
        "HTTP/1.1 431 Request Header Fields Too Large",
    );
    // A head not finished within --request-timeout.
    let a = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait);
    assert_bare(&a, "HTTP/1.1 408 Request Timeout");
    // The same requests, well formed, get our answers.
    assert_eq!(api.get("/healthz").status, 200);
}

/// The NUL character, which PostgreSQL's text cannot hold, fails nothing on either store: in a
/// document's text and name it is kept by SQLite and read back as U+FFFD from PostgreSQL, a run
/// over it completes, a search and an extraction answer; in metadata it is refused alike.
#[test]
fn a_nul_character_in_names_text_and_values_fails_no_request_on_either_store() {
    let api = start();
    let r = api.post(
        "/v1/schemas",
        &json!({"name": "nul\u{0}name", "fields": [{"field_name": "net", "data_type": "number"}, {"field_name": "note"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let sid = r.body["id"].as_str().unwrap().to_string();
    let shown = api.get(&format!("/v1/schemas/{sid}")).body["name"]
        .as_str()
        .unwrap()
        .to_string();
    let replaced = if on_postgres() { '\u{fffd}' } else { '\u{0}' };
    assert_eq!(shown, format!("nul{replaced}name"));
    let put = api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    assert_eq!(put.status, 200, "{}", put.text);
    let doc = upload_bytes(
        &api,
        "a\u{0}b.txt",
        b"Net: 100\nNote: x\0y\n",
        Some("text/plain"),
    );
    assert!(doc.status == 201 || doc.status == 200, "{}", doc.text);
    let did = doc.body["id"].as_str().unwrap().to_string();
    let pid = run_pipeline(&api, &sid, std::slice::from_ref(&did));
    let p = settle(&api, &pid);
    assert_eq!(p["errorDocuments"], 0, "{p}");
    let rows = api.get(&format!("/v1/pipelines/{pid}/results")).body;
    assert_eq!(rows["data"][0]["fields"]["net"], 100, "{rows}");
    let search = api.get("/v1/documents?search=x%00y");
    assert_eq!(search.status, 200, "{}", search.text);
    let x = api.post(
        "/v1/extract",
        &json!({"content": "Net: 7\u{0}", "filename": "n\u{0}.txt", "schema": {"net": "number"}}),
    );
    assert!(x.status < 500, "{}", x.text);
    let meta = api.post(
        "/v1/documents",
        &json!({"filename": "m.txt", "content": "Net: 1", "metadata": {"source_id": "a\u{0}"}}),
    );
    assert_envelope(&meta, 400, "bad_request");
    assert!(meta.text.contains("NUL"), "{}", meta.text);
}
