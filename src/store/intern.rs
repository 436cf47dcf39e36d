//! Interned texts: a text that many rows repeat (a gate's stage id, one mechanism's JSON object
//! of a verdict) is stored once in `interned` and referred to by its id. The table is
//! append-only (triggers), so an id never dangles.

use super::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher), which the stored
/// `interned.hash` column needs. Collisions only cost a second comparison: a lookup matches the
/// text too.
pub fn hash(text: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Registers `quire_hash(text)` on a connection: migration 13 interns existing rows with it.
pub fn register_hash(c: &Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    c.create_scalar_function(
        "quire_hash",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(hash(&ctx.get::<String>(0)?)),
    )?;
    Ok(())
}

/// The id of `text`, stored first if it is new.
fn lookup_or_insert(c: &Connection, text: &str) -> Result<i64, StoreError> {
    let h = hash(text);
    let found: Option<i64> = c
        .prepare_cached("SELECT id FROM interned WHERE hash = ?1 AND text = ?2")?
        .query_row(params![h, text], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    c.prepare_cached("INSERT INTO interned(hash, text) VALUES (?1, ?2)")?
        .execute(params![h, text])?;
    Ok(c.last_insert_rowid())
}

/// Above this many remembered texts the cache starts afresh: texts that carry a value (a
/// business rule's "regex: INV-8046 matches the pattern") seldom come again, and a lookup in the
/// table finds whatever the cache forgot.
const CACHE_MAX: usize = 16_384;

/// The writer's cache of interned ids, so a text seen before costs no statement. An id learnt
/// inside a transaction that then rolls back names a row that no longer exists: such ids are
/// held apart until the caller reports the commit, and forgotten on a rollback.
#[derive(Default)]
pub struct Interner {
    known: HashMap<Box<str>, i64>,
    pending: HashMap<Box<str>, i64>,
}

impl Interner {
    pub fn id(&mut self, c: &Connection, text: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.known.get(text) {
            return Ok(*id);
        }
        if let Some(id) = self.pending.get(text) {
            return Ok(*id);
        }
        let id = lookup_or_insert(c, text)?;
        self.pending.insert(text.into(), id);
        Ok(id)
    }

    /// The transaction that learnt the pending ids committed: they are safe to remember.
    pub fn committed(&mut self) {
        if self.known.len() + self.pending.len() > CACHE_MAX {
            self.known.clear();
        }
        self.known.extend(self.pending.drain());
    }

    /// The transaction (or a savepoint inside it) rolled back: what it learnt may be gone.
    pub fn rolled_back(&mut self) {
        self.pending.clear();
    }
}

/// Interns without a cache: for callers that write a few rows.
pub fn id(c: &Connection, text: &str) -> Result<i64, StoreError> {
    lookup_or_insert(c, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM interned", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_hash_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors: the stored column depends on these never changing.
        assert_eq!(hash("") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar") as u64, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_text_is_stored_once_and_an_id_learnt_in_a_rolled_back_transaction_is_not_reused() {
        let db = Db::open(":memory:", Default::default()).unwrap();
        let mut c = db.conn().unwrap();
        let mut i = Interner::default();

        let tx = c.transaction().unwrap();
        let a = i.id(&tx, "alpha").unwrap();
        assert_eq!(i.id(&tx, "alpha").unwrap(), a, "pending ids are reused");
        tx.commit().unwrap();
        i.committed();
        assert_eq!(i.id(&c, "alpha").unwrap(), a);
        assert_eq!(count(&c), 1);

        let tx = c.transaction().unwrap();
        let lost = i.id(&tx, "beta").unwrap();
        drop(tx);
        i.rolled_back();
        let beta = i.id(&c, "beta").unwrap();
        i.committed();
        let stored: String = c
            .query_row("SELECT text FROM interned WHERE id = ?1", [beta], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, "beta", "the id names a row that exists");
        assert_eq!(count(&c), 2, "{lost} was rolled back, not kept twice");

        // A fresh cache (a restart) finds stored texts instead of storing them again.
        let mut fresh = Interner::default();
        assert_eq!(fresh.id(&c, "alpha").unwrap(), a);
        assert_eq!(id(&c, "beta").unwrap(), beta);
        assert_eq!(count(&c), 2);
    }

    #[test]
    fn interned_texts_cannot_change_or_go_away() {
        let db = Db::open(":memory:", Default::default()).unwrap();
        let c = db.conn().unwrap();
        id(&c, "kept").unwrap();
        for sql in [
            "UPDATE interned SET text = 'changed'",
            "DELETE FROM interned",
        ] {
            let e = c.execute(sql, []).unwrap_err().to_string();
            assert!(e.contains("append-only"), "{sql}: {e}");
        }
    }
}
