use super::conn::{params, Connection, DbResult, Row};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

fn org_of(r: &Row) -> DbResult<Org> {
    Ok(Org {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

pub fn find_by_name(c: &Connection, name: &str) -> Result<Option<Org>, StoreError> {
    optional(c.query_row(
        "SELECT id, name, created_at FROM organizations WHERE name = ?1",
        [name],
        org_of,
    ))
}

/// The organization a user named on the command line: by its name, or else by its id (the
/// first column `quire orgs list` prints).
pub fn find_by_name_or_id(c: &Connection, name_or_id: &str) -> Result<Option<Org>, StoreError> {
    if let Some(org) = find_by_name(c, name_or_id)? {
        return Ok(Some(org));
    }
    optional(c.query_row(
        "SELECT id, name, created_at FROM organizations WHERE id = ?1",
        [name_or_id],
        org_of,
    ))
}

/// Creates an organization; `Ok(None)` when the name is taken.
pub fn create(c: &Connection, name: &str) -> Result<Option<Org>, StoreError> {
    if find_by_name(c, name)?.is_some() {
        return Ok(None);
    }
    let org = Org {
        id: new_id(),
        name: name.to_string(),
        created_at: now_rfc3339(),
    };
    c.execute(
        "INSERT INTO organizations(id, name, created_at) VALUES (?1, ?2, ?3)",
        params![org.id, org.name, org.created_at],
    )?;
    Ok(Some(org))
}

pub fn list(c: &Connection) -> Result<Vec<Org>, StoreError> {
    let mut st = c.prepare("SELECT id, name, created_at FROM organizations ORDER BY seq")?;
    let rows = st
        .query_map([], |r| {
            Ok(Org {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn count(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.query_row("SELECT count(*) FROM organizations", [], |r| r.get(0))?)
}
