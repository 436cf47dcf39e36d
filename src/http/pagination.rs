//! Keyset pagination with opaque, sealed cursors.
//!
//! A cursor is the keyset position sealed with XChaCha20-Poly1305 under a per-database key, with
//! the organization and the list it was issued for as associated data, and a random nonce:
//! - the position is encrypted, so a caller cannot read the global row sequence inside it and
//!   count what other organizations inserted between two of its own rows;
//! - the tag covers the organization, the list and every byte, so a cursor replayed by another
//!   organization, on another list or re-encoded in any way is refused (400), never read as an
//!   empty or shifted page.

use super::error::ApiError;
use crate::answers::{Page, Pagination};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// First byte of every cursor: a later format can refuse older cursors cleanly.
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const SEALED_BYTES: usize = 1 + NONCE_BYTES + 8 + TAG_BYTES;

pub struct PageRequest {
    pub limit: i64,
    /// The keyset position after which the page starts.
    pub after: Option<i64>,
}

/// The database's cursor key, derived from the secret kept in `settings`.
pub struct CursorKey(XChaCha20Poly1305);

impl CursorKey {
    pub fn new(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        // Domain separation: the same stored secret must never key anything else the same way.
        h.update(b"quire cursor key v1\0");
        h.update(secret);
        CursorKey(XChaCha20Poly1305::new(&h.finalize()))
    }

    /// The cursors of one organization's view of one list (`list` names the route and, for
    /// nested lists, the parent: `pd:{pipeline id}`).
    pub fn scope(&self, org: &str, list: &str) -> CursorScope {
        let mut aad = Vec::with_capacity(1 + 8 + org.len() + list.len());
        aad.push(VERSION);
        // Length-prefixed so that no (org, list) pair can be re-split into another.
        for part in [org, list] {
            aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        CursorScope {
            cipher: self.0.clone(),
            aad,
        }
    }
}

#[derive(Clone)]
pub struct CursorScope {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

fn bad_cursor() -> ApiError {
    ApiError::bad("cursor is not valid: use the next_cursor of a previous page")
}

impl CursorScope {
    pub fn encode(&self, pos: i64) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let payload = Payload {
            msg: &pos.to_le_bytes(),
            aad: &self.aad,
        };
        // Encryption with a valid key and an 8-byte message cannot fail; an empty cursor would
        // only be refused later, never misread.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(SEALED_BYTES);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decode(&self, raw: &str) -> Result<i64, ApiError> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad_cursor())?;
        // Only the exact text this server wrote: no second spelling of the same bytes.
        if bytes.len() != SEALED_BYTES
            || bytes[0] != VERSION
            || URL_SAFE_NO_PAD.encode(&bytes) != raw
        {
            return Err(bad_cursor());
        }
        let (nonce, sealed) = bytes[1..].split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &self.aad,
                },
            )
            .map_err(|_| bad_cursor())?;
        let pos: [u8; 8] = plain.as_slice().try_into().map_err(|_| bad_cursor())?;
        Ok(i64::from_le_bytes(pos))
    }
}

pub fn query_map(qs: &str) -> Result<HashMap<String, String>, ApiError> {
    actix_web::web::Query::<HashMap<String, String>>::from_query(qs)
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad(format!("Invalid query string: {e}")))
}

/// Whether a list is asked oldest first (`order=asc`) rather than newest first (`desc`, the
/// default). Each order is its own list: its cursors are sealed to it.
pub fn ascending(qs: &str) -> Result<bool, ApiError> {
    match query_map(qs)?.get("order").map(String::as_str) {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(_) => Err(ApiError::bad("order must be asc or desc")),
    }
}

/// Refuses a query parameter a list does not take (`limit` and `cursor` it always takes).
pub fn only_known(q: &HashMap<String, String>, filters: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&str> = q
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "limit" | "cursor") && !filters.contains(k))
        .collect();
    unknown.sort_unstable();
    match unknown.first() {
        None => Ok(()),
        Some(k) => {
            let takes = if filters.is_empty() {
                "only limit and cursor".to_string()
            } else {
                format!("limit, cursor, {}", filters.join(", "))
            };
            Err(ApiError::bad(format!(
                "Unknown query parameter '{k}': this list takes {takes}"
            )))
        }
    }
}

pub fn parse(
    q: &HashMap<String, String>,
    cursors: &CursorScope,
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
        Some(c) => Some(cursors.decode(c)?),
    };
    Ok(PageRequest { limit, after })
}

/// Builds `{ data, pagination }` from rows fetched with `limit + 1`.
pub fn page<T, A>(
    mut rows: Vec<T>,
    total: i64,
    req: &PageRequest,
    cursors: &CursorScope,
    pos: impl Fn(&T) -> i64,
    render: impl FnMut(T) -> A,
) -> Page<A> {
    let has_more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let next = if has_more {
        rows.last().map(|r| cursors.encode(pos(r)))
    } else {
        None
    };
    Page {
        data: rows.into_iter().map(render).collect(),
        pagination: Pagination {
            total,
            limit: req.limit,
            has_more,
            next_cursor: next,
        },
    }
}

/// Reads one page of an organization's rows before a keyset position: `(rows, total)`.
pub type PageFetch<T> = fn(
    &crate::store::Connection,
    &str,
    Option<i64>,
    i64,
) -> Result<(Vec<T>, i64), crate::store::StoreError>;

/// The organization's newest-first listings (schemas, fields, documents, policies, data
/// products): authorize a read, parse the page, fetch `limit + 1` rows before the cursor, render.
pub async fn newest_first<T: Send + 'static, A: serde::Serialize + Send + 'static>(
    call: &super::extract::Call<super::extract::Read>,
    list: &'static str,
    filters: &[&str],
    fetch: PageFetch<T>,
    pos: fn(&T) -> i64,
    render: fn(&T) -> A,
) -> Result<actix_web::HttpResponse, ApiError> {
    let (_, cursors, page) = call.page(list, 100, filters)?;
    call.answer(move |c, org| {
        let (rows, total) = fetch(c, org, page.after, page.limit + 1)?;
        Ok(self::page(rows, total, &page, &cursors, pos, |r| {
            render(&r)
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(c: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(c).unwrap()
    }

    #[test]
    fn cursors_round_trip_only_for_their_key_organization_and_list() {
        let key = CursorKey::new(b"s");
        let c = key.scope("org-a", "schemas").encode(42);
        assert_eq!(key.scope("org-a", "schemas").decode(&c).unwrap(), 42);
        assert!(CursorKey::new(b"other")
            .scope("org-a", "schemas")
            .decode(&c)
            .is_err());
        assert!(key.scope("org-b", "schemas").decode(&c).is_err());
        assert!(key.scope("org-a", "documents").decode(&c).is_err());
        // The length prefixes keep ("org-a", "schemas") apart from ("org-as", "chemas").
        assert!(key.scope("org-as", "chemas").decode(&c).is_err());
        assert!(key.scope("org-a", "schemas").decode("!!!").is_err());
        assert!(key.scope("org-a", "schemas").decode("").is_err());
    }

    #[test]
    fn every_altered_byte_and_every_other_spelling_is_refused() {
        let scope = CursorKey::new(b"s").scope("o", "l");
        let c = scope.encode(7);
        let bytes = decoded(&c);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(
                scope.decode(&URL_SAFE_NO_PAD.encode(&b)).is_err(),
                "byte {i}"
            );
        }
        let mut longer = vec![b'0'];
        longer.extend_from_slice(&bytes);
        assert!(scope.decode(&URL_SAFE_NO_PAD.encode(&longer)).is_err());
        assert!(scope.decode(&format!("{c}=")).is_err());
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
        assert_ne!(padded, c);
        assert!(scope.decode(&padded).is_err());
        // 49 bytes leave four spare bits in the last character: setting one spells the same
        // bytes differently, and is refused too.
        let last = c.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.find(last).unwrap();
        let sibling = alphabet.as_bytes()[idx ^ 1] as char;
        let respelled = format!("{}{sibling}", &c[..c.len() - 1]);
        assert!(scope.decode(&respelled).is_err());
    }

    #[test]
    fn the_position_cannot_be_read_from_a_cursor() {
        let scope = CursorKey::new(b"s").scope("o", "l");
        let pos: i64 = 1_234_567_890;
        let a = scope.encode(pos);
        let b = scope.encode(pos);
        assert_ne!(a, b, "the same position must not give the same cursor");
        for c in [&a, &b] {
            let raw = decoded(c);
            assert!(!c.contains("1234567890"));
            assert!(!raw.windows(8).any(|w| w == pos.to_le_bytes()));
            assert!(!raw.windows(10).any(|w| w == b"1234567890"));
        }
    }
}

/// What one page may weigh, about: a page of wide rows gets fewer rows, so no page of any list
/// costs more than this to build, whatever the client asked for (the cursor gives the rest).
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The page size within `PAGE_BYTES` for rows of `fields` fields costing `per_field` bytes each.
pub fn within_budget(limit: i64, fields: usize, per_field: usize) -> i64 {
    let per_row = (fields.max(1) * per_field).max(1);
    limit.min((PAGE_BYTES / per_row).max(1) as i64)
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn wide_rows_make_short_pages_and_narrow_rows_keep_the_asked_limit() {
        assert_eq!(within_budget(200, 5, 100), 200);
        assert_eq!(within_budget(200, 500, 1024), 8);
        assert_eq!(
            within_budget(200, 1_000_000, 1024),
            1,
            "never an empty page"
        );
    }
}

/// Rows read and rendered at a time while a page streams.
const STREAM_BATCH: i64 = 16;

/// Writes one page of a list as its rows are rendered: `{<head>, "data": [..], "pagination":
/// {..}}`. The page ends at `limit` rows or once `PAGE_BYTES` of rows are written, measured on
/// the bytes themselves, so a page of large values stays small whatever the rows hold and the
/// cursor gives the rest. `pagination.limit` is the limit asked; a page may hold fewer rows.
pub struct PageWriter<'a> {
    sink: &'a mut super::limits::ChunkSink,
    limit: i64,
    rows: i64,
    bytes: usize,
    last: Option<i64>,
}

impl<'a> PageWriter<'a> {
    pub fn begin(
        sink: &'a mut super::limits::ChunkSink,
        head: &impl serde::Serialize,
        limit: i64,
    ) -> Result<Self, ApiError> {
        let mut opening =
            serde_json::to_vec(head).map_err(|e| ApiError::Internal(e.to_string()))?;
        // `{...}` becomes `{...,"data":[`; an empty head `{}` becomes `{"data":[`.
        opening.pop();
        if opening.len() > 1 {
            opening.push(b',');
        }
        opening.extend_from_slice(br#""data":["#);
        sink.write(&opening)?;
        Ok(PageWriter {
            sink,
            limit,
            rows: 0,
            bytes: 0,
            last: None,
        })
    }

    fn full(&self) -> bool {
        self.rows >= self.limit || self.bytes >= PAGE_BYTES
    }

    fn push(&mut self, pos: i64, row: &impl serde::Serialize) -> Result<(), ApiError> {
        let mut out = serde_json::to_vec(row).map_err(|e| ApiError::Internal(e.to_string()))?;
        if self.rows > 0 {
            out.insert(0, b',');
        }
        self.sink.write(&out)?;
        self.rows += 1;
        self.bytes += out.len();
        self.last = Some(pos);
        Ok(())
    }

    /// Streams rows from `after` on: `fetch(after, n)` reads up to `n` rows in order and renders
    /// each as `(position, row)`, or `(position, None)` for a row this list skips (`skips`: the
    /// list can skip rows). Then closes the page with its pagination.
    pub fn rows<R: serde::Serialize>(
        mut self,
        after: Option<i64>,
        total: i64,
        cursors: &CursorScope,
        skips: bool,
        mut fetch: impl FnMut(Option<i64>, i64) -> Result<Vec<(i64, Option<R>)>, ApiError>,
    ) -> Result<(), ApiError> {
        let mut after = after;
        let has_more = 'scan: loop {
            // One row past the limit tells whether there is more; where rows may be skipped, a
            // batch past it, so a run of skipped rows costs one read, not one per row.
            let want = if self.full() && skips {
                STREAM_BATCH
            } else {
                (self.limit - self.rows + 1).clamp(1, STREAM_BATCH)
            };
            let batch = fetch(after, want)?;
            let n = batch.len() as i64;
            for (pos, row) in batch {
                after = Some(pos);
                let Some(row) = row else { continue };
                if self.full() {
                    break 'scan true;
                }
                self.push(pos, &row)?;
            }
            if n < want {
                break false;
            }
        };
        let next = if has_more {
            self.last.map(|p| cursors.encode(p))
        } else {
            None
        };
        let closing = Pagination {
            total,
            limit: self.limit,
            has_more,
            next_cursor: next,
        };
        self.sink.write(b"],\"pagination\":")?;
        self.sink
            .write(&serde_json::to_vec(&closing).map_err(|e| ApiError::Internal(e.to_string()))?)?;
        self.sink.write(b"}")
    }
}
