//! The executor's storage: claims, loading a document's situation, and fenced step commits.

use super::conn::{params, Connection, OptionalExtension};
use super::sql::{self, Dialect, Elem, Sql};
use super::StoreError;
use crate::domain::cells::{Cell, NewVerdict, Step};
use crate::domain::ids::now_rfc3339;
use crate::domain::state::{FieldState, States};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Claim {
    pub seq: i64,
    pub pipeline_id: String,
    pub token: String,
    pub generation: i64,
    pub pass: i64,
    pub cursor: usize,
}

pub const MAX_ATTEMPTS: i64 = 3;

/// At a clean stop: the node's documents still in flight go back to the queue, no questions
/// asked.
pub fn return_unfinished(c: &Connection, node: &str) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE pipeline_docs SET status = 'queued', claim_token = NULL
         WHERE status = 'processing' AND claimed_by = ?1",
        [node],
    )?)
}

/// What reaping found of the work of nodes that are gone.
#[derive(Debug, Default)]
pub struct Recovered {
    pub requeued: usize,
    /// `(document seq, reason)` of each document ended `error` as the likely cause.
    pub quarantined: Vec<(i64, String)>,
    /// Runs to settle: a quarantined document may have been their last active one.
    pub pipelines: Vec<String>,
}

/// How many consecutive unclean exits a document may be in flight for, alone, before it is set
/// aside.
pub const QUARANTINE_AFTER: i64 = 2;

/// Claimed by no registered node: claimed by a node that was reaped (or stopped without
/// returning its work), or before nodes were recorded.
const ORPHAN: &str = "(claimed_by IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = pipeline_docs.claimed_by))";

/// Takes back the work of nodes that are gone (`nodes::reap` deleted them, or a start found
/// its predecessor's). A clean stop leaves nothing `processing`, so what such a node still had
/// `processing` was in flight when it died. A document whose worker recorded why it was dying,
/// or that was in flight alone at two consecutive unclean exits, ends `error` (quarantined);
/// every other one goes back to the queue, a suspect until it commits. Suspects run alone, so a
/// document killed with a crowd is never blamed, and an innocent one would have to be the one
/// running at two random kills in a row. What the dead node was asking a model is asked again
/// when its document is claimed. Runs in the writers' transaction, as nothing else changes
/// claims meanwhile.
///
/// `at_start`: the process's own start, which also recounts the lazy reruns' marks and clears
/// the suspects that were not in flight, as every start always did; a periodic reap that finds
/// nothing in flight changes nothing.
pub fn recover_orphans(c: &Connection, at_start: bool) -> Result<Recovered, StoreError> {
    let now = now_rfc3339();
    let mut r = Recovered::default();
    c.execute(
        &format!("UPDATE pipeline_docs SET waiting_for = NULL WHERE waiting_for IS NOT NULL AND {ORPHAN}"),
        [],
    )?;
    let in_flight: i64 = c.query_row(
        &format!("SELECT count(*) FROM pipeline_docs WHERE status = 'processing' AND {ORPHAN}"),
        [],
        |r| r.get(0),
    )?;
    if in_flight == 0 && !at_start {
        return Ok(r);
    }
    let dying: Vec<(i64, String, String)> = c
        .prepare(&format!(
            "SELECT seq, pipeline_id, abort_cause FROM pipeline_docs
             WHERE status = 'processing' AND abort_cause IS NOT NULL AND {ORPHAN}"
        ))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, pipeline, cause) in dying {
        r.quarantined.push((seq, format!("quarantined: {cause}")));
        r.pipelines.push(pipeline);
    }
    super::reruns::recount_lazy(c)?;
    // Suspects of an earlier exit that were not in flight at this one are cleared: the exits
    // they saw were not consecutive.
    c.execute(
        "UPDATE pipeline_docs SET unclean_exits = 0 WHERE unclean_exits > 0 AND status <> 'processing'",
        [],
    )?;
    // In a crowd, a document only becomes a suspect (1): the exit may have had nothing to do
    // with it (a SIGKILL, an out-of-memory kill of the whole process). Alone in flight, which is
    // how suspects run, the exit counts against it (+1). A document whose own cause is known
    // counts in the crowd too: beside a known culprit no one else was alone.
    let step = if in_flight == 1 { 1 } else { 0 };
    c.execute(
        &format!(
            "UPDATE pipeline_docs SET unclean_exits = {} + ?1
         WHERE status = 'processing' AND abort_cause IS NULL AND {ORPHAN}",
            sql::greatest(c.dialect(), "unclean_exits", "1")
        ),
        [step],
    )?;
    let repeat: Vec<(i64, String)> = c
        .prepare(&format!(
            "SELECT seq, pipeline_id FROM pipeline_docs
             WHERE status = 'processing' AND unclean_exits >= ?1 AND {ORPHAN}"
        ))?
        .query_map([QUARANTINE_AFTER + 1], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, pipeline) in repeat {
        r.quarantined.push((
            seq,
            format!("quarantined: in flight alone at {QUARANTINE_AFTER} consecutive unclean exits"),
        ));
        r.pipelines.push(pipeline);
    }
    let mut end = c.prepare(
        "UPDATE pipeline_docs SET status = 'error', error = ?2, error_phase_index = cursor, claim_token = NULL,
         abort_cause = NULL, unclean_exits = 0, updated_at = ?3, completed_at = ?3 WHERE seq = ?1",
    )?;
    for (seq, why) in &r.quarantined {
        end.execute(params![seq, why, now])?;
    }
    r.requeued = c.execute(
        &format!(
            "UPDATE pipeline_docs SET status = 'queued', claim_token = NULL WHERE status = 'processing' AND {ORPHAN}"
        ),
        [],
    )?;
    r.pipelines.sort();
    r.pipelines.dedup();
    Ok(r)
}

/// Why a claim took its process down: said by a worker about to abort, or, at the next start,
/// by the allocation journal for a failed allocation. Fenced by the claim, so a later claim of
/// the document (after a reaping, say) is not blamed.
pub fn record_abort_of_claim(
    c: &Connection,
    seq: i64,
    token: &str,
    cause: &str,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE pipeline_docs SET abort_cause = ?3
         WHERE seq = ?1 AND claim_token = ?2 AND status = 'processing'",
        params![seq, token, cause],
    )?;
    Ok(())
}

/// Claims up to `limit` queued documents not already in flight. Documents claimed
/// `MAX_ATTEMPTS` times without a commit end `error`; their pipelines are returned to settle.
/// A document given up on at claim time (too many attempts): its seq and its run.
pub type GaveUp = (i64, String);

pub fn claim(
    c: &Connection,
    node: &str,
    limit: usize,
    in_flight: &std::collections::HashSet<i64>,
    others_in_flight: bool,
) -> Result<(Vec<Claim>, Vec<GaveUp>), StoreError> {
    let mut out = Vec::new();
    let mut gave_up = Vec::new();
    // A suspect of an unclean exit runs alone, so that if it takes the process down again it is
    // the only document in flight and nothing innocent is blamed with it.
    // In PostgreSQL each read takes the rows it claims, skipping what another writer holds.
    static SUSPECT: Sql = Sql::new(|d| {
        format!(
            "SELECT seq FROM pipeline_docs WHERE unclean_exits > 0 AND status = 'queued' AND waiting_for IS NULL ORDER BY seq LIMIT 1{}",
            sql::skip_locked(d)
        )
    });
    static ONE: Sql = Sql::new(|d| {
        format!(
            "SELECT seq, pipeline_id, generation, pass, cursor, attempts FROM pipeline_docs
             WHERE seq = ?1{}",
            sql::skip_locked(d)
        )
    });
    static QUEUED: Sql = Sql::new(|d| {
        format!(
            "SELECT seq, pipeline_id, generation, pass, cursor, attempts FROM pipeline_docs
             WHERE status = 'queued' AND waiting_for IS NULL ORDER BY seq LIMIT ?1{}",
            sql::skip_locked(d)
        )
    });
    let d = c.dialect();
    let suspect: Option<i64> = c
        .prepare_cached(SUSPECT.text(d))?
        .query_row([], |r| r.get(0))
        .optional()?;
    if suspect.is_some() && others_in_flight {
        return Ok((out, gave_up));
    }
    let (sql, arg) = match suspect {
        Some(seq) => (ONE.text(d), seq),
        None => (QUEUED.text(d), limit as i64),
    };
    let candidates: Vec<(i64, String, i64, i64, i64, i64)> = c
        .prepare_cached(sql)?
        .query_map([arg], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let now = now_rfc3339();
    // One token per claim round: with the document's seq it fences a result to this claim.
    let token = format!("{:016x}", rand::random::<u64>());
    let mut seqs = String::from("[");
    for (seq, pipeline_id, generation, pass, cursor, attempts) in candidates {
        if in_flight.contains(&seq) {
            continue;
        }
        if attempts >= MAX_ATTEMPTS {
            c.prepare_cached(
                "UPDATE pipeline_docs SET status = 'error', error = ?2, error_phase_index = cursor, claim_token = NULL,
                 updated_at = ?3, completed_at = ?3 WHERE seq = ?1 AND status = 'queued'",
            )?
            .execute(params![seq, format!("gave up after {MAX_ATTEMPTS} attempts"), now])?;
            gave_up.push((seq, pipeline_id));
            continue;
        }
        if seqs.len() > 1 {
            seqs.push(',');
        }
        seqs.push_str(&seq.to_string());
        out.push(Claim {
            seq,
            pipeline_id,
            token: token.clone(),
            generation,
            pass,
            cursor: cursor as usize,
        });
    }
    seqs.push(']');
    if !out.is_empty() {
        // One statement for the whole round; the rows were read in this same transaction, so
        // every one of them is still queued.
        static CLAIM: Sql = Sql::new(|d| {
            format!(
                "UPDATE pipeline_docs SET status = 'processing', claim_token = ?1, attempts = attempts + 1, updated_at = ?2,
                 claimed_by = ?4 WHERE seq IN ({}) AND status = 'queued'",
                sql::in_list(d, 3, Elem::Int)
            )
        });
        let n = c
            .prepare_cached(CLAIM.text(d))?
            .execute(params![token, now, seqs, node])?;
        if n != out.len() {
            return Err(StoreError::Refused(format!(
                "claimed {n} of {} queued documents",
                out.len()
            )));
        }
    }
    // A chunk of the review rows whole-run reruns left stale, every round.
    super::reruns::clear_stale_held(c)?;
    // Then the documents a whole-run rerun left to the writer: each is reset as it is claimed,
    // in the claim's own statement (a suspect runs alone, so none are added to it).
    if suspect.is_none() && out.len() < limit {
        let runs = super::reruns::lazy_runs(c)?;
        // Serialized only when some run has pending documents: most claim rounds have none.
        let busy = if runs.is_empty() {
            String::new()
        } else {
            serde_json::to_string(in_flight).unwrap_or_else(|_| "[]".into())
        };
        for run in runs {
            let want = (limit - out.len()) as i64;
            for (seq, generation, cursor) in
                super::reruns::claim_pending(c, node, &run, want, &token, &now, &busy)?
            {
                out.push(Claim {
                    seq,
                    pipeline_id: run.clone(),
                    token: token.clone(),
                    generation,
                    pass: 1,
                    cursor,
                });
            }
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok((out, gave_up))
}

/// Puts a claimed document back in the queue (storage trouble or a failed computation).
pub fn requeue(c: &Connection, claim: &Claim) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE pipeline_docs SET status = 'queued', claim_token = NULL WHERE seq = ?1 AND claim_token = ?2")?
        .execute(params![claim.seq, claim.token])?;
    Ok(())
}

pub struct DocLoad {
    /// The text extraction reads: the content of a text format, a binary one's text layer.
    pub content: Vec<u8>,
    pub mime: String,
    /// A binary document's pages with their words (none for the text formats), to place what
    /// extraction reads.
    pub pages: Vec<crate::intake::Page>,
    /// Its language (ISO 639-1) where intake could tell it.
    pub language: Option<String>,
    /// The sha256 of its content (what a model's answer is kept by).
    pub sha256: String,
    /// Why the document could not be read at intake (its run then ends `error` at extraction).
    pub unreadable: Option<String>,
    pub metadata: Map<String, Value>,
    pub restarts: Vec<(i64, usize)>,
    /// The stored field states as text (the commit is fenced on it) and decoded.
    pub field_states: String,
    pub states: States,
    pub cells: Vec<Cell>,
    /// `(field, final value)` of decisions since each field's latest reopen.
    pub decisions: Vec<(String, Value)>,
}

/// Reads a claimed document's situation; `None` when `token` no longer holds its claim (a
/// cancel, a rerun or another node's reaping took it back meanwhile).
pub fn load(c: &Connection, seq: i64, token: &str) -> Result<Option<DocLoad>, StoreError> {
    type Head = (
        Vec<(i64, usize)>,
        String,
        States,
        Vec<u8>,
        String,
        Map<String, Value>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    static HEAD: Sql = Sql::new(|d| {
        format!(
            "SELECT pd.seq, pd.restarts, pd.field_states,
                    CASE WHEN d.text IS NULL THEN d.content ELSE {} END,
                    CASE WHEN d.text IS NULL THEN d.mime_type ELSE 'text/plain' END,
                    d.metadata, d.error, CASE WHEN d.text IS NULL THEN NULL ELSE d.id END, d.language, d.sha256
             FROM pipeline_docs pd
             JOIN documents d ON d.id = pd.document_id WHERE pd.seq = ?1 AND pd.claim_token = ?2",
            sql::text_as_blob(d, "d.text")
        )
    });
    let head: Option<Head> = c
        .prepare_cached(HEAD.text(c.dialect()))?
        .query_row(params![seq, token], |r| {
            Ok((
                super::json(r, 1, "pipeline_docs")?,
                r.get(2)?,
                super::states::column(r, 2, "pipeline_docs")?,
                r.get(3)?,
                r.get(4)?,
                super::json(r, 5, "documents")?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })
        .optional()?;
    let Some((
        restarts,
        field_states,
        states,
        content,
        mime,
        metadata,
        unreadable,
        layered,
        language,
        sha256,
    )) = head
    else {
        return Ok(None);
    };
    let pages = match layered {
        Some(id) => super::documents::pages(c, &id)?
            .into_iter()
            .map(|p| p.page)
            .collect(),
        None => Vec::new(),
    };
    let cells = super::pipelines::versions_for_run(c, seq)?;
    let mut decisions: Vec<(String, Value)> = Vec::new();
    let rows = c
        .prepare_cached("SELECT seq, field_key, action, final_value FROM review_decisions WHERE pd_seq = ?1 ORDER BY seq")?
        .query_map([seq], |r| {
            Ok((
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                super::json_opt::<Value>(r, 3, "review_decisions")?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (field, action, fv) in rows {
        if action == "reopen" {
            decisions.retain(|(f, _)| f != &field);
        } else {
            decisions.push((field, fv.unwrap_or(Value::Null)));
        }
    }
    Ok(Some(DocLoad {
        content,
        pages,
        language,
        sha256,
        unreadable,
        mime,
        metadata,
        restarts,
        field_states,
        states,
        cells,
        decisions,
    }))
}

/// Applies the step's changes to the fields whose stored state is still what the step saw.
pub fn merge(current: &States, before: &States, after: &States) -> States {
    let mut out = current.clone();
    for (f, a) in after {
        let seen = before.get(f).cloned().unwrap_or_default();
        let now = current.get(f).cloned().unwrap_or_default();
        if now == seen {
            out.insert(f.clone(), a.clone());
        }
    }
    out
}

/// A step's rows with their JSON already rendered (by a worker, off the writer thread).
pub struct StepRows {
    pub phase_index: usize,
    cells: Vec<(Cell, String)>,
    /// Each verdict with its mechanisms as (template, fragments): the writer interns the
    /// templates.
    verdicts: Vec<(NewVerdict, Vec<super::intern::Template>)>,
}

impl StepRows {
    /// (cell versions, verdicts) this step writes.
    pub fn counts(&self) -> (usize, usize) {
        (self.cells.len(), self.verdicts.len())
    }

    pub fn of(step: Step) -> Self {
        StepRows {
            phase_index: step.phase_index,
            cells: step
                .cells
                .into_iter()
                .map(|c| {
                    let v = c.value.to_string();
                    (c, v)
                })
                .collect(),
            verdicts: step
                .verdicts
                .into_iter()
                .map(|mut v| {
                    let m = v
                        .mechanisms
                        .iter()
                        .map(|m| {
                            let (template, fragments) = crate::domain::gate::mechanism_template(m);
                            // The column's text for the fragments, rendered here (a worker)
                            // rather than by the writer.
                            let mut tail = String::new();
                            for f in &fragments {
                                tail.push_str(",\"");
                                crate::domain::gate::push_json_escaped(&mut tail, f);
                                tail.push('"');
                            }
                            (template, tail)
                        })
                        .collect();
                    // Only the rendered JSON travels to the writer.
                    v.mechanisms = Vec::new();
                    (v, m)
                })
                .collect(),
        }
    }
}

/// Inserts a step's versions and verdicts; the caller has already passed the claim's fence.
pub fn insert_step_rows(
    c: &Connection,
    claim: &Claim,
    rows: &StepRows,
    interner: &mut super::intern::Interner,
    now: &str,
) -> Result<(), StoreError> {
    use super::conn::ToSql;
    // Multi-row INSERTs: one statement step per chunk instead of per row (the writer thread
    // is the executor's bottleneck).
    const CHUNK: usize = 24;
    let (seq, generation, pass) = (claim.seq, claim.generation, claim.pass);
    for chunk in rows.cells.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO cells(pd_seq, field_key, version, value, source, phase_index, generation, pass, confidence,
             source_text, config_version, rule_type, note, created_at, provenance, rows) VALUES ",
        );
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 16);
        let mut phases: Vec<i64> = Vec::with_capacity(chunk.len());
        phases.extend(chunk.iter().map(|(cell, _)| cell.phase_index as i64));
        // The JSON columns of each version: where it was read, and where each element was.
        let placed: Vec<(Option<String>, Option<String>)> = chunk
            .iter()
            .map(|(cell, _)| {
                (
                    super::json_text(&cell.provenance),
                    super::json_text(&cell.rows),
                )
            })
            .collect();
        for (k, (cell, value)) in chunk.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
            args.extend_from_slice(&[
                &seq as &dyn ToSql,
                &cell.field,
                &cell.version,
                value,
                &cell.source,
                &phases[k],
                &cell.generation,
                &cell.pass,
                &cell.confidence,
                &cell.source_text,
                &cell.config_version,
                &cell.rule_type,
                &cell.note,
                &now,
                &placed[k].0,
                &placed[k].1,
            ]);
        }
        c.prepare_cached(&sql)?.execute(args.as_slice())?;
    }
    if pass > 1 {
        // A later pass at the same field and phase replaces the earlier verdict.
        let mut del = c.prepare_cached("DELETE FROM verdicts WHERE pd_seq = ?1 AND field_key = ?2 AND phase_index = ?3 AND generation = ?4")?;
        for (v, _) in &rows.verdicts {
            del.execute(params![seq, v.field, v.phase_index as i64, generation])?;
        }
    }
    for chunk in rows.verdicts.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO verdicts(pd_seq, field_key, phase_index, stage, generation, pass, outcome, suppressed, reason,
             mechanisms, value_hash, created_at) VALUES ",
        );
        let mut args: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 12);
        let mut nums: Vec<(i64, &str, i64, i64, String)> = Vec::with_capacity(chunk.len());
        for (v, mechanisms) in chunk {
            nums.push((
                v.phase_index as i64,
                v.outcome.as_str(),
                v.suppressed as i64,
                interner.id(c, &v.stage_id)?,
                super::intern::mechanisms_column(c, interner, mechanisms)?,
            ));
        }
        for (k, (v, _)) in chunk.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?)");
            args.extend_from_slice(&[
                &seq as &dyn ToSql,
                &v.field,
                &nums[k].0,
                &nums[k].3,
                &generation,
                &pass,
                &nums[k].1,
                &nums[k].2,
                &v.reason,
                &nums[k].4,
                &v.value_hash,
                &now,
            ]);
        }
        c.prepare_cached(&sql)?.execute(args.as_slice())?;
    }
    Ok(())
}

/// How a claimed document leaves the executor.
pub enum Final<'a> {
    /// `complete` or `partial`.
    Terminal(crate::domain::status::DocStatus),
    /// The phase failed for the whole document.
    Error(usize, &'a str),
    /// A field still has work before the end (released meanwhile): back to the queue at this
    /// cursor, in a new pass.
    Continue(usize),
}

/// The one fenced update of a claimed document: cursor, field states and what comes next.
/// False when the fence no longer holds (cancelled, reclaimed or rerun meanwhile).
pub fn commit_document(
    c: &Connection,
    claim: &Claim,
    cursor: usize,
    states: &str,
    fin: Final,
    now: &str,
    expect_states: Option<&str>,
) -> Result<bool, StoreError> {
    // `?6` is the field states the caller expects to find (NULL: any).
    fn fence(d: Dialect) -> String {
        format!(
            "WHERE seq = ?1 AND status = 'processing' AND generation = ?2 AND pass = ?3 AND claim_token = ?4
        AND cursor = ?5 AND ({} OR field_states = ?6)",
            sql::is_null(d, 6, "text")
        )
    }
    static TERMINAL: Sql = Sql::new(|d| {
        format!(
            "UPDATE pipeline_docs SET status = ?7, cursor = ?8, field_states = ?9, claim_token = NULL, attempts = 0, unclean_exits = 0,
                 error = NULL, error_phase_index = NULL, updated_at = ?10, completed_at = ?10 {}",
            fence(d)
        )
    });
    static ERROR: Sql = Sql::new(|d| {
        format!(
            "UPDATE pipeline_docs SET status = 'error', cursor = ?7, field_states = ?8, claim_token = NULL, attempts = 0, unclean_exits = 0,
                 error = ?9, error_phase_index = ?7, updated_at = ?10, completed_at = ?10 {}",
            fence(d)
        )
    });
    static CONTINUE: Sql = Sql::new(|d| {
        format!(
            "UPDATE pipeline_docs SET status = 'queued', cursor = ?7, pass = pass + 1, field_states = ?8, claim_token = NULL,
                 attempts = 0, unclean_exits = 0, updated_at = ?9 {}",
            fence(d)
        )
    });
    let d = c.dialect();
    let (seq, generation, pass, token, start) = (
        claim.seq,
        claim.generation,
        claim.pass,
        &claim.token,
        claim.cursor as i64,
    );
    let n = match fin {
        Final::Terminal(status) => c.prepare_cached(TERMINAL.text(d))?.execute(params![
            seq,
            generation,
            pass,
            token,
            start,
            expect_states,
            status,
            cursor as i64,
            states,
            now
        ])?,
        Final::Error(phase, message) => c.prepare_cached(ERROR.text(d))?.execute(params![
            seq,
            generation,
            pass,
            token,
            start,
            expect_states,
            phase as i64,
            states,
            message,
            now
        ])?,
        Final::Continue(next) => c.prepare_cached(CONTINUE.text(d))?.execute(params![
            seq,
            generation,
            pass,
            token,
            start,
            expect_states,
            next as i64,
            states,
            now
        ])?,
    };
    Ok(n == 1)
}

/// Keeps `held_fields` (the review queue's index) in step with a document's field states.
pub fn sync_held(
    c: &Connection,
    pd_seq: i64,
    pipeline_id: &str,
    org_id: &str,
    before: &States,
    after: &States,
) -> Result<(), StoreError> {
    let held = |s: &FieldState| s.status.awaits_review();
    for (f, a) in after {
        let fresh = FieldState::default();
        let b = before.get(f).unwrap_or(&fresh);
        // Only held fields have a row: a field held neither before nor after has nothing to
        // change (this used to cost a DELETE per field per document).
        if !held(b) && !held(a) {
            continue;
        }
        if held(b) == held(a)
            && b.status == a.status
            && b.requested_at == a.requested_at
            && b.blocked_at == a.blocked_at
        {
            continue;
        }
        c.prepare_cached("DELETE FROM held_fields WHERE pd_seq = ?1 AND field_key = ?2")?
            .execute(params![pd_seq, f])?;
        if held(a) {
            c.prepare_cached(
                "INSERT INTO held_fields(pd_seq, field_key, org_id, pipeline_id, status, trigger_type, routing, requested_at, blocked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                pd_seq,
                f,
                org_id,
                pipeline_id,
                a.status.as_str(),
                a.trigger.as_deref().unwrap_or("gate"),
                a.routing.as_deref().unwrap_or("review_queue"),
                a.requested_at.clone().unwrap_or_else(now_rfc3339),
                a.blocked_at.map(|b| b as i64)
            ])?;
        }
    }
    Ok(())
}

/// The stored field states, as text (to compare with what a step started from) and decoded.
pub fn current_states(c: &Connection, seq: i64) -> Result<(String, States), StoreError> {
    Ok(
        c.prepare_cached("SELECT seq, field_states FROM pipeline_docs WHERE seq = ?1")?
            .query_row([seq], |r| {
                Ok((r.get(1)?, super::states::column(r, 1, "pipeline_docs")?))
            })?,
    )
}

pub fn org_of(c: &Connection, pipeline_id: &str) -> Result<String, StoreError> {
    Ok(
        c.prepare_cached("SELECT org_id FROM pipelines WHERE id = ?1")?
            .query_row([pipeline_id], |r| r.get(0))?,
    )
}

/// The executor writer's own connection. Multi-row statements keep a statement journal; the
/// writer's transactions are bounded (a batch), so it can live in memory. API transactions keep
/// theirs on file: a rerun of 100,000 documents would journal hundreds of MB.
///
/// On PostgreSQL its commits do not wait for the server's WAL flush (`synchronous_commit =
/// off`), as SQLite's writer commits with `synchronous = NORMAL`: a server crash may lose the
/// last moments of progress, which the queue redoes, never a client's acknowledged write.
pub fn writer_pragmas(c: &Connection) -> Result<(), StoreError> {
    match c.dialect() {
        Dialect::Sqlite => c.execute_batch("PRAGMA temp_store=MEMORY")?,
        Dialect::Postgres => c.execute_batch("SET synchronous_commit = off")?,
    }
    Ok(())
}
