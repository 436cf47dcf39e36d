//! Model extraction's rows: answers by content (the response cache), every call per document,
//! and documents waiting in the queue for an answer.

use super::conn::{params, OptionalExtension};
use super::sql::{self, Sql};
use super::{Connection, StoreError};
use crate::domain::ids::now_rfc3339;
use crate::domain::prompt::Answer;
use serde::Serialize;

/// One HTTP call to a model, as `GET …/documents/{pd}/calls` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Call {
    pub model: String,
    /// `ok`, `rate_limited`, `server_error`, `timeout`, `transport`, `invalid_output`,
    /// `truncated`, `client_error`.
    pub outcome: String,
    /// The HTTP status, where one came.
    pub status: Option<u16>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub ms: u64,
    /// Estimated from the model's configured prices.
    pub cost: f64,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
}

/// The kept answer for `key`: a success serves every document with the same content; a
/// failure only the run that asked for it (a rerun asks the model again). With `fresh`, only
/// an answer asked by this very run counts (a rerun that asked to refresh its extraction).
pub fn cached(
    c: &Connection,
    key: &str,
    pd_seq: i64,
    generation: i64,
    fresh: bool,
) -> Result<Option<Result<Answer, String>>, StoreError> {
    /// (answer, error, the failed run's document and generation)
    type Row = (Option<String>, Option<String>, Option<i64>, Option<i64>);
    let row: Option<Row> = c
        .prepare_cached(
            "SELECT answer, error, pd_seq, generation FROM model_responses WHERE key = ?1",
        )?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let ours = |pd: Option<i64>, g: Option<i64>| pd == Some(pd_seq) && g == Some(generation);
    Ok(match row {
        Some((Some(_), _, pd, g)) if fresh && !ours(pd, g) => None,
        Some((Some(answer), _, _, _)) => serde_json::from_str(&answer).ok().map(Ok),
        Some((None, Some(error), Some(pd), Some(g))) if pd == pd_seq && g == generation => {
            Some(Err(error))
        }
        _ => None,
    })
}

/// Puts a claimed document back in the queue to wait for a model's answer; the claim does not
/// count as an attempt.
pub fn wait(c: &Connection, seq: i64, token: &str, why: &str) -> Result<bool, StoreError> {
    static WAIT: Sql = Sql::new(|d| {
        format!(
            "UPDATE pipeline_docs SET status = 'queued', claim_token = NULL, waiting_for = ?3,
         attempts = {}, updated_at = ?4 WHERE seq = ?1 AND claim_token = ?2",
            sql::greatest(d, "attempts - 1", "0")
        )
    });
    Ok(c.prepare_cached(WAIT.text(c.dialect()))?.execute(params![
        seq,
        token,
        why,
        now_rfc3339()
    ])? == 1)
}

/// Whether a document still waits for an answer (a cancelled run's does not).
pub fn still_waiting(c: &Connection, seq: i64) -> Result<bool, StoreError> {
    Ok(c
        .prepare_cached(
            "SELECT 1 FROM pipeline_docs WHERE seq = ?1 AND status = 'queued' AND waiting_for IS NOT NULL",
        )?
        .query_row([seq], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Says why a waiting document still waits (a model server that is down).
pub fn still_waits(c: &Connection, seq: i64, why: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE pipeline_docs SET waiting_for = ?2 WHERE seq = ?1 AND waiting_for IS NOT NULL AND waiting_for <> ?2",
    )?
    .execute(params![seq, why])?;
    Ok(())
}

/// Keeps what the calls for a document gave, and sends the document back to the queue.
pub fn answered(
    c: &Connection,
    key: &str,
    model: &str,
    pd_seq: i64,
    generation: i64,
    result: Result<&Answer, &str>,
    calls: &[Call],
) -> Result<(), StoreError> {
    let now = now_rfc3339();
    let (answer, error) = match result {
        Ok(a) => (serde_json::to_string(a).ok(), None),
        Err(e) => (None, Some(e)),
    };
    c.prepare_cached(
        "INSERT INTO model_responses(key, model, answer, error, pd_seq, generation, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(key) DO UPDATE SET model = excluded.model, answer = excluded.answer, error = excluded.error,
           pd_seq = excluded.pd_seq, generation = excluded.generation, created_at = excluded.created_at",
    )?
    .execute(params![key, model, answer, error, pd_seq, generation, now])?;
    insert_calls(c, pd_seq, calls, &now)?;
    c.prepare_cached("UPDATE pipeline_docs SET waiting_for = NULL WHERE seq = ?1")?
        .execute([pd_seq])?;
    let (tokens_in, tokens_out, cost) = calls.iter().fold((0i64, 0i64, 0.0), |(i, o, k), x| {
        (i + x.tokens_in as i64, o + x.tokens_out as i64, k + x.cost)
    });
    // PostgreSQL types a parameter in a select list by itself (as text): the casts say. The
    // target's columns are qualified: in PostgreSQL a bare name there is ambiguous.
    static USAGE: Sql = Sql::new(|d| {
        let t = |n, ty| sql::typed(d, n, ty);
        format!(
            "INSERT INTO model_usage(pipeline_id, calls, tokens_in, tokens_out, cost)
         SELECT pipeline_id, {}, {}, {}, {} FROM pipeline_docs WHERE seq = ?1
         ON CONFLICT(pipeline_id) DO UPDATE SET calls = model_usage.calls + excluded.calls,
           tokens_in = model_usage.tokens_in + excluded.tokens_in, tokens_out = model_usage.tokens_out + excluded.tokens_out,
           cost = model_usage.cost + excluded.cost",
            t(2, "bigint"),
            t(3, "bigint"),
            t(4, "bigint"),
            t(5, "float8")
        )
    });
    c.prepare_cached(USAGE.text(c.dialect()))?.execute(params![
        pd_seq,
        calls.len() as i64,
        tokens_in,
        tokens_out,
        cost
    ])?;
    Ok(())
}

/// Records calls that gave nothing to keep (their run was cancelled meanwhile).
pub fn record_calls(c: &Connection, pd_seq: i64, calls: &[Call]) -> Result<(), StoreError> {
    insert_calls(c, pd_seq, calls, &now_rfc3339())
}

fn insert_calls(c: &Connection, pd_seq: i64, calls: &[Call], now: &str) -> Result<(), StoreError> {
    let mut ins = c.prepare_cached(
        "INSERT INTO model_calls(pd_seq, model, outcome, status, tokens_in, tokens_out, ms, cost, error, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for k in calls {
        ins.execute(params![
            pd_seq,
            k.model,
            k.outcome,
            k.status,
            k.tokens_in as i64,
            k.tokens_out as i64,
            k.ms as i64,
            k.cost,
            k.error,
            now
        ])?;
    }
    Ok(())
}

/// A document's calls, oldest first.
pub fn calls(c: &Connection, pd_seq: i64) -> Result<Vec<Call>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT model, outcome, status, tokens_in, tokens_out, ms, cost, error, created_at
             FROM model_calls WHERE pd_seq = ?1 ORDER BY seq",
    )?
    .query_map([pd_seq], |r| {
        Ok(Call {
            model: r.get(0)?,
            outcome: r.get(1)?,
            status: r.get(2)?,
            tokens_in: r.get::<_, i64>(3)? as u64,
            tokens_out: r.get::<_, i64>(4)? as u64,
            ms: r.get::<_, i64>(5)? as u64,
            cost: r.get(6)?,
            error: r.get(7)?,
            created_at: r.get(8)?,
        })
    })?
    .collect::<Result<Vec<_>, _>>()?)
}

/// A run's calls to model servers, tokens and estimated cost (none before its first call).
pub fn usage(c: &Connection, pipeline_id: &str) -> Result<Option<Usage>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT calls, tokens_in, tokens_out, cost FROM model_usage WHERE pipeline_id = ?1",
    )?
    .query_row([pipeline_id], |r| {
        Ok(Usage {
            calls: r.get::<_, i64>(0)? as u64,
            tokens_in: r.get::<_, i64>(1)? as u64,
            tokens_out: r.get::<_, i64>(2)? as u64,
            estimated_cost: r.get(3)?,
        })
    })
    .optional()?)
}

/// What a run's model extraction used.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// From the models' configured prices per 1,000 tokens.
    pub estimated_cost: f64,
}

/// Model use of one kind of run and one model.
#[derive(Debug, Clone, PartialEq)]
pub struct KindUsage {
    pub kind: String,
    pub model: String,
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost: f64,
}

/// The organization's model calls since `since` (RFC 3339), by kind of run and model.
pub fn org_usage(c: &Connection, org_id: &str, since: &str) -> Result<Vec<KindUsage>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT p.kind, mc.model, count(*), CAST(sum(mc.tokens_in) AS BIGINT), CAST(sum(mc.tokens_out) AS BIGINT), sum(mc.cost)
             FROM model_calls mc JOIN pipeline_docs pd ON pd.seq = mc.pd_seq
             JOIN pipelines p ON p.id = pd.pipeline_id
             WHERE p.org_id = ?1 AND mc.created_at >= ?2
             GROUP BY p.kind, mc.model ORDER BY sum(mc.cost) DESC, count(*) DESC",
        )?
        .query_map(params![org_id, since], |r| {
            Ok(KindUsage {
                kind: r.get(0)?,
                model: r.get(1)?,
                calls: r.get(2)?,
                tokens_in: r.get(3)?,
                tokens_out: r.get(4)?,
                cost: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How many runs of each kind the organization started since `since`, most first.
pub fn runs_since(
    c: &Connection,
    org_id: &str,
    since: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT kind, count(*) FROM pipelines WHERE org_id = ?1 AND created_at >= ?2
             GROUP BY kind ORDER BY count(*) DESC, kind",
        )?
        .query_map(params![org_id, since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
