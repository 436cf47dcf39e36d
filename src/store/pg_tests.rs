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
    assert!(queue::load(c, 1).unwrap().is_some());
    // The lazy claim resets the suspect to the queue and claims the other two.
    let claimed = reruns::claim_pending(c, run, 10, "token", "t", "[]").unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|(seq, g, _)| (*seq, *g))
            .collect::<Vec<_>>(),
        vec![(2, 2), (3, 2)]
    );
    let (claims, _) = queue::claim(c, 10, &HashSet::new(), false).unwrap();
    assert_eq!(claims.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1]);
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
    reruns::claim_pending(c, run, 10, "token", "t", "[]").unwrap();
    reruns::materialize_all(c, run).unwrap();
    reruns::materialize_doc(c, 1).unwrap();
    pipelines::status_counts(c, run).unwrap();
    pipelines::list_of_kind(c, "o", "extraction", Some(&["active"]), None, 10).unwrap();
    pipelines::list_extractions(c, "o", None, Some(&["complete"]), None, 10).unwrap();
    pipelines::cells(c, &[1]).unwrap();
    pipelines::newest_cells_by_doc(c, &[1]).unwrap();
    queue::claim(c, 10, &HashSet::new(), false).unwrap();
    queue::recover_after_exit(c).unwrap();
    queue::load(c, 1).unwrap();
    models::wait(c, 1, "token", "model").unwrap();
    documents::list_filtered(c, "o", &documents::DocFilter::default(), None, 10).unwrap();
    documents::search(c, "o", "invoice", 10).unwrap();
    policies::rails_referencing(c, "o", "dp_1").unwrap();
    retention::has_superseded(c, &[1], "t").unwrap();
    retention::purge_documents(c, &[1], "t").unwrap();
    webhooks::subscribers(c, "o", "run.completed").unwrap();
    webhooks::claim(c, 0, 10, &[1]).unwrap();
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
