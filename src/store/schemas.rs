use super::conn::{params, Connection, DbResult, OptionalExtension, Row};
use super::sql;
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339, short_id};
use crate::domain::schema::{to_definition, FieldDef};
use serde_json::Value;

/// A schema (Spec) as stored; answered with its field count and link (`answers::Schema`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaRow {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub description: Option<String>,
    /// The fields as a JSON Schema object, as given or derived from `fields`.
    #[schema(value_type = Object)]
    pub definition: Value,
    pub fields: Vec<FieldDef>,
    pub version: i64,
    #[schema(value_type = Vec<Object>)]
    pub rail: Value,
    #[serde(skip)]
    pub deleted_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Given inline to an extraction: kept for its runs, not listed.
    #[serde(skip)]
    pub hidden: bool,
}

const COLS: &str = "seq, id, short_id, name, description, definition, fields, version, rail, deleted_at, created_at, updated_at, hidden";

fn row(r: &Row) -> DbResult<SchemaRow> {
    Ok(SchemaRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        short_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        definition: super::json(r, 5, "schemas")?,
        fields: super::json(r, 6, "schemas")?,
        version: r.get(7)?,
        rail: super::json(r, 8, "schemas")?,
        deleted_at: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        hidden: r.get(12)?,
    })
}

pub fn insert(
    c: &Connection,
    org_id: &str,
    name: &str,
    description: Option<&str>,
    fields: &[FieldDef],
) -> Result<SchemaRow, StoreError> {
    let now = now_rfc3339();
    let id = new_id();
    let definition = to_definition(fields);
    c.execute(
        "INSERT INTO schemas(id, short_id, org_id, name, description, definition, fields, version, rail, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, '[]', ?8, ?8)",
        params![
            id,
            short_id("SCH"),
            org_id,
            name,
            description,
            definition.to_string(),
            serde_json::to_string(fields).unwrap_or_default(),
            now
        ],
    )?;
    register_fields(c, org_id, &[], fields)?;
    get(c, org_id, &id, true)?.ok_or_else(|| StoreError::Refused("schema vanished".into()))
}

/// The schema an extraction was given inline, stored under `name` (a digest of its fields) and
/// hidden from the schema list, so the same inline schema names the same spec every time.
pub fn find_or_insert_hidden(
    c: &Connection,
    org_id: &str,
    name: &str,
    fields: &[FieldDef],
) -> Result<SchemaRow, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM schemas WHERE org_id = ?1 AND hidden = 1 AND name = ?2 AND deleted_at IS NULL ORDER BY seq DESC LIMIT 1"
    );
    if let Some(s) = optional(
        c.prepare_cached(&sql)?
            .query_row(params![org_id, name], row),
    )? {
        return Ok(s);
    }
    let mut s = insert(
        c,
        org_id,
        name,
        Some("given inline to POST /v1/extract"),
        fields,
    )?;
    c.execute("UPDATE schemas SET hidden = 1 WHERE id = ?1", [&s.id])?;
    s.hidden = true;
    Ok(s)
}

/// One schema of the organization; deleted ones only when `include_deleted`.
pub fn get(
    c: &Connection,
    org_id: &str,
    id: &str,
    include_deleted: bool,
) -> Result<Option<SchemaRow>, StoreError> {
    // A schema is also found by its short id (`SCH-…`), unique enough within one organization.
    let by = if id.starts_with("SCH-") {
        "short_id"
    } else {
        "id"
    };
    let sql = format!(
        "SELECT {COLS} FROM schemas WHERE {by} = ?1 AND org_id = ?2 ORDER BY seq DESC LIMIT 1"
    );
    let found = optional(c.prepare_cached(&sql)?.query_row(params![id, org_id], row))?;
    Ok(found.filter(|s| include_deleted || s.deleted_at.is_none()))
}

pub fn list(
    c: &Connection,
    org_id: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<(Vec<SchemaRow>, i64), StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM schemas WHERE org_id = ?1 AND deleted_at IS NULL AND hidden = 0 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(params![org_id, before_seq.unwrap_or(i64::MAX), limit], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM schemas WHERE org_id = ?1 AND deleted_at IS NULL AND hidden = 0",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// Replaces name, description and fields and bumps the version.
pub fn update(
    c: &Connection,
    org_id: &str,
    current: &SchemaRow,
    name: &str,
    description: Option<&str>,
    fields: &[FieldDef],
) -> Result<SchemaRow, StoreError> {
    c.execute(
        "UPDATE schemas SET name = ?2, description = ?3, definition = ?4, fields = ?5, version = version + 1, updated_at = ?6
         WHERE id = ?1",
        params![
            current.id,
            name,
            description,
            to_definition(fields).to_string(),
            serde_json::to_string(fields).unwrap_or_default(),
            now_rfc3339()
        ],
    )?;
    register_fields(c, org_id, &current.fields, fields)?;
    get(c, org_id, &current.id, true)?.ok_or_else(|| StoreError::Refused("schema vanished".into()))
}

pub fn set_rail(c: &Connection, id: &str, rail: &Value) -> Result<(), StoreError> {
    c.execute(
        "UPDATE schemas SET rail = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, rail.to_string(), now_rfc3339()],
    )?;
    Ok(())
}

pub fn soft_delete(c: &Connection, org_id: &str, s: &SchemaRow) -> Result<(), StoreError> {
    c.execute(
        "UPDATE schemas SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1",
        params![s.id, now_rfc3339()],
    )?;
    register_fields(c, org_id, &s.fields, &[])?;
    Ok(())
}

/// Keeps the Field Registry in step: fields that appear gain an occurrence, fields that go lose one.
fn register_fields(
    c: &Connection,
    org_id: &str,
    before: &[FieldDef],
    after: &[FieldDef],
) -> Result<(), StoreError> {
    for f in after {
        // An array field's sub-fields as the newest schema that names it gives them.
        let items = super::json_text(&f.items);
        let existing: Option<(i64, Vec<String>)> = c
            .query_row(
                "SELECT seq, synonyms FROM registry_fields WHERE org_id = ?1 AND canonical_name = ?2",
                params![org_id, f.field_name],
                |r| Ok((r.get(0)?, super::json(r, 1, "registry_fields")?)),
            )
            .optional()?;
        let added = !before.iter().any(|b| b.field_name == f.field_name);
        match existing {
            Some((seq, mut synonyms)) => {
                for s in &f.synonyms {
                    if !synonyms.contains(s) {
                        synonyms.push(s.clone());
                    }
                }
                c.execute(
                    "UPDATE registry_fields SET synonyms = ?2, occurrence_count = occurrence_count + ?3,
                     items = coalesce(?4, items) WHERE seq = ?1",
                    params![seq, serde_json::to_string(&synonyms).unwrap_or_default(), added as i64, items],
                )?;
            }
            None => {
                c.execute(
                    "INSERT INTO registry_fields(id, org_id, canonical_name, display_name, data_type, synonyms, occurrence_count,
                     created_at, items) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)",
                    params![
                        new_id(),
                        org_id,
                        f.field_name,
                        f.display_name,
                        f.data_type,
                        serde_json::to_string(&f.synonyms).unwrap_or_default(),
                        now_rfc3339(),
                        items
                    ],
                )?;
            }
        }
    }
    for b in before {
        if !after.iter().any(|a| a.field_name == b.field_name) {
            c.execute(
                &format!(
                    "UPDATE registry_fields SET occurrence_count = {}
                 WHERE org_id = ?1 AND canonical_name = ?2",
                    sql::greatest(c.dialect(), "occurrence_count - 1", "0")
                ),
                params![org_id, b.field_name],
            )?;
        }
    }
    Ok(())
}

/// A field of the Field Registry (every field name any schema used, with its synonyms), as
/// stored and as answered.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RegistryField {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub canonical_name: String,
    pub display_name: String,
    pub data_type: String,
    pub synonyms: Vec<String>,
    pub occurrence_count: i64,
    pub created_at: String,
    /// An array field's sub-fields.
    pub items: Option<Vec<FieldDef>>,
}

pub fn list_registry(
    c: &Connection,
    org_id: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<(Vec<RegistryField>, i64), StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT seq, id, canonical_name, display_name, data_type, synonyms, occurrence_count, created_at, items
             FROM registry_fields WHERE org_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        )?
        .query_map(params![org_id, before_seq.unwrap_or(i64::MAX), limit], |r| {
            Ok(RegistryField {
                seq: r.get(0)?,
                id: r.get(1)?,
                canonical_name: r.get(2)?,
                display_name: r.get(3)?,
                data_type: r.get(4)?,
                synonyms: super::json(r, 5, "registry_fields")?,
                occurrence_count: r.get(6)?,
                created_at: r.get(7)?,
                items: super::json_opt(r, 8, "registry_fields")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM registry_fields WHERE org_id = ?1",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// Every field of the organization's registry, newest first (a registry holds the field names
/// its schemas use: hundreds, not millions).
pub fn registry_all(c: &Connection, org_id: &str) -> Result<Vec<RegistryField>, StoreError> {
    Ok(list_registry(c, org_id, None, i64::MAX)?.0)
}

/// One registry field by id.
pub fn registry_field(
    c: &Connection,
    org_id: &str,
    id: &str,
) -> Result<Option<RegistryField>, StoreError> {
    Ok(registry_all(c, org_id)?.into_iter().find(|f| f.id == id))
}

/// Registry synonyms of the organization by canonical name (used by transfer and extraction).
pub fn registry_synonyms(
    c: &Connection,
    org_id: &str,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let rows = c
        .prepare_cached("SELECT canonical_name, synonyms FROM registry_fields WHERE org_id = ?1")?
        .query_map([org_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                super::json(r, 1, "registry_fields")?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
