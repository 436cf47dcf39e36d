//! Load: 64 concurrent clients mixing reads, uploads, pipeline creation, reruns and resolves on a
//! file database. Zero 5xx, zero lost writes; latency percentiles are printed.
//!
//! `cargo test --test it load::` runs 10 s; `QUIRE_LOAD_SECS=60 cargo test --release --test it
//! load:: -- --ignored --nocapture` runs the full minute.

use crate::common::*;
use quire::tools::fixtures;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;

#[derive(Default)]
struct Tally {
    /// Latencies by operation, in microseconds.
    latency: BTreeMap<&'static str, Vec<u64>>,
    statuses: BTreeMap<u16, u64>,
    server_errors: Vec<String>,
    documents: Vec<String>,
    pipelines: Vec<String>,
    reruns: Vec<String>,
    decisions: Vec<(String, String)>,
}

fn spec(api: &Api) -> String {
    let s = api.create_schema(&json!({"name": "Invoices", "fields": fixtures::schema_fields()}));
    let sid = s["id"].as_str().unwrap().to_string();
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Limit", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 5000}]}]}));
    assert_eq!(g.status, 201, "{}", g.text);
    let rail = json!({"rail": [{"type": "schema"}, {"type": "valid"}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    sid
}

fn client(api: &Api, key: &str, sid: &str, seed: u64, until: Instant, tally: &Mutex<Tally>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut mine: Vec<String> = Vec::new();
    let mut my_runs: Vec<String> = Vec::new();
    let mut serial = seed * 1_000_000;
    while Instant::now() < until {
        let roll = rng.gen_range(0..100);
        let started = Instant::now();
        let (op, r): (&'static str, Resp) = match roll {
            0..=39 => {
                let path = match rng.gen_range(0..4) {
                    0 => "/v1/documents?limit=20".to_string(),
                    1 => "/v1/field-reviews/summary".to_string(),
                    2 if !my_runs.is_empty() => {
                        format!(
                            "/v1/pipelines/{}/results",
                            my_runs[rng.gen_range(0..my_runs.len())]
                        )
                    }
                    _ => "/v1/pipelines?limit=20".to_string(),
                };
                ("read", api.get_as(key, &path))
            }
            40..=59 => {
                serial += 1;
                let f = fixtures::invoice(5, serial);
                let r = api.post_as(
                    key,
                    "/v1/documents",
                    &json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type}),
                );
                if r.status == 201 {
                    let id = r.body["id"].as_str().unwrap().to_string();
                    mine.push(id.clone());
                    tally.lock().unwrap().documents.push(id);
                }
                ("upload", r)
            }
            60..=69 if !mine.is_empty() => {
                let n = rng.gen_range(1..=mine.len().min(5));
                let ids: Vec<&String> = mine.iter().rev().take(n).collect();
                let r = api.post_as(
                    key,
                    "/v1/pipelines",
                    &json!({"schema_id": sid, "document_ids": ids}),
                );
                if r.status == 201 {
                    let id = r.body["id"].as_str().unwrap().to_string();
                    my_runs.push(id.clone());
                    tally.lock().unwrap().pipelines.push(id);
                }
                ("pipeline", r)
            }
            70..=79 if !my_runs.is_empty() => {
                let p = my_runs[rng.gen_range(0..my_runs.len())].clone();
                let r = api.post_as(
                    key,
                    &format!("/v1/pipelines/{p}/rerun"),
                    &json!({"from_phase": "validation"}),
                );
                if r.status == 200 {
                    tally.lock().unwrap().reruns.push(p);
                }
                ("rerun", r)
            }
            80..=94 => {
                let q = api.get_as(key, "/v1/field-reviews?limit=5");
                match q.body["data"].as_array().and_then(|a| a.first()).cloned() {
                    Some(item) => {
                        let (pd, field) = (
                            item["pipeline_document_id"].as_str().unwrap().to_string(),
                            item["field_key"].as_str().unwrap().to_string(),
                        );
                        let r = api.post_as(
                            key,
                            &format!("/v1/field-reviews/{pd}/{field}/resolve"),
                            &json!({"action": "approve"}),
                        );
                        if r.status == 200 {
                            tally.lock().unwrap().decisions.push((pd, field));
                        }
                        ("resolve", r)
                    }
                    None => ("review queue", q),
                }
            }
            _ if !my_runs.is_empty() => {
                let p = &my_runs[rng.gen_range(0..my_runs.len())];
                (
                    "progress",
                    api.get_as(key, &format!("/v1/pipelines/{p}/progress")),
                )
            }
            _ => ("health", api.get("/healthz")),
        };
        let took = started.elapsed().as_micros() as u64;
        let mut t = tally.lock().unwrap();
        t.latency.entry(op).or_default().push(took);
        *t.statuses.entry(r.status).or_default() += 1;
        if r.status >= 500 {
            t.server_errors
                .push(format!("{op}: {} {}", r.status, r.text));
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn load(secs: u64) {
    let api = start_with(|c| c.workers = 2);
    let sid = spec(&api);
    // Keys whose limit is far above what 64 clients can offer: the test is about the engine,
    // not the limiter.
    let keys: Vec<String> = (0..8)
        .map(|_| api.new_org_key("default", "read,write", &["--rate-limit", "10000000"]))
        .collect();
    let tally = Mutex::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for i in 0..CLIENTS {
            let (api, key, sid, tally) = (&api, &keys[i % keys.len()], &sid, &tally);
            s.spawn(move || client(api, key, sid, i as u64 + 1, until, tally));
        }
    });
    let t = tally.into_inner().unwrap();
    assert!(
        t.server_errors.is_empty(),
        "5xx answers: {:#?}",
        &t.server_errors[..t.server_errors.len().min(5)]
    );

    // Nothing acknowledged is missing, and every run finishes.
    for p in &t.pipelines {
        crate::common::world::wait_settled(&api, p);
    }
    let db = api.srv.store_connection();
    let exists = |sql: &str, id: &str| -> bool { db.query_row(sql, [id], |_| Ok(())).is_ok() };
    for d in &t.documents {
        assert!(
            exists("SELECT 1 FROM documents WHERE id = ?1", d),
            "upload {d} lost"
        );
    }
    for p in &t.pipelines {
        assert!(
            exists("SELECT 1 FROM pipelines WHERE id = ?1", p),
            "pipeline {p} lost"
        );
    }
    let mut reruns: BTreeMap<&String, i64> = BTreeMap::new();
    for p in &t.reruns {
        *reruns.entry(p).or_default() += 1;
    }
    for (p, n) in reruns {
        let recorded: i64 = db
            .query_row(
                "SELECT count(*) FROM reruns WHERE pipeline_id = ?1",
                [p],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            recorded >= n,
            "pipeline {p}: {n} reruns acknowledged, {recorded} recorded"
        );
    }
    for (pd, field) in &t.decisions {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM review_decisions d JOIN pipeline_documents pd ON pd.seq = d.pd_seq
                 WHERE pd.id = ?1 AND d.field_key = ?2",
                [pd, field],
                |r| r.get(0),
            )
            .unwrap();
        assert!(n >= 1, "decision on {pd}/{field} lost");
    }

    let mut all: Vec<u64> = t.latency.values().flatten().copied().collect();
    all.sort_unstable();
    println!(
        "load: {CLIENTS} clients for {secs} s: {} requests ({:.0}/s), statuses {:?}, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        all.len() as f64 / secs as f64,
        t.statuses,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    for (op, mut v) in t.latency {
        v.sort_unstable();
        println!(
            "  {op:<13} {:>6} requests  p50 {:>7.1} ms  p99 {:>7.1} ms",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    println!(
        "  acknowledged and found: {} uploads, {} pipelines, {} reruns, {} decisions",
        t.documents.len(),
        t.pipelines.len(),
        t.reruns.len(),
        t.decisions.len()
    );
}

#[test]
fn sixty_four_clients_for_ten_seconds_get_no_5xx_and_lose_nothing() {
    load(10);
}

#[test]
#[ignore]
fn sixty_four_clients_for_a_minute() {
    let secs = std::env::var("QUIRE_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    load(secs);
}
