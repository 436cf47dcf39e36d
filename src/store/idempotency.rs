//! Stored responses of POSTs made with an `Idempotency-Key`.

use super::conn::{params, Connection, OptionalExtension};
use super::StoreError;
use crate::domain::ids::{now_ms, now_rfc3339};

pub const TTL_MS: i64 = 24 * 3600 * 1000;
pub const IN_FLIGHT_MS: i64 = 60 * 1000;

pub enum Claim {
    /// No usable record: a running marker was written; do the work.
    Proceed,
    /// A completed response with the same fingerprint.
    Replay {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Same key, other request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// A stored row: fingerprint, state, status, content type, body, start time.
type StoredRow = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
);

/// Looks the key up and, when it is free, marks it running for `node`. A marker of a node that
/// is no longer registered (it stopped, died or was reaped: its request will never finish)
/// counts as absent, whichever node the client asks now.
pub fn claim(
    c: &Connection,
    org_id: &str,
    key: &str,
    fingerprint: &str,
    node: &str,
) -> Result<Claim, StoreError> {
    let now = now_ms();
    let row: Option<(StoredRow, bool)> = c
        .query_row(
            "SELECT fingerprint, state, response_status, content_type, body, started_ms,
                    CASE WHEN node IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = idempotency_keys.node)
                         THEN 1 ELSE 0 END
             FROM idempotency_keys WHERE org_id = ?1 AND key = ?2",
            params![org_id, key],
            |r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                    r.get::<_, i64>(6)? == 1,
                ))
            },
        )
        .optional()?;
    if let Some(((fp, state, status, ct, body, started), gone)) = row {
        let expired = now - started > TTL_MS;
        let stale_marker = state == "running" && (now - started > IN_FLIGHT_MS || gone);
        if !expired && !stale_marker {
            if fp != fingerprint {
                return Ok(Claim::Mismatch);
            }
            if state == "running" {
                return Ok(Claim::InFlight);
            }
            return Ok(Claim::Replay {
                status: status.unwrap_or(200) as u16,
                content_type: ct.unwrap_or_else(|| "application/json".into()),
                body: body.unwrap_or_default(),
            });
        }
    }
    c.execute(
        "INSERT INTO idempotency_keys(org_id, key, fingerprint, state, started_at, started_ms, node)
         VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)
         ON CONFLICT(org_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'running',
           response_status = NULL, content_type = NULL, body = NULL,
           started_at = excluded.started_at, started_ms = excluded.started_ms, node = excluded.node",
        params![org_id, key, fingerprint, now_rfc3339(), now, node],
    )?;
    Ok(Claim::Proceed)
}

/// Stores the response; called inside the transaction of the request's effect.
pub fn complete(
    c: &Connection,
    org_id: &str,
    key: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE idempotency_keys SET state = 'complete', response_status = ?3, content_type = ?4, body = ?5
         WHERE org_id = ?1 AND key = ?2",
        params![org_id, key, status as i64, content_type, body],
    )?;
    Ok(())
}

/// Forgets a running marker after a failed attempt, so a retry does the work.
pub fn release(c: &Connection, org_id: &str, key: &str) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM idempotency_keys WHERE org_id = ?1 AND key = ?2 AND state = 'running'",
        params![org_id, key],
    )?;
    Ok(())
}

pub fn purge_expired(c: &Connection) -> Result<usize, StoreError> {
    Ok(c.execute(
        "DELETE FROM idempotency_keys WHERE started_ms < ?1",
        [now_ms() - TTL_MS],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, OpenOptions};

    #[test]
    fn in_flight_markers_conflict_until_stale_or_of_a_node_that_is_gone() {
        let db = Db::open(":memory:", OpenOptions::default()).unwrap();
        let c = db.conn().unwrap();
        let start = crate::store::nodes::register(&c, "a", 60_000).unwrap();
        let start = start.as_str();
        let other = crate::store::nodes::register(&c, "b", 60_000).unwrap();
        assert!(matches!(
            claim(&c, "o", "k", "fp", start).unwrap(),
            Claim::Proceed
        ));
        assert!(matches!(
            claim(&c, "o", "k", "fp", start).unwrap(),
            Claim::InFlight
        ));
        assert!(matches!(
            claim(&c, "o", "k", "other", start).unwrap(),
            Claim::Mismatch
        ));
        // Another live node sees the marker in flight; once its node is gone, it is absent.
        assert!(matches!(
            claim(&c, "o", "k", "fp", &other).unwrap(),
            Claim::InFlight
        ));
        crate::store::nodes::deregister(&c, start).unwrap();
        assert!(matches!(
            claim(&c, "o", "k", "fp", &other).unwrap(),
            Claim::Proceed
        ));
        let start = other.as_str();
        complete(&c, "o", "k", 201, "application/json", b"{}").unwrap();
        assert!(matches!(
            claim(&c, "o", "k", "fp", start).unwrap(),
            Claim::Replay { status: 201, .. }
        ));
        // Keys are per organization.
        assert!(matches!(
            claim(&c, "o2", "k", "other", start).unwrap(),
            Claim::Proceed
        ));
        // A marker older than 60 s counts as absent.
        c.execute(
            "UPDATE idempotency_keys SET started_ms = started_ms - 61000 WHERE org_id = 'o2'",
            [],
        )
        .unwrap();
        assert!(matches!(
            claim(&c, "o2", "k", "third", start).unwrap(),
            Claim::Proceed
        ));
        release(&c, "o2", "k").unwrap();
        assert!(matches!(
            claim(&c, "o2", "k", "fourth", start).unwrap(),
            Claim::Proceed
        ));
    }
}
