//! Peak memory of the real binary, read from `/proc`, under the three ways a client used to
//! drive it into gigabytes: heavy reads, a flood of client-chosen metric labels, and a rule that
//! multiplies a value's size. Each scenario runs on its own process, so each peak is its own.

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "tlnc_test_memorymemorymemorymemorymemory01";

/// Peak resident set of a process in MB (`VmHWM`), or `None` off Linux.
fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn server() -> (std::process::Child, Remote, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mem.db").to_string_lossy().into_owned();
    let (child, port) = spawn_server(&db, KEY, &["--workers", "2", "--rate-limit", "0"]);
    (child, Remote::new(port, KEY), dir)
}

fn settle(api: &Remote, pid: &str) {
    wait_for(300, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(())
    });
}

fn report(what: &str, pid: u32, bound: u64) {
    let Some(peak) = peak_rss_mb(pid) else {
        println!("{what}: no /proc here; peak memory not measured");
        return;
    };
    println!("{what}: peak RSS {peak} MB (bound {bound} MB)");
    assert!(peak < bound, "{what}: peak RSS {peak} MB, bound {bound} MB");
}

#[test]
fn eight_concurrent_heavy_readers_stay_under_300_mb() {
    let (mut child, api, _dir) = server();
    let fields: Vec<Value> = (0..500)
        .map(|i| json!({"field_name": format!("f{i}")}))
        .collect();
    let s = api.post("/v1/schemas", &json!({"name": "wide", "fields": fields}));
    assert_eq!(s.status, 201, "{}", s.text);
    let sid = s.body["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let text: String = (0..500).map(|i| format!("F{i}: value {i}\n")).collect();
    let docs: Vec<Value> = (0..200)
        .map(|d| json!({"filename": format!("w{d}.txt"), "content": format!("{text}Doc: {d}")}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();

    // One large document, its text read alongside.
    let big = "Zoë \"quoted\" line\n".repeat(40 * 1024 * 1024 / 20);
    let d = api.post(
        "/v1/documents",
        &json!({"filename": "big.txt", "content": big}),
    );
    assert_eq!(d.status, 201, "{}", d.text);
    let doc = d.body["id"].as_str().unwrap().to_string();
    drop(big);
    // The peak of setting up (a 40 MiB upload among it) is not what is measured here.
    println!("setup: peak RSS {:?} MB", peak_rss_mb(child.id()));
    let _ = std::fs::write(format!("/proc/{}/clear_refs", child.id()), "5");
    let until = Instant::now() + Duration::from_secs(20);
    let (mut pages, mut busy) = (0u64, 0u64);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let (api, pid, dpid, doc) = (&api, &pid, &dpid, &doc);
                s.spawn(move || {
                    let (mut pages, mut busy) = (0u64, 0u64);
                    let mut cursor = String::new();
                    while Instant::now() < until {
                        let path = match n % 4 {
                            0 | 1 => format!("/v1/pipelines/{pid}/results?include=cells,provenance&limit=200&cursor={cursor}"),
                            2 => format!("/v1/data-products/{dpid}/export/audit"),
                            _ => format!("/v1/documents/{doc}?include=text"),
                        };
                        let r = api.get(&path);
                        match r.status {
                            200 => pages += 1,
                            503 => {
                                busy += 1;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            other => panic!("{path}: {other} {}", r.text),
                        }
                        cursor = r.body["pagination"]["next_cursor"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                    }
                    (pages, busy)
                })
            })
            .collect();
        for h in handles {
            let (p, b) = h.join().unwrap();
            pages += p;
            busy += b;
        }
    });
    println!("heavy reads: {pages} answered, {busy} told to retry");
    assert!(pages > 8);
    report("heavy reads", child.id(), 300);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn ten_thousand_requests_with_15_kb_methods_leave_memory_flat() {
    let (mut child, api, _dir) = server();
    let method = reqwest::Method::from_bytes("X".repeat(15_000).as_bytes()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (api, method) = (&api, method.clone());
            s.spawn(move || {
                for i in 0..2_500 {
                    let path = format!("/v1/no/such/route/{t}/{i}");
                    let _ = api
                        .http
                        .request(method.clone(), format!("{}{path}", api.base))
                        .send();
                }
            });
        }
    });
    let metrics = api.get("/metrics");
    assert!(
        metrics.text.len() < 64 * 1024,
        "{} bytes",
        metrics.text.len()
    );
    report("label flood", child.id(), 100);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_rule_that_multiplies_a_value_cannot_take_memory_with_it() {
    let (mut child, api, _dir) = server();
    let s = api.post(
        "/v1/schemas",
        &json!({"name": "amp", "fields": [{"field_name": "vendor"}]}),
    );
    let sid = s.body["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "amplify"}));
    let pol = p.body["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/v1/data-policies/{pol}/fields"),
        &json!({"field_key": "vendor", "type": "string"}),
    );
    let r = api.post(
        &format!("/v1/data-policies/{pol}/rules"),
        &json!({"field_key": "vendor", "rule_type": "regex_replace",
                "config": {"pattern": "", "replacement": "x".repeat(5000)}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [pol]}}]}),
    );
    // 20 documents of 100 KB: 500 MB each without a budget.
    let docs: Vec<Value> = (0..20)
        .map(|d| json!({"filename": format!("a{d}.txt"), "content": format!("Vendor: {}{d}", "a".repeat(100_000))}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
    assert_eq!(p["completedDocuments"], 20, "{p}");
    report("amplifying rule", child.id(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
