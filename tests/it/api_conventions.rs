//! The shared conventions of API.md §1, over HTTP against the real app.

use crate::common::*;
use serde_json::{json, Value};

fn schema_body(name: &str) -> Value {
    json!({ "name": name, "fields": { "invoice_number": "string", "total": "number" } })
}

#[test]
fn health_and_readiness_answer_without_a_key() {
    let api = start();
    let r = send(api.http.get(api.url("/healthz")));
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "ok"})));
    let r = send(api.http.get(api.url("/readyz")));
    assert_eq!((r.status, &r.body["status"]), (200, &json!("ready")));
    // The node this process claims work under: its name, then its incarnation.
    let node = r.body["node"].as_str().unwrap_or_default();
    assert!(node.starts_with("default/") && node.len() > 8, "{}", r.text);
}

#[test]
fn missing_malformed_unknown_and_revoked_keys_get_401_with_www_authenticate() {
    let api = start();
    let no_key = send(api.http.get(api.url("/v1/schemas")));
    assert_envelope(&no_key, 401, "unauthorized");
    assert_eq!(no_key.header("www-authenticate").as_deref(), Some("Bearer"));
    for bad in [
        "nonsense",
        "tlnc_live_short",
        "tlnc_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = api.get_as(bad, "/v1/schemas");
        assert_envelope(&r, 401, "unauthorized");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let key = api.new_org_key("acme", "read", &[]);
    assert_eq!(api.get_as(&key, "/v1/schemas").status, 200);
    let listed = String::from_utf8_lossy(&api.cli(&["keys", "list"]).stdout).to_string();
    let id = listed
        .lines()
        .find(|l| l.contains("acme"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_string();
    assert!(!listed.contains(&key), "keys list must never show a secret");
    assert!(api.cli(&["keys", "revoke", &id]).status.success());
    assert_envelope(&api.get_as(&key, "/v1/schemas"), 401, "unauthorized");
}

#[test]
fn an_expired_key_gets_401() {
    let api = start();
    let key = api.new_org_key("acme", "read", &["--expires-in", "3s"]);
    // The key works until it expires: a 401 afterwards is the expiry, not a bad key.
    let r = api.get_as(&key, "/v1/schemas");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = wait_for(15, || {
        let r = api.get_as(&key, "/v1/schemas");
        (r.status != 200).then_some(r)
    });
    assert_envelope(&r, 401, "unauthorized");
}

#[test]
fn a_key_made_with_the_cli_while_the_service_runs_works_at_once() {
    let api = start();
    // Prime the key cache with a miss for nothing in particular, then create through the CLI.
    assert_eq!(api.get("/v1/schemas").status, 200);
    let key = api.new_org_key("late", "read,write", &[]);
    let r = api.post_as(&key, "/v1/schemas", &schema_body("s"));
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn a_read_only_key_gets_403_on_a_write_naming_the_scope() {
    let api = start();
    let key = api.new_org_key("readers", "read", &[]);
    let r = api.post_as(&key, "/v1/schemas", &schema_body("s"));
    assert_envelope(&r, 403, "insufficient_scope");
    assert_eq!(r.body["required_scopes"], json!(["write"]));
    assert_envelope(
        &api.delete_as(&key, "/v1/documents/0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e"),
        403,
        "insufficient_scope",
    );
}

fn strip_volatile(mut v: Value) -> Value {
    for k in ["request_id", "timestamp", "path"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn organizations_cannot_see_each_others_schemas_or_documents() {
    let api = start();
    let other = api.new_org_key("other", "read,write", &[]);
    let schema = api.create_schema(&schema_body("mine"));
    let doc = api.post(
        "/v1/documents",
        &json!({"filename": "a.txt", "content": "Total: 5"}),
    );
    assert_eq!(doc.status, 201);
    let missing = "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e";
    for (kind, id) in [
        ("schemas", schema["id"].as_str().unwrap()),
        ("documents", doc.body["id"].as_str().unwrap()),
    ] {
        let theirs = api.get_as(&other, &format!("/v1/{kind}/{id}"));
        let absent = api.get_as(&other, &format!("/v1/{kind}/{missing}"));
        assert_envelope(&theirs, 404, "not_found");
        assert_eq!(
            strip_volatile(theirs.body.clone()),
            strip_volatile(absent.body.clone())
        );
        assert_eq!(
            api.delete_as(&other, &format!("/v1/{kind}/{id}")).status,
            404
        );
        assert_eq!(
            api.get_as(&other, &format!("/v1/{kind}")).body["pagination"]["total"],
            0
        );
    }
    // Still there for the owner.
    assert_eq!(
        api.get(&format!("/v1/schemas/{}", schema["id"].as_str().unwrap()))
            .status,
        200
    );
}

#[test]
fn unknown_routes_wrong_methods_and_bad_ids() {
    let api = start();
    assert_envelope(&api.get("/v1/nothing-here"), 404, "not_found");
    let r = send(
        api.http
            .patch(api.url("/v1/documents"))
            .bearer_auth(api.key()),
    );
    assert_envelope(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    assert_envelope(&api.get("/v1/schemas/not-a-uuid"), 400, "bad_request");
    assert_envelope(
        &api.get("/v1/schemas/0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e"),
        404,
        "not_found",
    );
}

#[test]
fn bodies_wrong_type_oversize_malformed_and_mistyped() {
    let api = start_with(|c| c.max_body = 2048);
    let r = send(
        api.http
            .post(api.url("/v1/schemas"))
            .bearer_auth(api.key())
            .header("content-type", "text/plain")
            .body("{}"),
    );
    assert_envelope(&r, 415, "unsupported_media_type");
    let big = json!({"name": "x".repeat(5000), "fields": {"a": "string"}});
    assert_envelope(&api.post("/v1/schemas", &big), 413, "payload_too_large");
    let r = send(
        api.http
            .post(api.url("/v1/schemas"))
            .bearer_auth(api.key())
            .header("content-type", "application/json")
            .body("{\"name\": "),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("Malformed JSON"));
    let r = api.post(
        "/v1/schemas",
        &json!({"name": 42, "fields": {"a": "string"}}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("name"),
        "{}",
        r.text
    );
    let r = api.post(
        "/v1/schemas",
        &json!({"name": "x", "fields": {"a": "money"}}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("fields.a"),
        "{}",
        r.text
    );
}

#[test]
fn the_order_of_checks_puts_auth_before_everything() {
    let api = start_with(|c| c.max_body = 1024);
    let reader = api.new_org_key("r", "read", &[]);
    // 401 beats 400 (bad id) and 415.
    let r = send(
        api.http
            .put(api.url("/v1/schemas/bad-id"))
            .header("content-type", "text/plain")
            .body("x"),
    );
    assert_envelope(&r, 401, "unauthorized");
    // So does a key that is looked up and not found (on PostgreSQL the lookup waits on the
    // database, off actix's worker, and the path id's 400 must wait for it).
    let r = send(
        api.http
            .put(api.url("/v1/schemas/bad-id"))
            .bearer_auth("tlnc_test_unknownunknownunknownunknownunkn01")
            .json(&json!({"name": "x"})),
    );
    assert_envelope(&r, 401, "unauthorized");
    // 429 beats 400.
    let slow = api.new_org_key("slow", "read,write", &["--rate-limit", "1"]);
    assert_eq!(api.get_as(&slow, "/v1/schemas").status, 200);
    let r = send(
        api.http
            .put(api.url("/v1/schemas/bad-id"))
            .bearer_auth(&slow)
            .json(&json!({"name": "x"})),
    );
    assert_envelope(&r, 429, "rate_limited");
    // 403 beats 400 and 413.
    let r = send(
        api.http
            .put(api.url("/v1/schemas/bad-id"))
            .bearer_auth(&reader)
            .json(&json!({"name": "x".repeat(4000)})),
    );
    assert_envelope(&r, 403, "insufficient_scope");
    // 400 (path id) beats 404 and 415.
    let r = send(
        api.http
            .put(api.url("/v1/schemas/bad-id"))
            .bearer_auth(api.key())
            .header("content-type", "text/plain")
            .body("x"),
    );
    assert_envelope(&r, 400, "bad_request");
    // 404 beats 415.
    let r = send(
        api.http
            .put(api.url("/v1/schemas/0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e"))
            .bearer_auth(api.key())
            .header("content-type", "text/plain")
            .body("x"),
    );
    assert_envelope(&r, 404, "not_found");
}

#[test]
fn a_panic_becomes_a_500_envelope_and_the_connection_stays_usable() {
    let api = start_with(|c| c.debug_routes = true);
    let r = api.get("/v1/_debug/panic");
    assert_envelope(&r, 500, "internal_error");
    assert_eq!(r.body["retryable"], true);
    assert!(
        !r.text.contains("deliberate"),
        "internals must not leak: {}",
        r.text
    );
    for _ in 0..3 {
        assert_eq!(api.get("/v1/schemas").status, 200);
    }
}

#[test]
fn request_ids_are_echoed_when_valid_and_generated_otherwise() {
    let api = start();
    let r = send(
        api.http
            .get(api.url("/healthz"))
            .header("x-request-id", "my-trace_01"),
    );
    assert_eq!(r.header("x-request-id").as_deref(), Some("my-trace_01"));
    let r = send(
        api.http
            .get(api.url("/v1/schemas"))
            .header("x-request-id", "bad id with spaces"),
    );
    let rid = r.header("x-request-id").unwrap();
    assert!(rid.starts_with("req_") && rid.len() == 20, "{rid}");
    assert_eq!(r.body["request_id"], rid);
}

#[test]
fn a_key_limited_to_three_per_minute_gets_429_on_the_fourth_call() {
    let api = start();
    let limited = api.new_org_key("slow", "read", &["--rate-limit", "3"]);
    for i in 0..3 {
        let r = api.get_as(&limited, "/v1/schemas");
        assert_eq!(r.status, 200, "call {i}");
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining").unwrap(),
            (2 - i).to_string()
        );
        assert!(
            r.header("x-ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    let r = api.get_as(&limited, "/v1/schemas");
    assert_envelope(&r, 429, "rate_limited");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.body["retryable"], true);
    // Other keys are unaffected.
    let r = api.get("/v1/schemas");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("6000"));
}

#[test]
fn idempotent_posts_replay_conflict_and_never_store_failures() {
    let api = start();
    let post = |key: &str, body: &Value| {
        send(
            api.http
                .post(api.url("/v1/schemas"))
                .bearer_auth(api.key())
                .header("Idempotency-Key", key)
                .json(body),
        )
    };
    let first = post("k-1", &schema_body("one"));
    assert_eq!(first.status, 201);
    assert!(first.header("idempotent-replayed").is_none());
    // Same body with keys in another order: same canonical fingerprint.
    let reordered: Value = serde_json::from_str(
        r#"{"fields": {"invoice_number": "string", "total": "number"}, "name": "one"}"#,
    )
    .unwrap();
    let again = post("k-1", &reordered);
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(api.get("/v1/schemas").body["pagination"]["total"], 1);
    assert_envelope(&post("k-1", &schema_body("two")), 409, "conflict");
    // A failed first attempt is not stored: the same key then works for another body.
    let failed = post("k-2", &json!({"name": "bad", "fields": {}}));
    assert_envelope(&failed, 400, "bad_request");
    let failed_again = post("k-2", &json!({"name": "bad", "fields": {}}));
    assert_eq!(failed_again.status, 400);
    assert!(failed_again.header("idempotent-replayed").is_none());
    assert_eq!(post("k-2", &schema_body("three")).status, 201);
    let bad_key = send(
        api.http
            .post(api.url("/v1/schemas"))
            .bearer_auth(api.key())
            .header("Idempotency-Key", "")
            .json(&schema_body("x")),
    );
    assert_envelope(&bad_key, 400, "bad_request");
}

#[test]
fn pagination_loses_and_repeats_nothing_while_rows_are_inserted() {
    let api = start();
    let mut originals = Vec::new();
    for i in 0..7 {
        originals.push(
            api.create_schema(&schema_body(&format!("s{i}")))["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/schemas?limit=2&cursor={c}"),
            None => "/v1/schemas?limit=2".to_string(),
        };
        let r = api.get(&path);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["pagination"]["limit"], 2);
        for row in r.body["data"].as_array().unwrap() {
            seen.push(row["id"].as_str().unwrap().to_string());
        }
        // Rows inserted between calls land before the cursor (newest first) and are not seen.
        api.create_schema(&schema_body(&format!("late{pages}")));
        pages += 1;
        if r.body["pagination"]["has_more"] == false {
            assert!(r.body["pagination"]["next_cursor"].is_null());
            break;
        }
        cursor = Some(
            r.body["pagination"]["next_cursor"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut expected = originals.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each exactly once");
    assert_eq!(pages, 4);
    assert_envelope(&api.get("/v1/schemas?cursor=Zm9yZ2Vk"), 400, "bad_request");
    assert_envelope(&api.get("/v1/schemas?limit=0"), 400, "bad_request");
    assert_envelope(&api.get("/v1/schemas?limit=101"), 400, "bad_request");
    assert_envelope(&api.get("/v1/schemas?limit=ten"), 400, "bad_request");
}

#[test]
fn json_answers_end_with_a_newline_errors_included() {
    let api = start();
    for (path, status) in [
        ("/v1/schemas", 200),
        ("/v1/schemas/nope", 400),
        ("/healthz", 200),
    ] {
        let r = api.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.text.ends_with("}\n"), "{path}: {:?}", r.text);
        assert!(r.body.is_object(), "{path}: still one JSON value");
    }
    let oversized = send(
        api.http
            .get(api.url("/v1/schemas"))
            .bearer_auth(api.key())
            .header("x-big", "a".repeat(20_000)),
    );
    assert_eq!(oversized.status, 400);
    assert!(oversized.text.ends_with("}\n"), "{:?}", oversized.text);
}

#[test]
fn metrics_carry_process_figures_build_info_status_classes_and_microsecond_phase_buckets() {
    let api = start();
    api.get("/v1/schemas");
    api.get("/v1/schemas/nope");
    let m = api.get("/metrics").text;
    for needle in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "quire_build_info{version=\"",
        "quire_http_request_duration_seconds_count{route=\"/v1/schemas\",method=\"GET\",status_class=\"2xx\"} 1",
        "quire_http_request_duration_seconds_count{route=\"/v1/schemas/{id}\",method=\"GET\",status_class=\"4xx\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle}:\n{m}");
    }
    let rss: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
}
