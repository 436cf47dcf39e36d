//! Keyset pagination with opaque, tamper-evident cursors.

use super::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub struct PageRequest {
    pub limit: i64,
    /// The keyset position after which the page starts.
    pub after: Option<i64>,
}

fn tag(secret: &[u8], list: &str, pos: i64) -> String {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(list.as_bytes());
    h.update(pos.to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

pub fn encode_cursor(secret: &[u8], list: &str, pos: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{pos}.{}", tag(secret, list, pos)))
}

pub fn decode_cursor(secret: &[u8], list: &str, raw: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad("cursor is not valid: use the next_cursor of a previous page");
    let text = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(text).map_err(|_| bad())?;
    let (pos, t) = text.split_once('.').ok_or_else(bad)?;
    let pos: i64 = pos.parse().map_err(|_| bad())?;
    if t != tag(secret, list, pos) {
        return Err(bad());
    }
    Ok(pos)
}

pub fn query_map(qs: &str) -> Result<HashMap<String, String>, ApiError> {
    actix_web::web::Query::<HashMap<String, String>>::from_query(qs)
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad(format!("Invalid query string: {e}")))
}

pub fn parse(
    q: &HashMap<String, String>,
    secret: &[u8],
    list: &str,
    max: i64,
) -> Result<PageRequest, ApiError> {
    let limit = match q.get("limit") {
        None => 20.min(max),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "limit must be an integer from 1 to {max}"
                )))
            }
        },
    };
    let after = match q.get("cursor") {
        None => None,
        Some(c) if c.is_empty() => None,
        Some(c) => Some(decode_cursor(secret, list, c)?),
    };
    Ok(PageRequest { limit, after })
}

/// Builds `{ data, pagination }` from rows fetched with `limit + 1`.
pub fn page<T>(
    mut rows: Vec<T>,
    total: i64,
    req: &PageRequest,
    secret: &[u8],
    list: &str,
    pos: impl Fn(&T) -> i64,
    render: impl Fn(&T) -> Value,
) -> Value {
    let has_more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let next = if has_more {
        rows.last().map(|r| encode_cursor(secret, list, pos(r)))
    } else {
        None
    };
    json!({
        "data": rows.iter().map(render).collect::<Vec<_>>(),
        "pagination": { "total": total, "limit": req.limit, "has_more": has_more, "next_cursor": next }
    })
}

/// Reads one page of an organization's rows before a keyset position: `(rows, total)`.
pub type PageFetch<T> = fn(
    &rusqlite::Connection,
    &str,
    Option<i64>,
    i64,
) -> Result<(Vec<T>, i64), crate::store::StoreError>;

/// The organization's newest-first listings (schemas, fields, documents, policies, data
/// products): authorize a read, parse the page, fetch `limit + 1` rows before the cursor, render.
pub async fn newest_first<T: Send + 'static>(
    state: &actix_web::web::Data<super::AppState>,
    req: &actix_web::HttpRequest,
    list: &'static str,
    fetch: PageFetch<T>,
    pos: fn(&T) -> i64,
    render: fn(&T) -> Value,
) -> Result<actix_web::HttpResponse, ApiError> {
    let auth = state.authorize(req, crate::domain::keys::Scope::Read)?;
    let q = query_map(req.query_string())?;
    let page = parse(&q, &state.cursor_secret, list, 100)?;
    let st = state.clone();
    let body = super::blocking(move || {
        let (rows, total) = st
            .db
            .read(|c| fetch(c, &auth.org_id, page.after, page.limit + 1))?;
        Ok(self::page(
            rows,
            total,
            &page,
            &st.cursor_secret,
            list,
            pos,
            render,
        ))
    })
    .await?;
    Ok(actix_web::HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_forgeries_fail() {
        let c = encode_cursor(b"s", "schemas", 42);
        assert_eq!(decode_cursor(b"s", "schemas", &c).unwrap(), 42);
        assert!(decode_cursor(b"other", "schemas", &c).is_err());
        assert!(decode_cursor(b"s", "documents", &c).is_err());
        let forged = URL_SAFE_NO_PAD.encode("41.0000000000000000");
        assert!(decode_cursor(b"s", "schemas", &forged).is_err());
        assert!(decode_cursor(b"s", "schemas", "!!!").is_err());
    }
}
