#![no_main]
//! Pagination cursors: opening arbitrary text never panics, a cursor opens only in the scope
//! and under the key that sealed it, a sealed position round-trips, and any altered bit is
//! refused. The query parsing around it answers a page request or a message.
//!
//! Input: the first 8 bytes are the position to seal (little endian), the whole input (lossily
//! UTF-8) is the text to open and the query string to parse.

use libfuzzer_sys::fuzz_target;
use quire::http::pagination::{self, CursorKey, CursorScope};
use std::sync::OnceLock;

/// Cursors are 49 bytes, unpadded URL-safe base64.
const CURSOR_CHARS: usize = 66;

struct Scopes {
    mine: CursorScope,
    other_org: CursorScope,
    other_list: CursorScope,
    other_key: CursorScope,
}

fn scopes() -> &'static Scopes {
    static SCOPES: OnceLock<Scopes> = OnceLock::new();
    SCOPES.get_or_init(|| {
        let key = CursorKey::new(b"quire fuzz secret");
        Scopes {
            mine: key.scope("org-a", "documents"),
            other_org: key.scope("org-b", "documents"),
            other_list: key.scope("org-a", "schemas"),
            other_key: CursorKey::new(b"another secret").scope("org-a", "documents"),
        }
    })
}

fn refused_elsewhere(s: &Scopes, cursor: &str) {
    for other in [&s.other_org, &s.other_list, &s.other_key] {
        assert!(other.decode(cursor).is_err(), "{cursor} opened elsewhere");
    }
}

fuzz_target!(|data: &[u8]| {
    let s = scopes();
    let raw = String::from_utf8_lossy(data);

    // Arbitrary text: refused, or a cursor of the exact form that opens in this scope only.
    if s.mine.decode(&raw).is_ok() {
        assert_eq!(raw.len(), CURSOR_CHARS, "{raw:?} opened");
        refused_elsewhere(s, &raw);
    }
    if let Ok(q) = pagination::query_map(&raw) {
        if let Ok(page) = pagination::parse(&q, &s.mine, 100) {
            assert!((1..=100).contains(&page.limit));
            let cursor = q.get("cursor").filter(|c| !c.is_empty());
            assert_eq!(page.after.is_some(), cursor.is_some());
        }
    }

    // A sealed position round-trips, here and through a query string, and nowhere else.
    let mut pos = [0u8; 8];
    let n = data.len().min(8);
    pos[..n].copy_from_slice(&data[..n]);
    let pos = i64::from_le_bytes(pos);
    let cursor = s.mine.encode(pos);
    assert_eq!(cursor.len(), CURSOR_CHARS);
    assert_eq!(s.mine.decode(&cursor).ok(), Some(pos));
    refused_elsewhere(s, &cursor);
    let q = pagination::query_map(&format!("limit=7&cursor={cursor}")).expect("a plain query");
    let page = pagination::parse(&q, &s.mine, 100).expect("our own cursor");
    assert_eq!((page.limit, page.after), (7, Some(pos)));

    // Any altered character (one bit of its alphabet index) is refused.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let seed = data
        .iter()
        .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(*b as usize));
    let at = seed % CURSOR_CHARS;
    let bit = 1 << ((seed / CURSOR_CHARS) % 6);
    let mut bytes = cursor.clone().into_bytes();
    let idx = ALPHABET
        .iter()
        .position(|c| *c == bytes[at])
        .expect("base64");
    bytes[at] = ALPHABET[idx ^ bit];
    let altered = String::from_utf8(bytes).expect("ASCII");
    assert!(
        s.mine.decode(&altered).is_err(),
        "{altered} (from {cursor}) opened"
    );
});
