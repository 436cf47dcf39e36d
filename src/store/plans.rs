//! The plans SQLite chooses for the pages the API serves. A page must cost the same at any depth
//! of a run of a million documents: every statement a page runs reaches its rows through an index
//! (keyset pagination), never by scanning a table or sorting every match. These tests run the very
//! functions the handlers call, record every statement they execute, and fail on a scan.

use super::{Db, OpenOptions};
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use std::sync::Mutex;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(e: TraceEvent<'_>) {
    if let TraceEvent::Stmt(_, sql) = e {
        // Triggers announce themselves as comments; their statements are not pages.
        if !sql.trim_start().starts_with("--") {
            if let Ok(mut seen) = SEEN.lock() {
                seen.push(sql.to_string());
            }
        }
    }
}

/// What makes a page's cost grow with depth: a full pass over a table or an index, or a sort of
/// every matching row before the first is returned. A pass over a partial index is not one: it
/// holds only the rows the query wants (the queue's `status = 'queued'`), in order.
fn costly(detail: &str, partial: &[String]) -> bool {
    let over_partial = partial
        .iter()
        .any(|i| detail.ends_with(&format!("USING INDEX {i}")));
    let scan = detail.starts_with("SCAN ")
        && !detail.starts_with("SCAN json_each")
        && !detail.starts_with("SCAN CONSTANT ROW")
        && !over_partial;
    scan || detail.contains("USE TEMP B-TREE FOR ORDER BY")
}

/// The indexes that hold only the rows their `WHERE` names.
fn partial_indexes(c: &rusqlite::Connection) -> Vec<String> {
    c.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql LIKE '% WHERE %'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("the schema")
}

/// Runs `page` on a fresh database and returns each statement it ran with its costly plan lines.
fn plans_of(page: impl FnOnce(&super::Connection)) -> Vec<(String, Vec<String>)> {
    plans_with(false, page)
}

/// `plans_of`, with the plans of `UPDATE` and `DELETE` statements too when `writes`.
fn plans_with(writes: bool, page: impl FnOnce(&super::Connection)) -> Vec<(String, Vec<String>)> {
    plan_lines(writes, costly, page)
}

/// Each statement `page` ran with the lines of its plan that `keep` keeps (given the partial
/// indexes).
fn plan_lines(
    writes: bool,
    keep: fn(&str, &[String]) -> bool,
    page: impl FnOnce(&super::Connection),
) -> Vec<(String, Vec<String>)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("plans.db");
    let db = Db::open(
        path.to_str().expect("utf-8 path"),
        OpenOptions {
            max_connections: 2,
            ..OpenOptions::default()
        },
    )
    .expect("database");
    let c = db.dedicated().expect("connection");
    // One test at a time records: the recorder is process-wide.
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let s = c.sqlite().expect("SQLite");
    s.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(record));
    page(&c);
    s.trace_v2(TraceEventCodes::empty(), None);
    let seen: Vec<String> = std::mem::take(&mut *SEEN.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(!seen.is_empty(), "the page ran no statement");
    let partial = partial_indexes(s);
    assert!(!partial.is_empty(), "the queue's partial indexes exist");
    let mut out = Vec::new();
    for sql in seen {
        let head = sql.trim_start().to_ascii_uppercase();
        let write = head.starts_with("UPDATE") || head.starts_with("DELETE");
        if !(head.starts_with("SELECT") || head.starts_with("WITH") || (writes && write)) {
            continue;
        }
        let bad: Vec<String> = s
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut s| {
                // The plan is made at prepare time, before any value is bound: NULLs do.
                let nulls = vec![rusqlite::types::Null; s.parameter_count()];
                s.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap_or_else(|e| panic!("cannot explain {sql}: {e}"))
            .into_iter()
            .filter(|d| keep(d, &partial))
            .collect();
        out.push((sql, bad));
    }
    out
}

fn assert_no_scan(what: &str, page: impl FnOnce(&super::Connection)) {
    assert_no_scan_with(false, what, page)
}

fn assert_no_scan_with(writes: bool, what: &str, page: impl FnOnce(&super::Connection)) {
    let bad: Vec<String> = plans_with(writes, page)
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(sql, b)| {
            format!(
                "{}\n    {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" "),
                b.join("; ")
            )
        })
        .collect();
    assert!(bad.is_empty(), "{what} scans:\n{}", bad.join("\n"));
}

const ORG: &str = "org";
const RUN: &str = "01a22a92-31ac-7113-b67e-ff9aea27eaeb";

#[test]
fn the_costly_rule_names_scans_and_sorts_and_lets_searches_pass() {
    let partial = ["pipeline_documents_queued".to_string()];
    assert!(costly("SCAN pipeline_documents", &partial));
    assert!(costly(
        "SCAN h USING COVERING INDEX held_fields_org",
        &partial
    ));
    assert!(costly("USE TEMP B-TREE FOR ORDER BY", &partial));
    assert!(!costly(
        "SEARCH pd USING INDEX pipeline_documents_run (pipeline_id=? AND ordinal>?)",
        &partial
    ));
    assert!(!costly("SCAN json_each VIRTUAL TABLE INDEX 0:", &partial));
    assert!(!costly(
        "SCAN pipeline_documents USING INDEX pipeline_documents_queued",
        &partial
    ));
    // And the recorder sees what a page runs: a query that does scan is caught.
    let plans = plans_of(|c| {
        let _ = c.query_row(
            "SELECT count(*) FROM pipeline_documents WHERE cursor = 3",
            [],
            |r| r.get::<_, i64>(0),
        );
    });
    assert!(plans.iter().any(|(_, b)| !b.is_empty()), "{plans:?}");
}

#[test]
fn a_page_of_a_runs_results_reads_by_position() {
    assert_no_scan("results", |c| {
        super::pipelines::documents(c, RUN, Some(5000), 50, None).unwrap();
        super::pipelines::documents(c, RUN, None, 50, Some("doc")).unwrap();
        super::pipelines::cells_by_doc(c, &[1, 2, 3]).unwrap();
        super::pipelines::newest_cells_by_doc(c, &[1, 2, 3]).unwrap();
        super::pipelines::delivered_count(c, RUN).unwrap();
        super::pipelines::pending_review_count(c, ORG, RUN).unwrap();
    });
}

#[test]
fn a_page_of_the_review_queue_reads_by_position_under_every_filter() {
    for (pipeline, status, field, ascending, hold) in [
        (None, None, None, false, false),
        (Some(RUN), None, None, true, false),
        (
            Some(RUN),
            Some("pending_review"),
            Some("total"),
            false,
            true,
        ),
        (None, None, Some("total"), true, false),
    ] {
        let f = super::review::QueueFilter {
            org_id: ORG,
            pipeline_id: pipeline,
            trigger: None,
            status,
            hold,
            field_key: field,
            stage_id: None,
            ascending,
        };
        assert_no_scan("the review queue", |c| {
            super::review::queue(c, &f, Some(900), 50).unwrap();
        });
    }
}

#[test]
fn pages_of_every_list_read_by_position() {
    assert_no_scan("decisions", |c| {
        super::review::list_decisions(c, ORG, None, Some(900), 50).unwrap();
        super::review::list_decisions(c, ORG, Some(RUN), Some(900), 50).unwrap();
    });
    assert_no_scan("documents", |c| {
        super::documents::list(c, ORG, Some(900), 50).unwrap();
        for ascending in [false, true] {
            let f = super::documents::DocFilter {
                status: Some("completed".into()),
                search: Some("invoice".into()),
                after: None,
                before: None,
                source_id: None,
                ascending,
            };
            super::documents::list_filtered(c, ORG, &f, Some(900), 50).unwrap();
        }
    });
    assert_no_scan("pipelines", |c| {
        super::pipelines::list(c, ORG, None, None, Some(900), 50).unwrap();
        super::pipelines::list(c, ORG, Some("completed"), None, Some(900), 50).unwrap();
    });
    assert_no_scan("data products", |c| {
        super::data_products::list(c, ORG, Some(900), 50).unwrap();
    });
    assert_no_scan("schemas", |c| {
        super::schemas::list(c, ORG, Some(900), 50).unwrap();
    });
    assert_no_scan("policies", |c| {
        super::policies::list(c, ORG, Some(900), 50).unwrap();
    });
    assert_no_scan("webhooks and their deliveries", |c| {
        super::webhooks::list(c, ORG, Some(900), 50).unwrap();
        super::webhooks::deliveries(c, 1, None, Some(900), 50).unwrap();
        super::webhooks::deliveries(c, 1, Some("failed"), Some(900), 50).unwrap();
    });
}

#[test]
fn the_writer_claims_queued_documents_without_a_scan() {
    assert_no_scan("the executor's claim", |c| {
        super::queue::claim(c, "n", 16, &Default::default(), false).unwrap();
    });
}

/// The call of a whole-run rerun finds the review rows blocked before its restart by range on
/// `(pipeline_id, blocked_at)`: an index search on the run alone would read every review row of
/// the run, which is no scan but grows with it (20,000 rows at a million documents).
#[test]
fn a_whole_run_rerun_reads_only_the_review_rows_blocked_before_its_restart() {
    let plans = plan_lines(
        false,
        |d, _| d.contains("held_fields"),
        |c| {
            super::reruns::eager_docs(c, RUN, 2).unwrap();
        },
    );
    let lines: Vec<String> = plans.into_iter().flat_map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 2, "two reads of the review rows: {lines:?}");
    for l in &lines {
        assert!(
            l.contains("USING INDEX held_fields_blocked (pipeline_id=? AND blocked_at"),
            "a read of the review rows by run alone: {l}"
        );
    }
}

/// The rerun of a whole run costs the same at any size: every statement of its call, and the
/// writer's claim that resets a pending document, reach rows through an index.
#[test]
fn a_whole_run_rerun_and_the_claims_that_reset_its_documents_read_by_index() {
    assert_no_scan_with(true, "the whole-run rerun's call and claims", |c| {
        c.execute_batch(&format!(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count,
                                   document_count, created_at, updated_at, lazy_generation, lazy_pending)
             VALUES ('{RUN}', '{ORG}', 's', 's', 'n', 'active', '[]', 3, 0, 't', 't', 2, 1);"
        ))
        .unwrap();
        // Four documents of the earlier generation with a field in review each, so that every
        // statement that deletes stale review rows runs (migration 16).
        for seq in 1..=4 {
            c.execute(
                "INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, cursor, generation, created_at, updated_at)
                 VALUES (?1, 'pd' || ?1, ?2, 'd', ?1, 'complete', 3, 1, 't', 't')",
                rusqlite::params![seq, RUN],
            )
            .unwrap();
            c.execute(
                "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
                 VALUES (?1, 'a', ?2, ?3, 'blocked', 'gate', 'review_queue', 't', 2)",
                rusqlite::params![seq, ORG, RUN],
            )
            .unwrap();
        }
        super::reruns::has_record_set(c, RUN).unwrap();
        super::pipelines::active_count(c, RUN).unwrap();
        super::reruns::eager_docs(c, RUN, 2).unwrap();
        super::reruns::start_lazy(c, RUN, 2, 2).unwrap();
        super::reruns::lazy_runs(c).unwrap();
        super::pipelines::pending_review_count(c, ORG, RUN).unwrap();
        super::reruns::claim_pending(c, "n", RUN, 1, "token", "t", "[]").unwrap();
        super::reruns::materialize_doc(c, 2).unwrap();
        super::reruns::materialize_all(c, RUN).unwrap();
        c.execute("UPDATE pipelines SET lazy_held = 1 WHERE id = ?1", [RUN])
            .unwrap();
        super::reruns::clear_stale_held(c).unwrap();
        super::pipelines::settle(c, RUN).unwrap();
    });
}
