//! Process-wide secrets and values kept in the `settings` table.

use super::conn::Connection;
use super::{optional, Db, StoreError};

fn get(c: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    optional(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        }),
    )
}

fn fresh_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The secret that seals pagination cursors, created on first use. Kept in the database so that
/// cursors survive a restart; a read-only database without one gets a secret for this process
/// only (its cursors then last until the process stops).
pub fn cursor_secret(db: &Db) -> Result<String, StoreError> {
    if db.read_only() {
        return Ok(db
            .read(|c| get(c, "cursor_secret"))?
            .unwrap_or_else(fresh_secret));
    }
    db.write(false, |tx| match get(tx, "cursor_secret")? {
        Some(s) => Ok::<_, StoreError>(s),
        None => {
            let s = fresh_secret();
            tx.execute(
                "INSERT INTO settings(key, value) VALUES ('cursor_secret', ?1)",
                [&s],
            )?;
            Ok(s)
        }
    })
}
