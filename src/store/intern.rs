//! Interned texts: a text that many rows repeat (a gate's stage id, one mechanism's JSON object
//! of a verdict) is stored in `interned` and referred to by its id. The table is append-only
//! (triggers), so an id never dangles. It has no index on the text: the executor's writer
//! remembers the ids of what it stored, and a text it no longer remembers (after a restart) is
//! stored again under a new id, which costs a row, never a wrong answer.

use super::conn::{params, Connection, OptionalExtension};
use super::StoreError;
use serde_json::Value;
use std::collections::HashMap;

/// Stores `text` and answers its new id.
pub fn id(c: &Connection, text: &str) -> Result<i64, StoreError> {
    Ok(
        c.prepare_cached("INSERT INTO interned(text) VALUES (?1) RETURNING id")?
            .query_row(params![text], |r| r.get(0))?,
    )
}

/// Above this many remembered texts the cache keeps only those asked for again since the last
/// trim: texts that carry a value (a business rule's "regex: INV-8046 matches the pattern")
/// seldom come again, the gates' fixed texts come with every document.
const CACHE_MAX: usize = 16_384;

/// The writer's cache of interned ids, so a text seen before costs no statement. An id learnt
/// inside a transaction that then rolls back names a row that no longer exists: such ids are
/// held apart until the caller reports the commit, and forgotten on a rollback.
#[derive(Default)]
pub struct Interner {
    /// Id, and whether it was asked for again since the last trim.
    known: HashMap<Box<str>, (i64, bool)>,
    pending: HashMap<Box<str>, i64>,
}

impl Interner {
    pub fn id(&mut self, c: &Connection, text: &str) -> Result<i64, StoreError> {
        if let Some((id, again)) = self.known.get_mut(text) {
            *again = true;
            return Ok(*id);
        }
        if let Some(id) = self.pending.get(text) {
            return Ok(*id);
        }
        let id = id(c, text)?;
        self.pending.insert(text.into(), id);
        Ok(id)
    }

    /// The transaction that learnt the pending ids committed: they are safe to remember.
    pub fn committed(&mut self) {
        if self.known.len() + self.pending.len() > CACHE_MAX {
            self.known.retain(|_, (_, again)| std::mem::take(again));
            if self.known.len() + self.pending.len() > CACHE_MAX {
                self.known.clear();
            }
        }
        self.known
            .extend(self.pending.drain().map(|(t, id)| (t, (id, false))));
    }

    /// The transaction (or a savepoint inside it) rolled back: what it learnt may be gone.
    pub fn rolled_back(&mut self) {
        self.pending.clear();
    }
}

/// A mechanism's JSON object with its values cut out, and those values as they follow the id in
/// the column (`,"fragment",…`; empty when none were cut out).
pub type Template = (String, String);

/// A verdict's `mechanisms` column: a JSON array with, per mechanism, the id of its interned
/// template, or `[id, fragment, …]` when values were cut out of it
/// (`domain::gate::mechanism_template`).
pub fn mechanisms_column(
    c: &Connection,
    interner: &mut Interner,
    mechanisms: &[Template],
) -> Result<String, StoreError> {
    let mut out = String::with_capacity(2 + 16 * mechanisms.len());
    out.push('[');
    for (k, (template, tail)) in mechanisms.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let id = interner.id(c, template)?.to_string();
        if tail.is_empty() {
            out.push_str(&id);
        } else {
            out.push('[');
            out.push_str(&id);
            out.push_str(tail);
            out.push(']');
        }
    }
    out.push(']');
    Ok(out)
}

/// The JSON array of mechanisms the `mechanisms` column of verdict `seq` stands for. `texts`
/// keeps the templates read so far, for callers that read many verdicts.
pub fn mechanisms_json(
    c: &Connection,
    seq: i64,
    column: &str,
    texts: &mut HashMap<i64, String>,
) -> Result<Value, StoreError> {
    let corrupt = |cause: String| super::Corrupt::error("verdicts", "mechanisms", seq, cause);
    let items: Vec<Value> = serde_json::from_str(column).map_err(|e| corrupt(e.to_string()))?;
    let mut out = String::from("[");
    for (k, item) in items.iter().enumerate() {
        let (id, fragments): (Option<i64>, Vec<String>) = match item {
            Value::Array(parts) => (
                parts.first().and_then(Value::as_i64),
                parts
                    .get(1..)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        corrupt(format!("{item} has a fragment that is not a string"))
                    })?,
            ),
            other => (other.as_i64(), Vec::new()),
        };
        let id = id.ok_or_else(|| corrupt(format!("{item} names no interned text")))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = texts.entry(id) {
            let t: String = c
                .prepare_cached("SELECT text FROM interned WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| corrupt(format!("interned text {id} is missing")))?;
            slot.insert(t);
        }
        if k > 0 {
            out.push(',');
        }
        let template = texts.get(&id).map_or("", String::as_str);
        let filled = crate::domain::gate::fill(template, &fragments)
            .ok_or_else(|| corrupt(format!("{item} does not fit interned text {id}")))?;
        out.push_str(&filled);
    }
    out.push(']');
    serde_json::from_str(&out).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM interned", [], |r| r.get(0))
            .unwrap()
    }

    fn text(c: &Connection, id: i64) -> String {
        c.query_row("SELECT text FROM interned WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn a_text_is_stored_once_and_an_id_learnt_in_a_rolled_back_transaction_is_not_reused() {
        let db = Db::open(":memory:", Default::default()).unwrap();
        let mut c = db.conn().unwrap();
        let mut i = Interner::default();

        let tx = c.begin_immediate().unwrap();
        let a = i.id(&tx, "alpha").unwrap();
        assert_eq!(i.id(&tx, "alpha").unwrap(), a, "pending ids are reused");
        tx.commit().unwrap();
        i.committed();
        assert_eq!(i.id(&c, "alpha").unwrap(), a);
        assert_eq!(count(&c), 1);

        let tx = c.begin_immediate().unwrap();
        i.id(&tx, "beta").unwrap();
        drop(tx);
        i.rolled_back();
        let beta = i.id(&c, "beta").unwrap();
        i.committed();
        assert_eq!(text(&c, beta), "beta", "the id names a row that exists");
        assert_eq!(count(&c), 2, "the rolled-back row is not kept");
    }

    #[test]
    fn a_full_cache_keeps_the_texts_that_come_again() {
        let db = Db::open(":memory:", Default::default()).unwrap();
        let c = db.conn().unwrap();
        let mut i = Interner::default();
        let fixed = i.id(&c, "confidence 0.95 vs threshold 0.5").unwrap();
        i.committed();
        for n in 0..CACHE_MAX + 10 {
            i.id(&c, &format!("regex: INV-{n} matches the pattern"))
                .unwrap();
            assert_eq!(i.id(&c, "confidence 0.95 vs threshold 0.5").unwrap(), fixed);
            if n % 100 == 0 {
                i.committed();
            }
        }
        i.committed();
        assert!(i.known.len() <= CACHE_MAX, "{}", i.known.len());
        let before = count(&c);
        assert_eq!(i.id(&c, "confidence 0.95 vs threshold 0.5").unwrap(), fixed);
        assert_eq!(count(&c), before, "the repeated text survived the trim");
        assert_eq!(text(&c, fixed), "confidence 0.95 vs threshold 0.5");
    }

    #[test]
    fn a_mechanisms_column_reads_back_as_the_json_it_was_made_from() {
        let db = Db::open(":memory:", Default::default()).unwrap();
        let c = db.conn().unwrap();
        let mut i = Interner::default();
        let shared = ("{\"validatorType\":\"evidence\",\"verdict\":\"pass\",\"confidence\":null,\"reasoning\":\"found in the document\"}".to_string(), String::new());
        let cut = (
            "{\"validatorType\":\"business_rules\",\"verdict\":\"pass\",\"confidence\":\u{1},\"reasoning\":\"enum: \u{1} is allowed\"}".to_string(),
            // The fragments `0.5` and `EUR \"x\"` (JSON text), each as a JSON string.
            r#","0.5","EUR \\\"x\\\"""#.to_string(),
        );
        let column = mechanisms_column(&c, &mut i, &[shared.clone(), cut.clone()]).unwrap();
        let again = mechanisms_column(&c, &mut i, &[shared, cut]).unwrap();
        assert_eq!(column, again, "the same templates, the same ids");
        assert_eq!(count(&c), 2);
        let mut texts = HashMap::new();
        let read = mechanisms_json(&c, 1, &column, &mut texts).unwrap();
        assert_eq!(
            read,
            serde_json::json!([
                {"validatorType": "evidence", "verdict": "pass", "confidence": null, "reasoning": "found in the document"},
                {"validatorType": "business_rules", "verdict": "pass", "confidence": 0.5, "reasoning": "enum: EUR \"x\" is allowed"},
            ])
        );
        assert_eq!(
            mechanisms_json(&c, 1, "[]", &mut texts).unwrap(),
            serde_json::json!([])
        );
        let e = mechanisms_json(&c, 1, "[999]", &mut texts).unwrap_err();
        assert!(
            e.to_string().contains("interned text 999 is missing"),
            "{e}"
        );
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
