use super::conn::{params, Connection, DbResult, OptionalExtension, Row};
use super::sql::{self, Dialect, Elem, Sql};
use super::StoreError;
use crate::domain::ids::{new_id, now_rfc3339};
use serde_json::Value;

/// What a rerun needs of each of the run's documents.
#[derive(Debug, Clone)]
pub struct DocState {
    pub seq: i64,
    pub id: String,
    pub status: crate::domain::status::DocStatus,
    pub error_phase_index: Option<i64>,
    pub field_states: crate::domain::state::States,
    pub restarts: Vec<(i64, usize)>,
}

pub fn has_record_set(c: &Connection, pipeline_id: &str) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT EXISTS(SELECT 1 FROM record_sets WHERE pipeline_id = ?1)",
        [pipeline_id],
        |r| r.get(0),
    )?)
}

pub fn latest_snapshot(
    c: &Connection,
    pipeline_id: &str,
    idx: usize,
) -> Result<(i64, Value), StoreError> {
    Ok(c.query_row(
        "SELECT config_version, config FROM phase_snapshots WHERE pipeline_id = ?1 AND idx = ?2 ORDER BY config_version DESC LIMIT 1",
        params![pipeline_id, idx as i64],
        |r| Ok((r.get(0)?, super::json(r, 1, "phase_snapshots")?)),
    )?)
}

pub fn add_snapshot(
    c: &Connection,
    pipeline_id: &str,
    idx: usize,
    version: i64,
    generation: i64,
    config: &Value,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO phase_snapshots(pipeline_id, idx, config_version, generation, config) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![pipeline_id, idx as i64, version, generation, config.to_string()],
    )?;
    Ok(())
}

pub fn restart_document(
    c: &Connection,
    seq: i64,
    generation: i64,
    restart: usize,
    states: &str,
    restarts: &str,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE pipeline_docs SET status = 'queued', cursor = ?2, generation = ?3, pass = 1, attempts = 0,
         claim_token = NULL, error = NULL, error_phase_index = NULL, field_states = ?4, restarts = ?5, waiting_for = NULL,
         updated_at = ?6, completed_at = NULL WHERE seq = ?1",
    )?
    .execute(params![seq, restart as i64, generation, states, restarts, now_rfc3339()])?;
    Ok(())
}

pub fn start_generation(
    c: &Connection,
    pipeline_id: &str,
    generation: i64,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE pipelines SET generation = ?2, status = 'active', completed_at = NULL, updated_at = ?3 WHERE id = ?1",
        params![pipeline_id, generation, now_rfc3339()],
    )?;
    Ok(())
}

pub struct NewRerun<'a> {
    pub pipeline_id: &'a str,
    pub generation: i64,
    pub from_phase: &'a str,
    pub from_phase_index: usize,
    pub enqueued: usize,
    pub document_ids: Option<&'a [String]>,
    pub requested_by: &'a str,
    pub refresh_extraction: bool,
}

pub fn insert(c: &Connection, r: NewRerun) -> Result<String, StoreError> {
    let id = new_id();
    c.execute(
        "INSERT INTO reruns(id, pipeline_id, generation, from_phase, from_phase_index, enqueued, document_ids, requested_at, requested_by,
                            refresh_extraction)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            r.pipeline_id,
            r.generation,
            r.from_phase,
            r.from_phase_index as i64,
            r.enqueued as i64,
            r.document_ids.map(|d| serde_json::to_string(d).unwrap_or_default()),
            now_rfc3339(),
            r.requested_by,
            r.refresh_extraction
        ],
    )?;
    Ok(id)
}

#[derive(Debug, Clone)]
pub struct RerunRow {
    pub id: String,
    pub generation: i64,
    pub from_phase: String,
    pub from_phase_index: i64,
    pub enqueued: i64,
    pub document_ids: Option<Value>,
    pub requested_at: String,
    pub requested_by: String,
    pub finished_at: Option<String>,
    pub outcome: Option<Value>,
}

/// Whether the rerun that opened `generation` of a run asked to read its documents again.
pub fn refreshes(c: &Connection, pipeline_id: &str, generation: i64) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT refresh_extraction FROM reruns WHERE pipeline_id = ?1 AND generation = ?2",
    )?
    .query_row(params![pipeline_id, generation], |r| r.get::<_, bool>(0))
    .optional()?
    .unwrap_or(false))
}

pub fn list(c: &Connection, pipeline_id: &str) -> Result<Vec<RerunRow>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT id, generation, from_phase, from_phase_index, enqueued, document_ids, requested_at, requested_by, finished_at, outcome
             FROM reruns WHERE pipeline_id = ?1 ORDER BY seq DESC",
        )?
        .query_map([pipeline_id], |r| {
            Ok(RerunRow {
                id: r.get(0)?,
                generation: r.get(1)?,
                from_phase: r.get(2)?,
                from_phase_index: r.get(3)?,
                enqueued: r.get(4)?,
                document_ids: super::json_opt(r, 5, "reruns")?,
                requested_at: r.get(6)?,
                requested_by: r.get(7)?,
                finished_at: r.get(8)?,
                outcome: super::json_opt(r, 9, "reruns")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// When the run settles: every open rerun gets its outcome, counted over its generation.
pub fn finish_open(c: &Connection, pipeline_id: &str) -> Result<Vec<FinishedRerun>, StoreError> {
    let open: Vec<(i64, i64, i64, String, String)> = c
        .prepare_cached(
            "SELECT seq, generation, versions_written, id, from_phase FROM reruns WHERE pipeline_id = ?1 AND finished_at IS NULL",
        )?
        .query_map([pipeline_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut finished = Vec::with_capacity(open.len());
    for (seq, generation, versions, id, from_phase) in open {
        let blocked: i64 = c.query_row(
            "SELECT count(*) FROM held_fields h JOIN pipeline_docs pd ON pd.seq = h.pd_seq
             WHERE h.pipeline_id = ?1 AND h.status = 'blocked' AND pd.generation = ?2",
            params![pipeline_id, generation],
            |r| r.get(0),
        )?;
        let errors: i64 = c.query_row(
            "SELECT count(*) FROM pipeline_docs WHERE pipeline_id = ?1 AND generation = ?2 AND status = 'error'",
            params![pipeline_id, generation],
            |r| r.get(0),
        )?;
        let outcome = serde_json::json!({ "versions_written": versions, "blocked": blocked, "errors": errors });
        c.execute(
            "UPDATE reruns SET finished_at = ?2, outcome = ?3 WHERE seq = ?1",
            params![seq, now_rfc3339(), outcome.to_string()],
        )?;
        finished.push(FinishedRerun {
            id,
            generation,
            from_phase,
            outcome,
        });
    }
    Ok(finished)
}

/// A rerun that ended when its run settled.
#[derive(Debug, Clone)]
pub struct FinishedRerun {
    pub id: String,
    pub generation: i64,
    pub from_phase: String,
    pub outcome: serde_json::Value,
}

/// Counts versions the executor committed for an open rerun as they are written: counting them
/// at the end meant visiting every version of the run inside the writer's last transaction.
pub fn add_versions(
    c: &Connection,
    pipeline_id: &str,
    generation: i64,
    n: u64,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE reruns SET versions_written = versions_written + ?3
         WHERE pipeline_id = ?1 AND generation = ?2 AND finished_at IS NULL",
    )?
    .execute(params![pipeline_id, generation, n as i64])?;
    Ok(())
}

/// The run's open lazy reset: documents of an older generation restart at `from`.
#[derive(Debug, Clone)]
struct Lazy {
    generation: i64,
    from: i64,
    at: String,
    /// Some pending document may still have review rows (`start_lazy`).
    held: bool,
}

/// Fields of a document's states that a restart keeps whatever phase it restarts from (a pin,
/// guards, a reopen, a superseded pass, a review time, a pinned element). The same expression
/// as the partial index `pipeline_docs_sticky` (migration 15), which SQLite uses only for a
/// query carrying its exact condition.
fn sticky(d: Dialect) -> String {
    states_hold(
        d,
        &[
            r#"'"pinned":true'"#,
            r#"'"guards"'"#,
            r#"'"reopened_after"'"#,
            r#"'"resumed"'"#,
            r#"'"review_at"'"#,
            r#"'"element_pins"'"#,
        ],
    )
}

/// Whether a document's field states contain any of the quoted `patterns`.
fn states_hold(d: Dialect, patterns: &[&str]) -> String {
    let any: Vec<String> = patterns
        .iter()
        .map(|p| sql::contains(d, "field_states", p))
        .collect();
    format!("({})", any.join(" OR "))
}

/// A review row whose field a restart may keep held (`held_before`). The held rows are read in two
/// ranges of `held_fields_blocked` (migration 17), not `blocked_at IS NULL OR blocked_at < ?2`:
/// for that `OR` SQLite reads every review row of the run, most of them blocked at or after the
/// restart (20,000 at a million documents, where the call took 76 ms).
const KEPT_HELD: &str =
    "(status = 'blocked' OR (status = 'pending_review' AND trigger_type = 'gate'))";

/// The documents a whole-run rerun from `from` must reset in its call, because their reset keeps
/// something: sticky states, a flag raised before `from`, or a field held at a gate before
/// `from` (which stays in review). Every other document's reset leaves every field progressing
/// from the start, and is left to the writer (`claim_pending`). Read through three indexes:
/// O(those documents), not O(the run).
pub fn eager_docs(c: &Connection, pipeline_id: &str, from: usize) -> Result<Vec<i64>, StoreError> {
    let sticky = sticky(c.dialect());
    let sql = format!(
        "SELECT seq FROM pipeline_docs WHERE pipeline_id = ?1 AND {sticky}
         UNION ALL
         SELECT seq FROM pipeline_docs WHERE pipeline_id = ?1 AND flag_phase < ?2
         UNION ALL
         SELECT pd_seq FROM held_fields WHERE pipeline_id = ?1 AND blocked_at IS NULL AND {KEPT_HELD}
         UNION ALL
         SELECT pd_seq FROM held_fields WHERE pipeline_id = ?1 AND blocked_at < ?2 AND {KEPT_HELD}"
    );
    let mut seqs: Vec<i64> = c
        .prepare_cached(&sql)?
        .query_map(params![pipeline_id, from as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// What a rerun needs of the documents `seqs`.
pub fn docs_by_seq(c: &Connection, seqs: &[i64]) -> Result<Vec<DocState>, StoreError> {
    let list = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
    static BY_SEQ: Sql = Sql::new(|d| {
        format!(
            "SELECT seq, id, status, error_phase_index, field_states, restarts FROM pipeline_docs
             WHERE seq IN ({}) ORDER BY seq",
            sql::in_list(d, 1, Elem::Int)
        )
    });
    let rows = c
        .prepare_cached(BY_SEQ.text(c.dialect()))?
        .query_map([list], doc_state)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn doc_state(r: &Row) -> DbResult<DocState> {
    Ok(DocState {
        seq: r.get(0)?,
        id: r.get(1)?,
        status: r.get(2)?,
        error_phase_index: r.get(3)?,
        field_states: super::states::column(r, 4, "pipeline_docs")?,
        restarts: super::json(r, 5, "pipeline_docs")?,
    })
}

/// Opens a whole-run rerun's reset of every document of a generation before `generation`,
/// without touching them: the view `pipeline_documents` shows each as reset from here on, and
/// the writer resets the stored rows as it claims them (`claim_pending`). Their review rows stay
/// too, marked by `lazy_held`: readers of the review index skip a pending document's rows, and
/// the writer deletes them (`clear_stale_held`). O(1) in the run's size and its held fields.
pub fn start_lazy(
    c: &Connection,
    pipeline_id: &str,
    generation: i64,
    from: usize,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE pipelines SET lazy_generation = ?2, lazy_from = ?3, lazy_at = ?4,
         lazy_pending = CASE WHEN EXISTS(SELECT 1 FROM pipeline_docs WHERE pipeline_id = ?1 AND generation < ?2)
           THEN 1 ELSE 0 END,
         lazy_held = CASE WHEN EXISTS(SELECT 1 FROM pipeline_docs WHERE pipeline_id = ?1 AND generation < ?2)
           AND EXISTS(SELECT 1 FROM held_fields WHERE pipeline_id = ?1) THEN 1 ELSE 0 END
         WHERE id = ?1",
    )?
    .execute(params![pipeline_id, generation, from as i64, now_rfc3339()])?;
    Ok(())
}

/// A run's (?1) stale review rows: those of its documents still below its generation ?2.
const STALE_HELD: &str =
    "SELECT h.seq FROM held_fields h JOIN pipeline_docs pd ON pd.seq = h.pd_seq
    WHERE h.pipeline_id = ?1 AND pd.generation < ?2";

/// How many stale review rows the writer deletes per claim round: small enough to keep a
/// round short, large enough that 20,000 held fields are gone within the rerun's first seconds.
const STALE_HELD_CHUNK: i64 = 2000;

/// Deletes up to a chunk of stale review rows of every run that may have some, each claim
/// round whether or not it claims any of the run's documents (a run behind another in the
/// claim order still sheds its rows). Clears a run's `lazy_held` when none is left.
pub fn clear_stale_held(c: &Connection) -> Result<(), StoreError> {
    let runs: Vec<(String, i64)> = c
        .prepare_cached("SELECT id, lazy_generation FROM pipelines WHERE lazy_held = 1")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (pipeline_id, generation) in runs {
        clear_stale_chunk(c, &pipeline_id, generation)?;
    }
    Ok(())
}

/// One run's chunk, found through `held_fields_pipeline` in insertion order, so the stale rows
/// (all older than the rerun) come before the ones it writes. Rows the call kept on the
/// documents it reset itself (holds before the restart) are stepped over in each round, a
/// cost bounded by those rows times the rounds it takes.
fn clear_stale_chunk(c: &Connection, pipeline_id: &str, generation: i64) -> Result<(), StoreError> {
    let n = c
        .prepare_cached(&format!(
            "DELETE FROM held_fields WHERE seq IN ({STALE_HELD} LIMIT ?3)"
        ))?
        .execute(params![pipeline_id, generation, STALE_HELD_CHUNK])?;
    if (n as i64) < STALE_HELD_CHUNK {
        c.prepare_cached("UPDATE pipelines SET lazy_held = 0 WHERE id = ?1")?
            .execute([pipeline_id])?;
    }
    Ok(())
}

fn lazy(c: &Connection, pipeline_id: &str) -> Result<Option<Lazy>, StoreError> {
    Ok(c
        .prepare_cached(
            "SELECT lazy_generation, lazy_from, lazy_at, lazy_held FROM pipelines WHERE id = ?1 AND lazy_pending = 1",
        )?
        .query_row([pipeline_id], |r| lazy_row(r, 0))
        .optional()?)
}

/// A run's open lazy reset from its three columns, the first at `at`.
fn lazy_row(r: &Row, at: usize) -> DbResult<Lazy> {
    Ok(Lazy {
        generation: r.get(at)?,
        from: r.get(at + 1)?,
        at: r.get::<_, Option<String>>(at + 2)?.unwrap_or_default(),
        held: r.get::<_, i64>(at + 3)? == 1,
    })
}

/// A document's restart index (?3 the start): the start, or earlier for an error document.
fn restart(d: Dialect) -> String {
    format!(
        "CASE WHEN status = 'error' THEN {} ELSE ?3 END",
        sql::least(d, "?3", "coalesce(error_phase_index, 0)")
    )
}

/// The stored columns a reset writes, as the view shows a pending document (?2 generation, ?3
/// start); the status, attempts, claim and time are the caller's.
fn reset_columns(d: Dialect) -> String {
    let restart = restart(d);
    format!(
        "cursor = {restart}, generation = ?2, pass = 1, error = NULL, error_phase_index = NULL, field_states = '{{}}', waiting_for = NULL,
    restarts = {}, completed_at = NULL",
        sql::json_append_pair(d, "restarts", "?2", &restart)
    )
}

/// A reset to the queue (?4 time).
fn materialize_sql(d: Dialect, filter: &str) -> String {
    format!(
        "UPDATE pipeline_docs SET status = 'queued', attempts = 0, claim_token = NULL, updated_at = ?4, {} WHERE {filter}",
        reset_columns(d)
    )
}

/// A reset of the pending documents of run ?1 (?2 generation).
static MATERIALIZE_RUN: Sql =
    Sql::new(|d| materialize_sql(d, "pipeline_id = ?1 AND generation < ?2"));
/// A reset of the pending document ?1 (?2 generation).
static MATERIALIZE_DOC: Sql = Sql::new(|d| materialize_sql(d, "seq = ?1 AND generation < ?2"));

/// Resets every pending document of a run in the stored rows (before a cancel, which ends the
/// queued ones) and clears the run's mark. Answers how many.
pub fn materialize_all(c: &Connection, pipeline_id: &str) -> Result<usize, StoreError> {
    let Some(l) = lazy(c, pipeline_id)? else {
        return Ok(0);
    };
    if l.held {
        c.prepare_cached(&format!(
            "DELETE FROM held_fields WHERE seq IN ({STALE_HELD})"
        ))?
        .execute(params![pipeline_id, l.generation])?;
    }
    let n = c
        .prepare_cached(MATERIALIZE_RUN.text(c.dialect()))?
        .execute(params![pipeline_id, l.generation, l.from, l.at])?;
    clear_when_done(c, pipeline_id)?;
    Ok(n)
}

/// Whether some document of a run is still pending, read by index (not trusted to the mark).
pub fn has_pending(c: &Connection, pipeline_id: &str) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE pd.pipeline_id = ?1 AND pd.generation < p.lazy_generation)",
    )?
    .query_row([pipeline_id], |r| r.get(0))?)
}

/// Clears a run's mark with its last pending document, so that the commit of its last document
/// settles it (a run with the mark is busy). Each reset deleted its document's review rows, so
/// none is stale then either.
fn clear_when_done(c: &Connection, pipeline_id: &str) -> Result<(), StoreError> {
    if !has_pending(c, pipeline_id)? {
        c.prepare_cached("UPDATE pipelines SET lazy_pending = 0, lazy_held = 0 WHERE id = ?1")?
            .execute([pipeline_id])?;
    }
    Ok(())
}

/// Claims up to `limit` pending documents of a run, resetting each in the claim's statement
/// (one write of the row instead of a reset and then a claim): `(seq, generation, cursor)`.
/// `in_flight` (a JSON array of seqs) is skipped: a worker still holds them (a cancel ended
/// them while they ran). A suspect of an unclean exit is reset to the queue instead, where
/// the claim runs it alone.
pub fn claim_pending(
    c: &Connection,
    node: &str,
    pipeline_id: &str,
    limit: i64,
    token: &str,
    now: &str,
    in_flight: &str,
) -> Result<Vec<(i64, i64, usize)>, StoreError> {
    let Some(l) = lazy(c, pipeline_id)? else {
        return Ok(Vec::new());
    };
    fn suspects(d: Dialect) -> String {
        format!(
            "seq IN (SELECT seq FROM pipeline_docs{}
                 WHERE unclean_exits > 0 AND pipeline_id = ?1 AND generation < ?2)",
            sql::indexed_by(d, "pipeline_documents_suspects")
        )
    }
    static SUSPECTS_HELD: Sql = Sql::new(|d| {
        format!(
            "DELETE FROM held_fields WHERE pd_seq IN (SELECT seq FROM pipeline_docs WHERE {})",
            suspects(d)
        )
    });
    static SUSPECTS_RESET: Sql = Sql::new(|d| materialize_sql(d, &suspects(d)));
    // In PostgreSQL the chosen rows are locked, skipping any another writer holds.
    static CLAIM: Sql = Sql::new(|d| {
        format!(
            "UPDATE pipeline_docs SET status = 'processing', attempts = 1, claim_token = ?5, updated_at = ?4, claimed_by = ?8, {}
             WHERE seq IN (SELECT seq FROM pipeline_docs WHERE pipeline_id = ?1 AND generation < ?2
                           AND seq NOT IN ({}) LIMIT ?6{})
             RETURNING seq, generation, cursor",
            reset_columns(d),
            sql::in_list(d, 7, Elem::Int),
            sql::skip_locked(d)
        )
    });
    static CLAIMED_HELD: Sql = Sql::new(|d| {
        format!(
            "DELETE FROM held_fields WHERE pd_seq IN ({})",
            sql::in_list(d, 1, Elem::Int)
        )
    });
    let d = c.dialect();
    if l.held {
        c.prepare_cached(SUSPECTS_HELD.text(d))?
            .execute(params![pipeline_id, l.generation])?;
    }
    c.prepare_cached(SUSPECTS_RESET.text(d))?.execute(params![
        pipeline_id,
        l.generation,
        l.from,
        now
    ])?;
    let mut claimed: Vec<(i64, i64, usize)> = c
        .prepare_cached(CLAIM.text(d))?
        .query_map(
            params![
                pipeline_id,
                l.generation,
                l.from,
                now,
                token,
                limit,
                in_flight,
                node
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as usize)),
        )?
        .collect::<Result<_, _>>()?;
    claimed.sort_unstable();
    if l.held && !claimed.is_empty() {
        let seqs: Vec<i64> = claimed.iter().map(|(seq, _, _)| *seq).collect();
        c.prepare_cached(CLAIMED_HELD.text(d))?
            .execute([serde_json::to_string(&seqs).unwrap_or_else(|_| "[]".into())])?;
    }
    clear_when_done(c, pipeline_id)?;
    Ok(claimed)
}

/// At start: each run's mark says again whether it has pending documents (the mark is how the
/// writer finds them; a run's busy state reads the documents themselves).
pub fn recount_lazy(c: &Connection) -> Result<(), StoreError> {
    c.execute(
        "UPDATE pipelines SET lazy_pending = CASE WHEN EXISTS(
            SELECT 1 FROM pipeline_docs pd WHERE pd.pipeline_id = pipelines.id AND pd.generation < pipelines.lazy_generation)
           THEN 1 ELSE 0 END
         WHERE lazy_generation > 0",
        [],
    )?;
    c.execute(
        "UPDATE pipelines SET lazy_held = 0 WHERE lazy_held = 1 AND lazy_pending = 0",
        [],
    )?;
    Ok(())
}

/// Resets one document if it is pending (before a write to it, in the writer's transaction).
pub fn materialize_doc(c: &Connection, seq: i64) -> Result<bool, StoreError> {
    let pending: Option<(String, Lazy)> = c
        .prepare_cached(
            "SELECT p.id, p.lazy_generation, p.lazy_from, p.lazy_at, p.lazy_held
             FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE pd.seq = ?1 AND pd.generation < p.lazy_generation AND p.lazy_pending = 1",
        )?
        .query_row([seq], |r| Ok((r.get(0)?, lazy_row(r, 1)?)))
        .optional()?;
    let Some((pipeline_id, l)) = pending else {
        return Ok(false);
    };
    if l.held {
        c.prepare_cached("DELETE FROM held_fields WHERE pd_seq = ?1")?
            .execute([seq])?;
    }
    c.prepare_cached(MATERIALIZE_DOC.text(c.dialect()))?
        .execute(params![seq, l.generation, l.from, l.at])?;
    clear_when_done(c, &pipeline_id)?;
    Ok(true)
}

/// The runs that still have pending documents, oldest first.
pub fn lazy_runs(c: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(
        c.prepare_cached("SELECT id FROM pipelines WHERE lazy_pending = 1 ORDER BY seq")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    )
}

/// How many of a run's documents the writer has not reset yet (tests).
#[cfg(test)]
pub fn pending_count(c: &Connection, pipeline_id: &str) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT count(*) FROM pipeline_docs pd JOIN pipelines p ON p.id = pd.pipeline_id
         WHERE p.id = ?1 AND pd.generation < p.lazy_generation",
        [pipeline_id],
        |r| r.get(0),
    )?)
}

/// A run's held fields as `(document ordinal, field, status)` (tests).
#[cfg(test)]
pub fn held_of_run(
    c: &Connection,
    pipeline_id: &str,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    Ok(c.prepare(
        "SELECT pd.ordinal, h.field_key, h.status FROM held_fields h
             JOIN pipeline_docs pd ON pd.seq = h.pd_seq JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE h.pipeline_id = ?1 AND pd.generation >= p.lazy_generation ORDER BY 1, 2",
    )?
    .query_map([pipeline_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
    .collect::<Result<_, _>>()?)
}

/// The targeted documents of a run: all, or the pipeline document ids in a JSON array.
fn target(d: Dialect) -> String {
    format!(
        "pipeline_id = ?1 AND ({} OR id IN ({}))",
        sql::is_null(d, 2, "text"),
        sql::in_list(d, 2, Elem::Text)
    )
}

/// Field states that hold something a rerun keeps (a block, a pin, guards, flags, a reopen, a
/// pinned element); every other document's states simply reset.
fn keeps(d: Dialect) -> String {
    states_hold(
        d,
        &[
            r#"'"blocked"'"#,
            r#"'"pinned":true'"#,
            r#"'"guards"'"#,
            r#"'"flags"'"#,
            r#"'"reopened_after"'"#,
            r#"'"resumed"'"#,
            r#"'"review_at"'"#,
            r#"'"element_pins"'"#,
        ],
    )
}

pub fn target_count(
    c: &Connection,
    pipeline_id: &str,
    ids: Option<&str>,
) -> Result<i64, StoreError> {
    Ok(c.query_row(
        &format!(
            "SELECT count(*) FROM pipeline_docs WHERE {}",
            target(c.dialect())
        ),
        params![pipeline_id, ids],
        |r| r.get(0),
    )?)
}

pub fn earliest_restart(
    c: &Connection,
    pipeline_id: &str,
    ids: Option<&str>,
    from: usize,
) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        &format!(
            "SELECT min({}) FROM pipeline_docs WHERE {}",
            restart(c.dialect()),
            target(c.dialect())
        ),
        params![pipeline_id, ids, from as i64],
        |r| r.get(0),
    )?)
}

pub fn target_decisions(
    c: &Connection,
    pipeline_id: &str,
    ids: Option<&str>,
) -> Result<i64, StoreError> {
    Ok(c.query_row(
        &format!(
            "SELECT count(*) FROM review_decisions WHERE pd_seq IN (SELECT seq FROM pipeline_docs WHERE {})",
            target(c.dialect())
        ),
        params![pipeline_id, ids],
        |r| r.get(0),
    )?)
}

/// The next chunk (by `seq`) of targeted documents whose states keep something.
pub fn keeping_docs(
    c: &Connection,
    pipeline_id: &str,
    ids: Option<&str>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<DocState>, StoreError> {
    let sql = format!(
        "SELECT seq, id, status, error_phase_index, field_states, restarts FROM pipeline_docs
         WHERE {} AND {} AND seq > ?3 ORDER BY seq LIMIT ?4",
        target(c.dialect()),
        keeps(c.dialect())
    );
    let rows = c
        .prepare(&sql)?
        .query_map(params![pipeline_id, ids, after_seq, limit], doc_state)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Restarts, set-based, every targeted document not yet in `generation`: states reset to
/// "every field progressing", held rows cleared, restart recorded. Returns how many.
pub fn restart_rest(
    c: &Connection,
    pipeline_id: &str,
    ids: Option<&str>,
    from: usize,
    generation: i64,
) -> Result<usize, StoreError> {
    let d = c.dialect();
    let target = target(d);
    let restart = restart(d);
    c.execute(
        &format!(
            "DELETE FROM held_fields WHERE pd_seq IN (SELECT seq FROM pipeline_docs WHERE {target} AND generation < ?3)"
        ),
        params![pipeline_id, ids, generation],
    )?;
    let n = c.execute(
        &format!(
            "UPDATE pipeline_docs SET status = 'queued', cursor = {restart}, generation = ?4, pass = 1, attempts = 0,
             claim_token = NULL, error = NULL, error_phase_index = NULL, field_states = '{{}}', waiting_for = NULL,
             restarts = {}, updated_at = ?5, completed_at = NULL
             WHERE {target} AND generation < ?4",
            sql::json_append_pair(d, "restarts", "?4", &restart)
        ),
        params![pipeline_id, ids, from as i64, generation, now_rfc3339()],
    )?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squeezed(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The SQLite rendering of each fragment is the text before the dialect seam (whitespace
    /// aside): the sticky condition must stay the partial index's, the rest what the plans
    /// tests and the suite were written against.
    #[test]
    fn sqlite_renders_the_statements_as_before_the_seam() {
        let d = Dialect::Sqlite;
        assert_eq!(
            squeezed(&sticky(d)),
            squeezed(
                "(instr(field_states, '\"pinned\":true') > 0 OR instr(field_states, '\"guards\"') > 0
   OR instr(field_states, '\"reopened_after\"') > 0 OR instr(field_states, '\"resumed\"') > 0
   OR instr(field_states, '\"review_at\"') > 0 OR instr(field_states, '\"element_pins\"') > 0)"
            )
        );
        assert_eq!(
            squeezed(&keeps(d)),
            squeezed(
                "(instr(field_states, '\"blocked\"') > 0 OR instr(field_states, '\"pinned\":true') > 0
    OR instr(field_states, '\"guards\"') > 0 OR instr(field_states, '\"flags\"') > 0 OR instr(field_states, '\"reopened_after\"') > 0 OR instr(field_states, '\"resumed\"') > 0 OR instr(field_states, '\"review_at\"') > 0
    OR instr(field_states, '\"element_pins\"') > 0)"
            )
        );
        assert_eq!(
            target(d),
            "pipeline_id = ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))"
        );
        assert_eq!(
            squeezed(MATERIALIZE_DOC.text(d)),
            squeezed(
                "UPDATE pipeline_docs SET status = 'queued', attempts = 0, claim_token = NULL, updated_at = ?4,
                 cursor = CASE WHEN status = 'error' THEN min(?3, coalesce(error_phase_index, 0)) ELSE ?3 END,
                 generation = ?2, pass = 1, error = NULL, error_phase_index = NULL, field_states = '{}', waiting_for = NULL,
                 restarts = json_insert(restarts, '$[#]', json_array(?2, CASE WHEN status = 'error' THEN min(?3, coalesce(error_phase_index, 0)) ELSE ?3 END)),
                 completed_at = NULL WHERE seq = ?1 AND generation < ?2"
            )
        );
    }

    /// The PostgreSQL rendering speaks PostgreSQL: no SQLite function is left in it.
    #[test]
    fn postgres_renders_no_sqlite_function() {
        let d = Dialect::Postgres;
        for text in [
            sticky(d),
            keeps(d),
            target(d),
            MATERIALIZE_RUN.text(d).to_string(),
        ] {
            for sqlite_only in [
                "instr(",
                "json_each",
                "json_insert",
                "json_array(",
                "min(?3",
            ] {
                assert!(!text.contains(sqlite_only), "{sqlite_only} in {text}");
            }
        }
    }

    /// A run of five documents whose generation-1 rows are all pending after a whole-run rerun
    /// to generation 2 from phase 2: one still held by a worker (a cancel ended it while it
    /// ran), one a suspect of an unclean exit, one cancelled while it waited for a model.
    fn pending_run(c: &Connection) {
        c.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO pipelines(id, org_id, schema_id, schema_name, name, status, fields, phase_count,
                                   document_count, created_at, updated_at)
             VALUES ('r', 'o', 's', 's', 'n', 'completed', '[]', 3, 5, 't', 't');",
        )
        .unwrap();
        for i in 1..=5 {
            c.execute(
                "INSERT INTO pipeline_docs(seq, id, pipeline_id, document_id, ordinal, status, cursor, created_at, updated_at)
                 VALUES (?1, 'pd' || ?1, 'r', 'd', ?1, 'complete', 3, 't', 't')",
                [i],
            )
            .unwrap();
        }
        c.execute_batch(
            "UPDATE pipeline_docs SET status = 'error', error = 'cancelled', error_phase_index = 1, cursor = 1 WHERE seq = 2;
             UPDATE pipeline_docs SET unclean_exits = 1 WHERE seq = 3;
             UPDATE pipeline_docs SET status = 'error', error = 'cancelled', waiting_for = 'model m' WHERE seq = 4;",
        )
        .unwrap();
        start_lazy(c, "r", 2, 2).unwrap();
    }

    fn row(c: &Connection, seq: i64) -> (String, i64, i64, Option<String>) {
        c.query_row(
            "SELECT status, cursor, generation, waiting_for FROM pipeline_docs WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    }

    #[test]
    fn claims_of_pending_documents_skip_those_in_flight_and_leave_suspects_to_run_alone() {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        pending_run(&c);
        assert_eq!(pending_count(&c, "r").unwrap(), 5);
        let claimed = claim_pending(&c, "n", "r", 10, "tok", "now", "[1]").unwrap();
        // Document 2 ended in error at phase 1 and restarts there, before the rerun's phase;
        // document 4 ended in error with no phase and restarts from the start.
        assert_eq!(claimed, vec![(2, 2, 1), (4, 2, 0), (5, 2, 2)]);
        assert_eq!(
            row(&c, 4),
            ("processing".into(), 0, 2, None),
            "no stale model wait"
        );
        assert_eq!(
            row(&c, 3),
            ("queued".into(), 2, 2, None),
            "the suspect waits in the queue"
        );
        assert_eq!(row(&c, 1).2, 1, "the document a worker holds stays pending");
        assert!(
            lazy(&c, "r").unwrap().is_some(),
            "the run still has work left"
        );
        assert_eq!(
            claim_pending(&c, "n", "r", 10, "tok", "now", "[]").unwrap(),
            vec![(1, 2, 2)]
        );
        assert_eq!(pending_count(&c, "r").unwrap(), 0);
        assert!(
            lazy(&c, "r").unwrap().is_none(),
            "the mark clears with the last one"
        );
    }

    fn hold(c: &Connection, seq: i64, field: &str) {
        c.execute(
            "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
             VALUES (?1, ?2, 'o', 'r', 'blocked', 'gate', 'review_queue', 't', 2)",
            params![seq, field],
        )
        .unwrap();
    }

    fn raw_held(c: &Connection) -> Vec<(i64, String)> {
        c.prepare("SELECT pd_seq, field_key FROM held_fields ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// What every reader of the review index counts for organization `o`: the queue's page and
    /// its count, the summary, and the gauge.
    fn seen_held(c: &Connection) -> (usize, i64, i64, i64) {
        let f = crate::store::review::QueueFilter {
            org_id: "o",
            pipeline_id: None,
            trigger: None,
            status: None,
            hold: false,
            field_key: None,
            stage_id: None,
            ascending: true,
        };
        let (page, total) = crate::store::review::queue(c, &f, None, 5000).unwrap();
        let summary = crate::store::review::queue_summary(c, "o").unwrap();
        let gauge = crate::store::pipelines::metric_gauges(c)
            .unwrap()
            .review_queue;
        (page.len(), total, summary.iter().map(|s| s.3).sum(), gauge)
    }

    #[test]
    fn a_whole_run_rerun_leaves_the_review_rows_of_pending_documents_to_the_writer_and_no_reader_sees_them(
    ) {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        pending_run(&c);
        // More stale rows than one chunk on document 5, then one each on 2 (claimed next) and
        // on the suspect 3 (reset to the queue by the claim).
        for i in 0..STALE_HELD_CHUNK + 100 {
            hold(&c, 5, &format!("f{i}"));
        }
        hold(&c, 2, "a");
        hold(&c, 3, "a");
        start_lazy(&c, "r", 2, 2).unwrap();
        assert!(lazy(&c, "r").unwrap().unwrap().held);
        assert_eq!(
            raw_held(&c).len() as i64,
            STALE_HELD_CHUNK + 102,
            "the call deletes none"
        );
        assert_eq!(
            seen_held(&c),
            (0, 0, 0, 0),
            "every document is pending: nothing is held"
        );
        assert!(held_of_run(&c, "r").unwrap().is_empty());

        // Document 1 is in flight; the claim round clears a chunk, takes 2 and resets the
        // suspect 3.
        clear_stale_held(&c).unwrap();
        assert_eq!(
            claim_pending(&c, "n", "r", 1, "tok", "now", "[1]").unwrap(),
            vec![(2, 2, 1)]
        );
        let left = raw_held(&c);
        assert_eq!(
            left.len(),
            100,
            "a chunk, the claimed document's and the suspect's rows went"
        );
        assert!(left.iter().all(|(seq, _)| *seq == 5));
        assert!(lazy(&c, "r").unwrap().unwrap().held, "some are left");
        assert_eq!(seen_held(&c), (0, 0, 0, 0));

        // A row the new generation writes for a reset document is seen, and stays.
        hold(&c, 2, "b");
        assert_eq!(seen_held(&c), (1, 1, 1, 1));
        clear_stale_held(&c).unwrap();
        assert_eq!(raw_held(&c), vec![(2, "b".to_string())]);
        assert!(
            !lazy(&c, "r").unwrap().unwrap().held,
            "none is stale: the mark is cleared"
        );
        assert_eq!(seen_held(&c), (1, 1, 1, 1));
    }

    #[test]
    fn a_whole_run_rerun_resets_in_its_call_only_what_keeps_something_past_its_start() {
        let (_dir, db) = crate::store::scratch_db();
        let c = db.dedicated().unwrap();
        pending_run(&c);
        let states = [
            // A flag raised at phase 1 survives a restart at 2; one raised at 2 does not.
            (
                1,
                r#"{"a":{"flags":[{"phase":1,"stage_id":"g","severity":"warning"}]}}"#,
            ),
            (
                2,
                r#"{"a":{"flags":[{"phase":2,"stage_id":"g","severity":"warning"}]}}"#,
            ),
            // A person's pin survives any restart.
            (3, r#"{"a":{"pinned":true,"pin":4}}"#),
            // Blocked at the gate the rerun starts from: reset.
            (
                4,
                r#"{"a":{"status":"blocked","blocked_at":2,"trigger":"gate"}}"#,
            ),
            (5, r#"{"a":{"status":"completed"}}"#),
        ];
        for (seq, st) in states {
            c.execute(
                "UPDATE pipeline_docs SET field_states = ?2 WHERE seq = ?1",
                params![seq, st],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
             VALUES (4, 'a', 'o', 'r', 'blocked', 'gate', 'review_queue', 't', 2)",
            [],
        )
        .unwrap();
        // A gate's review with no blocking phase stays in review from any restart; a review
        // another trigger asked for does not keep its document.
        c.execute(
            "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
             VALUES (5, 'a', 'o', 'r', 'pending_review', 'gate', 'review_queue', 't', NULL),
                    (2, 'b', 'o', 'r', 'pending_review', 'confidence', 'review_queue', 't', NULL)",
            [],
        )
        .unwrap();
        assert_eq!(eager_docs(&c, "r", 2).unwrap(), vec![1, 3, 5]);
        // From phase 3, the flag at 2 and the hold at 2 lie before the start and stay.
        assert_eq!(eager_docs(&c, "r", 3).unwrap(), vec![1, 2, 3, 4, 5]);
    }
}
