//! Secrets and hygiene: keys never reach the logs, slow clients are dropped, oversized heads and
//! bodies are refused everywhere.

use crate::common::*;
use quire::http::ROUTES;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "tlnc_test_hygienehygienehygienehygiene0001";

#[test]
fn keys_never_reach_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db").to_string_lossy().into_owned();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["--db", &db, "serve", "--port", "0", "--debug-routes"])
        .env("QUIRE_BOOTSTRAP_KEY", KEY)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let port: u16 = wait_for(30, || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let rest = text.split("listening on http://").nth(1)?;
        rest.split(' ').next()?.rsplit(':').next()?.parse().ok()
    });
    let api = Remote::new(port, KEY);
    let base = format!("http://127.0.0.1:{port}");
    let wrong = "tlnc_test_wrongwrongwrongwrongwrongwrong0001";
    let s = api.post(
        "/v1/schemas",
        &json!({"name": "s", "fields": {"a": "string"}}),
    );
    assert_eq!(s.status, 201);
    let sid = s.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.put(
            &format!("/v1/schemas/{sid}/rail"),
            &json!({"rail": [{"type": "schema"}]})
        )
        .status,
        200
    );
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": [{"filename": "a.txt", "content": "A: 1"}]}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let pid = p.body["id"].as_str().unwrap().to_string();
    wait_for(30, || {
        (api.get(&format!("/v1/pipelines/{pid}")).body["status"] == "completed").then_some(())
    });
    assert_eq!(api.get("/v1/schemas").status, 200);
    let c = &api.http;
    for (k, expect) in [(wrong, 401), ("tlnc_short", 401), ("not-a-key", 401)] {
        let r = c
            .get(format!("{base}/v1/schemas"))
            .bearer_auth(k)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), expect);
    }
    // A key in places it does not belong: a query string, an odd header, a body, a bad path.
    let _ = c.get(format!("{base}/v1/schemas?api_key={KEY}")).send();
    let _ = c
        .get(format!("{base}/v1/nothing/{KEY}"))
        .bearer_auth(KEY)
        .send();
    let _ = c
        .get(format!("{base}/v1/schemas"))
        .header("X-Api-Key", KEY)
        .send();
    let _ = c
        .post(format!("{base}/v1/schemas"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "k1")
        .json(&json!({"name": KEY}))
        .send();
    let _ = c
        .get(format!("{base}/v1/_debug/panic"))
        .bearer_auth(KEY)
        .send();
    // The writer logs a settled run just after its commit; let that line reach the file.
    let settled = format!("pipeline {pid} settled: completed");
    wait_for(10, || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|t| t.contains(&settled))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("quire::access"),
        "no access lines at all?\n{text}"
    );
    // Engine events at info, and the access line names the route template, not the path.
    assert!(
        text.contains(&format!("pipeline {pid} started: 1 documents")),
        "{text}"
    );
    assert!(
        text.contains(&format!("pipeline {pid} settled: completed")),
        "{text}"
    );
    assert!(text.contains("GET /v1/pipelines/{id} 200"), "{text}");
    for secret in [KEY, wrong, &KEY[10..]] {
        assert!(!text.contains(secret), "a key reached the log");
    }
    assert!(
        !text.contains("tlnc_"),
        "something key-like reached the log"
    );
}

#[test]
fn a_slow_client_is_answered_408_and_dropped_while_others_are_served() {
    let api = start_with(|c| c.request_timeout = 1);
    let addr = api.srv.url.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are served while it dawdles.
    assert_eq!(api.get("/healthz").status, 200);
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the slow client was kept"
    );
    assert!(answer.is_empty() || answer.contains("408"), "{answer}");
}

#[test]
fn oversized_heads_and_bodies_are_refused_at_every_write_route() {
    let api = start_with(|c| {
        c.max_body = 64 * 1024;
        c.max_upload = 128 * 1024;
    });
    let world = crate::common::world::World::build(&api);
    // A header far beyond any sane size.
    let r = api
        .http
        .get(api.url("/v1/schemas"))
        .bearer_auth(api.key())
        .header("X-Padding", "a".repeat(100 * 1024))
        .send();
    let r = r.expect("an answer, not a dropped connection");
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("headers"));
    let big = json!({"name": "x".repeat(300 * 1024)}).to_string();
    for (template, methods) in ROUTES {
        for m in methods
            .iter()
            .filter(|m| matches!(**m, "POST" | "PUT" | "PATCH"))
        {
            let r = api.send_json_bytes(m, &world.fill(template), big.clone());
            assert_envelope(&r, 413, "payload_too_large");
        }
    }
    let part = reqwest::blocking::multipart::Part::bytes(vec![b'a'; 200 * 1024])
        .file_name("big.txt")
        .mime_str("text/plain")
        .unwrap();
    let r = send(
        api.http
            .post(api.url("/v1/documents"))
            .bearer_auth(api.key())
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part)),
    );
    assert_envelope(&r, 413, "payload_too_large");
    assert_eq!(api.get("/readyz").status, 200);
}
