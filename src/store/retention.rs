//! Retention: the versions and verdicts of superseded generations, removed by a purge. This is
//! the one path that deletes a version; the `cells_no_delete` trigger (migration 10) lets a
//! delete through only inside a purge window and only for a machine version that a later
//! generation's restart superseded.

use super::conn::{params, OptionalExtension};
use super::sql::{self, Dialect, Elem, Sql};
use super::{Connection, StoreError};

/// How long an organization keeps superseded versions (`None`: for ever).
pub fn days(c: &Connection, org_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT retain_superseded_days FROM organizations WHERE id = ?1",
        [org_id],
        |r| r.get::<_, Option<i64>>(0),
    )
    .optional()?
    .flatten())
}

pub fn set_days(c: &Connection, org_id: &str, days: Option<i64>) -> Result<(), StoreError> {
    c.execute(
        "UPDATE organizations SET retain_superseded_days = ?2 WHERE id = ?1",
        params![org_id, days],
    )?;
    Ok(())
}

/// Every organization with a retention setting, and its days.
pub fn settings(c: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(c
        .prepare_cached(
            "SELECT id, retain_superseded_days FROM organizations WHERE retain_superseded_days IS NOT NULL ORDER BY seq",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// The next documents (by seq, after `after`) a purge looks at: restarted at least once, not in
/// work (a queued or running document is still writing the generation that supersedes).
pub fn next_documents(
    c: &Connection,
    org_id: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    static NEXT: Sql = Sql::new(|d| {
        format!(
            "SELECT pd.seq FROM pipeline_documents pd JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE pd.seq > ?1 AND pd.restarts <> '[]' AND pd.status NOT IN ('queued', 'processing')
               AND ({} OR p.org_id = ?2)
             ORDER BY pd.seq LIMIT ?3",
            sql::is_null(d, 2, "text")
        )
    });
    Ok(c.prepare_cached(NEXT.text(c.dialect()))?
        .query_map(params![after, org_id, limit], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// What one purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub versions: u64,
    pub verdicts: u64,
}

/// The rows of the documents `seqs` that a restart requested before `cutoff` (RFC 3339)
/// superseded: same generation rule as every reader's liveness (`runner::is_live`), people's
/// versions excepted. `join` names them; `extra` narrows further.
fn superseded(d: Dialect, table: &str, extra: &str) -> String {
    let generation = sql::json_index(d, "r.value", 0);
    format!(
        "SELECT x.seq FROM pipeline_documents pd
           {}
           JOIN reruns rr ON rr.pipeline_id = pd.pipeline_id AND rr.generation = {generation}
           JOIN {table} x ON x.pd_seq = pd.seq
         WHERE pd.seq IN ({}) AND rr.requested_at < ?2
           AND x.generation < {generation} AND x.phase_index >= {} {extra}",
        sql::join_json_elems(d, "pd.restarts", "r"),
        sql::in_list(d, 1, Elem::Int),
        sql::json_index(d, "r.value", 1),
    )
}

/// What a purge keeps of the superseded versions, beyond people's versions:
/// - the table's newest row: `seq` is a rowid, and SQLite numbers a new row after the largest
///   one left, so deleting the newest would hand its number out again, while reopen and resume
///   cuts compare seqs (`reopened_after`, `superseded`);
/// - each field's highest version: the next version is numbered after the highest one left, so
///   a number once shown never names another value;
/// - each field's newest extracted version: the review detail places a held value on the page
///   through it when the value shown was not extracted.
const CELLS_KEPT: &str = "AND x.source <> 'human_review'
    AND x.seq < (SELECT max(seq) FROM cells)
    AND x.version < (SELECT max(k.version) FROM cells k WHERE k.pd_seq = x.pd_seq AND k.field_key = x.field_key)
    AND NOT (x.source IN ('rules_extraction', 'model_extraction') AND x.seq = (
        SELECT max(k.seq) FROM cells k WHERE k.pd_seq = x.pd_seq AND k.field_key = x.field_key
          AND k.source IN ('rules_extraction', 'model_extraction')))";

/// Verdict seqs are rowids too.
const VERDICTS_KEPT: &str = "AND x.seq < (SELECT max(seq) FROM verdicts)";

/// Whether any of `seqs` has something to purge (a read, before a write transaction is opened).
pub fn has_superseded(c: &Connection, seqs: &[i64], cutoff: &str) -> Result<bool, StoreError> {
    let list = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
    let any = |table: &str, kept: &str| -> Result<bool, StoreError> {
        Ok(c.query_row(
            &format!("SELECT EXISTS({})", superseded(c.dialect(), table, kept)),
            params![list, cutoff],
            |r| r.get(0),
        )?)
    };
    Ok(any("cells", CELLS_KEPT)? || any("verdicts", VERDICTS_KEPT)?)
}

/// Removes the superseded versions and verdicts of `seqs`, inside a purge window that this same
/// transaction opens and closes.
pub fn purge_documents(c: &Connection, seqs: &[i64], cutoff: &str) -> Result<Purged, StoreError> {
    let list = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
    c.execute("INSERT INTO purge_window(open) VALUES (1)", [])?;
    let versions = c.execute(
        &format!(
            "DELETE FROM cells WHERE seq IN ({})",
            superseded(c.dialect(), "cells", CELLS_KEPT)
        ),
        params![list, cutoff],
    )?;
    let verdicts = c.execute(
        &format!(
            "DELETE FROM verdicts WHERE seq IN ({})",
            superseded(c.dialect(), "verdicts", VERDICTS_KEPT)
        ),
        params![list, cutoff],
    )?;
    c.execute("DELETE FROM purge_window", [])?;
    Ok(Purged {
        versions: versions as u64,
        verdicts: verdicts as u64,
    })
}

/// Gives up to `pages` free pages back to the file system (databases created with incremental
/// auto-vacuum); returns how many free pages are left.
pub fn vacuum_step(c: &Connection, pages: i64) -> Result<i64, StoreError> {
    if c.dialect() == Dialect::Postgres {
        // Autovacuum makes the space reusable; PostgreSQL gives none back to the file system.
        return Ok(0);
    }
    // The pragma frees one page per row it steps: every row must be read.
    let mut st = c.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = st.query([])?;
    while rows.next()?.is_some() {}
    Ok(c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
}

/// Whether the file can shrink: auto-vacuum is incremental (2). Databases made before
/// migration 10 keep their free pages for later writes instead.
pub fn shrinks(c: &Connection) -> Result<bool, StoreError> {
    if c.dialect() == Dialect::Postgres {
        return Ok(false);
    }
    Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))? == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of one document in generation 2, restarted at phase 2 by a rerun requested at
    /// `requested`: versions of generation 1 at phases 0..=3, a person's version, and those of
    /// generation 2 at phases 2..=3.
    fn seed(c: &Connection, requested: &str) -> i64 {
        // Only the rows a purge reads: the run and its document stand in by their ids.
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        c.execute(
            "INSERT INTO pipeline_docs(id, pipeline_id, document_id, ordinal, status, generation, restarts, created_at, updated_at)
             VALUES ('pd', 'p', 'd', 1, 'completed', 2, '[[2,2]]', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count, document_count, created_at, updated_at)
             VALUES ('p', 'o', 's', 's', 'p', 'completed', '[]', 4, 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
        let pd: i64 = c
            .query_row("SELECT seq FROM pipeline_documents", [], |r| r.get(0))
            .unwrap();
        c.execute(
            "INSERT INTO reruns(id, pipeline_id, generation, from_phase, from_phase_index, enqueued, requested_at, requested_by)
             VALUES ('r', 'p', 2, 'resolution', 2, 1, ?1, 'k')",
            [requested],
        )
        .unwrap();
        let cell = |generation: i64, phase: i64, source: &str| {
            c.execute(
                "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, created_at)
                 VALUES (?1, 'total', (SELECT count(*) + 1 FROM cells), '1', ?2, ?3, ?4, 1, '2026-01-01T00:00:00.000Z')",
                params![pd, source, phase, generation],
            )
            .unwrap();
        };
        cell(1, 0, "rules");
        cell(1, 1, "rules_extraction");
        cell(1, 2, "rules");
        cell(1, 3, "rules");
        cell(1, 3, "human_review");
        cell(2, 2, "rules");
        cell(2, 3, "rules");
        let stage = crate::store::intern::id(c, "g").unwrap();
        for (generation, phase) in [(1, 3), (2, 3)] {
            c.execute(
                "INSERT INTO verdicts(pd_seq, field_key, phase_index, stage, generation, pass, outcome, mechanisms, value_hash, created_at)
                 VALUES (?1, 'total', ?2, ?4, ?3, 1, 'pass', '[]', 'h', '2026-01-01T00:00:00.000Z')",
                params![pd, phase, generation, stage],
            )
            .unwrap();
        }
        pd
    }

    fn kept(c: &Connection) -> Vec<(i64, i64, String)> {
        c.prepare("SELECT generation, phase_index, source FROM cells ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_purge_removes_only_superseded_machine_versions_and_verdicts_of_old_enough_reruns() {
        let (_d, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        assert!(shrinks(&c).unwrap(), "a new database can give space back");
        let pd = seed(&c, "2026-03-01T00:00:00.000Z");
        assert_eq!(
            next_documents(&c, Some("o"), 0, 10).unwrap(),
            vec![pd],
            "a restarted, settled document is looked at"
        );
        assert!(next_documents(&c, Some("other"), 0, 10).unwrap().is_empty());
        // The rerun is younger than the cutoff: nothing goes.
        let young = purge_documents(&c, &[pd], "2026-02-01T00:00:00.000Z").unwrap();
        assert_eq!(young, Purged::default());
        let p = purge_documents(&c, &[pd], "2026-04-01T00:00:00.000Z").unwrap();
        assert_eq!(
            p,
            Purged {
                versions: 2,
                verdicts: 1
            }
        );
        assert_eq!(
            kept(&c),
            vec![
                (1, 0, "rules".into()),
                (1, 1, "rules_extraction".into()),
                (1, 3, "human_review".into()),
                (2, 2, "rules".into()),
                (2, 3, "rules".into()),
            ],
            "versions before the restart, a person's version and the new generation stay"
        );
        assert!(
            !has_superseded(&c, &[pd], "2026-04-01T00:00:00.000Z").unwrap(),
            "nothing is left to purge"
        );
        let window: i64 = c
            .query_row("SELECT count(*) FROM purge_window", [], |r| r.get(0))
            .unwrap();
        assert_eq!(window, 0, "the window is closed again");
    }

    #[test]
    fn outside_a_purge_window_or_for_a_live_or_human_version_the_trigger_refuses_a_delete() {
        let (_d, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        seed(&c, "2026-03-01T00:00:00.000Z");
        let delete = |generation: i64, phase: i64, source: &str| {
            c.execute(
                "DELETE FROM cells WHERE generation = ?1 AND phase_index = ?2 AND source = ?3",
                params![generation, phase, source],
            )
        };
        // A superseded version, but no window: refused.
        let e = delete(1, 3, "rules").unwrap_err().to_string();
        assert!(e.contains("append-only"), "{e}");
        assert!(c.execute("UPDATE cells SET value = '2'", []).is_err());
        c.execute("INSERT INTO purge_window(open) VALUES (1)", [])
            .unwrap();
        // Inside a window: a live version (before the restart, or of the new generation) and a
        // person's version are still refused; only the superseded machine version goes.
        assert!(delete(1, 1, "rules_extraction").is_err());
        assert!(delete(2, 3, "rules").is_err());
        assert!(delete(1, 3, "human_review").is_err());
        assert_eq!(delete(1, 3, "rules").unwrap(), 1);
        assert!(c
            .execute("INSERT INTO purge_window(open) VALUES (1)", [])
            .is_err());
        c.execute("DELETE FROM purge_window", []).unwrap();
        assert!(delete(1, 2, "rules").is_err(), "the window is closed");
    }

    #[test]
    fn a_purge_keeps_the_newest_row_the_highest_version_and_the_newest_extracted_version() {
        let (_d, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        let pd = seed(&c, "2026-03-01T00:00:00.000Z");
        // A second field whose only versions are superseded: an extraction, then a rule's.
        let cell = |version: i64, phase: i64, source: &str| {
            c.execute(
                "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, created_at)
                 VALUES (?1, 'net', ?2, '1', ?3, ?4, 1, 1, '2026-01-01T00:00:00.000Z')",
                params![pd, version, source, phase],
            )
            .unwrap();
        };
        cell(1, 2, "rules_extraction");
        cell(2, 3, "rules");
        cell(3, 3, "rules");
        purge_documents(&c, &[pd], "2026-04-01T00:00:00.000Z").unwrap();
        let net: Vec<i64> = c
            .prepare("SELECT version FROM cells WHERE field_key = 'net' ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // v1: the newest extracted version; v3: the highest version and the table's newest row.
        assert_eq!(net, vec![1, 3]);
    }
}
