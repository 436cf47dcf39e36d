//! Per-key token buckets: capacity `PER_MINUTE`, refilled at `PER_MINUTE/60` per second.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

pub enum Decision {
    Allowed(RateInfo),
    Limited { info: RateInfo, retry_after: u64 },
}

impl RateLimiter {
    /// Takes one token from the key's bucket; `None` when limiting is off (`per_minute == 0`).
    pub fn check(&self, key_id: &str, per_minute: u32) -> Option<Decision> {
        if per_minute == 0 {
            return None;
        }
        let cap = f64::from(per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut map = self.buckets.lock();
        let b = map.entry(key_id.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(cap);
        b.last = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let info = RateInfo {
            limit: u64::from(per_minute),
            remaining: b.tokens.floor().max(0.0) as u64,
            reset: (unix + (cap - b.tokens) / rate).ceil() as u64,
        };
        Some(if allowed {
            Decision::Allowed(info)
        } else {
            let retry_after = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
            Decision::Limited { info, retry_after }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_of_three_refuses_the_fourth_call() {
        let rl = RateLimiter::default();
        for i in 0..3 {
            assert!(
                matches!(rl.check("k", 3), Some(Decision::Allowed(_))),
                "call {i}"
            );
        }
        match rl.check("k", 3) {
            Some(Decision::Limited { retry_after, info }) => {
                assert!(retry_after >= 1);
                assert_eq!(info.remaining, 0);
            }
            _ => panic!("fourth call should be limited"),
        }
        assert!(matches!(rl.check("other", 3), Some(Decision::Allowed(_))));
        assert!(rl.check("k", 0).is_none());
    }
}
