//! Two nodes on one PostgreSQL database: concurrent reruns from both, resolves through one while
//! the other works, then a SIGKILL of one mid-run (its documents finish on the other once its
//! lease runs out, nothing lost or duplicated), and a node frozen past its lease whose late work
//! is fenced off. PostgreSQL only: a SQLite file has one node.

use crate::common::*;
use quire::tools::fixtures;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "tlnc_test_nodesnodesnodesnodesnodesnodes01";
const LEASE_SECS: u64 = 2;

fn needs_postgres(what: &str) -> bool {
    if on_postgres() {
        return true;
    }
    eprintln!("notice: {what} needs several nodes, so PostgreSQL (QUIRE_TEST_STORE=postgres); skipped on SQLite");
    false
}

fn node(db: &str, name: &str) -> (std::process::Child, Remote) {
    let lease = format!("{LEASE_SECS}s");
    let (child, port) = spawn_server(
        db,
        KEY,
        &["--node-id", name, "--lease", &lease, "--workers", "1"],
    );
    (child, Remote::new(port, KEY))
}

/// Invoices normalized by a policy; with `hold`, nets above 5,000 are held for review (about a
/// quarter).
fn spec(api: &Remote, hold: bool) -> String {
    let max = if hold { 5000 } else { 100_000_000 };
    invoice_spec(
        api,
        &json!({"name": "Limit", "severity": "blocking",
            "mechanisms": [{"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": max}]}]}),
    )
}

fn start_run(api: &Remote, sid: &str, seed: u64, n: u64) -> String {
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let f = fixtures::invoice(seed, i);
            json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type})
        })
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn settled(api: &Remote, pid: &str, secs: u64) -> Value {
    wait_for(secs, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active" && p["status"] != "queued").then_some(p)
    })
}

/// `(node name, documents)` of what each node committed last, from `claimed_by`.
fn finished_by(db: &str, pid: &str) -> Vec<(String, i64)> {
    let c = quire::testing::connect(db).unwrap();
    let rows = c
        .prepare(
        "SELECT split_part(claimed_by, '/', 1), count(*)::bigint FROM pipeline_docs
         WHERE pipeline_id = ?1 AND status <> 'processing' AND claimed_by IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .unwrap()
    .query_map([pid], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap();
    rows
}

use crate::common::db_count as count;

/// Documents of run `pid` that node `a` holds claimed.
fn held_by_a(db: &str, pid: &str) -> i64 {
    count(
        db,
        "SELECT count(*) FROM pipeline_docs WHERE pipeline_id = ?1 AND status = 'processing' AND claimed_by LIKE 'a/%'",
        pid,
    )
}

/// No (document, field, phase, generation, pass) has two versions or two verdicts.
fn assert_no_duplicates(db: &str) {
    for table in ["cells", "verdicts"] {
        let dups = count(
            db,
            &format!(
                "SELECT count(*) FROM (SELECT pd_seq, field_key, phase_index, generation, pass FROM {table}
                 WHERE ?1 <> '' GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) AS d"
            ),
            "x",
        );
        assert_eq!(dups, 0, "duplicate {table}");
    }
}

fn results(api: &Remote, pid: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = api.get(&format!(
            "/v1/pipelines/{pid}/results?limit=200&cursor={cursor}"
        ));
        assert_eq!(r.status, 200, "{}", r.text);
        rows.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return rows,
        }
    }
}

#[test]
fn two_nodes_share_reruns_reviews_and_a_killed_node_s_work() {
    if !needs_postgres("two nodes sharing a run") {
        return;
    }
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let (mut child_a, a) = node(&db, "a");
    let (mut child_b, b) = node(&db, "b");
    // A node name is held by one process at a time.
    let second_a = std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["--db", &db, "serve", "--port", "0", "--node-id", "a"])
        .env("QUIRE_BOOTSTRAP_KEY", KEY)
        .output()
        .unwrap();
    assert!(!second_a.status.success());
    assert!(
        String::from_utf8_lossy(&second_a.stderr).contains("node id 'a'"),
        "{}",
        String::from_utf8_lossy(&second_a.stderr)
    );
    for api in [&a, &b] {
        let r = api.get("/readyz");
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM nodes WHERE ?1 <> ''", "x"),
        2
    );

    // A small run settles, both nodes working it.
    let sid = spec(&a, true);
    let plain = spec(&b, false);
    let small = start_run(&b, &sid, 5, 200);
    let p = settled(&a, &small, 120);
    assert_eq!(p["completedDocuments"], 200, "{p}");

    // While both nodes work a big run, every held field of the small run is resolved through
    // A, one request at a time.
    let first = start_run(&b, &plain, 8, 4000);
    let before = a.get(&format!("/v1/pipelines/{first}/progress")).body;
    let queue = a.get(&format!("/v1/field-reviews?pipeline_id={small}&limit=100"));
    assert_eq!(queue.status, 200, "{}", queue.text);
    let mut held = queue_items(&queue);
    held.sort();
    held.dedup();
    assert!(!held.is_empty(), "the small run holds no field");
    for (pd, field) in &held {
        let r = a.post(
            &format!("/v1/field-reviews/{pd}/{field}/resolve"),
            &json!({"action": "override", "corrected_value": 4999, "reason": "two nodes"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert!(
        before["status"] == "active" || before["status"] == "queued",
        "the resolves began while both nodes worked: {before}"
    );
    let after = b.get(&format!("/v1/pipelines/{first}/progress")).body;
    println!(
        "resolved {} fields; the big run went from {} to {} completed meanwhile",
        held.len(),
        before["completedDocuments"],
        after["completedDocuments"]
    );
    // Each resolved document runs its later phases again (on either node) from the decision.
    // Each resolved field ends with the reviewer's value, whichever node runs its document on.
    let resolved = || {
        held.iter().all(|(pd, field)| {
            let f = b.get(&format!("/v1/field-reviews/{pd}/{field}"));
            f.body["item"]["status"] == "completed" && f.body["item"]["current_value"] == 4999
        })
    };
    wait_for(120, || resolved().then_some(()));
    let p = settled(&b, &small, 120);
    assert_eq!(p["completedDocuments"], 200, "{p}");
    let decisions = count(
        &db,
        "SELECT count(*) FROM review_decisions d JOIN pipeline_docs pd ON pd.seq = d.pd_seq WHERE pd.pipeline_id = ?1",
        &small,
    );
    assert_eq!(decisions, held.len() as i64, "one decision per resolve");
    settled(&a, &first, 240);

    // Reruns race from both nodes: exactly one wins, and it keeps every decision.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let api = if i % 2 == 0 { &a } else { &b };
            let (url, key) = (format!("{}/v1/pipelines/{small}/rerun", api.base), KEY);
            std::thread::spawn(move || {
                client(60)
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"from_phase": "validation"}))
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let codes: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        1,
        "exactly one rerun wins: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 400), "{codes:?}");
    let p = settled(&b, &small, 120);
    assert_eq!(p["completedDocuments"], 200, "{p}");
    let reruns = a.get(&format!("/v1/pipelines/{small}/reruns"));
    assert_eq!(reruns.status, 200, "{}", reruns.text);
    assert_eq!(
        reruns.body["data"].as_array().unwrap().len(),
        1,
        "one rerun recorded"
    );
    assert!(resolved(), "the rerun kept every decision");

    // A big run on both nodes, and A killed in the middle of it.
    let n = 3000u64;
    let big = start_run(&b, &plain, 9, n);
    // Kill A once both nodes have finished documents of the big run and A holds some claims.
    wait_for(120, || {
        let by = finished_by(&db, &big);
        let held = held_by_a(&db, &big);
        (by.len() == 2 && held > 0).then_some(())
    });
    child_a.kill().unwrap();
    child_a.wait().unwrap();
    let killed_at = Instant::now();
    let stranded = held_by_a(&db, &big);
    println!("killed node a holding {stranded} claims");
    assert!(
        stranded > 0,
        "a held nothing when killed; nothing was tested"
    );
    // B takes A's claims back once A's lease runs out (B looks every half lease).
    wait_for(60, || {
        let left = held_by_a(&db, &big);
        (left == 0).then_some(())
    });
    let taken_back = killed_at.elapsed();
    assert!(
        taken_back < Duration::from_secs(LEASE_SECS * 2 + 10),
        "a's claims were taken back after {taken_back:?}"
    );
    let p = settled(&b, &big, 240);
    assert_eq!(p["completedDocuments"], n, "{p}");
    assert_eq!(p["errorDocuments"], 0, "{p}");
    let rows = results(&b, &big);
    assert_eq!(rows.len(), n as usize);
    for (i, row) in rows.iter().enumerate() {
        let want = fixtures::invoice(9, i as u64);
        assert_eq!(row["fields"], want.expected, "{}", row["filename"]);
    }
    assert_no_duplicates(&db);
    let full = count(
        &db,
        "SELECT count(*) FROM (SELECT pd.seq FROM cells c JOIN pipeline_docs pd ON pd.seq = c.pd_seq
         WHERE pd.pipeline_id = ?1 AND c.phase_index = 1 GROUP BY pd.seq HAVING count(*) = 7) AS d",
        &big,
    );
    assert_eq!(
        full, n as i64,
        "every document has its seven extraction versions"
    );
    let nodes = count(&db, "SELECT count(*) FROM nodes WHERE id LIKE ?1", "a/%");
    assert_eq!(nodes, 0, "the killed node was reaped");
    child_b.kill().unwrap();
    child_b.wait().unwrap();
}

#[test]
fn a_node_frozen_past_its_lease_is_fenced_off_and_registers_again() {
    if !needs_postgres("a frozen node") {
        return;
    }
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let (mut child_a, a) = node(&db, "a");
    let (mut child_b, b) = node(&db, "b");
    let sid = spec(&b, false);
    let n = 1500u64;
    let big = start_run(&b, &sid, 11, n);
    wait_for(120, || {
        let held = held_by_a(&db, &big);
        (held > 0).then_some(())
    });
    let pid_a = child_a.id() as i32;
    // SAFETY: signals to a child process this test started.
    unsafe { libc::kill(pid_a, libc::SIGSTOP) };
    let p = settled(&b, &big, 240);
    // SAFETY: as above.
    unsafe { libc::kill(pid_a, libc::SIGCONT) };
    assert_eq!(p["completedDocuments"], n, "{p}");
    // A wakes, finds itself reaped, and is ready again under a new id; what it had computed
    // for its lost claims commits nothing.
    wait_for(60, || {
        let ids = count(&db, "SELECT count(*) FROM nodes WHERE id LIKE ?1", "a/%");
        (ids == 1 && a.get("/readyz").status == 200).then_some(())
    });
    assert_no_duplicates(&db);
    let rows = results(&a, &big);
    assert_eq!(rows.len(), n as usize);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["fields"], fixtures::invoice(11, i as u64).expected);
    }
    // A cancel through one node stops both nodes' work on the run.
    let doomed = start_run(&b, &sid, 13, 3000);
    wait_for(120, || {
        let holders = count(
            &db,
            "SELECT count(DISTINCT split_part(claimed_by, '/', 1)) FROM pipeline_docs WHERE pipeline_id = ?1 AND status = 'processing'",
            &doomed,
        );
        (holders == 2).then_some(())
    });
    let r = a.post(&format!("/v1/pipelines/{doomed}/cancel"), &json!({}));
    assert!(r.status < 300, "{}", r.text);
    let cells_of = || {
        count(
            &db,
            "SELECT count(*) FROM cells c JOIN pipeline_docs pd ON pd.seq = c.pd_seq WHERE pd.pipeline_id = ?1",
            &doomed,
        )
    };
    let at_cancel = cells_of();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pipeline_docs WHERE pipeline_id = ?1 AND status IN ('queued', 'processing')",
            &doomed,
        ),
        0
    );

    // And A claims work again; by the time a later run settles, the claims both nodes had
    // queued for their workers before the cancel are behind them, and none was committed.
    let more = start_run(&a, &sid, 12, 400);
    let p = settled(&a, &more, 120);
    assert_eq!(p["completedDocuments"], 400, "{p}");
    assert_eq!(cells_of(), at_cancel, "no versions after the cancel");
    for child in [&mut child_a, &mut child_b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn a_client_spread_over_two_nodes_sees_one_rate_limit() {
    if !needs_postgres("a rate limit shared by nodes") {
        return;
    }
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let (mut child_a, a) = node(&db, "a");
    let (mut child_b, b) = node(&db, "b");
    let create = |org: &str, extra: &[&str]| {
        let cli = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
                .args(["--db", &db])
                .args(args)
                .output()
                .unwrap()
        };
        cli(&["orgs", "create", org]);
        let mut args = vec!["keys", "create", "--org", org, "--scopes", "read"];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // 6 per minute: one token back every 10 s, so none comes back during these requests.
    let key = create("slow", &["--rate-limit", "6"]);
    let as_key = |node: &Remote, key: &str| Remote {
        base: node.base.clone(),
        key: key.to_string(),
        http: client(30),
    };
    let nodes = [as_key(&a, &key), as_key(&b, &key)];
    let remaining =
        |r: &Resp| -> u64 { r.header("x-ratelimit-remaining").unwrap().parse().unwrap() };
    // Alternating between the nodes, the six tokens are spent once: 5, 4, … 0 left.
    for i in 0..6u64 {
        let r = nodes[(i % 2) as usize].get("/v1/schemas");
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
        assert_eq!(remaining(&r), 5 - i, "request {i}");
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("6"));
    }
    for node in &nodes {
        let r = node.get("/v1/schemas");
        assert_envelope(&r, 429, "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "retry-after {retry}");
        assert_eq!(remaining(&r), 0);
    }
    // Another key of the same limit has its own bucket, on either node.
    let other = create("other", &["--rate-limit", "6"]);
    let r = as_key(&b, &other).get("/v1/schemas");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(remaining(&r), 5);
    for child in [&mut child_a, &mut child_b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
