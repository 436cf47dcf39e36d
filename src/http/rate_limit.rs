//! Token buckets: capacity `PER_MINUTE`, refilled at `PER_MINUTE/60` per second, one per API key
//! and, when `--org-rate-limit` is set, one per organization as well.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
struct Buckets {
    keys: HashMap<String, Bucket>,
    orgs: HashMap<String, Bucket>,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
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
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut guard = self.buckets.lock();
        let Buckets { keys, orgs } = &mut *guard;
        // The key's bucket first, so that it names the headers on a tie.
        let mut active: Vec<(u32, &mut Bucket)> = Vec::with_capacity(2);
        if charge.key_per_minute > 0 {
            let b = bucket(keys, charge.key_id, charge.key_per_minute, now);
            active.push((charge.key_per_minute, b));
        }
        if charge.org_per_minute > 0 {
            let b = bucket(orgs, charge.org_id, charge.org_per_minute, now);
            active.push((charge.org_per_minute, b));
        }
        if active.is_empty() {
            return Decision::Allowed(RateInfo {
                limit: UNLIMITED,
                remaining: UNLIMITED,
                reset: unix.floor() as u64,
            });
        }
        let allowed = active.iter().all(|(_, b)| b.tokens >= 1.0);
        if allowed && take {
            for (_, b) in active.iter_mut() {
                b.tokens -= 1.0;
            }
        }
        // Seconds until every bucket holds a token again, i.e. until the next request passes.
        let wait = active
            .iter()
            .map(|(per_minute, b)| (1.0 - b.tokens).max(0.0) * 60.0 / f64::from(*per_minute))
            .fold(0.0, f64::max);
        let (limit, tightest) = active
            .iter()
            .min_by(|a, b| a.1.tokens.floor().total_cmp(&b.1.tokens.floor()))
            .map(|(l, b)| (u64::from(*l), b.tokens))
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
