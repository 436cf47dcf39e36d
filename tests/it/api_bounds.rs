//! Bounds one client cannot get past: a request body's deadline, requests per address, heavy
//! reads at once, and page sizes that shrink with what a row carries.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn port(api: &Api) -> u16 {
    api.srv.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sends a request head promising `len` body bytes, and only a few of them.
fn slow_body(api: &Api, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port(api))).unwrap();
    write!(
        s,
        "POST /v1/schemas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"na",
        api.key()
    )
    .unwrap();
    s.flush().unwrap();
    s
}

fn answer(mut s: TcpStream, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains("\"path\"") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_refused_with_an_envelope() {
    let api = start_with(|c| c.body_timeout = 1);
    let started = Instant::now();
    let got = answer(slow_body(&api, 1000), Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("did not arrive within 1 s"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // Nothing was created.
    assert_eq!(api.get("/v1/schemas").body["data"], json!([]));
}

#[test]
fn one_address_holds_at_most_its_share_of_requests_in_progress() {
    // The real binary, on its own: the cap counts every request of the process.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cap.db").to_string_lossy().into_owned();
    let key = "tlnc_test_capcapcapcapcapcapcapcapcapcap01";
    let (mut child, port) = spawn_server(
        &db,
        key,
        &["--max-client-requests", "2", "--body-timeout", "60"],
    );
    let api = Remote::new(port, key);
    let head = format!(
        "POST /v1/schemas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"na"
    );
    let open = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s
    };
    // Two requests held in progress. One refused because a poll was in progress at that moment
    // (the cap at work) is sent again.
    let mut held: Vec<TcpStream> = (0..2).map(|_| open()).collect();
    let refused = wait_for(30, || {
        let r = api.get("/v1/schemas");
        if r.status == 503 {
            return Some(r);
        }
        for h in held.iter_mut() {
            h.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let answered = matches!(h.peek(&mut b), Ok(n) if n > 0);
            h.set_nonblocking(false).unwrap();
            if answered {
                *h = open();
            }
        }
        None
    });
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("requests in progress"),
        "{}",
        refused.text
    );
    assert_eq!(
        refused.body["code"], "service_unavailable",
        "{}",
        refused.text
    );
    assert_eq!(refused.body["retryable"], true);
    assert!(refused.headers.get("retry-after").is_some());
    drop(held);
    wait_for(30, || (api.get("/v1/schemas").status == 200).then_some(()));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_large_document_text_streams_exactly_and_heavy_reads_beyond_the_cap_wait_their_turn() {
    let api = start_with(|c| c.max_heavy_reads = 1);
    // 40 MiB of text (more than loopback buffers hold) with quotes, backslashes, control and
    // multi-byte characters.
    let unit = "Zoë said \"ok\" \\ tab\t€ line\n";
    let text = unit.repeat(40 * 1024 * 1024 / unit.len());
    let id = upload(&api, "big.txt", &text);
    let got = api.get(&format!("/v1/documents/{id}?include=text"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body["text"].as_str().unwrap(), text);
    assert_eq!(got.body["id"], json!(id));
    // A reader that stops reading holds its permit: the next heavy read is told to retry.
    let mut s = TcpStream::connect(("127.0.0.1", port(&api))).unwrap();
    write!(
        s,
        "GET /v1/documents/{id}?include=text HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        api.key()
    )
    .unwrap();
    // Its answer has started (it holds the one permit), and its reader reads no further.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let busy = api.get(&format!("/v1/documents/{id}?include=text"));
    assert_envelope(&busy, 503, "service_unavailable");
    assert!(busy.header("retry-after").is_some());
    // Light reads are not held back.
    assert_eq!(api.get(&format!("/v1/documents/{id}")).status, 200);
    drop(s);
    wait_for(20, || {
        (api.get(&format!("/v1/documents/{id}?include=text")).status == 200).then_some(())
    });
}

#[test]
fn wide_rows_page_within_the_byte_budget_and_every_row_is_reached() {
    let api = start();
    let fields: Vec<Value> = (0..500)
        .map(|i| json!({"field_name": format!("f{i}")}))
        .collect();
    let s = api.create_schema(&json!({"name": "wide", "fields": fields}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let text: String = (0..500).map(|i| format!("F{i}: value {i}\n")).collect();
    let docs: Vec<Value> = (0..30)
        .map(|d| json!({"filename": format!("w{d}.txt"), "content": format!("{text}Doc: {d}")}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(())
    });
    let mut seen = 0;
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let r = api.get(&format!(
            "/v1/pipelines/{pid}/results?include=cells,provenance&limit=200&cursor={cursor}"
        ));
        assert_eq!(r.status, 200, "{}", r.text);
        let n = r.body["data"].as_array().unwrap().len();
        assert!(
            n < 30,
            "a page of 500-field rows with provenance is short: {n}"
        );
        // 4 MiB of rows, plus the row that crossed the line.
        assert!(r.text.len() < 5 * 1024 * 1024, "{} bytes", r.text.len());
        seen += n;
        pages += 1;
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 30);
    assert!(pages >= 2);
    // Without the heavy parts the asked limit stands.
    let r = api.get(&format!("/v1/pipelines/{pid}/results?limit=200"));
    assert_eq!(r.body["data"].as_array().unwrap().len(), 30);
}

/// Follows a list's cursors to its end: every page's rows and its size in bytes.
fn all_pages(api: &Api, path: &str) -> (Vec<Value>, Vec<usize>) {
    let (mut rows, mut sizes, mut cursor) = (Vec::new(), Vec::new(), String::new());
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = api.get(&format!("{path}{sep}cursor={cursor}"));
        assert_eq!(r.status, 200, "{}", r.text);
        rows.extend(r.body["data"].as_array().unwrap().iter().cloned());
        sizes.push(r.text.len());
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return (rows, sizes),
        }
    }
}

#[test]
fn pages_of_large_values_are_cut_by_their_measured_size_in_results_and_data_products() {
    // One field, so no estimate from the field count can see these rows coming: only the bytes
    // written can cut the page.
    let api = start();
    let s = api.create_schema(&json!({"name": "big", "fields": [{"field_name": "notes"}]}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let docs: Vec<Value> = (0..24)
        .map(|d| {
            let notes = format!("{d:03}{}", "n".repeat(300_000));
            json!({"filename": format!("n{d}.txt"), "content": format!("Notes: {notes}")})
        })
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_for(120, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(())
    });
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert!(dp.status < 300, "{}", dp.text);
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();
    for path in [
        format!("/v1/pipelines/{pid}/results?limit=200"),
        format!("/v1/data-products/{dpid}/results?limit=100"),
    ] {
        let (rows, sizes) = all_pages(&api, &path);
        // 4 MiB of rows a page, plus the row that crossed the line and the page's head.
        let bound = 4 * 1024 * 1024 + 350_000;
        assert!(
            sizes.iter().all(|s| *s < bound),
            "{path}: pages of {sizes:?} bytes"
        );
        assert!(sizes.len() >= 2, "{path}: {} pages", sizes.len());
        let mut seen: Vec<String> = rows
            .iter()
            .map(|r| {
                let v = r["fields"]["notes"].as_str().unwrap_or_default();
                assert_eq!(v.len(), 300_003, "{path}: every value whole");
                v[..3].to_string()
            })
            .collect();
        seen.sort();
        let want: Vec<String> = (0..24).map(|d| format!("{d:03}")).collect();
        assert_eq!(seen, want, "{path}: every row once, none twice");
    }
}

#[test]
fn a_page_that_cannot_be_read_is_an_error_envelope_not_an_empty_success() {
    let api = start();
    let s = api.create_schema(&json!({"name": "c", "fields": [{"field_name": "a"}]}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": [{"filename": "a.txt", "content": "A: 1"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    // A stored value that no longer decodes (a damaged row): reading it must fail loudly.
    let db = api.srv.store_connection();
    db.execute("UPDATE pipeline_docs SET restarts = '[[2,' ", [])
        .unwrap();
    drop(db);
    for path in [
        format!("/v1/pipelines/{pid}/results"),
        format!("/v1/pipelines/{pid}/results?include=cells"),
    ] {
        let r = api.get(&path);
        assert_envelope(&r, 500, "internal_error");
    }
}
