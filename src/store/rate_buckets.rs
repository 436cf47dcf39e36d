//! Rate-limit buckets shared by the nodes on one PostgreSQL database (`rate_take` of
//! `migrations/pg/0019_rate_buckets.sql`): one round trip per request, outside the writers'
//! lock, serialized per bucket by its row lock.

use super::conn::{params, Connection};
use super::StoreError;

/// The buckets after one call: each one's tokens (`None` when its limit is 0), and whether the
/// request passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    pub key_tokens: Option<f64>,
    pub org_tokens: Option<f64>,
    pub allowed: bool,
}

/// Refills the key's and the organization's buckets (a limit of 0 leaves one out) and, with
/// `take`, takes a token from both or from neither.
pub fn take(
    c: &Connection,
    key: (&str, u32),
    org: (&str, u32),
    take: bool,
) -> Result<Taken, StoreError> {
    Ok(c.prepare_cached(
        "SELECT key_tokens, org_tokens, allowed FROM rate_take(?1, ?2, ?3, ?4, ?5)",
    )?
    .query_row(
        params![key.0, i64::from(key.1), org.0, i64::from(org.1), take],
        |r| {
            Ok(Taken {
                key_tokens: r.get(0)?,
                org_tokens: r.get(1)?,
                allowed: r.get(2)?,
            })
        },
    )?)
}

/// Takes the charging function away, as a database that cannot charge would (tests of the
/// fallback).
#[cfg(test)]
pub(crate) fn withdraw(c: &Connection) -> Result<(), StoreError> {
    c.execute_batch("DROP FUNCTION rate_take")?;
    Ok(())
}
