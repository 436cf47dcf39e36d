//! Bearer keys: a cached lookup by SHA-256, scopes, expiry, revocation, then the rate limit.

use super::error::ApiError;
use super::rate_limit::{Charge, Decision, RateInfo};
use super::AppState;
use crate::domain::keys::{hash_key, is_well_formed, Scope};
use crate::store::keys::{find_by_hash, keys_epoch, KeyRecord};
use crate::store::Connection;
use crate::store::StoreError;
use actix_web::{HttpMessage, HttpRequest};
use parking_lot::Mutex;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone)]
pub struct AuthContext {
    pub key_id: String,
    pub key_name: String,
    pub org_id: String,
}

struct CacheState {
    conn: Connection,
    data_version: i64,
    epoch: i64,
    map: HashMap<[u8; 32], Option<KeyRecord>>,
}

/// Keys looked up once and kept until a change to `api_keys` (from this process or the CLI) is
/// seen through the database's data version and the keys epoch.
pub struct KeyCache {
    db: crate::store::Db,
    watch: std::sync::Arc<crate::store::ChangeWatch>,
    inner: Mutex<CacheState>,
}

const CACHE_LIMIT: usize = 10_000;

impl KeyCache {
    pub fn new(
        db: &crate::store::Db,
        watch: std::sync::Arc<crate::store::ChangeWatch>,
    ) -> Result<Self, StoreError> {
        let conn = db.dedicated()?;
        // The version first: a change between the two reads is then seen at the first lookup.
        let data_version = watch.version()?;
        let epoch = keys_epoch(&conn)?;
        Ok(KeyCache {
            db: db.clone(),
            watch,
            inner: Mutex::new(CacheState {
                conn,
                data_version,
                epoch,
                map: HashMap::new(),
            }),
        })
    }

    pub fn lookup(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        // Outside the cache's lock: concurrent requests share the watch's reads.
        let dv = self.watch.version()?;
        let mut st = self.inner.lock();
        self.db.renew(&mut st.conn)?;
        if dv != st.data_version {
            st.data_version = dv;
            let epoch = keys_epoch(&st.conn)?;
            if epoch != st.epoch {
                st.epoch = epoch;
                st.map.clear();
            }
        }
        if let Some(hit) = st.map.get(hash) {
            return Ok(hit.clone());
        }
        let found = find_by_hash(&st.conn, hash)?;
        if st.map.len() >= CACHE_LIMIT {
            st.map.clear();
        }
        st.map.insert(*hash, found.clone());
        Ok(found)
    }

    /// Forgets everything; used after this process changes keys itself.
    pub fn clear(&self) {
        self.inner.lock().map.clear();
    }
}

/// The request's one `Authorization` value, if any. Two are refused rather than one picked:
/// proxies and clients disagree on which would win, and a request must not be served under a
/// key other than the one its sender meant.
pub fn authorization(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let mut values = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad(
            "more than one Authorization header: send exactly one",
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

pub(super) fn unauthorized() -> ApiError {
    ApiError::Unauthorized("Missing, malformed, unknown, revoked or expired API key".into())
}

/// A key checked: the caller, or why not, and the rate-limit figures its answer carries (every
/// answer to a known key carries them).
pub(super) struct Checked {
    pub auth: Result<AuthContext, ApiError>,
    pub figures: Option<RateInfo>,
}

impl Checked {
    fn refused(e: ApiError) -> Self {
        Checked {
            auth: Err(e),
            figures: None,
        }
    }
}

impl AppState {
    /// 401 → 403 → 429, in that order (two `Authorization` headers: 400 before all of them, as
    /// no key can be named), where it can be answered without waiting (SQLite). Records the
    /// rate-limit figures for the response headers.
    pub fn authorize(&self, req: &HttpRequest, scope: Scope) -> Result<AuthContext, ApiError> {
        let raw = authorization(req)?.ok_or_else(unauthorized)?;
        let checked = self.check_key(raw, scope);
        if let Some(info) = checked.figures {
            req.extensions_mut().insert(info);
        }
        checked.auth
    }

    /// The key `raw` (the `Authorization` value) checked for `scope` and charged.
    pub(super) fn check_key(&self, raw: &str, scope: Scope) -> Checked {
        let Some(key) = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| is_well_formed(k))
        else {
            return Checked::refused(unauthorized());
        };
        let hash = hash_key(key);
        let rec = match self.keys.lookup(&hash) {
            Ok(Some(rec)) => rec,
            Ok(None) => return Checked::refused(unauthorized()),
            Err(e) => return Checked::refused(e.into()),
        };
        let expired = rec
            .expires_at
            .as_ref()
            .is_some_and(|exp| exp.as_str() <= crate::domain::ids::now_rfc3339().as_str());
        if !bool::from(rec.key_hash.as_slice().ct_eq(hash.as_slice()))
            || rec.revoked_at.is_some()
            || expired
        {
            return Checked::refused(unauthorized());
        }
        let charge = Charge {
            key_id: &rec.id,
            key_per_minute: rec.rate_limit.unwrap_or(self.config.rate_limit),
            org_id: &rec.org_id,
            org_per_minute: self.config.org_rate_limit,
        };
        // A 403 comes before the rate limit and costs no token, but it answers a known key, and
        // every authenticated answer carries the figures.
        if !scope.granted_by(&rec.scopes) {
            return Checked {
                figures: Some(self.limiter.peek(charge)),
                auth: Err(ApiError::InsufficientScope(scope.as_str())),
            };
        }
        let (info, auth) = match self.limiter.check(charge) {
            Decision::Allowed(info) => (
                info,
                Ok(AuthContext {
                    key_id: rec.id,
                    key_name: rec.name,
                    org_id: rec.org_id,
                }),
            ),
            Decision::Limited { info, retry_after } => {
                (info, Err(ApiError::RateLimited(retry_after)))
            }
        };
        Checked {
            auth,
            figures: Some(info),
        }
    }
}
