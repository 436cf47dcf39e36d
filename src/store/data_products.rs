//! Data products: a finished run's delivery, one per pipeline.

use super::conn::{params, Connection, DbResult, Row};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};

/// A data product: the delivered view of a finished run, as stored and as answered.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DataProduct {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub name: String,
    pub pipeline_id: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

const DP_COLS: &str = "seq, id, name, pipeline_id, status, created_at, updated_at";

fn dp(r: &Row) -> DbResult<DataProduct> {
    Ok(DataProduct {
        seq: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        pipeline_id: r.get(3)?,
        status: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

/// Creates the run's data product or reactivates it; true when created.
pub fn upsert(
    c: &Connection,
    org_id: &str,
    pipeline_id: &str,
    name: Option<&str>,
    default_name: &str,
) -> Result<(DataProduct, bool), StoreError> {
    let now = now_rfc3339();
    let existing = optional(c.query_row(
        &format!("SELECT {DP_COLS} FROM data_products WHERE pipeline_id = ?1"),
        [pipeline_id],
        dp,
    ))?;
    let created = existing.is_none();
    match existing {
        Some(d) => {
            // An absent name keeps the one it has.
            c.execute("UPDATE data_products SET name = coalesce(?2, name), status = 'active', updated_at = ?3 WHERE id = ?1", params![d.id, name, now])?;
        }
        None => {
            c.execute(
                "INSERT INTO data_products(id, org_id, pipeline_id, name, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?5)",
                params![new_id(), org_id, pipeline_id, name.unwrap_or(default_name), now],
            )?;
        }
    }
    let d = c.query_row(
        &format!("SELECT {DP_COLS} FROM data_products WHERE pipeline_id = ?1"),
        [pipeline_id],
        dp,
    )?;
    Ok((d, created))
}

pub fn get(c: &Connection, org_id: &str, id: &str) -> Result<Option<DataProduct>, StoreError> {
    optional(c.query_row(
        &format!("SELECT {DP_COLS} FROM data_products WHERE id = ?1 AND org_id = ?2"),
        params![id, org_id],
        dp,
    ))
}

pub fn list(
    c: &Connection,
    org_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<DataProduct>, i64), StoreError> {
    let rows = c
        .prepare_cached(&format!("SELECT {DP_COLS} FROM data_products WHERE org_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"))?
        .query_map(params![org_id, before.unwrap_or(i64::MAX), limit], dp)?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM data_products WHERE org_id = ?1",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// The data product a run delivers, if one was made.
pub fn of_pipeline(c: &Connection, pipeline_id: &str) -> Result<Option<DataProduct>, StoreError> {
    optional(
        c.prepare_cached(&format!(
            "SELECT {DP_COLS} FROM data_products WHERE pipeline_id = ?1"
        ))?
        .query_row([pipeline_id], dp),
    )
}
