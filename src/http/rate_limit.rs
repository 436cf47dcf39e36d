//! Token buckets: capacity `PER_MINUTE`, refilled at `PER_MINUTE/60` per second, one per API key
//! and, when `--org-rate-limit` is set, one per organization as well; kept by this process, or
//! on PostgreSQL in the database, shared by the nodes on it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

/// What `X-RateLimit-Limit` and `-Remaining` say when no bucket applies: the largest limit a
/// key can be given, which never runs out. Zeros would read as "limit hit" to clients that
/// back off on `remaining == 0`.
pub const UNLIMITED: u64 = u32::MAX as u64;

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, per_minute: u32, now: Instant) {
        let cap = f64::from(per_minute);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * cap / 60.0).min(cap);
        self.last = now;
    }
}

#[derive(Default)]
pub struct Buckets {
    keys: HashMap<String, Bucket>,
    orgs: HashMap<String, Bucket>,
}

impl Buckets {
    /// Refills the buckets that apply and, with `take`, takes a token from each or from none:
    /// each one's tokens after (`None` where the limit is 0), and whether the request passes.
    fn run(&mut self, charge: &Charge<'_>, take: bool) -> ([Option<f64>; 2], bool) {
        let now = Instant::now();
        let mut active: [Option<&mut Bucket>; 2] = [None, None];
        if charge.key_per_minute > 0 {
            active[0] = Some(bucket(
                &mut self.keys,
                charge.key_id,
                charge.key_per_minute,
                now,
            ));
        }
        if charge.org_per_minute > 0 {
            active[1] = Some(bucket(
                &mut self.orgs,
                charge.org_id,
                charge.org_per_minute,
                now,
            ));
        }
        let allowed = active.iter().flatten().all(|b| b.tokens >= 1.0);
        if allowed && take {
            for b in active.iter_mut().flatten() {
                b.tokens -= 1.0;
            }
        }
        (active.map(|b| b.map(|b| b.tokens)), allowed)
    }
}

/// Where the buckets live: in this process (a SQLite file has one node), or in the database,
/// shared by every node on it, so that a client spread over several nodes sees one limit.
pub enum RateLimiter {
    Local(Mutex<Buckets>),
    Shared(SharedBuckets),
}

/// The database's buckets, charged through connections of their own: a request's charge must
/// not wait for a pooled connection behind the reads it precedes. At most `CHARGERS` of them:
/// a node's requests usually share one key, and more charges at once would only queue on its
/// row's lock in the database, each opening a connection first. When the database cannot
/// charge (full, read-only, unreachable, or no connection free within `CHARGE_WAIT`), the node
/// counts in its own buckets meanwhile: a limit must not turn into refusing every request.
pub struct SharedBuckets {
    db: crate::store::Db,
    /// The idle connections, and how many are open in all.
    idle: Mutex<(Vec<crate::store::Connection>, usize)>,
    freed: parking_lot::Condvar,
    fallback: Mutex<Buckets>,
    /// When the fallback was last logged (seconds since the epoch), to log it once a minute.
    warned: std::sync::atomic::AtomicU64,
}

const CHARGERS: usize = 2;
const CHARGE_WAIT: Duration = Duration::from_secs(2);

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::Local(Default::default())
    }
}

/// A charging connection's slot, given back however the charge ends (a panic included).
struct Slot<'a> {
    buckets: &'a SharedBuckets,
    conn: Option<crate::store::Connection>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut idle = self.buckets.idle.lock();
        match self.conn.take() {
            Some(c) => idle.0.push(c),
            None => idle.1 -= 1,
        }
        self.buckets.freed.notify_one();
    }
}

impl SharedBuckets {
    fn slot(&self) -> Option<Slot<'_>> {
        let deadline = Instant::now() + CHARGE_WAIT;
        let mut idle = self.idle.lock();
        loop {
            if let Some(c) = idle.0.pop() {
                return Some(Slot {
                    buckets: self,
                    conn: Some(c),
                });
            }
            if idle.1 < CHARGERS {
                idle.1 += 1;
                return Some(Slot {
                    buckets: self,
                    conn: None,
                });
            }
            if self.freed.wait_until(&mut idle, deadline).timed_out() {
                return None;
            }
        }
    }

    fn charge(
        &self,
        charge: &Charge<'_>,
        take: bool,
    ) -> Result<crate::store::rate_buckets::Taken, String> {
        let mut slot = self
            .slot()
            .ok_or_else(|| format!("no connection free within {CHARGE_WAIT:?}"))?;
        let conn = self.db.kept(&mut slot.conn).map_err(|e| e.to_string())?;
        crate::store::rate_buckets::take(
            conn,
            (charge.key_id, charge.key_per_minute),
            (charge.org_id, charge.org_per_minute),
            take,
        )
        .map_err(|e| e.to_string())
    }

    fn run(&self, charge: &Charge<'_>, take: bool) -> ([Option<f64>; 2], bool) {
        match self.charge(charge, take) {
            Ok(t) => ([t.key_tokens, t.org_tokens], t.allowed),
            Err(e) => {
                let now = unix_now() as u64;
                let last = self.warned.load(std::sync::atomic::Ordering::Relaxed);
                if now >= last + 60
                    && self
                        .warned
                        .compare_exchange(
                            last,
                            now,
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    tracing::warn!(
                        "cannot charge the shared rate limits ({e}); this node counts on its own meanwhile"
                    );
                }
                self.fallback.lock().run(charge, take)
            }
        }
    }
}

/// The buckets one request draws from; a limit of 0 means that bucket does not apply.
pub struct Charge<'a> {
    pub key_id: &'a str,
    pub key_per_minute: u32,
    pub org_id: &'a str,
    pub org_per_minute: u32,
}

#[derive(Debug)]
pub enum Decision {
    Allowed(RateInfo),
    Limited { info: RateInfo, retry_after: u64 },
}

fn bucket<'m>(
    map: &'m mut HashMap<String, Bucket>,
    id: &str,
    per_minute: u32,
    now: Instant,
) -> &'m mut Bucket {
    let b = map.entry(id.to_string()).or_insert(Bucket {
        tokens: f64::from(per_minute),
        last: now,
    });
    b.refill(per_minute, now);
    b
}

impl RateLimiter {
    /// Shared buckets on a writable PostgreSQL database, local ones otherwise.
    pub fn for_db(db: &crate::store::Db) -> Self {
        if db.is_postgres() && !db.read_only() {
            RateLimiter::Shared(SharedBuckets {
                db: db.clone(),
                idle: Mutex::new((Vec::new(), 0)),
                freed: Default::default(),
                fallback: Default::default(),
                warned: Default::default(),
            })
        } else {
            RateLimiter::default()
        }
    }

    /// Takes one token from every bucket that applies, or from none: a request refused by its
    /// organization's bucket must not also drain its key's.
    pub fn check(&self, charge: Charge<'_>) -> Decision {
        self.run(charge, true)
    }

    /// The figures for a request answered before it is charged (a 403): it takes no token.
    pub fn peek(&self, charge: Charge<'_>) -> RateInfo {
        match self.run(charge, false) {
            Decision::Allowed(info) | Decision::Limited { info, .. } => info,
        }
    }

    fn run(&self, charge: Charge<'_>, take: bool) -> Decision {
        if charge.key_per_minute == 0 && charge.org_per_minute == 0 {
            return Decision::Allowed(RateInfo {
                limit: UNLIMITED,
                remaining: UNLIMITED,
                reset: unix_now().floor() as u64,
            });
        }
        let (tokens, allowed) = match self {
            RateLimiter::Local(buckets) => buckets.lock().run(&charge, take),
            RateLimiter::Shared(shared) => shared.run(&charge, take),
        };
        // The key's bucket first, so that it names the headers on a tie.
        let active: Vec<(u32, f64)> = [charge.key_per_minute, charge.org_per_minute]
            .into_iter()
            .zip(tokens)
            .filter_map(|(limit, tokens)| Some((limit, tokens?)))
            .collect();
        verdict(&active, allowed, take)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The answer for buckets holding `active` (limit, tokens left after the call), wherever they
/// live: the tightest names the headers, and `reset` is when every one holds a token again.
fn verdict(active: &[(u32, f64)], allowed: bool, take: bool) -> Decision {
    let unix = unix_now();
    let wait = active
        .iter()
        .map(|(per_minute, tokens)| (1.0 - tokens).max(0.0) * 60.0 / f64::from(*per_minute))
        .fold(0.0, f64::max);
    let (limit, tightest) = active
        .iter()
        .min_by(|a, b| a.1.floor().total_cmp(&b.1.floor()))
        .map(|(l, tokens)| (u64::from(*l), *tokens))
        .unwrap_or((UNLIMITED, f64::from(u32::MAX)));
    let info = RateInfo {
        limit,
        remaining: tightest.floor().max(0.0) as u64,
        reset: if wait > 0.0 {
            (unix + wait).ceil() as u64
        } else {
            unix.floor() as u64
        },
    };
    if allowed || !take {
        Decision::Allowed(info)
    } else {
        Decision::Limited {
            info,
            retry_after: wait.ceil().max(1.0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, per_minute: u32) -> Charge<'_> {
        Charge {
            key_id: id,
            key_per_minute: per_minute,
            org_id: "o",
            org_per_minute: 0,
        }
    }

    #[test]
    fn a_bucket_of_three_refuses_the_fourth_call() {
        let rl = RateLimiter::default();
        for i in 0..3 {
            assert!(
                matches!(rl.check(key("k", 3)), Decision::Allowed(_)),
                "call {i}"
            );
        }
        match rl.check(key("k", 3)) {
            Decision::Limited { retry_after, info } => {
                assert!(retry_after >= 1);
                assert_eq!(info.remaining, 0);
            }
            d => panic!("fourth call should be limited: {d:?}"),
        }
        assert!(matches!(rl.check(key("other", 3)), Decision::Allowed(_)));
    }

    #[test]
    fn no_limit_answers_unlimited_figures_that_never_run_out() {
        let rl = RateLimiter::default();
        for _ in 0..10 {
            match rl.check(key("k", 0)) {
                Decision::Allowed(info) => {
                    assert_eq!((info.limit, info.remaining), (UNLIMITED, UNLIMITED))
                }
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn reset_is_when_the_next_call_passes_and_agrees_with_retry_after() {
        let rl = RateLimiter::default();
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        // 60 per minute, one token per second: with tokens left, the next call passes now.
        match rl.check(key("k", 60)) {
            Decision::Allowed(info) => assert!(info.reset <= now()),
            d => panic!("{d:?}"),
        }
        let rl = RateLimiter::default();
        assert!(matches!(rl.check(key("k", 1)), Decision::Allowed(_)));
        match rl.check(key("k", 1)) {
            Decision::Limited { info, retry_after } => {
                assert!((59..=60).contains(&retry_after), "{retry_after}");
                let t = now();
                assert!(info.reset >= t + retry_after - 1 && info.reset <= t + retry_after + 1);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn an_organization_bucket_is_shared_by_its_keys_and_refusals_cost_nothing() {
        let rl = RateLimiter::default();
        let charge = |k| Charge {
            key_id: k,
            key_per_minute: 2,
            org_id: "o",
            org_per_minute: 3,
        };
        assert!(matches!(rl.check(charge("a")), Decision::Allowed(_)));
        assert!(matches!(rl.check(charge("a")), Decision::Allowed(_)));
        match rl.check(charge("b")) {
            // b's own bucket has 1 left after this call, the organization's 0: the tighter names
            // the headers.
            Decision::Allowed(info) => assert_eq!((info.limit, info.remaining), (3, 0)),
            d => panic!("{d:?}"),
        }
        assert!(matches!(rl.check(charge("b")), Decision::Limited { .. }));
        // Another organization is unaffected, and b's refused call did not cost it a token.
        let other = Charge {
            key_id: "b",
            key_per_minute: 2,
            org_id: "p",
            org_per_minute: 3,
        };
        match rl.check(other) {
            Decision::Allowed(info) => assert_eq!((info.limit, info.remaining), (2, 0)),
            d => panic!("{d:?}"),
        }
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::store::{Db, OpenOptions};

    #[test]
    fn a_node_counts_on_its_own_while_the_database_cannot_charge() {
        if crate::store::conn::testing::pg_url().is_none() {
            return;
        }
        let store = crate::testing::TestDb::fresh_postgres();
        let db = Db::open(&store.db, OpenOptions::default()).unwrap();
        let rl = RateLimiter::for_db(&db);
        assert!(matches!(rl, RateLimiter::Shared(_)));
        let charge = || Charge {
            key_id: "k",
            key_per_minute: 2,
            org_id: "o",
            org_per_minute: 0,
        };
        match rl.check(charge()) {
            Decision::Allowed(info) => assert_eq!(info.remaining, 1),
            d => panic!("{d:?}"),
        }
        crate::store::rate_buckets::withdraw(&db.conn().unwrap()).unwrap();
        // The node's own buckets answer, with the same rule, instead of an error.
        assert!(matches!(rl.check(charge()), Decision::Allowed(_)));
        assert!(matches!(rl.check(charge()), Decision::Allowed(_)));
        assert!(matches!(rl.check(charge()), Decision::Limited { .. }));
        assert_eq!(rl.peek(charge()).remaining, 0);
    }
}
