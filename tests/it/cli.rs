//! The binary itself: first start, bootstrap keys, the CLI subcommands.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn quire(db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quire"));
    c.arg("--db").arg(db);
    c
}

/// Only `serve` creates a database: start it once on `db` and stop it.
fn created_by_serve(db: &str) {
    let (mut child, _, _) = serve(db, &[], &[]);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Starts `quire serve --port 0`, returning the child, its port and what it printed on stdout.
fn serve(
    db: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (std::process::Child, u16, Vec<String>) {
    let mut cmd = quire(db);
    cmd.args(["serve", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("QUIRE_BOOTSTRAP_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn quire");
    let stderr = child.stderr.take().unwrap();
    let mut port = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        assert!(!line.contains("tlnc_"), "a key reached the log: {line}");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            port = rest
                .split(' ')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            break;
        }
        if line.contains("cannot start") {
            break;
        }
    }
    let Some(port) = port else {
        let _ = child.kill();
        panic!("server did not start");
    };
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first-start banner is printed right after start-up; collect what comes promptly.
    let mut out = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(700)) {
        out.push(line);
    }
    (child, port, out)
}

fn get(port: u16, path: &str, key: Option<&str>) -> u16 {
    let c = reqwest::blocking::Client::new();
    let mut rb = c.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    rb.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[test]
fn first_start_prints_one_key_that_works_and_later_starts_print_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db").to_string_lossy().into_owned();
    let (mut child, port, out) = serve(&db, &[], &[]);
    let key = out
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("tlnc_")))
        .expect("a key on stdout")
        .to_string();
    assert_eq!(get(port, "/healthz", None), 200);
    assert_eq!(get(port, "/v1/schemas", Some(&key)), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, port, out) = serve(&db, &[], &[]);
    assert!(out.iter().all(|l| !l.contains("tlnc_")), "{out:?}");
    assert_eq!(get(port, "/v1/schemas", Some(&key)), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_bootstrap_key_is_ensured_idempotently_and_never_resurrected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db").to_string_lossy().into_owned();
    let key = "tlnc_test_abcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..2 {
        let (mut child, port, out) = serve(&db, &[("QUIRE_BOOTSTRAP_KEY", key)], &[]);
        assert!(out.iter().all(|l| !l.contains("tlnc_")), "{out:?}");
        assert_eq!(get(port, "/v1/schemas", Some(key)), 200);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let list = quire(&db).args(["keys", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(
        text.lines().filter(|l| l.contains("bootstrap")).count(),
        1,
        "{text}"
    );
    let id = text
        .lines()
        .find(|l| l.contains("bootstrap"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    assert!(quire(&db)
        .args(["keys", "revoke", &id])
        .output()
        .unwrap()
        .status
        .success());
    let out = quire(&db)
        .args(["serve", "--port", "0"])
        .env("QUIRE_BOOTSTRAP_KEY", key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
}

#[test]
fn organization_names_are_unique_and_keys_need_a_known_org() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db").to_string_lossy().into_owned();
    created_by_serve(&db);
    assert!(quire(&db)
        .args(["orgs", "create", "acme"])
        .output()
        .unwrap()
        .status
        .success());
    let again = quire(&db)
        .args(["orgs", "create", "acme"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = quire(&db)
        .args(["keys", "create", "--org", "nope", "--scopes", "read"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let bad_scope = quire(&db)
        .args(["keys", "create", "--org", "acme", "--scopes", "admin"])
        .output()
        .unwrap();
    assert!(!bad_scope.status.success());
    let ok = quire(&db)
        .args(["keys", "create", "--org", "acme", "--scopes", "read"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout)
        .trim()
        .starts_with("tlnc_live_"));
    // The id `orgs list` prints first names the organization as well as its name does.
    let list = quire(&db).args(["orgs", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    let id = listed
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("acme"))
        .and_then(|l| l.split('\t').next())
        .expect("acme is listed with its id")
        .to_string();
    let by_id = quire(&db)
        .args(["keys", "create", "--org", &id, "--scopes", "read"])
        .output()
        .unwrap();
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    let keys = quire(&db).args(["keys", "list"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout)
            .lines()
            .filter(|l| l.split('\t').nth(1) == Some("acme"))
            .count(),
        2,
        "both keys act for acme: {}",
        String::from_utf8_lossy(&keys.stdout)
    );
}

#[test]
fn a_foreign_file_is_refused_at_start_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(
        &path,
        b"just some text, definitely not a database file.....",
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = quire(path.to_str().unwrap())
        .args(["serve", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Quire database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Starts `quire demo` with `args` and reads its tour up to the last line; the running demo and
/// what it printed.
fn demo_tour(args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
        .arg("demo")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("openapi.json")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("the demo did not finish its tour:\n{}", seen.join("\n")),
        }
    }
    (child, seen.join("\n"))
}

#[test]
fn the_demo_extracts_with_a_model_server_it_is_pointed_at() {
    use quire::tools::model_stub::{ModelStub, StubReply};
    let stub = ModelStub::start(|_| {
        StubReply::json_content(
            r#"{"fields": {"invoice_number": {"value": "X-1", "quote": null}}}"#,
        )
    });
    let (mut child, text) = demo_tour(&["--model", &format!("{},model=demo-7b", stub.url())]);
    assert!(text.contains("Extraction by the model 'demo-7b'"), "{text}");
    assert!(text.contains("200/200 documents"), "{text}");
    assert_eq!(
        stub.calls(),
        200,
        "one call per document; the rerun from resolution makes none"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_demo_runs_the_whole_tour_and_stays_up_until_interrupted() {
    let (mut child, text) = demo_tour(&[]);
    for expected in [
        "200/200 documents",
        "Review queue:",
        "Resolved 5 item(s)",
        "rerun from resolution: 200 documents",
        "decisions kept   5",
        "generation 2",
        "Keep exploring",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Still serving: the URL it printed answers.
    let url = text
        .split("QUIRE=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let up = reqwest::blocking::get(format!("{url}/healthz")).unwrap();
    assert_eq!(up.status().as_u16(), 200);
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_expiry_out_of_range_is_refused_with_a_message_and_creates_no_key() {
    // `orgs` and `keys` on either store.
    let store = quire::testing::TestDb::fresh();
    let db = store.db.clone();
    created_by_serve(&db);
    assert!(quire(&db)
        .args(["orgs", "create", "acme"])
        .output()
        .unwrap()
        .status
        .success());
    for bad in ["999999999d", "99999999999999999999d", "36501d", "3é"] {
        let out = quire(&db)
            .args(["keys", "create", "--org", "acme", "--expires-in", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains("error:")
                && stderr.contains("duration")
                && !stderr.contains("panicked"),
            "{bad}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{bad}");
    }
    // Only the first start's own key (and the header).
    let list = quire(&db).args(["keys", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 2);
    let longest = quire(&db)
        .args(["keys", "create", "--org", "acme", "--expires-in", "36500d"])
        .output()
        .unwrap();
    assert!(longest.status.success());
    let list = quire(&db).args(["keys", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    let line = text.lines().find(|l| l.contains("\tacme\t")).unwrap();
    let year: i32 = line.split('\t').nth(6).unwrap()[..4].parse().unwrap();
    assert!(year > 2100 && year <= 9999, "{text}");
}

#[test]
fn operator_commands_refuse_a_database_that_does_not_exist_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexist.db");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["backup", dir.path().join("b.db").to_str().unwrap()],
        vec!["keys", "create", "--org", "default"],
        vec!["keys", "list"],
        vec!["orgs", "list"],
    ] {
        let out = quire(missing).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("no database at") && err.contains("nonexist.db"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !std::path::Path::new(missing).exists(),
        "nothing was created"
    );
    assert!(!dir.path().join("b.db").exists());
}

#[test]
fn operator_commands_refuse_a_postgres_schema_without_quire_and_create_nothing() {
    if !crate::common::on_postgres() {
        return;
    }
    let store = quire::testing::TestDb::fresh();
    let secret_url = store
        .db
        .replacen("://postgres@", "://postgres:s3cret-pw@", 1);
    for args in [
        vec!["orgs", "list"],
        vec!["keys", "create", "--org", "default"],
    ] {
        let out = quire(&secret_url).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains("no Quire database at"), "{args:?}: {err}");
        assert!(!err.contains("s3cret-pw"), "the password was shown: {err}");
    }
    let tables = quire::testing::connect(&store.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "nothing was created");
}

#[test]
fn a_second_start_says_how_to_make_a_key_and_a_second_server_on_one_file_is_refused() {
    // A file's lock is `<db>.lock`, naming the holder's pid; a PostgreSQL schema's is a session
    // advisory lock, naming the holder's server process.
    let store = quire::testing::TestDb::fresh();
    let db = store.db.as_str();
    let (mut first, _, _) = serve(db, &[], &[]);
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut again, _, out) = serve(db, &[], &[]);
    let text = out.join("\n");
    assert!(
        text.contains("keys create --org default"),
        "second start: {text}"
    );
    // A second server on the same file while the first runs.
    let out = quire(db)
        .args(["serve", "--port", "0"])
        .env_remove("QUIRE_BOOTSTRAP_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let holder = if crate::common::on_postgres() {
        "(server process ".to_string()
    } else {
        format!("pid {}", again.id())
    };
    assert!(
        err.contains("in use by another quire serve") && err.contains(&holder),
        "{err}"
    );
    let (mut shared, _, _) = serve(db, &[], &["--allow-shared"]);
    shared.kill().unwrap();
    shared.wait().unwrap();
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
            .args(["completions", shell])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, like `| head -1`, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{shell}: {err}");
        assert!(out.status.success(), "{shell}: {:?} {err}", out.status);
    }
}

#[test]
fn orgs_list_has_a_header_and_says_so_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    let db = db.to_str().unwrap();
    let (mut srv, _, _) = serve(db, &[], &[]);
    srv.kill().unwrap();
    srv.wait().unwrap();
    let out = quire(db).args(["orgs", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next(), Some("id\tname\tcreated_at"));
    assert!(text.contains("\tdefault\t"), "{text}");
}

#[test]
fn an_older_database_is_backed_up_next_to_itself_before_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let db = db.to_str().unwrap();
    created_by_serve(db);
    // What the previous version (schema 3, before migrations were recorded) left: migrations 4
    // to 18 undone, and no ledger of applied migrations.
    {
        let c = rusqlite::Connection::open(db).unwrap();
        c.execute_batch(
            "DROP TABLE schema_migrations;
             DROP INDEX pipeline_docs_waiting;
             ALTER TABLE pipeline_docs DROP COLUMN claimed_by;
             ALTER TABLE webhook_deliveries DROP COLUMN leased_by;
             ALTER TABLE idempotency_keys DROP COLUMN node;
             DROP INDEX nodes_name;
             DROP TABLE nodes;
             DROP INDEX held_fields_blocked;
             DROP TRIGGER held_fields_fixed_count;
             DROP TRIGGER held_counts_insert;
             DROP TRIGGER held_counts_delete;
             DROP TABLE held_counts;
             ALTER TABLE cells DROP COLUMN rows;
             ALTER TABLE registry_fields DROP COLUMN items;
             ALTER TABLE review_decisions DROP COLUMN element;
             DROP TABLE verdicts;
             DROP TABLE interned;
             CREATE TABLE verdicts (
                 seq INTEGER PRIMARY KEY, pd_seq INTEGER NOT NULL REFERENCES pipeline_docs(seq),
                 field_key TEXT NOT NULL, phase_index INTEGER NOT NULL, stage_id TEXT NOT NULL,
                 generation INTEGER NOT NULL, pass INTEGER NOT NULL, outcome TEXT NOT NULL,
                 suppressed INTEGER NOT NULL DEFAULT 0, reason TEXT, mechanisms TEXT NOT NULL,
                 value_hash TEXT NOT NULL, created_at TEXT NOT NULL);
             CREATE INDEX verdicts_pd ON verdicts(pd_seq, phase_index, field_key);
             DROP VIEW pipeline_documents;
             DROP INDEX pipeline_docs_generation;
             DROP INDEX pipeline_docs_sticky;
             DROP TRIGGER pipeline_docs_flag_phase;
             DROP INDEX pipeline_docs_flagged;
             ALTER TABLE pipeline_docs DROP COLUMN flag_phase;
             ALTER TABLE pipeline_docs RENAME TO pipeline_documents;
             DROP INDEX pipelines_lazy_held;
             ALTER TABLE pipelines DROP COLUMN lazy_held;
             DROP INDEX pipelines_lazy_pending;
             ALTER TABLE pipelines DROP COLUMN lazy_generation;
             ALTER TABLE pipelines DROP COLUMN lazy_from;
             ALTER TABLE pipelines DROP COLUMN lazy_at;
             ALTER TABLE pipelines DROP COLUMN lazy_pending;
             ALTER TABLE held_fields DROP COLUMN blocked_at;
             DROP TRIGGER pipeline_status_counts_insert;
             DROP TRIGGER pipeline_status_counts_update;
             DROP TRIGGER pipeline_status_counts_delete;
             DROP TABLE pipeline_status_counts;
             DROP TRIGGER cells_no_delete;
             DROP TABLE purge_window;
             ALTER TABLE organizations DROP COLUMN retain_superseded_days;
             CREATE TRIGGER cells_no_delete BEFORE DELETE ON cells BEGIN
                 SELECT RAISE(ABORT, 'cells are append-only'); END;
             DROP TABLE webhook_deliveries;
             DROP TABLE webhook_events;
             DROP TABLE webhooks;
             DROP INDEX pipelines_kind;
             DROP INDEX schemas_short;
             ALTER TABLE pipelines DROP COLUMN kind;
             ALTER TABLE pipelines DROP COLUMN options;
             ALTER TABLE schemas DROP COLUMN hidden;
             UPDATE api_keys SET scopes = 'read,write';
             ALTER TABLE cells DROP COLUMN provenance;
             DROP TABLE model_responses;
             DROP TABLE model_calls;
             DROP TABLE model_usage;
             ALTER TABLE reruns DROP COLUMN refresh_extraction;
             ALTER TABLE pipeline_documents DROP COLUMN waiting_for;
             DROP TABLE document_pages;
             DROP TABLE document_page_images;
             ALTER TABLE documents DROP COLUMN status;
             ALTER TABLE documents DROP COLUMN error;
             ALTER TABLE documents DROP COLUMN pages;
             ALTER TABLE documents DROP COLUMN language;
             ALTER TABLE documents DROP COLUMN kind;
             ALTER TABLE documents DROP COLUMN text;
             DROP INDEX pipeline_documents_suspects;
             ALTER TABLE pipeline_documents DROP COLUMN abort_cause;
             ALTER TABLE pipeline_documents DROP COLUMN unclean_exits;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let (mut srv, _, _) = serve(db, &[], &[]);
    srv.kill().unwrap();
    srv.wait().unwrap();
    let version = |path: &str| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let backup = format!("{db}.bak-3");
    assert!(std::path::Path::new(&backup).exists(), "no {backup}");
    assert_eq!(version(&backup), 3, "the backup is the database as it was");
    assert!(version(db) > 3, "the database itself was migrated");
    // Every key made before the `extract` scope existed may extract now (migration 8).
    let scopes: Vec<String> = rusqlite::Connection::open(db)
        .unwrap()
        .prepare("SELECT scopes FROM api_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!scopes.is_empty());
    assert!(
        scopes.iter().all(|s| s == "read,write,extract"),
        "{scopes:?}"
    );
}

#[test]
fn a_config_file_sets_every_flag_below_variables_and_flags_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quire.toml");
    std::fs::write(
        &file,
        "max-body = \"2MiB\"\nbody_timeout = \"1m\"\nport = 9999\nrate-limit = 50\nmetrics-token = \"s3cret\"\n",
    )
    .unwrap();
    let print = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_quire"));
        c.args(["config", "print", "--config", file.to_str().unwrap()])
            .args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let t = print(&[("QUIRE_RATE_LIMIT", "70")], &["--port", "8081"]);
    assert!(t.contains("max_body = 2097152"), "units: {t}");
    assert!(t.contains("body_timeout = 60"), "durations: {t}");
    assert!(t.contains("port = 8081"), "a flag beats the file: {t}");
    assert!(
        t.contains("rate_limit = 70"),
        "a variable beats the file: {t}"
    );
    assert!(
        t.contains("metrics_token = \"********\"") && !t.contains("s3cret"),
        "{t}"
    );
    // What it prints reads back as a configuration file.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &t).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["config", "print", "--config", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, "max-bodi = \"2MiB\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown key 'max-bodi'"), "{err}");
}

#[test]
fn the_demo_is_not_buried_under_its_logs_honours_db_and_prints_one_command_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["--db", db.to_str().unwrap(), "demo"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let last = line.contains("$QUIRE/metrics");
        lines.push(line);
        if last {
            break;
        }
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains(" INFO "),
        "the tour's terminal shows no access log: {err}"
    );
    assert!(db.exists(), "--db is honoured");
    let commands: Vec<&String> = lines.iter().filter(|l| l.contains("curl ")).collect();
    assert!(commands.len() >= 5, "{lines:?}");
    for c in commands {
        assert_eq!(c.matches("curl ").count(), 1, "one command per line: {c}");
    }
}

#[test]
fn json_logs_carry_the_access_fields_error_codes_and_the_request_id_of_engine_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let key = "tlnc_test_jsonjsonjsonjsonjsonjsonjsonjson01";
    let mut child = quire(db.to_str().unwrap())
        .args(["--log-format", "json", "serve", "--port", "0"])
        .env("QUIRE_BOOTSTRAP_KEY", key)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let mut next = |want: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = seen.iter().find(|v| want(v)) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).expect("a log line in time");
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {line:?}: {e}"));
            seen.push(v);
        }
    };
    let listening = next(&|v| v["message"].as_str().unwrap_or("").contains("listening on"));
    let url = listening["message"]
        .as_str()
        .unwrap()
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{url}/v1/schemas/nope"))
        .bearer_auth(key)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let miss = next(&|v| v["target"] == "quire::access" && v["status"] == 400);
    assert_eq!(miss["code"], "bad_request", "{miss}");
    for f in [
        "request_id",
        "route",
        "ms",
        "client",
        "bytes",
        "time",
        "level",
    ] {
        assert!(!miss[f].is_null(), "{f} in {miss}");
    }
    let s = http
        .post(format!("{url}/v1/schemas"))
        .bearer_auth(key)
        .json(&serde_json::json!({"name": "s", "fields": [{"field_name": "a"}]}))
        .send()
        .unwrap();
    let sid = s.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    http.put(format!("{url}/v1/schemas/{sid}/rail"))
        .bearer_auth(key)
        .json(&serde_json::json!({"rail": [{"type": "schema"}]}))
        .send()
        .unwrap();
    let p = http
        .post(format!("{url}/v1/pipelines"))
        .bearer_auth(key)
        .json(&serde_json::json!({"schema_id": sid, "documents": [{"filename": "a.txt", "content": "A: 1"}]}))
        .send()
        .unwrap();
    let rid = p.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(rid.starts_with("req_"), "{rid}");
    let started = next(&|v| v["target"] == "quire::engine");
    assert_eq!(started["request_id"], rid.as_str(), "{started}");
    // A caller's well-formed X-Request-Id is kept: the answer, the access line and the engine
    // event logged while the request was handled (its `request_id` comes from the request's
    // span, flattened into the line) all name it.
    let mine = "caller-chose-this-id-7";
    let p = http
        .post(format!("{url}/v1/pipelines"))
        .bearer_auth(key)
        .header("X-Request-Id", mine)
        .json(&serde_json::json!({"schema_id": sid, "documents": [{"filename": "b.txt", "content": "A: 2"}]}))
        .send()
        .unwrap();
    assert_eq!(p.status().as_u16(), 201);
    assert_eq!(p.headers()["x-request-id"], mine);
    let started = next(&|v| v["target"] == "quire::engine" && v["request_id"] == mine);
    assert_eq!(started["level"], "INFO", "{started}");
    assert!(
        started["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{mine} pipeline ")),
        "{started}"
    );
    let access = next(&|v| v["target"] == "quire::access" && v["request_id"] == mine);
    assert_eq!(access["route"], "/v1/pipelines", "{access}");
    assert_eq!(access["status"], 201, "{access}");
    assert_eq!(access["method"], "POST", "{access}");
    // Lines logged outside any request carry no request id.
    assert!(listening.get("request_id").is_none(), "{listening}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bench_prints_its_summary_with_bytes_per_document_and_compares_with_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_quire"))
            .args(["bench", "--docs", "20"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stdout}{stderr}");
        (stdout, stderr)
    };
    let (first, notes) = bench(&[]);
    // Each figure is in the notes as soon as it is measured, before the summary at the end.
    for note in [
        "bench: first run done: ",
        "bench: ceiling measured: ",
        "bench: rerun from validation done: ",
        "bench: rerun from resolution done: ",
        "bench: rerun from validation called: ",
        "bench: queue pages read: the slowest in ",
        "bench: results pages read: the slowest in ",
    ] {
        assert!(notes.contains(note), "{note:?} in {notes}");
    }
    let summary: serde_json::Value = serde_json::from_str(first.lines().last().unwrap()).unwrap();
    for key in [
        "first_run_ratio_to_ceiling",
        "rerun_validation_ratio_to_ceiling",
        "rerun_call_ms",
        "results_page_max_ms",
        "results_page_p50_ms",
        "results_page_p99_ms",
        "queue_page_p50_ms",
        "queue_page_p99_ms",
        "progress_during_run_p99_ms",
        "written_bytes_per_doc_first_run",
        "bytes_before_purge",
        "bytes_after_purge",
    ] {
        assert!(summary[key].as_f64().is_some(), "{key} in {summary}");
    }
    // A database holds every document's versions and verdicts: kilobytes, not nothing.
    assert!(
        summary["bytes_per_doc"].as_f64().unwrap() > 1000.0,
        "{summary}"
    );
    // Documents and OCR are measured only when asked for.
    assert!(summary["pdf_pages_per_s"].is_null(), "{summary}");
    let saved = dir.path().join("earlier.txt");
    std::fs::write(&saved, &first).unwrap();
    let (second, _) = bench(&["--compare", saved.to_str().unwrap()]);
    let table: Vec<&str> = second
        .lines()
        .skip_while(|l| !l.starts_with("Against the earlier run"))
        .collect();
    let row = table
        .iter()
        .find(|l| l.starts_with("docs "))
        .unwrap_or_else(|| panic!("no comparison of docs in {second}"));
    assert!(row.ends_with("+0.0%"), "{row}");
    assert!(
        table.iter().any(|l| l.starts_with("bytes_per_doc ")),
        "{second}"
    );
    // A file without a summary is refused before anything is measured.
    std::fs::write(&saved, "no summary here\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "bench",
            "--docs",
            "20",
            "--compare",
            saved.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no benchmark summary"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
