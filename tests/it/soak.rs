//! Crash soak: the real binary is SIGKILLed at random moments while a client uploads, runs
//! pipelines, reruns them, resolves review items in bulk and creates data products. After the
//! last restart everything the service acknowledged must be there, every document must reach a
//! terminal state, and no version may be duplicated or missing. One poison document (its
//! worker takes the process down) is among them: it ends `error`, quarantined with its reason,
//! after one restart, and no other document errs.
//!
//! `cargo test --test it soak::` runs a short soak; `QUIRE_SOAK_KILLS=200 cargo test --release
//! --test it soak:: -- --ignored --nocapture` runs a long one.

use crate::common::receiver::{Answer, Receiver};
use crate::common::*;
use quire::tools::fixtures;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const KEY: &str = "tlnc_test_soaksoaksoaksoaksoaksoaksoaksoak01";

/// What the service acknowledged with a 2xx.
#[derive(Default)]
struct Ledger {
    documents: Vec<String>,
    pipelines: Vec<String>,
    /// Accepted reruns per pipeline.
    reruns: HashMap<String, usize>,
    /// (pipeline document, field, action).
    decisions: Vec<(String, String, String)>,
    data_products: Vec<String>,
}

/// One request that may meet a dead server: `None` then.
fn try_send(rb: reqwest::blocking::RequestBuilder) -> Option<Resp> {
    let r = rb.send().ok()?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().ok()?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Resp {
        status,
        headers,
        body,
        text,
    })
}

struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    fn new(port: u16) -> Self {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            http: crate::common::client(30),
        }
    }
    fn get(&self, path: &str) -> Option<Resp> {
        try_send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(KEY),
        )
    }
    fn post(&self, path: &str, body: &Value) -> Option<Resp> {
        try_send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(KEY)
                .json(body),
        )
    }
}

fn setup(c: &Client) -> String {
    let ok = |r: Option<Resp>| {
        let r = r.expect("server up during setup");
        assert!(r.status < 300, "{}", r.text);
        r
    };
    let s = ok(c.post(
        "/v1/schemas",
        &json!({"name": "Invoices", "fields": fixtures::schema_fields()}),
    ));
    let sid = s.body["id"].as_str().unwrap().to_string();
    let p = ok(c.post("/v1/data-policies", &json!({"name": "Normalize"})));
    let pid = p.body["id"].as_str().unwrap().to_string();
    for (field, rule, config) in fixtures::policy_rules() {
        ok(c.post(
            &format!("/v1/data-policies/{pid}/fields"),
            &json!({"field_key": field, "type": "string"}),
        ));
        ok(c.post(
            &format!("/v1/data-policies/{pid}/rules"),
            &json!({"field_key": field, "rule_type": rule, "config": config}),
        ));
    }
    // About a quarter of the fixtures have a net above 5,000: those are held for review.
    ok(c.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Limit", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 5000}]}]})));
    let rail = json!({"rail": [{"type": "registry"}, {"type": "schema"},
        {"type": "resolve", "json": {"policy_ids": [pid]}}, {"type": "valid"}]});
    let r = c
        .http
        .put(format!("{}/v1/schemas/{sid}/rail", c.base))
        .bearer_auth(KEY)
        .json(&rail)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sid
}

/// Random operations until the server stops answering.
fn client_loop(
    c: &Client,
    sid: &str,
    ledger: &mut Ledger,
    rng: &mut rand::rngs::StdRng,
    serial: &mut u64,
) {
    loop {
        let ok = match rng.gen_range(0..10) {
            0..=3 => {
                let mut ids = Vec::new();
                for _ in 0..rng.gen_range(1..=8) {
                    *serial += 1;
                    let f = fixtures::invoice(31, *serial);
                    let Some(r) = c.post(
                        "/v1/documents",
                        &json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type}),
                    ) else {
                        return;
                    };
                    assert!(r.status < 500, "upload: {}", r.text);
                    if r.status == 201 || r.status == 200 {
                        let id = r.body["id"].as_str().unwrap().to_string();
                        ledger.documents.push(id.clone());
                        ids.push(id);
                    }
                }
                match c.post(
                    "/v1/pipelines",
                    &json!({"schema_id": sid, "document_ids": ids}),
                ) {
                    None => return,
                    Some(r) => {
                        assert!(r.status < 500, "pipeline: {}", r.text);
                        if r.status == 201 {
                            ledger
                                .pipelines
                                .push(r.body["id"].as_str().unwrap().to_string());
                        }
                        true
                    }
                }
            }
            4..=5 if !ledger.pipelines.is_empty() => {
                let p = ledger.pipelines[rng.gen_range(0..ledger.pipelines.len())].clone();
                match c.post(
                    &format!("/v1/pipelines/{p}/rerun"),
                    &json!({"from_phase": "resolution"}),
                ) {
                    None => return,
                    Some(r) => {
                        // 400 while the run is still going; that is fine.
                        assert!(r.status < 500, "rerun: {}", r.text);
                        if r.status == 200 {
                            *ledger.reruns.entry(p).or_default() += 1;
                        }
                        true
                    }
                }
            }
            6..=7 => {
                let Some(q) = c.get("/v1/field-reviews?limit=20") else {
                    return;
                };
                let items: Vec<Value> = q.body["data"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|i| json!({"pipeline_document_id": i["pipeline_document_id"], "field_key": i["field_key"]}))
                    .collect();
                if items.is_empty() {
                    continue;
                }
                let action = if rng.gen_bool(0.5) {
                    "approve"
                } else {
                    "override"
                };
                let body = if action == "override" {
                    json!({"items": items, "action": action, "corrected_value": 4999, "reason": "soak"})
                } else {
                    json!({"items": items, "action": action})
                };
                match c.post("/v1/field-reviews/bulk-resolve", &body) {
                    None => return,
                    Some(r) => {
                        assert!(r.status < 500, "bulk resolve: {}", r.text);
                        if r.status == 200 {
                            for res in r.body["results"].as_array().unwrap() {
                                if res["ok"] == true {
                                    ledger.decisions.push((
                                        res["pipeline_document_id"].as_str().unwrap().to_string(),
                                        res["field_key"].as_str().unwrap().to_string(),
                                        action.to_string(),
                                    ));
                                }
                            }
                        }
                        true
                    }
                }
            }
            _ if !ledger.pipelines.is_empty() => {
                let p = ledger.pipelines[rng.gen_range(0..ledger.pipelines.len())].clone();
                match c.post(&format!("/v1/pipelines/{p}/data-product"), &json!({})) {
                    None => return,
                    Some(r) => {
                        assert!(r.status < 500, "data product: {}", r.text);
                        if r.status == 201 || r.status == 200 {
                            ledger
                                .data_products
                                .push(r.body["dataProduct"]["id"].as_str().unwrap().to_string());
                        }
                        true
                    }
                }
            }
            _ => true,
        };
        if !ok {
            return;
        }
    }
}

fn settled(c: &Client, pid: &str) -> bool {
    c.get(&format!("/v1/pipelines/{pid}/progress"))
        .map(|r| {
            let p = r.body;
            let done = p["completedDocuments"].as_i64().unwrap_or(0)
                + p["errorDocuments"].as_i64().unwrap_or(0);
            p["status"] != "active" && Some(done) == p["totalDocuments"].as_i64()
        })
        .unwrap_or(false)
}

/// Every server of the soak takes the process down when a worker picks up this text.
const POISON: &str = "POISON-soak-worker-killer";
const FLAGS: &[&str] = &[
    "--workers",
    "2",
    "--fault-abort-on",
    POISON,
    "--webhooks-allow-private",
    "--webhooks-retry-schedule",
    "100ms,200ms,300ms,500ms,1s,1s,1s,2s,2s,2s",
];

/// A run with one poison document among good ones. The poison may take the server down before
/// the answer is written, so nothing is asked of the answer: the end state is what is checked.
fn poison(c: &Client, sid: &str) {
    let mut docs: Vec<Value> = (0..6)
        .map(|i| {
            let f = fixtures::invoice(97, i);
            json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type})
        })
        .collect();
    docs.insert(
        3,
        json!({"filename": "poison.txt", "content": format!("Invoice number: {POISON}")}),
    );
    let _ = c.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
}

fn soak(kills: usize, seed: u64) {
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ledger = Ledger::default();
    let mut serial = 0;
    let mut server = Some(spawn_server(&db, KEY, FLAGS));
    let sid = setup(&Client::new(server.as_ref().unwrap().1));
    // A receiver subscribed to every event, failing now and then in every way.
    let rx = Receiver::start();
    rx.script(&[
        Answer::Status(500, "oops"),
        Answer::Drop,
        Answer::Ok,
        Answer::Slow(Duration::from_millis(300)),
        Answer::Status(502, "bad gateway"),
        Answer::Ok,
        Answer::Drop,
    ]);
    let hook = Client::new(server.as_ref().unwrap().1)
        .post(
            "/v1/webhooks",
            &json!({"url": rx.url("/soak"), "events": ["*"]}),
        )
        .expect("server up during setup");
    assert_eq!(hook.status, 201, "{}", hook.text);
    let hook = hook.body["id"].as_str().unwrap().to_string();
    poison(&Client::new(server.as_ref().unwrap().1), &sid);
    let mut survived = 0;
    for _ in 0..kills {
        let (mut child, port) = match server.take() {
            Some(s) => s,
            None => spawn_server(&db, KEY, FLAGS),
        };
        let c = Client::new(port);
        let pid = child.id();
        let delay = Duration::from_millis(rng.gen_range(50..700));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SIGKILL: no shutdown path runs.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        });
        let mut local = rand::rngs::StdRng::seed_from_u64(rng.gen());
        client_loop(&c, &sid, &mut ledger, &mut local, &mut serial);
        killer.join().unwrap();
        child.wait().unwrap();
        survived += 1;
    }

    let (mut child, port) = spawn_server(&db, KEY, FLAGS);
    let c = Client::new(port);
    let deadline = Instant::now() + Duration::from_secs(120);
    for p in &ledger.pipelines {
        while !settled(&c, p) {
            assert!(Instant::now() < deadline, "pipeline {p} never settled");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for d in &ledger.documents {
        assert_eq!(
            c.get(&format!("/v1/documents/{d}")).unwrap().status,
            200,
            "upload {d} lost"
        );
    }
    for dp in &ledger.data_products {
        assert_eq!(
            c.get(&format!("/v1/data-products/{dp}")).unwrap().status,
            200,
            "data product {dp} lost"
        );
    }
    for (p, n) in &ledger.reruns {
        let r = c.get(&format!("/v1/pipelines/{p}/reruns")).unwrap();
        let listed = r.body["data"].as_array().unwrap().len();
        assert!(
            listed >= *n,
            "pipeline {p}: {n} reruns acknowledged, {listed} recorded"
        );
    }
    // Every delivery is made before the end: none left pending, none given up.
    wait_for(120, || {
        let pending = c.get(&format!(
            "/v1/webhooks/{hook}/deliveries?status=pending&limit=1"
        ))?;
        let failed = c.get(&format!(
            "/v1/webhooks/{hook}/deliveries?status=failed&limit=1"
        ))?;
        (pending.body["pagination"]["total"] == 0 && failed.body["pagination"]["total"] == 0)
            .then_some(())
    });
    let _ = child.kill();
    child.wait().unwrap();

    let db = quire::testing::connect(&db).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let deliveries: Vec<(String, String)> = db
        .prepare("SELECT d.id, e.event FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq WHERE d.status = 'delivered'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let accepted = rx.accepted();
    let mut got: Vec<&str> = accepted.iter().map(|r| r.delivery_id.as_str()).collect();
    let mut sent: Vec<&str> = deliveries.iter().map(|(id, _)| id.as_str()).collect();
    got.sort();
    sent.sort();
    assert_eq!(
        got, sent,
        "the receiver, de-duplicating, has exactly the recorded deliveries"
    );
    let received = |event: &str| accepted.iter().filter(|r| r.event == event).count() as i64;
    // No change without its event: each committed decision and rerun was told once.
    assert_eq!(
        received("review.decision_made"),
        count("SELECT count(*) FROM review_decisions"),
        "decisions and their events"
    );
    assert_eq!(
        received("rerun.enqueued"),
        count("SELECT count(*) FROM reruns"),
        "reruns and their events"
    );
    for p in &ledger.pipelines {
        assert!(
            accepted.iter().any(|r| r.event.starts_with("pipeline.")
                && r.json()["data"]["pipeline_id"] == p.as_str()),
            "pipeline {p} settled without its event"
        );
    }
    let repeats = rx.seen().len() - accepted.len();
    for (pd, field, action) in &ledger.decisions {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM review_decisions d JOIN pipeline_documents pd ON pd.seq = d.pd_seq
                 WHERE pd.id = ?1 AND d.field_key = ?2 AND d.action = ?3",
                [pd, field, action],
                |r| r.get(0),
            )
            .unwrap();
        assert!(n >= 1, "decision {action} on {pd}/{field} lost");
    }
    assert_eq!(
        count("SELECT count(*) FROM pipeline_documents WHERE status IN ('queued', 'processing')"),
        0,
        "documents left unfinished"
    );
    // The poison, and only the poison, ended in error, quarantined with its reason.
    let errors: Vec<(String, String)> = db
        .prepare("SELECT d.filename, coalesce(pd.error, '') FROM pipeline_documents pd JOIN documents d ON d.id = pd.document_id WHERE pd.status = 'error'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        errors,
        vec![(
            "poison.txt".to_string(),
            "quarantined: the worker aborted the process".to_string()
        )]
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT 1 FROM cells GROUP BY pd_seq, field_key, phase_index, generation, pass HAVING count(*) > 1) AS d"),
        0,
        "duplicated versions"
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT 1 FROM verdicts GROUP BY pd_seq, field_key, phase_index, generation, pass HAVING count(*) > 1) AS d"),
        0,
        "duplicated verdicts"
    );
    // Missing: every document has its seven extracted values, and verdicts for every
    // generation it reached. (Resolution writes a version only when a rule changes a value,
    // so its count is not fixed.)
    assert_eq!(
        count("SELECT count(*) FROM pipeline_documents pd WHERE pd.status <> 'error' AND (SELECT count(*) FROM cells c WHERE c.pd_seq = pd.seq AND c.phase_index = 1) != 7"),
        0,
        "missing extraction versions"
    );
    assert_eq!(
        count("SELECT count(*) FROM pipeline_documents pd, (SELECT DISTINCT generation AS g FROM pipelines UNION SELECT 1) gens
               WHERE gens.g <= pd.generation AND pd.status <> 'error'
                 AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.pd_seq = pd.seq AND v.phase_index = 3 AND v.generation = gens.g)"),
        0,
        "a generation without its verdicts"
    );
    println!(
        "soak: webhook receiver kept {} deliveries once each ({repeats} repeated or failed attempts)",
        accepted.len()
    );
    println!(
        "soak: survived {survived} SIGKILLs; acknowledged {} uploads, {} pipelines, {} reruns, {} decisions, {} data products — none lost",
        ledger.documents.len(),
        ledger.pipelines.len(),
        ledger.reruns.values().sum::<usize>(),
        ledger.decisions.len(),
        ledger.data_products.len()
    );
}

#[test]
fn short_soak_survives_kills_with_nothing_lost() {
    soak(8, 7);
}

#[test]
#[ignore]
fn long_soak_survives_kills_with_nothing_lost() {
    let kills = std::env::var("QUIRE_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    soak(kills, 11);
}
