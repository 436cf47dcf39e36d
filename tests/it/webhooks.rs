//! Webhooks: endpoints and their secrets, the refusal of private destinations, signed events
//! for every kind of change, delivery through a receiver that fails in every way, history,
//! redelivery, test events and an endpoint turned off after failing.

use crate::common::receiver::{Answer, Received, Receiver};
use crate::common::world::World;
use crate::common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

/// The signature a receiver computes: computed here, not by the service's code.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

fn fast(c: &mut quire::config::Config) {
    c.webhooks.allow_private = true;
    c.webhooks.schedule = vec![
        Duration::from_millis(100),
        Duration::from_millis(200),
        Duration::from_millis(300),
        Duration::from_millis(400),
    ];
    c.webhooks.timeout = Duration::from_secs(1);
}

fn hook(api: &Api, url: &str, events: Value) -> (String, String) {
    let r = api.post("/v1/webhooks", &json!({"url": url, "events": events}));
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    )
}

/// Checks a received request the way a receiver must: signature over the raw body, the
/// headers agreeing with the body.
fn verified(r: &Received, secret: &str) -> Value {
    assert_eq!(
        r.signature,
        hmac_hex(secret, &r.body),
        "signature of {}",
        r.event
    );
    let b = r.json();
    assert_eq!(b["event"], r.event.as_str());
    assert_eq!(b["delivery_id"], r.delivery_id.as_str());
    assert_eq!(b["timestamp"], r.timestamp.as_str());
    assert!(b["event_id"].as_str().unwrap().starts_with("evt_"));
    b
}

#[test]
fn a_webhook_is_created_with_its_secret_once_changed_rotated_and_deleted() {
    let api = start_with(fast);
    let rx = Receiver::start();
    let r = api.post(
        "/v1/webhooks",
        &json!({"url": rx.url("/in"), "events": ["pipeline.completed", "review.item_created"], "description": "ERP"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(r.body["status"], "active");
    let got = api.get(&format!("/v1/webhooks/{id}"));
    assert!(
        got.body.get("secret").is_none(),
        "the secret is shown once: {}",
        got.text
    );
    assert_eq!(api.get("/v1/webhooks").body["pagination"]["total"], 1);

    for (body, says) in [
        (
            json!({"url": rx.url("/"), "events": ["pipeline.exploded"]}),
            "unknown event",
        ),
        (json!({"url": rx.url("/"), "events": []}), "1 to 20"),
        (json!({"url": rx.url("/")}), "events is required"),
        (json!({"events": ["*"]}), "url is required"),
        (
            json!({"url": "ftp://example.com/", "events": ["*"]}),
            "http or https",
        ),
        (
            json!({"url": rx.url("/"), "events": ["*"], "secret": "mine"}),
            "unknown field",
        ),
    ] {
        let r = api.post("/v1/webhooks", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }
    assert_eq!(
        api.get("/v1/webhooks").body["pagination"]["total"],
        1,
        "refusals create nothing"
    );

    let p = api.patch(
        &format!("/v1/webhooks/{id}"),
        &json!({"events": ["*"], "active": false}),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["events"], json!(["*"]));
    assert_eq!(p.body["status"], "inactive");
    assert_eq!(
        p.body["description"], "ERP",
        "what a PATCH does not name stays"
    );

    // Rotation: the new secret signs, and the old one still does during the overlap.
    let api_active = api.patch(&format!("/v1/webhooks/{id}"), &json!({"active": true}));
    assert_eq!(api_active.status, 200);
    let rot = api.post(
        &format!("/v1/webhooks/{id}/rotate-secret"),
        &json!({"overlap_seconds": 3600}),
    );
    assert_eq!(rot.status, 200, "{}", rot.text);
    let new_secret = rot.body["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert!(rot.body["previous_secret_expires_at"].is_string());
    let t = api.post(&format!("/v1/webhooks/{id}/test"), &json!({}));
    assert_eq!(t.status, 202, "{}", t.text);
    let got = wait_for(20, || {
        rx.seen().into_iter().find(|r| r.event == "webhook.test")
    });
    let sigs: Vec<String> = got.signature.split(',').map(str::to_string).collect();
    assert_eq!(
        sigs,
        vec![
            hmac_hex(&new_secret, &got.body),
            hmac_hex(&secret, &got.body)
        ]
    );
    let rot = api.post(
        &format!("/v1/webhooks/{id}/rotate-secret"),
        &json!({"overlap_seconds": 0}),
    );
    assert!(
        rot.body["previous_secret_expires_at"].is_null(),
        "{}",
        rot.text
    );
    let last = rot.body["secret"].as_str().unwrap().to_string();
    api.post(&format!("/v1/webhooks/{id}/test"), &json!({}));
    let again = wait_for(20, || {
        let t: Vec<Received> = rx
            .seen()
            .into_iter()
            .filter(|r| r.event == "webhook.test")
            .collect();
        (t.len() == 2).then(|| t[1].clone())
    });
    assert_eq!(
        again.signature,
        hmac_hex(&last, &again.body),
        "only the new secret once the overlap is over"
    );
    let big = api.post(
        &format!("/v1/webhooks/{id}/rotate-secret"),
        &json!({"overlap_seconds": 9_999_999}),
    );
    assert_eq!(big.status, 400, "{}", big.text);

    let d = api.delete(&format!("/v1/webhooks/{id}"));
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(api.get(&format!("/v1/webhooks/{id}")).status, 404);
}

#[test]
fn private_destinations_are_refused_by_name_and_redirects_are_not_followed() {
    let api = start();
    for (url, says) in [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://[::1]:9/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.0.10:8080/", "private"),
        ("http://[fd12::1]/", "private"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://localhost:9/x", "resolves to a loopback address"),
    ] {
        let r = api.post("/v1/webhooks", &json!({"url": url, "events": ["*"]}));
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert_eq!(r.body["code"], "bad_request");
        assert!(r.text.contains(says), "{url}: {}", r.text);
        assert!(r.text.contains("--webhooks-allow-private"), "{}", r.text);
    }
    assert_eq!(api.get("/v1/webhooks").body["pagination"]["total"], 0);
    // A PATCH is held to the same rule.
    let ok = api.post(
        "/v1/webhooks",
        &json!({"url": "https://192.0.2.10/in", "events": ["*"]}),
    );
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.body["id"].as_str().unwrap();
    let p = api.patch(
        &format!("/v1/webhooks/{id}"),
        &json!({"url": "http://127.0.0.1/"}),
    );
    assert_eq!(p.status, 400, "{}", p.text);
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}")).body["url"],
        "https://192.0.2.10/in"
    );

    // Allowed to reach private addresses (as the tests are), a redirect is still not followed:
    // it would otherwise lead anywhere the first answer says.
    let api = start_with(fast);
    let inside = Receiver::start();
    let front = Receiver::start();
    front.answer_always(Answer::Redirect(inside.url("/secret")));
    let (id, _) = hook(&api, &front.url("/in"), json!(["*"]));
    let t = api.post(&format!("/v1/webhooks/{id}/test"), &json!({}));
    let did = t.body["id"].as_str().unwrap().to_string();
    let d = wait_for(20, || {
        let d = api.get(&format!("/v1/webhooks/{id}/deliveries/{did}")).body;
        (d["attempts"].as_i64() >= Some(1)).then_some(d)
    });
    assert_eq!(d["response_code"], 307, "{d}");
    assert!(d["error"].as_str().unwrap().contains("not followed"), "{d}");
    assert!(
        inside.seen().is_empty(),
        "the redirect's target was reached"
    );
}

/// Every kind of change sends its event, signed, with the data a receiver needs.
#[test]
fn every_kind_of_change_sends_its_signed_event() {
    let api = start_with(|c| {
        fast(c);
        c.limits.budget.document = 4096;
        // An image is stored but cannot be read: a document that fails at intake.
        c.reader.limits.tesseract = "/nonexistent/tesseract".into();
    });
    let rx = Receiver::start();
    let (hid, secret) = hook(&api, &rx.url("/events"), json!(["*"]));
    let w = World::build(&api);
    let by = |event: &str| -> Vec<Value> {
        rx.accepted()
            .iter()
            .filter(|r| r.event == event)
            .map(|r| verified(r, &secret))
            .collect()
    };
    let wait_event = |event: &str, n: usize| -> Vec<Value> {
        wait_for(30, || {
            let got = by(event);
            (got.len() >= n).then_some(got)
        })
    };
    let held = wait_event("review.item_created", 1);
    assert_eq!(held[0]["data"]["pipeline_document_id"], w.held_pd.as_str());
    assert_eq!(held[0]["data"]["field_key"], w.held_field.as_str());
    assert_eq!(held[0]["data"]["pipeline_id"], w.pipeline.as_str());
    let partial = wait_event("pipeline.partial", 1);
    assert_eq!(partial[0]["data"]["pipeline_id"], w.pipeline.as_str());
    assert_eq!(
        partial[0]["data"]["documents"]["partial"], 1,
        "{}",
        partial[0]
    );
    let ready = wait_event("data_product.ready", 1);
    assert_eq!(ready[0]["data"]["data_product_id"], w.data_product.as_str());
    let ext = wait_event("extraction.complete", 1);
    assert_eq!(ext[0]["data"]["extraction_id"], w.extraction.as_str());
    assert_eq!(ext[0]["data"]["document_id"], w.documents[0].as_str());
    assert_eq!(ext[0]["data"]["status"], "complete");
    assert!(ext[0]["data"]["confidence"].is_number());
    let job = wait_event("pipeline.completed", 1);
    assert!(
        job.iter()
            .any(|e| e["data"]["pipeline_id"] == w.job.as_str()),
        "{job:?}"
    );

    // A decision, and the run settling again with its data product refreshed.
    let r = api.post(
        &format!("/v1/field-reviews/{}/{}/resolve", w.held_pd, w.held_field),
        &json!({"action": "approve"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d = wait_event("review.decision_made", 1);
    assert_eq!(d[0]["data"]["action"], "approve");
    assert_eq!(d[0]["data"]["field_key"], w.held_field.as_str());
    assert!(d[0]["data"]["decision_id"].is_string());
    wait_event("data_product.ready", 2);

    // A rerun: accepted, then finished.
    let r = api.post(
        &format!("/v1/pipelines/{}/rerun", w.pipeline),
        &json!({"from_phase": "validation"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let enq = wait_event("rerun.enqueued", 1);
    assert_eq!(enq[0]["data"]["pipeline_id"], w.pipeline.as_str());
    assert_eq!(enq[0]["data"]["from_phase"], "validation");
    let done = wait_event("rerun.completed", 1);
    assert_eq!(done[0]["data"]["rerun_id"], enq[0]["data"]["rerun_id"]);

    // A cancelled run.
    let docs: Vec<String> = (0..5)
        .map(|i| {
            let r = api.post(
                "/v1/documents",
                &json!({"filename": format!("c{i}.txt"), "content": format!("Net: {i}")}),
            );
            r.body["id"].as_str().unwrap().to_string()
        })
        .collect();
    api.srv.pause_executor();
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": w.schema, "document_ids": docs}),
    );
    let pid = p.body["id"].as_str().unwrap().to_string();
    let c = api.post(&format!("/v1/pipelines/{pid}/cancel"), &json!({}));
    api.srv.resume_executor();
    assert_eq!(c.status, 200, "{}", c.text);
    let cancelled = wait_event("pipeline.cancelled", 1);
    assert_eq!(cancelled[0]["data"]["pipeline_id"], pid.as_str());

    // A document this server cannot read, and a document that fails in a run.
    let bad = upload_bytes(&api, "photo.png", &blank_png(40, 30), None);
    assert_eq!(bad.body["status"], "error", "{}", bad.text);
    let intake = wait_for(30, || {
        by("document.failed")
            .into_iter()
            .find(|e| e["data"]["document_id"] == bad.body["id"])
    });
    assert_eq!(intake["data"]["stage"], "intake");
    assert!(
        intake["data"]["error"]
            .as_str()
            .unwrap()
            .contains("tesseract"),
        "{intake}"
    );
    let s = api.create_schema(&json!({"name": "wide", "fields": (0..8).map(|i| json!({"field_name": format!("f{i}")})).collect::<Vec<_>>()}));
    let text: String = (0..8)
        .map(|i| format!("F{i}: {}\n", "z".repeat(1000)))
        .collect();
    let r = api.put(
        &format!("/v1/schemas/{}/rail", s["id"].as_str().unwrap()),
        &json!({"rail": [{"type": "schema"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let p = api.post(
        "/v1/pipelines",
        &json!({"schema_id": s["id"], "documents": [{"filename": "big.txt", "content": text}]}),
    );
    assert_eq!(p.status, 201, "{}", p.text);
    let big = p.body["id"].as_str().unwrap().to_string();
    let failed = wait_for(30, || {
        by("document.failed")
            .into_iter()
            .find(|e| e["data"]["pipeline_id"] == big.as_str())
    });
    assert!(
        failed["data"]["error"]
            .as_str()
            .unwrap()
            .contains("over the budget"),
        "{failed}"
    );
    let run_failed = wait_event("pipeline.failed", 1);
    assert_eq!(run_failed[0]["data"]["pipeline_id"], big.as_str());

    // Each event once, each delivery delivered, and the history agrees.
    let all = rx.seen();
    for r in &all {
        assert_eq!(
            all.iter()
                .filter(|o| o.delivery_id == r.delivery_id)
                .count(),
            1,
            "{} sent twice",
            r.delivery_id
        );
    }
    let hist = api
        .get(&format!("/v1/webhooks/{hid}/deliveries?limit=100"))
        .body;
    assert!(
        hist["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered" || d["status"] == "pending"),
        "{hist}"
    );
    let delivered = api
        .get(&format!(
            "/v1/webhooks/{hid}/deliveries?status=delivered&limit=100"
        ))
        .body;
    assert!(delivered["pagination"]["total"].as_i64().unwrap() >= all.len() as i64 - 1);
}

#[test]
fn an_endpoint_subscribed_to_some_events_gets_only_those_and_unsubscribed_changes_write_no_event() {
    let api = start_with(fast);
    let rx = Receiver::start();
    let (hid, _) = hook(&api, &rx.url("/"), json!(["review.decision_made"]));
    let w = World::build(&api);
    let r = api.post(
        &format!("/v1/field-reviews/{}/{}/resolve", w.held_pd, w.held_field),
        &json!({"action": "approve"}),
    );
    assert_eq!(r.status, 200);
    wait_for(20, || (!rx.accepted().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    let events: Vec<String> = rx.seen().iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, ["review.decision_made"]);
    let hist = api.get(&format!("/v1/webhooks/{hid}/deliveries")).body;
    assert_eq!(hist["pagination"]["total"], 1, "{hist}");
}

/// A receiver that is down, slow, answers 500, drops the connection: every event arrives, and a
/// receiver that keeps delivery ids sees each exactly once.
#[test]
fn a_failing_receiver_gets_every_event_exactly_once_after_retries() {
    let api = start_with(|c| {
        fast(c);
        c.webhooks.schedule = [300, 600, 1000, 2000, 3000]
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
    });
    let port = Receiver::free_port();
    let (hid, secret) = hook(&api, &format!("http://127.0.0.1:{port}/in"), json!(["*"]));
    // Down: nothing listens while the first events are sent.
    let mut tests = Vec::new();
    for _ in 0..3 {
        let t = api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}));
        tests.push(t.body["id"].as_str().unwrap().to_string());
    }
    wait_for(20, || {
        let h = api.get(&format!("/v1/webhooks/{hid}/deliveries")).body;
        h["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["attempts"].as_i64() >= Some(1))
            .then_some(())
    });
    let h = api.get(&format!("/v1/webhooks/{hid}/deliveries")).body;
    let first = &h["data"][0];
    assert_eq!(first["status"], "pending", "{h}");
    assert!(
        first["error"].as_str().unwrap().contains("connect"),
        "{first}"
    );
    assert!(
        first["next_attempt_at"].is_string() && first["data"].is_object(),
        "{first}"
    );
    let rx = Receiver::on(port);
    rx.script(&[
        Answer::Status(500, "database locked"),
        Answer::Slow(Duration::from_millis(1500)),
        Answer::Drop,
        Answer::Status(503, "busy"),
    ]);
    for _ in 0..3 {
        let t = api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}));
        tests.push(t.body["id"].as_str().unwrap().to_string());
    }
    let accepted = wait_for(60, || {
        let a = rx.accepted();
        (a.len() == tests.len()).then_some(a)
    });
    let mut ids: Vec<String> = accepted.iter().map(|r| r.delivery_id.clone()).collect();
    ids.sort();
    tests.sort();
    assert_eq!(ids, tests, "each delivery once, none lost");
    for r in &accepted {
        verified(r, &secret);
    }
    assert!(rx.seen().len() > tests.len(), "the failures were retried");
    wait_for(20, || {
        let h = api
            .get(&format!("/v1/webhooks/{hid}/deliveries?status=delivered"))
            .body;
        (h["pagination"]["total"] == tests.len()).then_some(())
    });
    // The history keeps how the failures went.
    let retried = api
        .get(&format!("/v1/webhooks/{hid}/deliveries?limit=100"))
        .body;
    let max_attempts = retried["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["attempts"].as_i64())
        .max();
    assert!(max_attempts >= Some(2), "{retried}");
    assert_eq!(
        api.get(&format!("/v1/webhooks/{hid}")).body["failing_since"],
        Value::Null
    );
}

#[test]
fn a_delivery_fails_after_its_schedule_keeps_the_answer_and_is_redelivered_and_an_endpoint_failing_too_long_is_turned_off(
) {
    let api = start_with(|c| {
        fast(c);
        c.webhooks.schedule = vec![Duration::from_millis(100), Duration::from_millis(100)];
        c.webhooks.disable_after = Duration::from_millis(600);
    });
    let rx = Receiver::start();
    rx.answer_always(Answer::Status(500, "no such table: invoices"));
    let (hid, _) = hook(&api, &rx.url("/"), json!(["*"]));
    let t = api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}));
    let did = t.body["id"].as_str().unwrap().to_string();
    let d = wait_for(20, || {
        let d = api
            .get(&format!("/v1/webhooks/{hid}/deliveries/{did}"))
            .body;
        (d["status"] == "failed").then_some(d)
    });
    assert_eq!(d["attempts"], 3, "the first attempt and two retries: {d}");
    assert_eq!(d["response_code"], 500);
    assert_eq!(d["response_body"], "no such table: invoices");
    assert_eq!(
        d["data"]["webhook_id"],
        hid.as_str(),
        "a failed delivery shows what it sent"
    );
    let failed = api
        .get(&format!("/v1/webhooks/{hid}/deliveries?status=failed"))
        .body;
    assert_eq!(failed["pagination"]["total"], 1);
    let metrics = api.get("/metrics").text;
    assert!(
        metrics.contains("quire_webhook_deliveries{status=\"failed\"} 1"),
        "{metrics}"
    );

    // Still failing past `disable_after`: turned off, with why.
    std::thread::sleep(Duration::from_millis(700));
    api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}));
    let w = wait_for(20, || {
        let w = api.get(&format!("/v1/webhooks/{hid}")).body;
        (w["status"] == "disabled").then_some(w)
    });
    assert!(
        w["disabled_reason"].as_str().unwrap().contains("HTTP 500"),
        "{w}"
    );
    assert_eq!(w["active"], false);

    // Nothing is sent to an endpoint that is off: asking is refused, saying why.
    let off = api.post(
        &format!("/v1/webhooks/{hid}/deliveries/{did}/redeliver"),
        &json!({}),
    );
    assert_eq!(off.status, 400, "{}", off.text);
    assert!(off.text.contains("disabled"), "{}", off.text);
    assert_eq!(
        api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}))
            .status,
        400
    );
    // Fixed and turned back on: a redelivery is a new delivery of the same event.
    rx.answer_always(Answer::Ok);
    let on = api.patch(&format!("/v1/webhooks/{hid}"), &json!({"active": true}));
    assert_eq!(on.body["status"], "active", "{}", on.text);
    assert!(on.body["disabled_reason"].is_null());
    let again = api.post(
        &format!("/v1/webhooks/{hid}/deliveries/{did}/redeliver"),
        &json!({}),
    );
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["redelivery_of"], did.as_str());
    let new_id = again.body["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, did);
    let got = wait_for(20, || {
        rx.accepted().into_iter().find(|r| r.delivery_id == new_id)
    });
    assert_eq!(got.json()["event_id"], d["event_id"]);

    // Bad ids are refused, unknown ones are not found.
    assert_eq!(
        api.get(&format!("/v1/webhooks/{hid}/deliveries/nope"))
            .status,
        400
    );
    assert_eq!(
        api.get(&format!(
            "/v1/webhooks/{hid}/deliveries/dlv_0123456789abcdef0123456789abcdef"
        ))
        .status,
        404
    );
    assert_eq!(
        api.get(&format!("/v1/webhooks/{hid}/deliveries?status=lost"))
            .status,
        400
    );
}

#[test]
fn the_receivers_reference_routes_describe_events_signatures_and_retries() {
    let api = start();
    let e = api.get("/v1/webhooks/events");
    assert_eq!(e.status, 200, "{}", e.text);
    let names: Vec<&str> = e.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["event"].as_str())
        .collect();
    for n in [
        "pipeline.completed",
        "pipeline.partial",
        "pipeline.failed",
        "pipeline.cancelled",
        "rerun.enqueued",
        "rerun.completed",
        "review.item_created",
        "review.decision_made",
        "data_product.ready",
        "extraction.complete",
        "extraction.failed",
        "document.failed",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        api.get("/v1/webhooks/signatures").body["algorithm"],
        "hmac-sha256"
    );
    assert_eq!(
        api.get("/v1/webhooks/retries").body["schedule_seconds"],
        json!([60.0, 300.0, 1800.0, 14400.0])
    );
    assert_eq!(
        api.get("/v1/webhooks/delivery").body["timeout_seconds"],
        30.0
    );
}

/// A fenced block of the README, found by the marker above it.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split(&format!("<!-- {marker} -->"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has no {marker} block"));
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let first_line = body.find('\n').unwrap() + 1;
    let end = body[first_line..].find("\n```").unwrap();
    body[first_line..first_line + end + 1].to_string()
}

/// Runs a README helper on a body: whether it accepted it.
fn helper_accepts(cmd: &[&str], secret: &str, signature: &str, body: &[u8], max_age: &str) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .args([secret, signature])
        .env("MAX_AGE", max_age)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success()
}

#[test]
fn the_readmes_verification_helpers_accept_genuine_deliveries_and_refuse_forged_or_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("verify_webhook.py");
    std::fs::write(&py, readme_block("webhook-verify-python")).unwrap();
    let sh = dir.path().join("verify-webhook.sh");
    std::fs::write(&sh, readme_block("webhook-verify-shell")).unwrap();
    let mut helpers: Vec<Vec<String>> = Vec::new();
    if optional("python3") {
        helpers.push(vec!["python3".into(), py.to_string_lossy().into_owned()]);
    }
    if optional("openssl") {
        helpers.push(vec!["sh".into(), sh.to_string_lossy().into_owned()]);
    }

    // A real delivery from a running Quire.
    let api = start_with(fast);
    let rx = Receiver::start();
    let (hid, secret) = hook(&api, &rx.url("/"), json!(["*"]));
    api.post(&format!("/v1/webhooks/{hid}/test"), &json!({}));
    let real = wait_for(20, || rx.accepted().into_iter().next());
    let vector_secret = "whsec_test_secret_do_not_use_in_production";
    let vector = br#"{"event":"extraction.complete","delivery_id":"dlv_test123","timestamp":"2026-01-15T10:00:00Z","data":{"extraction_id":"ext_abc","document_id":"doc_xyz","schema_id":"sch_123","status":"complete","confidence":0.95}}"#;
    let vector_sig = "sha256=1e23bdc14b051f268d4fd9544387b51b074186c51c5b6c76ce700956308d168a";
    let mut forged = real.body.clone();
    let at = forged.iter().position(|b| *b == b'A').unwrap();
    forged[at] = b'B';
    for h in &helpers {
        let cmd: Vec<&str> = h.iter().map(String::as_str).collect();
        let forever = "100000000";
        assert!(
            helper_accepts(&cmd, vector_secret, vector_sig, vector, forever),
            "{cmd:?}: the test vector"
        );
        assert!(
            !helper_accepts(&cmd, vector_secret, vector_sig, vector, "300"),
            "{cmd:?}: the vector is stale today"
        );
        assert!(
            !helper_accepts(&cmd, "whsec_other", vector_sig, vector, forever),
            "{cmd:?}: another secret"
        );
        assert!(
            helper_accepts(&cmd, &secret, &real.signature, &real.body, "300"),
            "{cmd:?}: a real delivery"
        );
        assert!(
            !helper_accepts(&cmd, &secret, &real.signature, &forged, "300"),
            "{cmd:?}: one byte changed"
        );
        let two = format!("sha256={},{}", "0".repeat(64), real.signature);
        assert!(
            helper_accepts(&cmd, &secret, &two, &real.body, "300"),
            "{cmd:?}: any signature of an overlap"
        );
    }
}
