//! Generated bad input at every write route of the router's table, and pathological uploads:
//! never a 5xx, never a panic, and a refused request changes nothing in the database.

use crate::common::world::{wait_settled, World};
use crate::common::*;
use proptest::prelude::*;
use quire::http::ROUTES;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The service's database as the test reads it: the SQLite file, or the PostgreSQL schema.
enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(quire::store::Connection),
}

/// The columns of `table` that the request writes: the webhook dispatcher records its attempts
/// beside the requests (the World has a webhook), and those columns are its writes.
fn written_columns(table: &str) -> &'static str {
    match table {
        // A node's lease is renewed by its heartbeat, whatever the requests do.
        "nodes" => "id, name, host, pid, started_ms, lease_ms",
        // Every request is charged to its key's rate bucket (PostgreSQL), refused or not: the
        // tokens are accounting, not what the request asked to change.
        "rate_buckets" => "scope, id",
        "webhook_deliveries" => "seq, id, webhook_seq, event_seq, redelivery_of, created_at",
        "webhooks" => "seq, id, org_id, url, events, description, active, secret, previous_secret, previous_secret_until, disabled_reason, created_at, updated_at",
        _ => "*",
    }
}

/// A digest of every row of every table: equal digests mean nothing was written. Rows are
/// digested one by one and sorted, so the order a table is read in does not matter.
fn fingerprint(db: &Db) -> String {
    let mut h = Sha256::new();
    match db {
        Db::Sqlite(db) => {
            let tables: Vec<String> = db
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            for t in tables {
                let columns = written_columns(&t);
                let mut st = db
                    .prepare(&format!("SELECT {columns} FROM \"{t}\""))
                    .unwrap();
                let n = st.column_count();
                let mut rows = st.query([]).unwrap();
                let mut digests = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    let mut r = String::new();
                    for i in 0..n {
                        let v: rusqlite::types::Value = row.get(i).unwrap();
                        r.push_str(&format!("{v:?}|"));
                    }
                    digests.push(r);
                }
                digests.sort();
                h.update(t.as_bytes());
                for d in digests {
                    h.update(d.as_bytes());
                }
            }
        }
        Db::Postgres(db) => {
            let tables: Vec<String> = db
                .prepare(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
                )
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            for t in tables {
                let columns = match written_columns(&t) {
                    "*" => "x.*",
                    some => some,
                };
                let mut digests: Vec<String> = db
                    .prepare(&format!("SELECT md5(ROW({columns})::text) FROM \"{t}\" x"))
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                digests.sort();
                h.update(t.as_bytes());
                for d in digests {
                    h.update(d.as_bytes());
                }
            }
        }
    }
    hex::encode(h.finalize())
}

const KEYS: &[&str] = &[
    "name",
    "fields",
    "field_name",
    "data_type",
    "rail",
    "type",
    "json",
    "policy_ids",
    "stage_ids",
    "severity",
    "mechanisms",
    "rules",
    "field_key",
    "rule_type",
    "config",
    "expr",
    "schema_id",
    "document_ids",
    "documents",
    "filename",
    "content",
    "mime_type",
    "metadata",
    "from_phase",
    "dry_run",
    "action",
    "corrected_value",
    "reason",
    "items",
    "order",
    "pipeline_document_id",
    "description",
    "is_required",
    "synonyms",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,10}",
        "\\PC{0,24}",
        Just("\u{0}".to_string()),
        Just("😀 مرحبا \u{202e}x".to_string()),
        Just("extraction".to_string()),
        Just("approve".to_string()),
        Just("0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e".to_string()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), text()],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| json!({"name": "n", "fields": v}).to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"name\": \"a\", \"name\": \"b\"}".to_vec()),
        Just(b"\xff\xfe{}".to_vec()),
    ]
}

/// Write routes (DELETE takes no body and is covered by the isolation matrix).
fn write_routes() -> Vec<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| (*m, *p)))
        .filter(|(m, _)| matches!(*m, "POST" | "PUT" | "PATCH"))
        .collect()
}

#[test]
fn arbitrary_bodies_at_every_write_route_never_5xx_and_refusals_write_nothing() {
    let api = start();
    let world = World::build(&api);
    let db = if on_postgres() {
        Db::Postgres(api.srv.store_connection())
    } else {
        Db::Sqlite(rusqlite::Connection::open(&api.srv.db_path).unwrap())
    };
    let routes = write_routes();
    assert!(routes.len() >= 20, "{routes:?}");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    });
    let refused = std::cell::Cell::new(0u64);
    let accepted = std::cell::Cell::new(0u64);
    runner
        .run(&body_bytes(), |body| {
            for (method, template) in &routes {
                let before = fingerprint(&db);
                let r = api.send_json_bytes(method, &world.fill(template), body.clone());
                prop_assert!(
                    r.status < 500,
                    "{method} {template} → {}: {}",
                    r.status,
                    r.text
                );
                if r.status >= 400 {
                    refused.set(refused.get() + 1);
                    prop_assert_eq!(r.body["code"].is_string(), true, "no envelope: {}", r.text);
                    prop_assert_eq!(
                        fingerprint(&db),
                        before,
                        "{} {} answered {} but wrote: {}",
                        method,
                        template,
                        r.status,
                        r.text
                    );
                } else {
                    accepted.set(accepted.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    println!("{} refused, {} accepted", refused.get(), accepted.get());
    assert!(refused.get() > 0);
    // The service still works afterwards.
    assert_eq!(api.get("/readyz").status, 200);
}

#[test]
fn pathological_uploads_are_stored_or_refused_and_runs_survive_them() {
    let api = start();
    let s = api.create_schema(&json!({"name": "p", "fields": {"net": "number", "name": "string"}}));
    let sid = s["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let multipart = |name: &str, mime: &str, bytes: Vec<u8>| {
        let part = reqwest::blocking::multipart::Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str(mime)
            .unwrap();
        send(
            api.http
                .post(api.url("/v1/documents"))
                .bearer_auth(api.key())
                .multipart(reqwest::blocking::multipart::Form::new().part("file", part)),
        )
    };
    let mut ids = Vec::new();
    let mut keep = |r: Resp, what: &str| {
        assert!(r.status < 500, "{what}: {} {}", r.status, r.text);
        if r.status < 300 {
            ids.push(r.body["id"].as_str().unwrap().to_string());
        } else {
            assert!(r.body["code"].is_string(), "{what}: {}", r.text);
        }
    };
    let line = format!("Net: 12.50 Name: {}", "x".repeat(10 * 1024 * 1024));
    keep(
        multipart("line.txt", "text/plain", line.into_bytes()),
        "10 MB line",
    );
    keep(
        multipart(
            "bad.txt",
            "text/plain",
            vec![0xff, 0xfe, 0, b'N', b'e', b't'],
        ),
        "invalid UTF-8",
    );
    keep(
        multipart("nul.txt", "text/plain", b"Net: 1\0 Name: a\0b".to_vec()),
        "NUL bytes",
    );
    let deep = "[".repeat(50_000) + &"]".repeat(50_000);
    keep(
        multipart("deep.json", "application/json", deep.into_bytes()),
        "deep JSON document",
    );
    keep(
        api.post(
            "/v1/documents",
            &json!({"filename": "ünï😀.txt", "content": "Name: Zoë 😀 مرحبا \u{202e}\nNet: 7"}),
        ),
        "Unicode",
    );
    assert!(ids.len() >= 4, "{ids:?}");
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": ids}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let p = wait_settled(&api, &pid);
    assert_eq!(
        p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap(),
        ids.len() as i64
    );
    let rows = api
        .get(&format!("/v1/pipelines/{pid}/results?limit=50"))
        .body;
    let unicode = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["filename"] == "ünï😀.txt")
        .expect("the Unicode document");
    assert_eq!(unicode["fields"]["name"], "Zoë 😀 مرحبا \u{202e}");
    // Bodies that are not documents.
    let deep_body = "[".repeat(100_000) + &"]".repeat(100_000);
    let r = send(
        api.http
            .post(api.url("/v1/schemas"))
            .bearer_auth(api.key())
            .header("content-type", "application/json")
            .body(deep_body),
    );
    assert_envelope(&r, 400, "bad_request");
    let many: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("f{i}"), json!("string")))
        .collect();
    let r = api.post("/v1/schemas", &json!({"name": "wide", "fields": many}));
    assert!(
        r.status == 201 || r.status == 400,
        "{} {}",
        r.status,
        r.text
    );
    let r = api.post(
        "/v1/schemas",
        &json!({"name": "nul\u{0}", "fields": {"a\u{0}b": "string"}}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert_eq!(api.get("/readyz").status, 200);
}
