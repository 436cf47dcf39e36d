//! Webhooks, their outbox of events and the deliveries of each event to each endpoint.

use super::conn::{params, DbResult, OptionalExtension, Row};
use super::sql::{self, Elem, Sql};
use super::{Connection, StoreError};
use crate::domain::ids::{format_ms, format_time, new_id, now_ms, now_rfc3339};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub seq: i64,
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<String>,
    pub failing_since_ms: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLS: &str = "seq, id, org_id, url, events, description, active, secret, previous_secret,
    previous_secret_until, failing_since_ms, disabled_reason, created_at, updated_at";

fn row(r: &Row) -> DbResult<WebhookRow> {
    Ok(WebhookRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        org_id: r.get(2)?,
        url: r.get(3)?,
        events: super::json(r, 4, "webhooks")?,
        description: r.get(5)?,
        active: r.get(6)?,
        secret: r.get(7)?,
        previous_secret: r.get(8)?,
        previous_secret_until: r.get(9)?,
        failing_since_ms: r.get(10)?,
        disabled_reason: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

pub struct NewWebhook<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub description: Option<&'a str>,
    pub active: bool,
    pub secret: &'a str,
}

pub fn create(c: &Connection, org_id: &str, w: NewWebhook) -> Result<WebhookRow, StoreError> {
    let id = new_id();
    let now = now_rfc3339();
    c.execute(
        "INSERT INTO webhooks (id, org_id, url, events, description, active, secret, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            id,
            org_id,
            w.url,
            serde_json::to_string(w.events).unwrap_or_else(|_| "[]".into()),
            w.description,
            w.active,
            w.secret,
            now
        ],
    )?;
    get(c, org_id, &id)?.ok_or_else(|| StoreError::Refused("webhook vanished".into()))
}

pub fn get(c: &Connection, org_id: &str, id: &str) -> Result<Option<WebhookRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM webhooks WHERE org_id = ?1 AND id = ?2");
    Ok(c.prepare_cached(&sql)?
        .query_row(params![org_id, id], row)
        .optional()?)
}

pub fn list(
    c: &Connection,
    org_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<WebhookRow>, i64), StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM webhooks WHERE org_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(params![org_id, before.unwrap_or(i64::MAX), limit], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM webhooks WHERE org_id = ?1",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// Replaces what a PATCH may change. Turning an endpoint on clears why it was turned off.
pub fn update(
    c: &Connection,
    seq: i64,
    url: &str,
    events: &[String],
    description: Option<&str>,
    active: bool,
) -> Result<(), StoreError> {
    // PostgreSQL would type `?5` twice (the column's bigint, the literal's integer): one cast.
    static UPDATE: Sql = Sql::new(|d| {
        let on = sql::typed(d, 5, "bigint");
        format!(
            "UPDATE webhooks SET url = ?2, events = ?3, description = ?4, active = {on}, updated_at = ?6,
             disabled_reason = CASE WHEN {on} = 1 THEN NULL ELSE disabled_reason END,
             failing_since_ms = CASE WHEN ({on} = 1 AND active = 0) OR url <> ?2 THEN NULL ELSE failing_since_ms END
         WHERE seq = ?1"
        )
    });
    c.execute(
        UPDATE.text(c.dialect()),
        params![
            seq,
            url,
            serde_json::to_string(events).unwrap_or_else(|_| "[]".into()),
            description,
            active,
            now_rfc3339()
        ],
    )?;
    Ok(())
}

/// A new secret; the old one keeps signing until `previous_until`.
pub fn rotate(
    c: &Connection,
    seq: i64,
    secret: &str,
    previous_until: Option<&str>,
) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "UPDATE webhooks SET previous_secret = CASE WHEN {} THEN NULL ELSE secret END,
             previous_secret_until = ?3, secret = ?2, updated_at = ?4 WHERE seq = ?1",
            sql::is_null(c.dialect(), 3, "text")
        ),
        params![seq, secret, previous_until, now_rfc3339()],
    )?;
    Ok(())
}

/// The endpoint and its delivery history go; the events stay for other endpoints until purged.
pub fn delete(c: &Connection, seq: i64) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM webhook_deliveries WHERE webhook_seq = ?1",
        [seq],
    )?;
    c.execute("DELETE FROM webhooks WHERE seq = ?1", [seq])?;
    Ok(())
}

/// The active endpoints of the organization that subscribe to the event. When there are none,
/// the event is not written, nor its data gathered.
pub fn subscribers(c: &Connection, org_id: &str, event: &str) -> Result<Vec<i64>, StoreError> {
    static SUBSCRIBERS: Sql = Sql::new(|d| {
        format!(
            "SELECT w.seq FROM webhooks w WHERE w.org_id = ?1 AND w.active = 1
             AND EXISTS (SELECT 1 FROM {} WHERE value IN (?2, '*'))",
            sql::json_elems(d, "w.events")
        )
    });
    Ok(c.prepare_cached(SUBSCRIBERS.text(c.dialect()))?
        .query_map(params![org_id, event], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Writes an event into the outbox with a delivery for each of `hooks` (its `subscribers`),
/// inside the caller's transaction: the change and its event commit or roll back together.
/// Answers how many deliveries were queued.
pub fn enqueue(
    c: &Connection,
    org_id: &str,
    event: &str,
    hooks: &[i64],
    data: &Value,
) -> Result<usize, StoreError> {
    if hooks.is_empty() {
        return Ok(0);
    }
    let event_seq = insert_event(c, org_id, event, data)?;
    let now = now_rfc3339();
    for w in hooks {
        insert_delivery(c, *w, event_seq, &now, None)?;
    }
    Ok(hooks.len())
}

/// An event for one endpoint only (`POST /v1/webhooks/{id}/test`): its delivery's id.
pub fn enqueue_to(
    c: &Connection,
    hook: &WebhookRow,
    event: &str,
    data: &Value,
) -> Result<String, StoreError> {
    let event_seq = insert_event(c, &hook.org_id, event, data)?;
    insert_delivery(c, hook.seq, event_seq, &now_rfc3339(), None)
}

fn insert_event(
    c: &Connection,
    org_id: &str,
    event: &str,
    data: &Value,
) -> Result<i64, StoreError> {
    let now = chrono::Utc::now();
    Ok(c.prepare_cached(
        "INSERT INTO webhook_events (id, org_id, event, data, created_at, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
    )?
    .query_row(
        params![
            format!("evt_{}", new_id().replace('-', "")),
            org_id,
            event,
            data.to_string(),
            format_time(now),
            now.timestamp_millis()
        ],
        |r| r.get(0),
    )?)
}

fn insert_delivery(
    c: &Connection,
    webhook_seq: i64,
    event_seq: i64,
    now: &str,
    redelivery_of: Option<&str>,
) -> Result<String, StoreError> {
    let id = format!("dlv_{}", new_id().replace('-', ""));
    c.prepare_cached(
        "INSERT INTO webhook_deliveries (id, webhook_seq, event_seq, next_ms, redelivery_of, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![id, webhook_seq, event_seq, now_ms(), redelivery_of, now])?;
    Ok(id)
}

/// One delivery as its endpoint's history shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub next_ms: i64,
    pub response_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub redelivery_of: Option<String>,
    pub data: Value,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

const DELIVERY_COLS: &str = "d.seq, d.id, e.id, e.event, d.status, d.attempts, d.next_ms,
    d.response_code, d.latency_ms, d.error, d.response_body, d.redelivery_of, e.data,
    d.created_at, d.updated_at, d.delivered_at";

fn delivery(r: &Row) -> DbResult<DeliveryRow> {
    Ok(DeliveryRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        event_id: r.get(2)?,
        event: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_ms: r.get(6)?,
        response_code: r.get(7)?,
        latency_ms: r.get(8)?,
        error: r.get(9)?,
        response_body: r.get(10)?,
        redelivery_of: r.get(11)?,
        data: super::json(r, 12, "webhook_events")?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        delivered_at: r.get(15)?,
    })
}

/// An endpoint's deliveries, newest first, optionally of one status.
pub fn deliveries(
    c: &Connection,
    webhook_seq: i64,
    status: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<DeliveryRow>, i64), StoreError> {
    let any_status = sql::is_null(c.dialect(), 2, "text");
    let sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq
         WHERE d.webhook_seq = ?1 AND ({any_status} OR d.status = ?2) AND d.seq < ?3
         ORDER BY d.seq DESC LIMIT ?4"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![webhook_seq, status, before.unwrap_or(i64::MAX), limit],
            delivery,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_seq = ?1 AND ({any_status} OR status = ?2)"
        ))?
        .query_row(params![webhook_seq, status], |r| r.get(0))?;
    Ok((rows, total))
}

pub fn delivery_of(
    c: &Connection,
    webhook_seq: i64,
    id: &str,
) -> Result<Option<DeliveryRow>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLS} FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq
         WHERE d.webhook_seq = ?1 AND d.id = ?2"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(params![webhook_seq, id], delivery)
        .optional()?)
}

/// The same event again, as a new delivery (its own id and attempts) due now.
pub fn redeliver(c: &Connection, webhook_seq: i64, of: &DeliveryRow) -> Result<String, StoreError> {
    let event_seq: i64 = c.query_row(
        "SELECT event_seq FROM webhook_deliveries WHERE seq = ?1",
        [of.seq],
        |r| r.get(0),
    )?;
    insert_delivery(c, webhook_seq, event_seq, &now_rfc3339(), Some(&of.id))
}

/// An attempt to make: the delivery, its event and where it goes.
#[derive(Debug, Clone)]
pub struct Due {
    pub seq: i64,
    pub id: String,
    pub attempts: i64,
    pub event_id: String,
    pub event: String,
    pub data: Value,
    pub webhook_seq: i64,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<String>,
}

/// Leases up to `limit` deliveries due by `now_ms` of active endpoints, oldest first, leaving out
/// the endpoints in `busy` (at their concurrency limit).
pub fn claim(
    c: &Connection,
    node: &str,
    now_ms: i64,
    limit: usize,
    busy: &[i64],
) -> Result<Vec<Due>, StoreError> {
    let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
    static DUE: Sql = Sql::new(|d| {
        format!(
            "SELECT d.seq, d.id, d.attempts, e.id, e.event, e.data, w.seq, w.url, w.secret,
                    w.previous_secret, w.previous_secret_until
             FROM webhook_deliveries d
             JOIN webhook_events e ON e.seq = d.event_seq
             JOIN webhooks w ON w.seq = d.webhook_seq
             WHERE d.status = 'pending' AND d.next_ms <= ?1 AND d.leased = 0 AND w.active = 1
               AND w.seq NOT IN ({})
             ORDER BY d.next_ms, d.seq LIMIT ?3{}",
            sql::in_list(d, 2, Elem::Int),
            sql::skip_locked_of(d, "d")
        )
    });
    let due = c
        .prepare_cached(DUE.text(c.dialect()))?
        .query_map(params![now_ms, busy, limit as i64], |r| {
            Ok(Due {
                seq: r.get(0)?,
                id: r.get(1)?,
                attempts: r.get(2)?,
                event_id: r.get(3)?,
                event: r.get(4)?,
                data: super::json(r, 5, "webhook_events")?,
                webhook_seq: r.get(6)?,
                url: r.get(7)?,
                secret: r.get(8)?,
                previous_secret: r.get(9)?,
                previous_secret_until: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lease = c.prepare_cached(
        "UPDATE webhook_deliveries SET leased = 1, leased_by = ?2 WHERE seq = ?1",
    )?;
    for d in &due {
        lease.execute(params![d.seq, node])?;
    }
    Ok(due)
}

/// When the next delivery `claim` could take is due (pending, not leased, of an active endpoint
/// not in `busy`), if any.
pub fn next_due(c: &Connection, busy: &[i64]) -> Result<Option<i64>, StoreError> {
    let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
    static NEXT_DUE: Sql = Sql::new(|d| {
        format!(
            "SELECT min(d.next_ms) FROM webhook_deliveries d JOIN webhooks w ON w.seq = d.webhook_seq
         WHERE d.status = 'pending' AND d.leased = 0 AND w.active = 1
           AND w.seq NOT IN ({})",
            sql::in_list(d, 1, Elem::Int)
        )
    });
    Ok(c.prepare_cached(NEXT_DUE.text(c.dialect()))?
        .query_row([busy], |r| r.get(0))?)
}

/// Leases of nodes that are gone (reaped, or stopped): every attempt they had in flight is due
/// again, under the same delivery id.
pub fn release_orphan_leases(c: &Connection) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE webhook_deliveries SET leased = 0, leased_by = NULL
         WHERE leased = 1 AND status = 'pending'
           AND (leased_by IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = webhook_deliveries.leased_by))",
        [],
    )?)
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_seq: i64,
    pub webhook_seq: i64,
    pub at_ms: i64,
    pub response_code: Option<i64>,
    pub latency_ms: i64,
    /// `None` when the receiver answered 2xx.
    pub error: Option<String>,
    pub response_body: Option<String>,
    /// When to try again; `None` after the last attempt of the schedule.
    pub retry_at_ms: Option<i64>,
}

/// Records an attempt made under `node`'s lease. A success clears the endpoint's failing
/// streak; a failure starts it, and turns the endpoint off once it has lasted
/// `disable_after_ms`. Answers the reason when this attempt turned it off. An attempt whose
/// lease was taken back (its node was reaped) records nothing: the delivery is another's now.
pub fn record(
    c: &Connection,
    node: &str,
    a: &Attempt,
    disable_after_ms: i64,
) -> Result<Option<String>, StoreError> {
    let now = format_ms(a.at_ms);
    if a.error.is_none() {
        let n = c.prepare_cached(
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, leased = 0,
                 response_code = ?2, latency_ms = ?3, error = NULL, response_body = NULL,
                 updated_at = ?4, delivered_at = ?4, leased_by = NULL WHERE seq = ?1 AND leased = 1 AND leased_by = ?5",
        )?
        .execute(params![a.delivery_seq, a.response_code, a.latency_ms, now, node])?;
        if n == 0 {
            return Ok(None);
        }
        c.prepare_cached("UPDATE webhooks SET failing_since_ms = NULL WHERE seq = ?1")?
            .execute([a.webhook_seq])?;
        return Ok(None);
    }
    static FAILED: Sql = Sql::new(|d| {
        format!(
            "UPDATE webhook_deliveries SET status = CASE WHEN {} THEN 'failed' ELSE 'pending' END,
             attempts = attempts + 1, leased = 0, response_code = ?2, latency_ms = ?3, error = ?4,
             response_body = ?5, next_ms = coalesce(?6, next_ms), updated_at = ?7, leased_by = NULL
             WHERE seq = ?1 AND leased = 1 AND leased_by = ?8",
            sql::is_null(d, 6, "bigint")
        )
    });
    let n = c
        .prepare_cached(FAILED.text(c.dialect()))?
        .execute(params![
            a.delivery_seq,
            a.response_code,
            a.latency_ms,
            a.error,
            a.response_body,
            a.retry_at_ms,
            now,
            node
        ])?;
    if n == 0 {
        return Ok(None);
    }
    c.prepare_cached(
        "UPDATE webhooks SET failing_since_ms = coalesce(failing_since_ms, ?2) WHERE seq = ?1",
    )?
    .execute(params![a.webhook_seq, a.at_ms])?;
    let since: Option<i64> = c
        .prepare_cached("SELECT failing_since_ms FROM webhooks WHERE seq = ?1 AND active = 1")?
        .query_row([a.webhook_seq], |r| r.get(0))
        .optional()?
        .flatten();
    match since {
        Some(s) if a.at_ms - s >= disable_after_ms => {
            let since_text = format_ms(s);
            let reason = format!(
                "every delivery failed since {since_text}; the last: {}",
                a.error.as_deref().unwrap_or("")
            );
            c.prepare_cached(
                "UPDATE webhooks SET active = 0, disabled_reason = ?2, updated_at = ?3 WHERE seq = ?1",
            )?
            .execute(params![a.webhook_seq, reason, now])?;
            Ok(Some(reason))
        }
        _ => Ok(None),
    }
}

/// Drops events older than `before_ms` with their deliveries; answers how many events went.
pub fn purge(c: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    c.execute(
        "DELETE FROM webhook_deliveries WHERE event_seq IN
             (SELECT seq FROM webhook_events WHERE created_ms < ?1)",
        [before_ms],
    )?;
    Ok(c.execute(
        "DELETE FROM webhook_events WHERE created_ms < ?1",
        [before_ms],
    )?)
}

/// Deliveries by status, for the metrics.
pub fn counts(c: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(
        c.prepare_cached("SELECT status, count(*) FROM webhook_deliveries GROUP BY 1")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, OpenOptions};
    use serde_json::json;

    fn setup() -> (Db, String) {
        let db = Db::open(":memory:", OpenOptions::default()).unwrap();
        let org = db
            .write(false, |tx| crate::store::orgs::create(tx, "acme"))
            .unwrap()
            .unwrap();
        (db, org.id)
    }

    fn hook(db: &Db, org: &str, events: &[&str]) -> WebhookRow {
        let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        db.write(false, |tx| {
            create(
                tx,
                org,
                NewWebhook {
                    url: "http://127.0.0.1:9/",
                    events: &events,
                    description: None,
                    active: true,
                    secret: "whsec_x",
                },
            )
        })
        .unwrap()
    }

    /// An event to whoever subscribes, as the engine sends one.
    fn send(c: &Connection, org: &str, event: &str, data: &Value) -> Result<usize, StoreError> {
        let hooks = subscribers(c, org, event)?;
        enqueue(c, org, event, &hooks, data)
    }

    fn rows(db: &Db, table: &str) -> i64 {
        db.read(|c| {
            Ok::<i64, StoreError>(c.query_row(
                &format!("SELECT count(*) FROM {table}"),
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap()
    }

    #[test]
    fn an_event_commits_and_rolls_back_with_its_change_and_is_written_only_for_subscribers() {
        let (db, org) = setup();
        // Nobody subscribes: nothing is written.
        db.write(false, |tx| send(tx, &org, "pipeline.completed", &json!({})))
            .unwrap();
        assert_eq!(rows(&db, "webhook_events"), 0);
        let a = hook(&db, &org, &["pipeline.completed"]);
        hook(&db, &org, &["*"]);
        hook(&db, &org, &["review.decision_made"]);
        // A transaction that fails after writing its event leaves neither behind.
        let failed: Result<(), StoreError> = db.write(false, |tx| {
            send(tx, &org, "pipeline.completed", &json!({"n": 1}))?;
            Err(StoreError::Refused("the change failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            (rows(&db, "webhook_events"), rows(&db, "webhook_deliveries")),
            (0, 0)
        );
        let n = db
            .write(false, |tx| {
                send(tx, &org, "pipeline.completed", &json!({"n": 2}))
            })
            .unwrap();
        assert_eq!(n, 2, "the subscriber and the catch-all");
        assert_eq!(
            (rows(&db, "webhook_events"), rows(&db, "webhook_deliveries")),
            (1, 2)
        );
        // An inactive endpoint gets nothing new.
        db.write(false, |tx| {
            update(tx, a.seq, &a.url, &a.events, None, false)
        })
        .unwrap();
        let n = db
            .write(false, |tx| send(tx, &org, "pipeline.completed", &json!({})))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn claims_lease_skip_busy_endpoints_and_outcomes_retry_fail_and_turn_off() {
        let (db, org) = setup();
        let a = hook(&db, &org, &["*"]);
        let b = hook(&db, &org, &["*"]);
        for i in 0..3 {
            db.write(false, |tx| {
                send(tx, &org, "rerun.enqueued", &json!({"i": i}))
            })
            .unwrap();
        }
        let now = now_ms();
        let me = db
            .write(false, |tx| crate::store::nodes::register(tx, "n", 60_000))
            .unwrap();
        let me = me.as_str();
        let due = db
            .write(false, |tx| claim(tx, me, now, 10, &[b.seq]))
            .unwrap();
        assert_eq!(due.len(), 3, "only a's: b is busy");
        assert!(due.iter().all(|d| d.webhook_seq == a.seq));
        let again = db
            .write(false, |tx| claim(tx, me, now, 10, &[b.seq]))
            .unwrap();
        assert!(again.is_empty(), "leased deliveries are not claimed twice");
        // Failed with a retry due later: pending, not due now; the endpoint is failing.
        let fail = |d: &Due, retry: Option<i64>, at: i64| Attempt {
            delivery_seq: d.seq,
            webhook_seq: d.webhook_seq,
            at_ms: at,
            response_code: Some(500),
            latency_ms: 3,
            error: Some("HTTP 500".into()),
            response_body: Some("boom".into()),
            retry_at_ms: retry,
        };
        let off = db
            .write(false, |tx| {
                record(tx, me, &fail(&due[0], Some(now + 60_000), now), 1000)
            })
            .unwrap();
        assert!(off.is_none());
        // An attempt under a lease that was taken back records nothing.
        let late = fail(&due[1], None, now);
        assert!(db
            .write(false, |tx| record(tx, "gone/1", &late, 0))
            .unwrap()
            .is_none());
        let d1 = db
            .read(|c| delivery_of(c, a.seq, &due[1].id))
            .unwrap()
            .unwrap();
        assert_eq!((d1.status.as_str(), d1.attempts), ("pending", 0));
        let d0 = db
            .read(|c| delivery_of(c, a.seq, &due[0].id))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d0.status.as_str(), d0.attempts, d0.next_ms),
            ("pending", 1, now + 60_000)
        );
        assert!(db
            .write(false, |tx| claim(tx, me, now, 10, &[b.seq]))
            .unwrap()
            .is_empty());
        // The schedule spent: failed, with the answer kept.
        db.write(false, |tx| {
            record(tx, me, &fail(&due[1], None, now + 10), 1000)
        })
        .unwrap();
        let d1 = db
            .read(|c| delivery_of(c, a.seq, &due[1].id))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d1.status.as_str(), d1.response_body.as_deref()),
            ("failed", Some("boom"))
        );
        // Failing for longer than allowed: turned off with why; its deliveries wait.
        let why = db
            .write(false, |tx| {
                record(tx, me, &fail(&due[2], Some(now), now + 2000), 1000)
            })
            .unwrap();
        assert!(why.unwrap().contains("HTTP 500"));
        let w = db.read(|c| get(c, &org, &a.id)).unwrap().unwrap();
        assert!(!w.active && w.disabled_reason.is_some());
        assert!(db
            .write(false, |tx| claim(tx, me, now + 5000, 10, &[b.seq]))
            .unwrap()
            .is_empty());
        // What a live node leased stays leased; once it is gone, it is released: b's
        // deliveries, once not busy, are claimed.
        let bs = db.write(false, |tx| claim(tx, me, now, 10, &[])).unwrap();
        assert_eq!(bs.len(), 3);
        assert_eq!(db.write(false, |tx| release_orphan_leases(tx)).unwrap(), 0);
        db.write(false, |tx| crate::store::nodes::deregister(tx, me))
            .unwrap();
        assert_eq!(db.write(false, |tx| release_orphan_leases(tx)).unwrap(), 3);
        assert_eq!(
            db.write(false, |tx| claim(tx, me, now, 10, &[]))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn old_events_are_purged_with_their_deliveries() {
        let (db, org) = setup();
        hook(&db, &org, &["*"]);
        db.write(false, |tx| send(tx, &org, "pipeline.failed", &json!({})))
            .unwrap();
        assert_eq!(
            db.write(false, |tx| purge(tx, now_ms() - 60_000)).unwrap(),
            0
        );
        assert_eq!(db.write(false, |tx| purge(tx, now_ms() + 1)).unwrap(), 1);
        assert_eq!(
            (rows(&db, "webhook_events"), rows(&db, "webhook_deliveries")),
            (0, 0)
        );
    }
}
