//! The store on a real PostgreSQL (`QUIRE_TEST_POSTGRES_URL`; skipped with a notice without
//! one): its migrations, and the statements the dialect seam renders for it, run against the
//! schema those migrations make. These are the PostgreSQL store's first steps (issue 22,
//! `docs/postgres/plan.md`); the data modules are ported one at a time after them.

use super::conn::testing::scratch;
use super::migrate::{latest_version, migrate_pg};
use super::*;
use std::collections::HashSet;

#[test]
fn postgres_migrates_once_and_records_each_step() {
    let Some(mut s) = scratch() else { return };
    assert_eq!(migrate_pg(&mut s.c, "pg").unwrap(), 0);
    assert_eq!(migrate_pg(&mut s.c, "pg").unwrap(), latest_version());
    let (n, max): (i64, i64) =
        s.c.query_row(
            "SELECT count(*)::bigint, max(version) FROM schema_migrations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, max), (latest_version(), latest_version()));
    // The baseline's triggers hold: an interned description is never changed.
    let id: i64 =
        s.c.query_row(
            "INSERT INTO interned(text) VALUES (?1) RETURNING id",
            ["a mechanism"],
            |r| r.get(0),
        )
        .unwrap();
    let refused =
        s.c.execute("UPDATE interned SET text = 'other' WHERE id = ?1", [id])
            .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}

#[test]
fn postgres_refuses_an_edited_migration_a_newer_schema_and_tables_not_its_own() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    s.c.execute(
        "UPDATE schema_migrations SET sha256 = 'edited' WHERE version = 3",
        [],
    )
    .unwrap();
    let err = migrate_pg(&mut s.c, "pg").unwrap_err().to_string();
    assert!(err.contains("migration 3 (decision_judged_pass)"), "{err}");
    s.c.execute(
        "INSERT INTO schema_migrations VALUES (999, 'future', 'x', 't')",
        [],
    )
    .unwrap();
    let err = migrate_pg(&mut s.c, "pg").unwrap_err().to_string();
    assert!(err.contains("newer than this binary"), "{err}");

    let Some(mut other) = scratch() else { return };
    other
        .c
        .execute_batch("CREATE TABLE theirs(x BIGINT)")
        .unwrap();
    let err = migrate_pg(&mut other.c, "pg").unwrap_err().to_string();
    assert!(err.contains("not a Quire database"), "{err}");
}

/// A run of three documents in generation 1, all pending a whole-run rerun to generation 2 from
/// phase 1: one queued (and a suspect of an unclean exit), one complete, one in error at phase 2.
fn pending_run(c: &Connection) {
    c.execute_batch(
        "INSERT INTO organizations(id, name, created_at) VALUES ('o', 'o', 't');
         INSERT INTO schemas(id, short_id, org_id, name, definition, fields, created_at, updated_at)
         VALUES ('s', 's', 'o', 's', '{}', '[]', 't', 't');
         INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count,
                               document_count, created_at, updated_at, lazy_generation, lazy_from,
                               lazy_at, lazy_pending, lazy_held)
         VALUES ('r', 'o', 's', 's', 'n', 'active', '[]', 3, 3, 't', 't', 2, 1, 't', 1, 1);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, content, text, created_at)
         VALUES ('d', 'o', 'invoice.txt', 'text/plain', 2, 'x', ?1, 'hi', 't')",
        [b"hi".to_vec()],
    )
    .unwrap();
    c.execute_batch(
        "INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, unclean_exits, created_at, updated_at)
         VALUES ('pd1', 'r', 'd', 1, 'queued', 1, 't', 't');
         INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, cursor, created_at, updated_at)
         VALUES ('pd2', 'r', 'd', 2, 'complete', 3, 't', 't');
         INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, cursor, error_phase_index,
                                   created_at, updated_at)
         VALUES ('pd3', 'r', 'd', 3, 'error', 2, 2, 't', 't');",
    )
    .unwrap();
}

/// Every statement the dialect seam renders runs on PostgreSQL as written for it: prepared
/// (its syntax and its parameters' types) and run, on a run whose documents are pending a
/// rerun, so that the claims and resets reach the server and their rows are read back.
#[test]
fn postgres_runs_the_statements_the_dialect_seam_renders() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    pending_run(c);
    let run = "r";
    // The view shows every pending document queued at the restart (the error one earlier).
    let mut counts: Vec<(String, i64, i64)> = pipelines::status_counts(c, run)
        .unwrap()
        .into_iter()
        .map(|g| (g.status.to_string(), g.cursor, g.count))
        .collect();
    counts.sort();
    assert_eq!(counts, vec![("queued".to_string(), 1, 3)]);
    assert_eq!(
        reruns::target_count(c, run, Some(r#"["pd1","pd3"]"#)).unwrap(),
        2
    );
    assert_eq!(reruns::earliest_restart(c, run, None, 1).unwrap(), Some(1));
    assert_eq!(documents::search(c, "o", "INVOICE", 10).unwrap().len(), 1);
    // The lazy claim resets the suspect to the queue and claims the other two.
    let claimed = reruns::claim_pending(c, "n", run, 10, "token", "t", "[]").unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|(seq, g, _)| (*seq, *g))
            .collect::<Vec<_>>(),
        vec![(2, 2), (3, 2)]
    );
    let (claims, _) = queue::claim(c, "n", 10, &HashSet::new(), false).unwrap();
    assert_eq!(claims.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1]);
    // The fenced commit: with the states it expects, and with any.
    let claim = &claims[0];
    assert!(queue::load(c, claim.seq, &claim.token).unwrap().is_some());
    assert!(queue::load(c, claim.seq, "another").unwrap().is_none());
    let fin = queue::Final::Continue(claim.cursor + 1);
    assert!(
        !queue::commit_document(c, claim, 2, "{}", fin, "t", Some("{\"x\":1}")).unwrap(),
        "the fence holds against other states"
    );
    let fin = queue::Final::Continue(claim.cursor + 1);
    assert!(queue::commit_document(c, claim, 2, "{}", fin, "t", None).unwrap());
    documents::keep_page_image(c, "d", 1, b"png").unwrap();
    documents::keep_page_image(c, "d", 1, b"png").unwrap();
    for _ in 0..2 {
        models::answered(c, "k", "m", 1, 2, Err("no answer"), &[]).unwrap();
    }
    let usage: (i64, f64) = c
        .query_row(
            "SELECT calls, cost FROM model_usage WHERE pipeline_id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(usage, (0, 0.0));
    pipelines::list(c, "o", Some("active"), None, None, 10).unwrap();
    assert_eq!(
        pipelines::documents(c, run, None, 10, Some("d"))
            .unwrap()
            .len(),
        3
    );
    pipelines::ensure_record_set(c, run).unwrap();
    review::list_decisions(c, "o", None, None, 10).unwrap();
    retention::next_documents(c, Some("o"), 0, 10).unwrap();
    webhooks::rotate(c, 1, "secret", None).unwrap();
    webhooks::deliveries(c, 1, None, None, 10).unwrap();
    let attempt = webhooks::Attempt {
        delivery_seq: 1,
        webhook_seq: 1,
        at_ms: 0,
        response_code: None,
        latency_ms: 1,
        error: Some("refused".into()),
        response_body: None,
        retry_at_ms: None,
    };
    webhooks::record(c, "n", &attempt, 1000).unwrap();
    reruns::materialize_all(c, run).unwrap();
    reruns::materialize_doc(c, 1).unwrap();
    reruns::eager_docs(c, run, 2).unwrap();
    reruns::docs_by_seq(c, &[1, 2]).unwrap();
    reruns::target_count(c, run, None).unwrap();
    reruns::target_count(c, run, Some(r#"["a","b"]"#)).unwrap();
    reruns::earliest_restart(c, run, None, 2).unwrap();
    reruns::target_decisions(c, run, None).unwrap();
    reruns::keeping_docs(c, run, None, 0, 10).unwrap();
    reruns::restart_rest(c, run, None, 2, 3).unwrap();
    reruns::claim_pending(c, "n", run, 10, "token", "t", "[]").unwrap();
    reruns::materialize_all(c, run).unwrap();
    reruns::materialize_doc(c, 1).unwrap();
    pipelines::status_counts(c, run).unwrap();
    pipelines::list_of_kind(c, "o", "extraction", Some(&["active"]), None, 10).unwrap();
    pipelines::list_extractions(c, "o", None, Some(&["complete"]), None, 10).unwrap();
    pipelines::cells(c, &[1]).unwrap();
    pipelines::newest_cells_by_doc(c, &[1]).unwrap();
    queue::claim(c, "n", 10, &HashSet::new(), false).unwrap();
    queue::recover_orphans(c, true).unwrap();
    queue::load(c, 1, "token").unwrap();
    models::wait(c, 1, "token", "model").unwrap();
    documents::list_filtered(c, "o", &documents::DocFilter::default(), None, 10).unwrap();
    documents::search(c, "o", "invoice", 10).unwrap();
    policies::rails_referencing(c, "o", "dp_1").unwrap();
    retention::has_superseded(c, &[1], "t").unwrap();
    retention::purge_documents(c, &[1], "t").unwrap();
    webhooks::subscribers(c, "o", "run.completed").unwrap();
    webhooks::claim(c, "n", 0, 10, &[1]).unwrap();
    webhooks::next_due(c, &[1]).unwrap();
    for stage_id in [None, Some("stage-1")] {
        let f = review::QueueFilter {
            org_id: "o",
            pipeline_id: None,
            trigger: None,
            status: None,
            hold: true,
            field_key: None,
            stage_id,
            ascending: false,
        };
        review::queue(c, &f, None, 50).unwrap();
    }
}

/// Organizations, keys, idempotency records, interned texts and data products: written and read
/// back on PostgreSQL through the store's own functions.
#[test]
fn postgres_keeps_organizations_keys_replays_and_data_products() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    let org = orgs::create(c, "acme")
        .unwrap()
        .expect("a new organization");
    assert!(
        orgs::create(c, "acme").unwrap().is_none(),
        "names are unique"
    );
    assert_eq!(orgs::count(c).unwrap(), 1);
    assert_eq!(
        orgs::find_by_name_or_id(c, &org.id)
            .unwrap()
            .map(|o| o.name),
        Some("acme".to_string())
    );
    assert_eq!(orgs::list(c).unwrap().len(), 1);

    let epoch = keys::keys_epoch(c).unwrap();
    let plain = "qk_live_0123456789abcdef";
    let id = keys::insert(
        c,
        keys::NewKey {
            org_id: &org.id,
            name: "ci",
            plain,
            scopes: &[crate::domain::keys::Scope::Read],
            rate_limit: Some(5),
            expires_at: None,
            bootstrap: true,
        },
    )
    .unwrap();
    let found = keys::find_by_hash(c, &crate::domain::keys::hash_key(plain))
        .unwrap()
        .expect("the key by its hash");
    assert_eq!(
        (
            found.id.as_str(),
            found.rate_limit,
            found.bootstrap,
            found.org_name.as_str()
        ),
        (id.as_str(), Some(5), true, "acme")
    );
    assert!(keys::revoke(c, &id).unwrap());
    assert!(!keys::revoke(c, &id).unwrap());
    assert!(
        keys::keys_epoch(c).unwrap() > epoch,
        "a key change bumps the epoch"
    );
    assert_eq!(keys::list(c).unwrap().len(), 1);

    let node = nodes::register(c, "n", 60_000).unwrap();
    assert!(nodes::heartbeat(c, &node).unwrap());
    assert!(nodes::registered(c, &node).unwrap());
    let fresh = |c: &Connection| idempotency::claim(c, &org.id, "k1", "fp", &node).unwrap();
    assert!(matches!(fresh(c), idempotency::Claim::Proceed));
    assert!(matches!(fresh(c), idempotency::Claim::InFlight));
    idempotency::complete(c, &org.id, "k1", 201, "application/json", b"{}").unwrap();
    match fresh(c) {
        idempotency::Claim::Replay { status, body, .. } => {
            assert_eq!((status, body), (201, b"{}".to_vec()))
        }
        _ => panic!("a completed key replays"),
    }
    assert!(matches!(
        idempotency::claim(c, &org.id, "k1", "other", &node).unwrap(),
        idempotency::Claim::Mismatch
    ));
    idempotency::purge_expired(c).unwrap();

    let a = intern::id(c, "rule a").unwrap();
    assert_ne!(a, intern::id(c, "rule b").unwrap());

    drop(s);
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    pending_run(c);
    let (dp, created) = data_products::upsert(c, "o", "r", None, "run r").unwrap();
    assert!(created);
    let (again, created) = data_products::upsert(c, "o", "r", Some("renamed"), "run r").unwrap();
    assert!(!created);
    assert_eq!(
        (again.id.as_str(), again.name.as_str()),
        (dp.id.as_str(), "renamed")
    );
    assert!(data_products::get(c, "o", &dp.id).unwrap().is_some());
    assert_eq!(data_products::list(c, "o", None, 10).unwrap().1, 1);
    assert!(data_products::of_pipeline(c, "r").unwrap().is_some());
}

/// An endpoint, its events and deliveries on PostgreSQL: subscribe, enqueue, claim (leased
/// once), a failed attempt scheduled again, a success, a patch, a rotation, the purge.
#[test]
fn postgres_delivers_webhook_events_once_each() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    let org = orgs::create(c, "acme").unwrap().unwrap();
    let events = vec!["run.completed".to_string()];
    let hook = webhooks::create(
        c,
        &org.id,
        webhooks::NewWebhook {
            url: "https://example.com/hook",
            events: &events,
            description: Some("ci"),
            active: true,
            secret: "s1",
        },
    )
    .unwrap();
    assert!(hook.active);
    assert_eq!(
        webhooks::subscribers(c, &org.id, "run.completed").unwrap(),
        vec![hook.seq]
    );
    assert!(webhooks::subscribers(c, &org.id, "other")
        .unwrap()
        .is_empty());
    let data = serde_json::json!({"run": "r"});
    assert_eq!(
        webhooks::enqueue(c, &org.id, "run.completed", &[hook.seq], &data).unwrap(),
        1
    );
    let due = webhooks::claim(c, "n", i64::MAX, 10, &[]).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].data, data);
    assert!(
        webhooks::claim(c, "n", i64::MAX, 10, &[])
            .unwrap()
            .is_empty(),
        "leased once"
    );
    let failed = webhooks::Attempt {
        delivery_seq: due[0].seq,
        webhook_seq: hook.seq,
        at_ms: 1_000,
        response_code: Some(500),
        latency_ms: 3,
        error: Some("server error".into()),
        response_body: Some("oops".into()),
        retry_at_ms: Some(2_000),
    };
    assert_eq!(webhooks::record(c, "n", &failed, i64::MAX).unwrap(), None);
    assert_eq!(webhooks::next_due(c, &[]).unwrap(), Some(2_000));
    let again = webhooks::claim(c, "n", 2_000, 10, &[]).unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    let ok = webhooks::Attempt {
        response_code: Some(200),
        error: None,
        response_body: None,
        retry_at_ms: None,
        ..failed
    };
    webhooks::record(c, "n", &ok, i64::MAX).unwrap();
    let (rows, total) = webhooks::deliveries(c, hook.seq, Some("delivered"), None, 10).unwrap();
    assert_eq!((rows.len(), total, rows[0].attempts), (1, 1, 2));
    webhooks::update(c, hook.seq, "https://example.com/2", &events, None, false).unwrap();
    webhooks::rotate(c, hook.seq, "s2", Some("2030-01-01T00:00:00Z")).unwrap();
    let hook = webhooks::get(c, &org.id, &hook.id).unwrap().unwrap();
    assert_eq!(
        (
            hook.active,
            hook.secret.as_str(),
            hook.previous_secret.as_deref()
        ),
        (false, "s2", Some("s1"))
    );
    assert_eq!(
        webhooks::counts(c).unwrap(),
        vec![("delivered".to_string(), 1)]
    );
    assert_eq!(webhooks::purge(c, i64::MAX).unwrap(), 1);
}

/// Schemas with the field registry they keep, and gates in order, on PostgreSQL.
#[test]
fn postgres_keeps_schemas_their_registry_and_gates() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    let org = orgs::create(c, "acme").unwrap().unwrap();
    let field = |name: &str| -> crate::domain::schema::FieldDef {
        serde_json::from_value(serde_json::json!({
            "field_name": name, "display_name": name, "data_type": "string", "description": null,
            "is_required": false, "requires_review": false, "synonyms": ["alias"], "depends_on": []
        }))
        .unwrap()
    };
    let one = schemas::insert(
        c,
        &org.id,
        "invoice",
        None,
        &[field("total"), field("vendor")],
    )
    .unwrap();
    let two = schemas::insert(c, &org.id, "receipt", Some("r"), &[field("total")]).unwrap();
    let count = |name: &str| {
        schemas::list_registry(c, &org.id, None, 50)
            .unwrap()
            .0
            .into_iter()
            .find(|f| f.canonical_name == name)
            .map(|f| f.occurrence_count)
    };
    assert_eq!((count("total"), count("vendor")), (Some(2), Some(1)));
    // Dropping a field from a schema counts it down (never below zero).
    schemas::update(c, &org.id, &one, "invoice", None, &[field("total")]).unwrap();
    schemas::soft_delete(c, &org.id, &two).unwrap();
    assert_eq!((count("total"), count("vendor")), (Some(1), Some(0)));
    let hidden = schemas::find_or_insert_hidden(c, &org.id, "inline-1", &[field("x")]).unwrap();
    assert!(hidden.hidden);
    assert_eq!(
        schemas::find_or_insert_hidden(c, &org.id, "inline-1", &[field("x")])
            .unwrap()
            .id,
        hidden.id
    );

    let scope = vec!["total".to_string()];
    let (mechanisms, blocking) = (serde_json::json!([]), serde_json::json!({}));
    let gate = |name| gates::GateInput {
        name,
        severity: "blocking",
        field_scope: &scope,
        mechanisms: &mechanisms,
        blocking_config: &blocking,
    };
    let a = gates::create(c, &org.id, &one.id, gate("first")).unwrap();
    let b = gates::create(c, &org.id, &one.id, gate("second")).unwrap();
    assert_eq!((a.ordinal, b.ordinal), (1, 2));
    gates::set_ordinal(c, &b.id, 0).unwrap();
    let names: Vec<String> = gates::list(c, &one.id)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, vec!["second", "first"]);
    assert_eq!(gates::name(c, &a.id).unwrap().as_deref(), Some("first"));
}

/// A document with its pages and bytes, found again by its content, listed and searched, on
/// PostgreSQL.
#[test]
fn postgres_keeps_documents_with_their_pages() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let c = &s.c;
    let org = orgs::create(c, "acme").unwrap().unwrap();
    let page = crate::intake::Page {
        number: 1,
        width: 595.5,
        height: 842.0,
        text: "Total | 12.50".into(),
        markdown: "Total 12.50".into(),
        words: vec![crate::intake::Word {
            text: "Total".into(),
            x0: 1.0,
            y0: 2.0,
            x1: 3.0,
            y1: 4.0,
            conf: Some(0.5),
        }],
        ocr: true,
    };
    let content = vec![0u8, 159, 146, 150, 255];
    let metadata = serde_json::json!({"source_id": "s-1"});
    let new = || documents::NewDocument {
        filename: "Invoice.pdf",
        mime_type: "application/pdf",
        sha256: "abc",
        metadata: &metadata,
        content: &content,
        layer: documents::Layer {
            pages: std::slice::from_ref(&page),
            text: Some("Total | 12.50"),
            error: None,
            language: Some("en"),
            kind: None,
        },
    };
    let (doc, existed) = documents::insert_or_find(c, &org.id, new()).unwrap();
    assert!(!existed);
    assert_eq!(
        (doc.pages, doc.size_bytes, doc.metadata.clone()),
        (1, 5, metadata.clone())
    );
    let (again, existed) = documents::insert_or_find(c, &org.id, new()).unwrap();
    assert!(existed);
    assert_eq!(again.id, doc.id);
    assert_eq!(
        documents::content(c, &doc.id).unwrap(),
        content,
        "bytes exactly"
    );
    let pages = documents::pages(c, &doc.id).unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(
        (
            pages[0].page.width,
            pages[0].page.ocr,
            pages[0].page.words[0].conf
        ),
        (595.5, true, Some(0.5))
    );
    let filter = documents::DocFilter {
        search: Some("invoice".into()),
        source_id: Some("s-1".into()),
        ..Default::default()
    };
    let (rows, total) = documents::list_filtered(c, &org.id, &filter, None, 10).unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(documents::search(c, &org.id, "12.50", 10).unwrap().len(), 1);
    assert!(documents::owned(c, &org.id, &doc.id).unwrap());
}

/// Rows of `sql` (no parameters) as strings, on either connection.
fn strings(c: &Connection, sql: &str) -> Vec<Vec<String>> {
    let mut st = c.prepare(sql).unwrap();
    let mut rows = st.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let mut row = Vec::new();
        let mut i = 0;
        while let Ok(v) = r.get_ref(i) {
            row.push(match v {
                rusqlite::types::ValueRef::Null => String::new(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            });
            i += 1;
        }
        out.push(row);
    }
    out
}

/// The shape of a schema: per table its columns in order with NOT NULL, its primary key, its
/// UNIQUE constraints, its foreign keys (columns → table, on delete), and the explicit indexes.
#[derive(Debug, PartialEq)]
struct Shape {
    tables: std::collections::BTreeMap<String, TableShape>,
    indexes: std::collections::BTreeSet<String>,
}

#[derive(Debug, PartialEq, Default)]
struct TableShape {
    columns: Vec<(String, bool)>,
    primary_key: Vec<String>,
    unique: std::collections::BTreeSet<Vec<String>>,
    foreign_keys: std::collections::BTreeSet<(Vec<String>, String, String)>,
}

fn sqlite_shape(c: &Connection) -> Shape {
    let mut tables = std::collections::BTreeMap::new();
    for t in strings(
        c,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    ) {
        let t = &t[0];
        let mut shape = TableShape::default();
        let info = strings(
            c,
            &format!("SELECT name, \"notnull\", pk FROM pragma_table_info('{t}') ORDER BY cid"),
        );
        let mut pk: Vec<(i64, String)> = Vec::new();
        for r in &info {
            let in_pk: i64 = r[2].parse().unwrap();
            shape.columns.push((r[0].clone(), r[1] == "1" || in_pk > 0));
            if in_pk > 0 {
                pk.push((in_pk, r[0].clone()));
            }
        }
        pk.sort();
        shape.primary_key = pk.into_iter().map(|(_, n)| n).collect();
        for idx in strings(
            c,
            &format!("SELECT name, origin FROM pragma_index_list('{t}')"),
        ) {
            let cols: Vec<String> = strings(
                c,
                &format!(
                    "SELECT name FROM pragma_index_info('{}') ORDER BY seqno",
                    idx[0]
                ),
            )
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
            match idx[1].as_str() {
                "u" => {
                    shape.unique.insert(cols);
                }
                "pk" if shape.primary_key.is_empty() => shape.primary_key = cols,
                _ => {}
            }
        }
        let fks = strings(
            c,
            &format!("SELECT id, \"from\", \"table\", on_delete FROM pragma_foreign_key_list('{t}') ORDER BY id, seq"),
        );
        let mut by_id: std::collections::BTreeMap<String, (Vec<String>, String, String)> =
            Default::default();
        for r in fks {
            let e = by_id
                .entry(r[0].clone())
                .or_insert_with(|| (Vec::new(), r[2].clone(), r[3].clone()));
            e.0.push(r[1].clone());
        }
        shape.foreign_keys = by_id.into_values().collect();
        tables.insert(t.clone(), shape);
    }
    let indexes = strings(
        c,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    Shape { tables, indexes }
}

fn postgres_shape(c: &Connection) -> Shape {
    let mut tables = std::collections::BTreeMap::new();
    for r in strings(
        c,
        "SELECT table_name::text, column_name::text, (is_nullable = 'NO')::int
         FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND table_name IN (SELECT tablename FROM pg_tables WHERE schemaname = current_schema())
         ORDER BY table_name, ordinal_position",
    ) {
        tables
            .entry(r[0].clone())
            .or_insert_with(TableShape::default)
            .columns
            .push((r[1].clone(), r[2] == "1"));
    }
    let cols = |list: &str| -> Vec<String> {
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    for r in strings(
        c,
        "SELECT cl.relname::text, con.contype::text,
                (SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                   JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
                coalesce(fc.relname::text, ''),
                CASE con.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'NO ACTION' END
         FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
         LEFT JOIN pg_class fc ON fc.oid = con.confrelid
         JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE n.nspname = current_schema()",
    ) {
        let Some(t) = tables.get_mut(&r[0]) else {
            continue;
        };
        match r[1].as_str() {
            "p" => t.primary_key = cols(&r[2]),
            "u" => {
                t.unique.insert(cols(&r[2]));
            }
            "f" => {
                t.foreign_keys
                    .insert((cols(&r[2]), r[3].clone(), r[4].clone()));
            }
            _ => {}
        }
    }
    let indexes = strings(
        c,
        "SELECT i.indexname::text FROM pg_indexes i WHERE i.schemaname = current_schema()
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    Shape { tables, indexes }
}

#[test]
fn postgres_migrations_make_the_same_tables_columns_keys_and_indexes_as_sqlite() {
    let Some(mut s) = scratch() else { return };
    migrate_pg(&mut s.c, "pg").unwrap();
    let (_dir, db) = scratch_db();
    let sqlite = sqlite_shape(&db.conn().unwrap());
    let mut pg = postgres_shape(&s.c);
    // What only several nodes need: a SQLite file has one, which keeps its buckets in memory.
    assert!(pg.tables.remove("rate_buckets").is_some());
    assert!(sqlite.tables.len() > 30, "{:?}", sqlite.tables.keys());
    // Not equal for want of anything to compare.
    let count = |f: fn(&TableShape) -> usize| sqlite.tables.values().map(f).sum::<usize>();
    assert!(count(|t| t.foreign_keys.len()) > 20);
    assert!(count(|t| t.unique.len()) > 3);
    assert!(count(|t| t.columns.iter().filter(|c| c.1).count()) > 150);
    assert!(sqlite.indexes.len() > 20, "{:?}", sqlite.indexes);
    assert_eq!(
        sqlite.tables.keys().collect::<Vec<_>>(),
        pg.tables.keys().collect::<Vec<_>>()
    );
    for (name, t) in &sqlite.tables {
        assert_eq!(Some(t), pg.tables.get(name), "table {name}");
    }
    assert_eq!(sqlite.indexes, pg.indexes);
}

/// A Quire database in a schema of its own; `None` without a server.
fn fresh_db() -> Option<(crate::testing::TestDb, Db)> {
    super::conn::testing::pg_url()?;
    let store = crate::testing::TestDb::fresh_postgres();
    let db = Db::open(&store.db, OpenOptions::default()).unwrap();
    Some((store, db))
}

#[test]
fn nodes_wake_each_other_through_notifications_on_their_schema_only() {
    let Some((_store, db)) = fresh_db() else {
        return;
    };
    let Some((_other_store, other)) = fresh_db() else {
        return;
    };
    let listener = db.dedicated().unwrap();
    nodes::listen(&listener).unwrap();
    let quiet = std::time::Duration::from_millis(200);
    assert_eq!(listener.wait_notifications(quiet).unwrap(), 0);
    // Another schema's nodes are not this one's.
    let theirs = other.conn().unwrap();
    nodes::notify(&theirs, &nodes::channel(&theirs).unwrap(), "queue").unwrap();
    assert_eq!(listener.wait_notifications(quiet).unwrap(), 0);
    let sender = db.conn().unwrap();
    let ours = nodes::channel(&sender).unwrap();
    assert_ne!(ours, nodes::channel(&theirs).unwrap());
    nodes::notify(&sender, &ours, "queue").unwrap();
    nodes::notify(&sender, &ours, "queue").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = 0;
    while got < 2 {
        got += listener
            .wait_notifications(std::time::Duration::from_secs(1))
            .unwrap();
        assert!(std::time::Instant::now() < deadline, "{got} of 2 arrived");
    }
}

#[test]
fn a_change_watch_on_postgres_sees_every_commit() {
    let Some((_store, db)) = fresh_db() else {
        return;
    };
    super::tests::a_change_watch_sees_every_commit_made_before_it_was_asked(&db);
}

#[test]
fn a_connection_the_server_closed_is_opened_again() {
    let Some((_store, db)) = fresh_db() else {
        return;
    };
    let mut c = db.dedicated().unwrap();
    assert!(!db.renew(&mut c).unwrap(), "a live connection is kept");
    let pid: i32 = c
        .query_row("SELECT pg_backend_pid()", [], |r| r.get(0))
        .unwrap();
    let killed: bool = db
        .read(|other| {
            Ok::<_, StoreError>(
                other.query_row("SELECT pg_terminate_backend(?1)", [pid], |r| r.get(0))?,
            )
        })
        .unwrap();
    assert!(killed);
    // The first statement finds out; the connection then says so and is opened again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !c.is_broken() {
        let _ = c.query_row("SELECT 1", [], |r| r.get::<_, i32>(0));
        assert!(std::time::Instant::now() < deadline, "never seen as closed");
    }
    assert!(db.renew(&mut c).unwrap());
    let one: i32 = c.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(one, 1);
}

#[test]
fn shared_rate_buckets_take_from_both_or_neither_and_lose_no_token_under_contention() {
    use super::rate_buckets::take;
    let Some((_store, db)) = fresh_db() else {
        return;
    };
    let c = db.conn().unwrap();
    // A key of 3 per minute and no organization limit: three pass, the fourth does not.
    for left in [2.0, 1.0, 0.0] {
        let t = take(&c, ("k", 3), ("o", 0), true).unwrap();
        assert!(t.allowed && t.org_tokens.is_none(), "{t:?}");
        assert!((t.key_tokens.unwrap() - left).abs() < 0.1, "{t:?}");
    }
    let t = take(&c, ("k", 3), ("o", 0), true).unwrap();
    assert!(!t.allowed && t.key_tokens.unwrap() < 1.0, "{t:?}");
    // Looking takes nothing.
    let other = take(&c, ("k2", 2), ("o", 0), false).unwrap();
    assert!(other.allowed && other.key_tokens == Some(2.0), "{other:?}");

    // Keys a and b (2 per minute each) share organization p's 3 per minute; b's refused call
    // costs b's own bucket nothing.
    for _ in 0..2 {
        assert!(take(&c, ("a", 2), ("p", 3), true).unwrap().allowed);
    }
    assert!(take(&c, ("b", 2), ("p", 3), true).unwrap().allowed);
    let refused = take(&c, ("b", 2), ("p", 3), true).unwrap();
    assert!(!refused.allowed, "{refused:?}");
    assert!(refused.key_tokens.unwrap() >= 1.0 && refused.org_tokens.unwrap() < 1.0);

    // A bucket idle for a minute is full again, and never above its limit.
    c.execute("UPDATE rate_buckets SET at_ms = at_ms - 600000", [])
        .unwrap();
    let t = take(&c, ("k", 3), ("o", 0), true).unwrap();
    assert!(
        t.allowed && (t.key_tokens.unwrap() - 2.0).abs() < 1e-9,
        "{t:?}"
    );

    // A clock stepped back an hour neither refills nor starves a bucket.
    c.execute(
        "UPDATE rate_buckets SET at_ms = at_ms + 3600000 WHERE id = 'k'",
        [],
    )
    .unwrap();
    let t = take(&c, ("k", 3), ("o", 0), true).unwrap();
    assert!(
        t.allowed && (t.key_tokens.unwrap() - 1.0).abs() < 1e-9,
        "{t:?}"
    );
    let t = take(&c, ("k", 3), ("o", 0), true).unwrap();
    assert!(
        t.allowed && t.key_tokens.unwrap() < 0.1,
        "refills from now on: {t:?}"
    );
    // The largest limit a key can be given, after a bucket sat idle for years.
    let big = u32::MAX;
    assert!(take(&c, ("huge", big), ("o", 0), true).unwrap().allowed);
    c.execute(
        "UPDATE rate_buckets SET at_ms = at_ms - 100000000000 WHERE id = 'huge'",
        [],
    )
    .unwrap();
    let t = take(&c, ("huge", big), ("o", 0), true).unwrap();
    assert!(
        t.allowed && t.key_tokens == Some(f64::from(big) - 1.0),
        "{t:?}"
    );

    // Eight connections race for a bucket of 20 a minute: 20 of 80 calls pass, and one more
    // for every 3 s the race took (its refill).
    let started = std::time::Instant::now();
    let passed: usize = std::thread::scope(|s| {
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                s.spawn(move || {
                    let c = db.dedicated().unwrap();
                    (0..10)
                        .filter(|_| take(&c, ("race", 20), ("o", 0), true).unwrap().allowed)
                        .count()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    let refilled = (started.elapsed().as_secs_f64() / 3.0).floor() as usize;
    assert!(
        (20..=20 + refilled).contains(&passed),
        "{passed} passed, {refilled} refilled"
    );
}
