//! The review queue's index, the append-only decision log, and data products.

use super::conn::{params, params_from_iter, Connection, DbResult, Row, ToSql};
use super::sql::{self, Dialect, Sql};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use serde_json::Value;

/// A pipeline document located by its id within an organization.
#[derive(Debug, Clone)]
pub struct PdRef {
    pub seq: i64,
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub document_id: String,
    pub filename: String,
    pub status: crate::domain::status::DocStatus,
    pub cursor: i64,
    pub generation: i64,
    pub pass: i64,
    pub field_states: crate::domain::state::States,
    pub restarts: Vec<(i64, usize)>,
    pub phase_count: i64,
    pub fields: Vec<crate::domain::schema::FieldDef>,
}

const PD_SELECT: &str = "SELECT pd.seq, pd.id, pd.pipeline_id, p.name, pd.document_id, d.filename, pd.status, pd.cursor,
    pd.generation, pd.pass, pd.field_states, pd.restarts, p.phase_count, p.fields
    FROM pipeline_documents pd JOIN pipelines p ON p.id = pd.pipeline_id JOIN documents d ON d.id = pd.document_id";

fn pd_ref(r: &Row) -> DbResult<PdRef> {
    Ok(PdRef {
        seq: r.get(0)?,
        id: r.get(1)?,
        pipeline_id: r.get(2)?,
        pipeline_name: r.get(3)?,
        document_id: r.get(4)?,
        filename: r.get(5)?,
        status: r.get(6)?,
        cursor: r.get(7)?,
        generation: r.get(8)?,
        pass: r.get(9)?,
        field_states: super::states::column(r, 10, "pipeline_documents")?,
        restarts: super::json(r, 11, "pipeline_documents")?,
        phase_count: r.get(12)?,
        fields: super::json(r, 13, "pipelines")?,
    })
}

pub fn find_pd(c: &Connection, org_id: &str, pd_id: &str) -> Result<Option<PdRef>, StoreError> {
    let sql = format!("{PD_SELECT} WHERE pd.id = ?1 AND p.org_id = ?2");
    optional(
        c.prepare_cached(&sql)?
            .query_row(params![pd_id, org_id], pd_ref),
    )
}

pub fn pd_by_seq(c: &Connection, seq: i64) -> Result<Option<PdRef>, StoreError> {
    let sql = format!("{PD_SELECT} WHERE pd.seq = ?1");
    optional(c.prepare_cached(&sql)?.query_row(params![seq], pd_ref))
}

pub fn pds_of_pipeline(c: &Connection, pipeline_id: &str) -> Result<Vec<PdRef>, StoreError> {
    let sql = format!("{PD_SELECT} WHERE pd.pipeline_id = ?1 ORDER BY pd.ordinal");
    let rows = c
        .prepare_cached(&sql)?
        .query_map([pipeline_id], pd_ref)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Writes a document's new field states (and status/cursor/pass when it goes back to work or
/// changes terminal status).
pub fn update_pd(
    c: &Connection,
    seq: i64,
    status: crate::domain::status::DocStatus,
    cursor: i64,
    pass: i64,
    states: &str,
) -> Result<(), StoreError> {
    // A document the open rerun has not reset yet was read as reset: store the reset first.
    super::reruns::materialize_doc(c, seq)?;
    let now = now_rfc3339();
    let terminal = status.delivered();
    c.prepare_cached(
        "UPDATE pipeline_docs SET status = ?2, cursor = ?3, pass = ?4, field_states = ?5, updated_at = ?6,
         completed_at = CASE WHEN ?7 THEN ?6 ELSE NULL END, attempts = CASE WHEN ?2 = 'queued' THEN 0 ELSE attempts END
         WHERE seq = ?1",
    )?
    .execute(params![seq, status, cursor, pass, states, now, terminal])?;
    Ok(())
}

pub fn reactivate_pipeline(c: &Connection, pipeline_id: &str) -> Result<(), StoreError> {
    c.execute(
        // A cancelled run stays cancelled: a resolve finishes its document, only a rerun revives the run.
        "UPDATE pipelines SET status = 'active', completed_at = NULL, updated_at = ?2 WHERE id = ?1 AND status <> 'cancelled'",
        params![pipeline_id, now_rfc3339()],
    )?;
    Ok(())
}

pub fn max_cell_seq(c: &Connection, pd_seq: i64) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT coalesce(max(seq), 0) FROM cells WHERE pd_seq = ?1",
        [pd_seq],
        |r| r.get(0),
    )?)
}

/// An entry of the append-only decision log, as stored and as answered.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub pipeline_id: String,
    #[serde(rename = "pipelineDocumentId")]
    pub pd_id: String,
    pub document_id: String,
    pub document_name: String,
    pub field_key: String,
    pub trigger_type: String,
    pub stage_id: Option<String>,
    pub stage_name: Option<String>,
    #[serde(skip)]
    pub phase_index: Option<i64>,
    /// `approve`, `correct`, `override` or `reopen`.
    pub action: String,
    pub prior_value: Option<Value>,
    pub final_value: Option<Value>,
    pub reason: Option<String>,
    pub decided_by: String,
    pub decided_by_name: String,
    pub decided_at: String,
    /// The element of an array field it changed (`lines[3].amount`); absent for a decision on
    /// the whole field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    #[serde(skip)]
    /// `(generation, pass)` of the document's first run to follow the decision (NULL on rows
    /// older than migration 3): a verdict of an earlier pass judged before the decision.
    pub judged_from: Option<(i64, i64)>,
}

pub struct NewDecision<'a> {
    pub org_id: &'a str,
    pub pipeline_id: &'a str,
    pub pd_seq: i64,
    pub field_key: &'a str,
    pub trigger_type: &'a str,
    pub stage_id: Option<&'a str>,
    pub stage_name: Option<&'a str>,
    pub phase_index: Option<i64>,
    pub action: &'a str,
    pub prior_value: &'a Value,
    pub final_value: Option<&'a Value>,
    pub reason: Option<&'a str>,
    pub decided_by: &'a str,
    pub decided_by_name: &'a str,
    pub judged_from: (i64, i64),
    pub element: Option<&'a str>,
}

pub fn insert_decision(c: &Connection, d: NewDecision) -> Result<(i64, String), StoreError> {
    let now = now_rfc3339();
    let seq = c.prepare_cached(
        "INSERT INTO review_decisions(id, org_id, pipeline_id, pd_seq, field_key, trigger_type, stage_id, stage_name, phase_index,
         action, prior_value, final_value, reason, decided_by, decided_by_name, decided_at, judged_generation, judged_pass, element)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) RETURNING seq",
    )?
    .query_row(params![
        new_id(),
        d.org_id,
        d.pipeline_id,
        d.pd_seq,
        d.field_key,
        d.trigger_type,
        d.stage_id,
        d.stage_name,
        d.phase_index,
        d.action,
        d.prior_value.to_string(),
        d.final_value.map(|v| v.to_string()),
        d.reason,
        d.decided_by,
        d.decided_by_name,
        now,
        d.judged_from.0,
        d.judged_from.1,
        d.element
    ], |r| r.get::<_, i64>(0))?;
    Ok((seq, now))
}

const DEC_SELECT: &str = "SELECT r.seq, r.id, r.pipeline_id, pd.id, pd.document_id, d.filename, r.field_key, r.trigger_type,
    r.stage_id, r.stage_name, r.phase_index, r.action, r.prior_value, r.final_value, r.reason, r.decided_by, r.decided_by_name,
    r.decided_at, r.judged_generation, r.judged_pass, r.element FROM review_decisions r JOIN pipeline_documents pd ON pd.seq = r.pd_seq JOIN documents d ON d.id = pd.document_id";

fn decision(r: &Row) -> DbResult<Decision> {
    Ok(Decision {
        seq: r.get(0)?,
        id: r.get(1)?,
        pipeline_id: r.get(2)?,
        pd_id: r.get(3)?,
        document_id: r.get(4)?,
        document_name: r.get(5)?,
        field_key: r.get(6)?,
        trigger_type: r.get(7)?,
        stage_id: r.get(8)?,
        stage_name: r.get(9)?,
        phase_index: r.get(10)?,
        action: r.get(11)?,
        prior_value: super::json_opt(r, 12, "review_decisions")?,
        final_value: super::json_opt(r, 13, "review_decisions")?,
        reason: r.get(14)?,
        decided_by: r.get(15)?,
        decided_by_name: r.get(16)?,
        decided_at: r.get(17)?,
        judged_from: match (r.get(18)?, r.get(19)?) {
            (Some(g), Some(p)) => Some((g, p)),
            _ => None,
        },
        element: r.get(20)?,
    })
}

/// Decisions on one field of one document, oldest first.
pub fn decisions_for(
    c: &Connection,
    pd_seq: i64,
    field: &str,
) -> Result<Vec<Decision>, StoreError> {
    let sql = format!("{DEC_SELECT} WHERE r.pd_seq = ?1 AND r.field_key = ?2 ORDER BY r.seq");
    Ok(c.prepare_cached(&sql)?
        .query_map(params![pd_seq, field], decision)?
        .collect::<Result<_, _>>()?)
}

/// Decisions on any field of these documents, oldest first.
pub fn decisions_of_docs(c: &Connection, pd_seqs: &[i64]) -> Result<Vec<Decision>, StoreError> {
    if pd_seqs.is_empty() {
        return Ok(Vec::new());
    }
    let list = pd_seqs
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!("{DEC_SELECT} WHERE r.pd_seq IN ({list}) ORDER BY r.seq");
    Ok(c.prepare(&sql)?
        .query_map([], decision)?
        .collect::<Result<_, _>>()?)
}

pub fn list_decisions(
    c: &Connection,
    org_id: &str,
    pipeline_id: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<Decision>, i64), StoreError> {
    let filter = format!(
        "r.org_id = ?1 AND ({} OR r.pipeline_id = ?2)",
        sql::is_null(c.dialect(), 2, "text")
    );
    let sql = format!("{DEC_SELECT} WHERE {filter} AND r.seq < ?3 ORDER BY r.seq DESC LIMIT ?4");
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![org_id, pipeline_id, before.unwrap_or(i64::MAX), limit],
            decision,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        &format!("SELECT count(*) FROM review_decisions r WHERE {filter}"),
        params![org_id, pipeline_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

#[derive(Debug, Clone)]
pub struct HeldRow {
    pub seq: i64,
    pub pd_seq: i64,
    pub field_key: String,
}

pub struct QueueFilter<'a> {
    pub org_id: &'a str,
    pub pipeline_id: Option<&'a str>,
    pub trigger: Option<&'a str>,
    pub status: Option<&'a str>,
    pub hold: bool,
    pub field_key: Option<&'a str>,
    /// The gate that holds the field (read from the document's field states).
    pub stage_id: Option<&'a str>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

impl QueueFilter<'_> {
    /// ?1 to ?6 of the queue's statements: the organization and the held field's own filters.
    fn binds(&self) -> [&dyn ToSql; 6] {
        [
            &self.org_id,
            &self.pipeline_id,
            &self.trigger,
            &self.status,
            &self.hold,
            &self.field_key,
        ]
    }
}

/// A held field's own filters but its organization (?2 to ?6).
fn queue_filters(d: Dialect) -> String {
    let null = |n| sql::is_null(d, n, "text");
    format!(
        "({} OR h.pipeline_id = ?2) AND ({} OR h.trigger_type = ?3)
    AND ({} OR h.status = ?4) AND ((?5 AND h.routing = 'hold') OR (NOT ?5 AND h.routing <> 'hold'))
    AND ({} OR h.field_key = ?6)",
        null(2),
        null(3),
        null(4),
        null(6)
    )
}
/// A held field of the organization ?1 in the queue: its filters, and its document not in
/// error and not pending a whole-run rerun's reset (migration 16: its row is stale), held by
/// the gate ?7 when one is named. The stored row, not the view: for a document that is not
/// pending they agree.
static QUEUE_WHERE: Sql = Sql::new(|d| {
    format!(
        "h.org_id = ?1 AND {} AND EXISTS (SELECT 1 FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id
        WHERE pd.seq = h.pd_seq AND pd.status <> 'error' AND pd.generation >= p.lazy_generation
        AND ({} OR {} = ?7))",
        queue_filters(d),
        sql::is_null(d, 7, "text"),
        sql::json_nested_member(d, "pd.field_states", "h.field_key", "stage_id")
    )
});

pub fn queue(
    c: &Connection,
    f: &QueueFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<HeldRow>, i64), StoreError> {
    let (cmp, dir, start) = super::keyset(f.ascending);
    let queue_where = QUEUE_WHERE.text(c.dialect());
    let sql = format!("SELECT h.seq, h.pd_seq, h.field_key FROM held_fields h WHERE {queue_where} AND h.seq {cmp} ?8 ORDER BY h.seq {dir} LIMIT ?9");
    let before = before.unwrap_or(start);
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params_from_iter(f.binds().into_iter().chain([
                &f.stage_id as &dyn ToSql,
                &before,
                &limit,
            ])),
            |r| {
                Ok(HeldRow {
                    seq: r.get(0)?,
                    pd_seq: r.get(1)?,
                    field_key: r.get(2)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = match f.stage_id {
        Some(_) => c.query_row(
            &format!("SELECT count(*) FROM held_fields h WHERE {queue_where}"),
            params_from_iter(f.binds().into_iter().chain([&f.stage_id as &dyn ToSql])),
            |r| r.get(0),
        )?,
        None => held_count(c, f)?,
    };
    Ok((rows, total))
}

/// The queue's count when no gate is named (`stage_id` is not read): the held fields less
/// those of error documents, found from the runs' error documents (CROSS JOIN keeps that
/// order), and less the stale rows of documents pending a whole-run rerun's reset, found from
/// the runs that may have some. Reading each held field's document cost 45 ms a page at
/// 20,000 held, this 4 ms. The unary `+` keeps the error documents found through
/// `pipeline_documents_status`: a range on the generation index reads every document.
/// Filtered by run and routing alone (a results page's count), the held fields are read from
/// `held_counts` (migration 17): one row a run instead of an index entry per held field.
pub fn held_count(c: &Connection, f: &QueueFilter) -> Result<i64, StoreError> {
    let d = c.dialect();
    let filters = queue_filters(d);
    let run = sql::is_null(d, 2, "text");
    let held = if f.trigger.is_none() && f.status.is_none() && f.field_key.is_none() {
        format!(
            "(SELECT coalesce({}, 0) FROM pipelines p JOIN held_counts hc ON hc.pipeline_id = p.id
          WHERE p.org_id = ?1 AND ({run} OR p.id = ?2) AND hc.hold = {})",
            sql::sum_int(d, "hc.count"),
            sql::flag(d, "?5")
        )
    } else {
        format!("(SELECT count(*) FROM held_fields h WHERE h.org_id = ?1 AND {filters})")
    };
    Ok(c.query_row(
        &format!(
            "SELECT {held}
                  - (SELECT count(*) FROM pipelines p CROSS JOIN pipeline_docs pd CROSS JOIN held_fields h
                     WHERE p.org_id = ?1 AND ({run} OR p.id = ?2) AND pd.pipeline_id = p.id
                       AND pd.status = 'error' AND +pd.generation >= p.lazy_generation
                       AND h.pd_seq = pd.seq AND {filters})
                  - (SELECT count(*) FROM pipelines p CROSS JOIN held_fields h CROSS JOIN pipeline_docs pd
                     WHERE p.org_id = ?1 AND ({run} OR p.id = ?2) AND p.lazy_held = 1
                       AND h.pipeline_id = p.id AND pd.seq = h.pd_seq AND pd.generation < p.lazy_generation
                       AND {filters})"
        ),
        params_from_iter(f.binds()),
        |r| r.get(0),
    )?)
}

/// `(trigger, pipeline id, pipeline name, count)` over the review queue.
pub fn queue_summary(
    c: &Connection,
    org_id: &str,
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT h.trigger_type, h.pipeline_id, p.name, count(*) FROM held_fields h JOIN pipelines p ON p.id = h.pipeline_id
             JOIN pipeline_docs pd ON pd.seq = h.pd_seq
             WHERE h.org_id = ?1 AND h.routing <> 'hold' AND pd.status <> 'error' AND pd.generation >= p.lazy_generation
             GROUP BY 1, 2, 3",
        )?
        .query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What replay needs of a stored verdict.
#[derive(Debug, Clone)]
pub struct VerdictKey {
    pub field: String,
    pub phase_index: usize,
    pub generation: i64,
    pub pass: i64,
    pub outcome: String,
    pub value_hash: String,
    pub created_at: String,
}

pub fn verdict_keys(c: &Connection, pd_seq: i64) -> Result<Vec<VerdictKey>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT field_key, phase_index, generation, outcome, value_hash, created_at, pass FROM verdicts WHERE pd_seq = ?1 ORDER BY seq",
        )?
        .query_map([pd_seq], |r| {
            Ok(VerdictKey {
                field: r.get(0)?,
                phase_index: r.get::<_, i64>(1)? as usize,
                generation: r.get(2)?,
                outcome: r.get(3)?,
                value_hash: r.get(4)?,
                created_at: r.get(5)?,
                pass: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn insert_human_cell(
    c: &Connection,
    pd_seq: i64,
    cell: &crate::domain::cells::Cell,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence, source_text,
         config_version, rule_type, note, created_at) VALUES (?1, ?2, ?3, ?4, 'human_review', ?5, ?6, ?7, 1.0, NULL, NULL, NULL, ?8, ?9)",
    )?
    .execute(params![pd_seq, cell.field, cell.version, cell.value.to_string(), cell.phase_index as i64, cell.generation, cell.pass, cell.note, now_rfc3339()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_condition_renders_per_dialect() {
        let sqlite = QUEUE_WHERE.text(sql::Dialect::Sqlite);
        assert!(sqlite.contains(
            "json_extract(pd.field_states, '$.\"' || h.field_key || '\".stage_id') = ?7"
        ));
        let pg = QUEUE_WHERE.text(sql::Dialect::Postgres);
        assert!(pg.contains("(pd.field_states::jsonb -> h.field_key ->> 'stage_id') = ?7"));
        assert!(!pg.contains("json_extract"));
    }

    /// The queue's count without a gate filter (held fields less those of error documents)
    /// against the count that reads each held field's document.
    #[test]
    fn the_queue_count_leaves_out_the_fields_of_error_documents_under_every_filter() {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        for (run, org) in [("r1", "o"), ("r2", "o"), ("r3", "other")] {
            c.execute(
                "INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count,
                                       document_count, created_at, updated_at)
                 VALUES (?1, ?2, 's', 's', 'n', 'completed', '[]', 3, 4, 't', 't')",
                params![run, org],
            )
            .unwrap();
        }
        for seq in 1..=12i64 {
            let run = ["r1", "r2", "r3"][(seq % 3) as usize];
            let status = if seq % 4 == 0 { "error" } else { "partial" };
            c.execute(
                "INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, created_at, updated_at)
                 VALUES (?1, 'pd' || ?1, ?2, 'd', ?1, ?3, 't', 't')",
                params![seq, run, status],
            )
            .unwrap();
            let org = if run == "r3" { "other" } else { "o" };
            for (k, field) in ["total", "net"].iter().enumerate() {
                let routing = if (seq + k as i64) % 5 == 0 {
                    "hold"
                } else {
                    "review_queue"
                };
                let held = if k == 0 { "blocked" } else { "pending_review" };
                c.execute(
                    "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'gate', ?6, 't')",
                    params![seq, field, org, run, held, routing],
                )
                .unwrap();
            }
        }
        agree_with_each_document(&c);
        // The per-run counts (migration 17) follow deletes too; a row's routing is fixed.
        c.execute("DELETE FROM held_fields WHERE seq % 3 = 0", [])
            .unwrap();
        agree_with_each_document(&c);
        let moved = c.execute(
            "UPDATE held_fields SET routing = 'hold' WHERE routing <> 'hold'",
            [],
        );
        assert!(
            moved.is_err(),
            "a review row's routing cannot change in place"
        );
        c.execute("UPDATE held_fields SET requested_at = 'u'", [])
            .unwrap();
        agree_with_each_document(&c);
    }

    fn agree_with_each_document(c: &Connection) {
        for org in ["o", "other"] {
            for pipeline in [None, Some("r1"), Some("r3")] {
                for (status, field, hold) in [
                    (None, None, false),
                    (None, None, true),
                    (Some("blocked"), None, false),
                    (None, Some("net"), false),
                ] {
                    let f = QueueFilter {
                        org_id: org,
                        pipeline_id: pipeline,
                        trigger: None,
                        status,
                        hold,
                        field_key: field,
                        stage_id: None,
                        ascending: false,
                    };
                    let (_, total) = queue(c, &f, None, 50).unwrap();
                    let each: i64 = c
                        .query_row(
                            &format!(
                                "SELECT count(*) FROM held_fields h WHERE {}",
                                QUEUE_WHERE.text(c.dialect())
                            ),
                            params![
                                org,
                                pipeline,
                                None::<String>,
                                status,
                                hold,
                                field,
                                None::<String>
                            ],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert_eq!(
                        total, each,
                        "{org} {pipeline:?} {status:?} {field:?} {hold}"
                    );
                }
            }
        }
    }
}
