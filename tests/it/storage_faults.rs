//! Storage faults: a full database, a read-only file, a damaged file.

use crate::common::world::{wait_settled, World};
use crate::common::*;
use quire::config::Config;
use serde_json::{json, Value};

fn big_doc(name: &str) -> Value {
    // Far more than the free space of any page: storing it needs new pages.
    json!({"filename": name, "content": format!("Net: 1\n{}", "x".repeat(2_000_000))})
}

fn invoices(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"filename": format!("f{i}.txt"),
            "content": format!("Invoice Number: INV-{i}\nNet: {}\nTax: 3\n{}", i % 90, "Note ".repeat(200))}))
        .collect()
}

fn names(api: &Api, path: &str) -> Vec<String> {
    let r = api.get(path);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["filename"]
                .as_str()
                .or(d["id"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A configuration on a database file of the test's own, kept across restarts, with its key.
fn on_file<'a>(path: &'a std::path::Path, key: &'a str) -> impl Fn(&mut Config) + Copy + 'a {
    move |c: &mut Config| {
        c.db = path.to_string_lossy().into_owned();
        c.bootstrap_key = Some(key.to_string());
    }
}

fn without_clock(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("generated_at");
    }
    v
}

#[test]
fn a_full_database_refuses_writes_keeps_reads_holds_documents_and_recovers() {
    if sqlite_only("the page cap (--max-db-pages)") {
        return;
    }
    let api = start();
    let world = World::build(&api);
    // Queue a run that cannot start yet, then take the space away.
    api.srv.pause_executor();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": world.schema, "documents": invoices(60)}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let held = r.body["id"].as_str().unwrap().to_string();
    let db = &api.srv.state().db;
    db.set_max_pages(Some(1)); // clamped by SQLite to the current size: no page can be added
    api.srv.resume_executor();

    let ready = api.get("/readyz");
    assert_envelope(&ready, 503, "service_unavailable");
    assert!(ready.body["message"].as_str().unwrap().contains("full"));
    let docs_before = names(&api, "/v1/documents?limit=100");
    let pipelines_before = names(&api, "/v1/pipelines?limit=100");
    let upload = api.post("/v1/documents", &big_doc("too-big.txt"));
    assert_envelope(&upload, 503, "service_unavailable");
    let run = api.post(
        "/v1/pipelines",
        &json!({"schema_id": world.schema, "documents": [big_doc("inline.txt")]}),
    );
    assert_envelope(&run, 503, "service_unavailable");
    // Reads keep working, and the refused writes left nothing behind.
    assert_eq!(names(&api, "/v1/documents?limit=100"), docs_before);
    assert_eq!(names(&api, "/v1/pipelines?limit=100"), pipelines_before);
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}/results", world.pipeline))
            .status,
        200
    );
    // The queued run waits: the executor computed it, failed to commit twice, and kept it.
    wait_for(20, || {
        let m = api.get("/metrics").text;
        m.lines()
            .find_map(|l| {
                l.strip_prefix("quire_executor_commit_failures_total{reason=\"storage\"} ")
            })
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n >= 2)
    });
    let stuck = api.get(&format!("/v1/pipelines/{held}/progress")).body;
    assert_eq!(stuck["completedDocuments"], 0, "{stuck}");
    assert_eq!(stuck["errorDocuments"], 0, "{stuck}");
    assert_eq!(stuck["status"], "active");

    // Space returns: the service recovers on its own.
    db.set_max_pages(None);
    wait_for(10, || (api.get("/readyz").status == 200).then_some(()));
    let p = wait_settled(&api, &held);
    assert_eq!(p["completedDocuments"], 60, "{p}");
    let r = api.post("/v1/documents", &big_doc("after.txt"));
    assert_eq!(r.status, 201, "{}", r.text);
    // Results committed after the retry are whole and not doubled: one version per field per
    // phase that wrote it.
    let results = api.get(&format!(
        "/v1/pipelines/{held}/results?include=cells&limit=100"
    ));
    let rows = results.body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 60);
    for row in rows {
        let pd = row["pipeline_document_id"]
            .as_str()
            .or(row["id"].as_str())
            .unwrap();
        let cells = api.get(&format!("/v1/pipelines/{held}/documents/{pd}/cells"));
        assert_eq!(cells.status, 200, "{}", cells.text);
        let mut seen = std::collections::HashSet::new();
        for f in cells.body["fields"].as_array().unwrap() {
            for v in f["versions"].as_array().unwrap() {
                let key = (
                    f["field_key"].to_string(),
                    v["phase_index"].to_string(),
                    v["generation"].to_string(),
                    v["pass"].to_string(),
                );
                assert!(seen.insert(key.clone()), "duplicated version {key:?}");
            }
        }
        assert!(seen.len() >= 4, "{}", cells.text);
    }
}

#[test]
fn a_read_only_file_serves_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.db");
    let key = quire::domain::keys::generate_key("test");
    let tune = on_file(&path, &key);
    let (world, results, schemas) = {
        let api = start_with(tune);
        let world = World::build(&api);
        let results = without_clock(
            api.get(&format!("/v1/pipelines/{}/results", world.pipeline))
                .body,
        );
        let schemas = api.get("/v1/schemas").body;
        (world, results, schemas)
    };
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap();
    let before = std::fs::read(&path).unwrap();

    let api = start_with(tune);
    assert_eq!(api.get("/healthz").status, 200);
    let ready = api.get("/readyz");
    assert_envelope(&ready, 503, "service_unavailable");
    assert!(ready.body["message"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    assert_eq!(
        without_clock(
            api.get(&format!("/v1/pipelines/{}/results", world.pipeline))
                .body
        ),
        results
    );
    assert_eq!(api.get("/v1/schemas").body, schemas);
    assert_envelope(
        &api.post(
            "/v1/schemas",
            &json!({"name": "new", "fields": {"a": "string"}}),
        ),
        503,
        "service_unavailable",
    );
    assert_envelope(
        &api.post(
            "/v1/documents",
            &json!({"filename": "a.txt", "content": "A: 1"}),
        ),
        503,
        "service_unavailable",
    );
    assert_envelope(
        &api.post(
            &format!("/v1/pipelines/{}/rerun", world.pipeline),
            &json!({"from_phase": "resolution"}),
        ),
        503,
        "service_unavailable",
    );
    drop(api);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a read-only file was changed"
    );
}

#[test]
fn a_damaged_file_is_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.db");
    let key = quire::domain::keys::generate_key("test");
    let tune = on_file(&path, &key);
    {
        let api = start_with(tune);
        World::build(&api);
    }
    let _ = std::fs::remove_file(dir.path().join("quire.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("quire.db-shm"));
    // Scribble over the pages after the first; the header stays a Quire header.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 64 * 1024);
    for b in bytes[4096..40 * 1024].iter_mut() {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let mut config = Config::ephemeral(Some(key.clone()));
    tune(&mut config);
    let err = match quire::Application::build(config) {
        Ok(_) => panic!("a damaged database was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("damaged") || err.contains("malformed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a damaged file was changed"
    );
}
