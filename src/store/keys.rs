use super::conn::{params, Connection, DbResult, Row};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use crate::domain::keys::{hash_key, key_prefix, parse_scopes, scopes_to_string, Scope};

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub org_id: String,
    pub org_name: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: Vec<u8>,
    pub scopes: Vec<Scope>,
    pub rate_limit: Option<u32>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub bootstrap: bool,
    pub created_at: String,
}

const SELECT: &str = "SELECT k.id, k.org_id, o.name, k.name, k.prefix, k.key_hash, k.scopes, k.rate_limit,
    k.expires_at, k.revoked_at, k.bootstrap, k.created_at FROM api_keys k JOIN organizations o ON o.id = k.org_id";

fn row(r: &Row) -> DbResult<KeyRecord> {
    let scopes: String = r.get(6)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        org_id: r.get(1)?,
        org_name: r.get(2)?,
        name: r.get(3)?,
        prefix: r.get(4)?,
        key_hash: r.get(5)?,
        scopes: parse_scopes(&scopes).unwrap_or_default(),
        rate_limit: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u32),
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        bootstrap: r.get::<_, i64>(10)? != 0,
        created_at: r.get(11)?,
    })
}

pub fn find_by_hash(c: &Connection, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("{SELECT} WHERE k.key_hash = ?1");
    optional(c.prepare_cached(&sql)?.query_row([hash.as_slice()], row))
}

pub struct NewKey<'a> {
    pub org_id: &'a str,
    pub name: &'a str,
    pub plain: &'a str,
    pub scopes: &'a [Scope],
    pub rate_limit: Option<u32>,
    pub expires_at: Option<String>,
    pub bootstrap: bool,
}

pub fn insert(c: &Connection, k: NewKey) -> Result<String, StoreError> {
    let id = new_id();
    c.execute(
        "INSERT INTO api_keys(id, org_id, name, prefix, key_hash, scopes, rate_limit, expires_at, bootstrap, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            k.org_id,
            k.name,
            key_prefix(k.plain),
            hash_key(k.plain).as_slice(),
            scopes_to_string(k.scopes),
            k.rate_limit.map(i64::from),
            k.expires_at,
            k.bootstrap as i64,
            now_rfc3339()
        ],
    )?;
    Ok(id)
}

pub fn list(c: &Connection) -> Result<Vec<KeyRecord>, StoreError> {
    let sql = format!("{SELECT} ORDER BY k.seq");
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Revokes a key; false when no such key exists or it was already revoked.
pub fn revoke(c: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now_rfc3339()],
    )?;
    Ok(n == 1)
}

pub fn keys_epoch(c: &Connection) -> Result<i64, StoreError> {
    let v: String = c
        .prepare_cached("SELECT value FROM settings WHERE key = 'keys_epoch'")?
        .query_row([], |r| r.get(0))?;
    Ok(v.parse().unwrap_or(0))
}

pub fn count(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?)
}
