//! SIGKILL in the middle of a run: after a restart every document finishes with exactly one
//! set of versions per (phase, generation, pass).

use crate::common::*;
use quire::tools::fixtures;
use serde_json::{json, Value};

const KEY: &str = "tlnc_test_crashcrashcrashcrashcrashcrash01";

fn spec(api: &Remote) -> String {
    invoice_spec(
        api,
        &json!({"name": "Sum", "severity": "blocking",
            "mechanisms": [{"type": "business_rules", "rules": [{"check": "sum", "fields": ["net", "tax"], "equals": "total"}]}]}),
    )
}

#[test]
fn a_killed_run_finishes_after_restart_with_no_duplicate_or_missing_versions() {
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let (mut child, port) = spawn_server(&db, KEY, &["--workers", "2"]);
    let api = Remote::new(port, KEY);
    let sid = spec(&api);
    let n = 2000;
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let f = fixtures::invoice(9, i);
            json!({"filename": f.filename, "content": f.content, "mime_type": f.mime_type})
        })
        .collect();
    let expected: Vec<Value> = (0..n).map(|i| fixtures::invoice(9, i).expected).collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    // Kill as soon as some documents are done and others are not.
    let done_at_kill = wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        let done = p["completedDocuments"].as_i64().unwrap_or(0);
        (done > 0).then_some(done)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    println!("killed with {done_at_kill} of {n} documents done");
    assert!(
        done_at_kill < n as i64,
        "the run finished before the kill; nothing was tested"
    );

    let (mut child, port) = spawn_server(&db, KEY, &[]);
    let api = Remote::new(port, KEY);
    let progress = wait_for(120, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(p)
    });
    assert_eq!(progress["completedDocuments"], n, "{progress}");
    assert_eq!(progress["errorDocuments"], 0, "{progress}");
    // Every value is right after the restart.
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = api.get(&format!(
            "/v1/pipelines/{pid}/results?limit=200&cursor={cursor}"
        ));
        rows.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(rows.len(), n as usize);
    for (row, want) in rows.iter().zip(&expected) {
        assert_eq!(&row["fields"], want, "{}", row["filename"]);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let c = quire::testing::connect(&db).unwrap();
    let dups: i64 = c
        .query_row(
            "SELECT count(*) FROM (SELECT pd_seq, field_key, phase_index, generation, pass FROM cells
             GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) AS d",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dups, 0, "duplicate versions");
    let vdups: i64 = c
        .query_row(
            "SELECT count(*) FROM (SELECT pd_seq, field_key, phase_index, generation, pass FROM verdicts
             GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) AS d",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(vdups, 0, "duplicate verdicts");
    let full: i64 = c
        .query_row(
            "SELECT count(*) FROM (SELECT pd_seq FROM cells WHERE phase_index = 1 GROUP BY pd_seq HAVING count(*) = 7) AS d",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        full, n as i64,
        "every document has its seven extraction versions"
    );
    let verdicts: i64 = c
        .query_row("SELECT count(DISTINCT pd_seq) FROM verdicts", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(verdicts, n as i64, "every document was judged once");
}

#[test]
fn a_document_claimed_three_times_without_a_commit_ends_error_and_the_run_settles() {
    // What three crashes in a row while processing one document leave behind: attempts at the
    // limit. The next claim gives up on it instead of crashing a fourth time.
    let api = start();
    let s = api.create_schema(&json!({"name": "p", "fields": {"a": "string"}}));
    let sid = s["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    api.srv.pause_executor();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": [
            {"filename": "poison.txt", "content": "A: 1"}, {"filename": "fine.txt", "content": "A: 2"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    let db = api.srv.store_connection();
    let n = db
        .execute(
            "UPDATE pipeline_docs SET attempts = 3 WHERE pipeline_id = ?1 AND ordinal = 0",
            [&pid],
        )
        .unwrap();
    assert_eq!(n, 1);
    api.srv.resume_executor();
    let progress = wait_for(30, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(p)
    });
    assert_eq!(progress["completedDocuments"], 1, "{progress}");
    assert_eq!(progress["errorDocuments"], 1, "{progress}");
    let docs = api.get(&format!("/v1/pipelines/{pid}/documents")).body;
    let poison = &docs["data"][0];
    assert_eq!(poison["filename"], "poison.txt");
    assert_eq!(poison["status"], "error");
    assert!(
        poison["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{poison}"
    );
    assert_eq!(docs["data"][1]["status"], "complete");
}

const POISON: &str = "POISON-7f3a-worker-killer";

/// A run of `n` good documents with one poison document among them, on a server that aborts
/// whenever a worker picks the poison up.
fn poison_run(db: &str, flags: &[&str], n: usize) -> (std::process::Child, String) {
    let (child, port) = spawn_server(db, KEY, flags);
    let api = Remote::new(port, KEY);
    let s = api.post(
        "/v1/schemas",
        &json!({"name": "p", "fields": [{"field_name": "a"}]}),
    );
    let sid = s.body["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let mut docs: Vec<Value> = (0..n)
        .map(|i| json!({"filename": format!("d{i}.txt"), "content": format!("A: {i}")}))
        .collect();
    docs.insert(
        n / 2,
        json!({"filename": "poison.txt", "content": format!("A: {POISON}")}),
    );
    // The poison can take the process down before the answer is written: the run's id is then
    // read from the database (the run was committed before any document could be claimed).
    let sent = api
        .http
        .post(format!("{}/v1/pipelines", api.base))
        .bearer_auth(KEY)
        .json(&json!({"schema_id": sid, "documents": docs}))
        .send();
    let id = match sent.ok().and_then(|r| r.json::<Value>().ok()) {
        Some(body) if body["id"].is_string() => body["id"].as_str().unwrap().to_string(),
        _ => {
            let mut child = child;
            dies(&mut child);
            let c = quire::testing::connect(db).unwrap();
            let id: String = c
                .query_row("SELECT id FROM pipelines", [], |r| r.get(0))
                .unwrap();
            return (child, id);
        }
    };
    (child, id)
}

/// Waits for the process to die on its own.
/// Whether a document of the database was set aside (quarantined), read beside the service.
fn quarantined(db: &str) -> bool {
    let Ok(c) = quire::testing::connect(db) else {
        return false;
    };
    c.query_row(
        "SELECT count(*) FROM pipeline_documents WHERE status = 'error' AND error LIKE 'quarantined%'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .unwrap_or(false)
}

fn dies(child: &mut std::process::Child) {
    wait_for(60, || child.try_wait().unwrap().map(|_| ()));
}

fn settled_with_one_quarantined(port: u16, pid: &str, n: usize, why: &str) {
    let api = Remote::new(port, KEY);
    let progress = wait_for(120, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        (p["status"] != "active").then_some(p)
    });
    assert_eq!(progress["completedDocuments"], n, "{progress}");
    assert_eq!(progress["errorDocuments"], 1, "{progress}");
    let docs = api
        .get(&format!("/v1/pipelines/{pid}/documents?limit=100"))
        .body;
    let poison = docs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "error")
        .cloned()
        .unwrap_or_else(|| panic!("no errored document in {docs}"));
    assert_eq!(poison["filename"], "poison.txt", "{docs}");
    assert!(poison["error"].as_str().unwrap().contains(why), "{poison}");
}

#[test]
fn a_document_whose_worker_recorded_its_abort_is_quarantined_after_one_restart() {
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let flags = ["--workers", "2", "--fault-abort-on", POISON];
    let (mut child, pid) = poison_run(&db, &flags, 60);
    dies(&mut child);
    let (mut child, port) = spawn_server(&db, KEY, &flags);
    settled_with_one_quarantined(
        port,
        &pid,
        60,
        "quarantined: the worker aborted the process",
    );
    assert!(child.try_wait().unwrap().is_none(), "the service stays up");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_document_whose_allocation_failed_is_quarantined_after_one_restart_by_the_journal() {
    // The worker itself records nothing: the process dies of a failed allocation, and only the
    // binary's allocator, writing to the allocation journal before Rust aborts, can tell which
    // document it was on. Without the journal the poison would need two more exits alone.
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let flags = [
        "--workers",
        "2",
        "--fault-abort-on",
        POISON,
        "--fault-abort-by-allocation",
    ];
    let (mut child, pid) = poison_run(&db, &flags, 60);
    dies(&mut child);
    let journal = std::fs::read_to_string(quire::alloc_journal::journal_path(
        &quire::store::state_path_of(&db),
    ))
    .unwrap();
    assert!(
        journal.lines().any(|l| l.ends_with(" 4611686018427387904")),
        "the failed allocation is journaled: {journal:?}"
    );
    let (mut child, port) = spawn_server(&db, KEY, &flags);
    settled_with_one_quarantined(
        port,
        &pid,
        60,
        "quarantined: an allocation of 4611686018427387904 bytes failed",
    );
    assert!(child.try_wait().unwrap().is_none(), "the service stays up");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(quire::alloc_journal::journal_path(
            &quire::store::state_path_of(&db)
        ))
        .unwrap(),
        "",
        "a new process starts an empty journal"
    );
}

#[test]
fn a_document_in_flight_at_two_consecutive_unclean_exits_is_quarantined_and_no_other() {
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    let flags = [
        "--workers",
        "2",
        "--fault-abort-on",
        POISON,
        "--fault-abort-unrecorded",
    ];
    let (mut child, pid) = poison_run(&db, &flags, 60);
    dies(&mut child);
    // Every document in flight at the first exit is a suspect and runs alone: the poison takes
    // the process down again, alone, until the next start sets it aside. Alone already at the
    // first exit (no other document was in flight), one more exit suffices; in a crowd, two.
    let mut deaths = 1;
    while deaths < 3 {
        // The poison may be claimed before the server even says it is listening.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quire"));
        die_with_test(&mut cmd);
        let mut child = cmd
            .args(["--db", &db, "serve", "--port", "0"])
            .args(flags)
            .env("QUIRE_BOOTSTRAP_KEY", KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let died = wait_for(60, || {
            if child.try_wait().unwrap().is_some() {
                return Some(true);
            }
            quarantined(&db).then_some(false)
        });
        if !died {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        deaths += 1;
    }
    assert!(deaths >= 2, "the poison was set aside before it ran alone");
    let (mut child, port) = spawn_server(&db, KEY, &flags);
    settled_with_one_quarantined(
        port,
        &pid,
        60,
        "quarantined: in flight alone at 2 consecutive unclean exits",
    );
    assert!(child.try_wait().unwrap().is_none(), "the service stays up");
    child.kill().unwrap();
    child.wait().unwrap();
}
