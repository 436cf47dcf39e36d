use super::conn::{params, Connection, DbResult, Row};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use serde_json::Value;

/// A validation gate (validation stage) of a schema, as stored and as answered.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Gate)]
pub struct GateRow {
    pub id: String,
    pub schema_id: String,
    pub name: String,
    pub ordinal: i64,
    /// `info`, `warning` or `blocking`.
    pub severity: String,
    pub field_scope: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub mechanisms: Value,
    #[schema(value_type = Object)]
    pub blocking_config: Value,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl GateRow {
    pub fn on_block(&self) -> String {
        self.blocking_config
            .get("on_block")
            .and_then(Value::as_str)
            .unwrap_or("review_queue")
            .to_string()
    }
}

const COLS: &str = "id, schema_id, name, ordinal, severity, field_scope, mechanisms, blocking_config, version, created_at, updated_at";

fn row(r: &Row) -> DbResult<GateRow> {
    Ok(GateRow {
        id: r.get(0)?,
        schema_id: r.get(1)?,
        name: r.get(2)?,
        ordinal: r.get(3)?,
        severity: r.get(4)?,
        field_scope: super::json(r, 5, "validation_stages")?,
        mechanisms: super::json(r, 6, "validation_stages")?,
        blocking_config: super::json(r, 7, "validation_stages")?,
        version: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

pub fn list(c: &Connection, schema_id: &str) -> Result<Vec<GateRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM validation_stages WHERE schema_id = ?1 AND deleted_at IS NULL ORDER BY ordinal, seq");
    Ok(c.prepare_cached(&sql)?
        .query_map([schema_id], row)?
        .collect::<Result<_, _>>()?)
}

pub fn get(c: &Connection, schema_id: &str, id: &str) -> Result<Option<GateRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM validation_stages WHERE id = ?1 AND schema_id = ?2 AND deleted_at IS NULL");
    optional(
        c.prepare_cached(&sql)?
            .query_row(params![id, schema_id], row),
    )
}

pub struct GateInput<'a> {
    pub name: &'a str,
    pub severity: &'a str,
    pub field_scope: &'a [String],
    pub mechanisms: &'a Value,
    pub blocking_config: &'a Value,
}

pub fn create(
    c: &Connection,
    org_id: &str,
    schema_id: &str,
    g: GateInput,
) -> Result<GateRow, StoreError> {
    let id = new_id();
    let now = now_rfc3339();
    let ordinal: i64 = c.query_row(
        "SELECT coalesce(max(ordinal), 0) + 1 FROM validation_stages WHERE schema_id = ?1 AND deleted_at IS NULL",
        [schema_id],
        |r| r.get(0),
    )?;
    c.execute(
        "INSERT INTO validation_stages(id, org_id, schema_id, name, ordinal, severity, field_scope, mechanisms, blocking_config, version, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?10)",
        params![
            id,
            org_id,
            schema_id,
            g.name,
            ordinal,
            g.severity,
            serde_json::to_string(g.field_scope).unwrap_or_default(),
            g.mechanisms.to_string(),
            g.blocking_config.to_string(),
            now
        ],
    )?;
    get(c, schema_id, &id)?.ok_or_else(|| StoreError::Refused("gate vanished".into()))
}

pub fn update(c: &Connection, id: &str, g: GateInput) -> Result<(), StoreError> {
    c.execute(
        "UPDATE validation_stages SET name = ?2, severity = ?3, field_scope = ?4, mechanisms = ?5, blocking_config = ?6,
         version = version + 1, updated_at = ?7 WHERE id = ?1",
        params![
            id,
            g.name,
            g.severity,
            serde_json::to_string(g.field_scope).unwrap_or_default(),
            g.mechanisms.to_string(),
            g.blocking_config.to_string(),
            now_rfc3339()
        ],
    )?;
    Ok(())
}

pub fn soft_delete(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE validation_stages SET deleted_at = ?2 WHERE id = ?1",
        params![id, now_rfc3339()],
    )?;
    Ok(())
}

pub fn set_ordinal(c: &Connection, id: &str, ordinal: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE validation_stages SET ordinal = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, ordinal, now_rfc3339()],
    )?;
    Ok(())
}

/// A validation stage's name, deleted ones included (decisions name the stage they were made at).
pub fn name(c: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    optional(c.query_row(
        "SELECT name FROM validation_stages WHERE id = ?1",
        [id],
        |r| r.get(0),
    ))
}
