//! Bearer keys: a cached lookup by SHA-256, scopes, expiry, revocation, then the rate limit.

use super::error::ApiError;
use super::rate_limit::Decision;
use super::AppState;
use crate::domain::keys::{hash_key, is_well_formed, Scope};
use crate::store::keys::{find_by_hash, keys_epoch, KeyRecord};
use crate::store::StoreError;
use actix_web::{HttpMessage, HttpRequest};
use parking_lot::Mutex;
use rusqlite::Connection;
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
/// seen through `PRAGMA data_version` and the keys epoch.
pub struct KeyCache {
    inner: Mutex<CacheState>,
}

const CACHE_LIMIT: usize = 10_000;

impl KeyCache {
    pub fn new(conn: Connection) -> Result<Self, StoreError> {
        let epoch = keys_epoch(&conn)?;
        let data_version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(KeyCache {
            inner: Mutex::new(CacheState {
                conn,
                data_version,
                epoch,
                map: HashMap::new(),
            }),
        })
    }

    pub fn lookup(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let mut st = self.inner.lock();
        let dv: i64 = st.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
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

fn unauthorized() -> ApiError {
    ApiError::Unauthorized("Missing, malformed, unknown, revoked or expired API key".into())
}

impl AppState {
    /// 401 → 403 → 429, in that order. Records the rate-limit figures for the response headers.
    pub fn authorize(&self, req: &HttpRequest, scope: Scope) -> Result<AuthContext, ApiError> {
        let raw = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let key = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        if !is_well_formed(key) {
            return Err(unauthorized());
        }
        let hash = hash_key(key);
        let rec = self.keys.lookup(&hash)?.ok_or_else(unauthorized)?;
        if !bool::from(rec.key_hash.as_slice().ct_eq(hash.as_slice())) {
            return Err(unauthorized());
        }
        if rec.revoked_at.is_some() {
            return Err(unauthorized());
        }
        if let Some(exp) = &rec.expires_at {
            if exp.as_str() <= crate::domain::ids::now_rfc3339().as_str() {
                return Err(unauthorized());
            }
        }
        if !rec.scopes.contains(&scope) {
            return Err(ApiError::InsufficientScope(scope.as_str()));
        }
        let per_minute = rec.rate_limit.unwrap_or(self.config.rate_limit);
        match self.limiter.check(&rec.id, per_minute) {
            Some(Decision::Allowed(info)) => {
                req.extensions_mut().insert(info);
            }
            Some(Decision::Limited { info, retry_after }) => {
                req.extensions_mut().insert(info);
                return Err(ApiError::RateLimited(retry_after));
            }
            None => {}
        }
        Ok(AuthContext {
            key_id: rec.id,
            key_name: rec.name,
            org_id: rec.org_id,
        })
    }
}
