//! Nodes: the `quire serve` processes sharing one database, each holding its claims under a
//! lease the others reap once it runs out.

use super::conn::{params, Connection};
use super::sql::{self, Sql};
use super::StoreError;

/// Registers a node named `name` under a fresh id, leased for `lease_ms` from now.
pub fn register(c: &Connection, name: &str, lease_ms: i64) -> Result<String, StoreError> {
    let id = format!("{name}/{:012x}", rand::random::<u64>() >> 16);
    static INSERT: Sql = Sql::new(|d| {
        let now = sql::now_ms(d);
        format!(
            "INSERT INTO nodes(id, name, host, pid, started_ms, lease_ms, lease_until_ms)
             VALUES (?1, ?2, ?3, ?4, {now}, ?5, {now} + ?5)"
        )
    });
    c.prepare_cached(INSERT.text(c.dialect()))?
        .execute(params![
            id,
            name,
            host_name(),
            std::process::id() as i64,
            lease_ms
        ])?;
    Ok(id)
}

/// Renews a node's lease; false when the node is no longer registered (others reaped it).
pub fn heartbeat(c: &Connection, id: &str) -> Result<bool, StoreError> {
    static BEAT: Sql = Sql::new(|d| {
        format!(
            "UPDATE nodes SET lease_until_ms = {} + lease_ms WHERE id = ?1",
            sql::now_ms(d)
        )
    });
    Ok(c.prepare_cached(BEAT.text(c.dialect()))?.execute([id])? == 1)
}

/// Whether a node is still registered (a node others reaped must not claim under its id).
pub fn registered(c: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT count(*) FROM nodes WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, i64>(0))?
            > 0,
    )
}

/// Deletes the other nodes whose lease ran out and, with `predecessors`, every other
/// incarnation of `me`'s name (its caller holds the name's lock, so they are gone); answers the
/// ids deleted. Their claims are then orphans (`queue::recover_orphans`). The expiry is checked
/// in the delete itself, so a heartbeat that lands first keeps its node.
pub fn reap(c: &Connection, me: &str, predecessors: bool) -> Result<Vec<String>, StoreError> {
    static EXPIRED: Sql = Sql::new(|d| {
        format!(
            "DELETE FROM nodes WHERE id <> ?1 AND lease_until_ms < {} RETURNING id",
            sql::now_ms(d)
        )
    });
    let mut gone: Vec<String> = c
        .prepare_cached(EXPIRED.text(c.dialect()))?
        .query_map([me], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if predecessors {
        let name = me.split('/').next().unwrap_or_default();
        let earlier: Vec<String> = c
            .prepare_cached("DELETE FROM nodes WHERE name = ?1 AND id <> ?2 RETURNING id")?
            .query_map([name, me], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        gone.extend(earlier);
    }
    gone.sort();
    Ok(gone)
}

/// A node's clean stop: it leaves nothing claimed, so no one need wait out its lease.
pub fn deregister(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM nodes WHERE id = ?1", [id])?;
    Ok(())
}

/// The registered nodes, for `/metrics`.
pub fn live(c: &Connection) -> Result<i64, StoreError> {
    static LIVE: Sql = Sql::new(|d| {
        format!(
            "SELECT count(*) FROM nodes WHERE lease_until_ms >= {}",
            sql::now_ms(d)
        )
    });
    Ok(c.prepare_cached(LIVE.text(c.dialect()))?
        .query_row([], |r| r.get(0))?)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The channel the nodes of this schema wake each other on (PostgreSQL).
/// The schema's channel for wake-ups; the same for every connection to it, so a caller that
/// sends often asks once.
pub fn channel(c: &Connection) -> Result<String, StoreError> {
    Ok(c.query_row(
        "SELECT 'quire_' || to_hex(hashtext(current_schema()))",
        [],
        |r| r.get(0),
    )?)
}

/// Makes `c` receive the wake-ups of this schema's nodes (PostgreSQL).
pub fn listen(c: &Connection) -> Result<(), StoreError> {
    let channel = channel(c)?;
    c.execute_batch(&format!("LISTEN \"{channel}\""))?;
    Ok(())
}

/// Wakes the other nodes of this schema (its `channel`): there is queued work (PostgreSQL;
/// sent at once, as its caller's transaction has committed).
pub fn notify(c: &Connection, channel: &str, topic: &str) -> Result<(), StoreError> {
    c.query_row(
        "SELECT 1 FROM (SELECT pg_notify(?1, ?2)) AS sent",
        params![channel, topic],
        |r| r.get::<_, i64>(0),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, OpenOptions};

    #[test]
    fn leases_run_out_on_the_database_clock_and_names_reap_their_predecessors() {
        let db = Db::open(":memory:", OpenOptions::default()).unwrap();
        let c = db.conn().unwrap();
        let a = register(&c, "a", 60_000).unwrap();
        let b = register(&c, "b", 60_000).unwrap();
        assert!(a.starts_with("a/") && b.starts_with("b/"));
        assert!(
            reap(&c, &b, false).unwrap().is_empty(),
            "leases still running"
        );
        assert!(heartbeat(&c, &a).unwrap());
        // A lease already over (a negative one) is reaped by anyone else, never by itself.
        let gone = register(&c, "c", -1).unwrap();
        assert!(reap(&c, &gone, false).unwrap().is_empty());
        assert_eq!(reap(&c, &b, false).unwrap(), vec![gone.clone()]);
        assert!(!heartbeat(&c, &gone).unwrap(), "a reaped node learns it");
        assert!(!registered(&c, &gone).unwrap());
        // A new incarnation of a name, holding its lock, reaps the old one at once.
        let a2 = register(&c, "a", 60_000).unwrap();
        assert_eq!(reap(&c, &a2, true).unwrap(), vec![a.clone()]);
        assert!(registered(&c, &a2).unwrap() && registered(&c, &b).unwrap());
        assert_eq!(live(&c).unwrap(), 2);
        deregister(&c, &b).unwrap();
        assert_eq!(live(&c).unwrap(), 1);
    }
}
