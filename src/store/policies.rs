use super::conn::{params, Connection, DbResult, Row};
use super::sql;
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use crate::domain::policy::RuleDef;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct PolicyField {
    pub field_key: String,
    pub data_type: String,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub seq: i64,
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub version: i64,
    pub fields: Vec<PolicyField>,
    /// In `order`; the compiled order is worked out by the domain.
    pub rules: Vec<RuleDef>,
    pub created_at: String,
    pub updated_at: String,
}

impl PolicyRow {
    pub fn active(&self) -> bool {
        !self.fields.is_empty() && !self.rules.is_empty()
    }
    pub fn field_keys(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.field_key.clone()).collect()
    }
}

fn load_parts(c: &Connection, mut p: PolicyRow) -> Result<PolicyRow, StoreError> {
    p.fields = c
        .prepare_cached("SELECT field_key, type, created_at FROM policy_fields WHERE policy_id = ?1 ORDER BY created_at, field_key")?
        .query_map([&p.id], |r| Ok(PolicyField { field_key: r.get(0)?, data_type: r.get(1)?, created_at: r.get(2)? }))?
        .collect::<Result<_, _>>()?;
    p.rules = c
        .prepare_cached("SELECT id, field_key, rule_type, config, ord FROM policy_rules WHERE policy_id = ?1 ORDER BY ord")?
        .query_map([&p.id], |r| {
            Ok(RuleDef {
                id: r.get(0)?,
                field_key: r.get(1)?,
                rule_type: r.get(2)?,
                config: super::json(r, 3, "policy_rules")?,
                order: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(p)
}

fn head(r: &Row) -> DbResult<PolicyRow> {
    Ok(PolicyRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        version: r.get(4)?,
        fields: Vec::new(),
        rules: Vec::new(),
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

const COLS: &str = "seq, id, name, description, version, created_at, updated_at";

pub fn get(c: &Connection, org_id: &str, id: &str) -> Result<Option<PolicyRow>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM data_policies WHERE id = ?1 AND org_id = ?2 AND deleted_at IS NULL"
    );
    match optional(c.prepare_cached(&sql)?.query_row(params![id, org_id], head))? {
        Some(p) => Ok(Some(load_parts(c, p)?)),
        None => Ok(None),
    }
}

pub fn create(
    c: &Connection,
    org_id: &str,
    name: &str,
    description: Option<&str>,
) -> Result<PolicyRow, StoreError> {
    let id = new_id();
    let now = now_rfc3339();
    c.execute(
        "INSERT INTO data_policies(id, org_id, name, description, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
        params![id, org_id, name, description, now],
    )?;
    get(c, org_id, &id)?.ok_or_else(|| StoreError::Refused("policy vanished".into()))
}

pub fn list(
    c: &Connection,
    org_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<PolicyRow>, i64), StoreError> {
    let sql = format!("SELECT {COLS} FROM data_policies WHERE org_id = ?1 AND deleted_at IS NULL AND seq < ?2 ORDER BY seq DESC LIMIT ?3");
    let heads = c
        .prepare_cached(&sql)?
        .query_map(params![org_id, before.unwrap_or(i64::MAX), limit], head)?
        .collect::<Result<Vec<_>, _>>()?;
    let rows = heads
        .into_iter()
        .map(|p| load_parts(c, p))
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM data_policies WHERE org_id = ?1 AND deleted_at IS NULL",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// Bumps the version after any change.
pub fn touch(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE data_policies SET version = version + 1, updated_at = ?2 WHERE id = ?1",
        params![id, now_rfc3339()],
    )?;
    Ok(())
}

pub fn rename(
    c: &Connection,
    id: &str,
    name: &str,
    description: Option<&str>,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE data_policies SET name = ?2, description = ?3 WHERE id = ?1",
        params![id, name, description],
    )?;
    touch(c, id)
}

pub fn soft_delete(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE data_policies SET deleted_at = ?2 WHERE id = ?1",
        params![id, now_rfc3339()],
    )?;
    Ok(())
}

/// Live schemas of the organization whose rail names this id (policies and gates alike).
pub fn rails_referencing(
    c: &Connection,
    org_id: &str,
    id: &str,
) -> Result<Vec<String>, StoreError> {
    let pattern = format!("%{id}%");
    let rows = c
        .prepare_cached(&format!(
            "SELECT name FROM schemas WHERE org_id = ?1 AND deleted_at IS NULL AND rail {} ?2",
            sql::like_ci(c.dialect())
        ))?
        .query_map(params![org_id, pattern], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

pub fn add_field(
    c: &Connection,
    id: &str,
    field_key: &str,
    data_type: &str,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO policy_fields(policy_id, field_key, type, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(policy_id, field_key) DO UPDATE SET type = excluded.type",
        params![id, field_key, data_type, now_rfc3339()],
    )?;
    touch(c, id)
}

pub fn delete_field(c: &Connection, id: &str, field_key: &str) -> Result<bool, StoreError> {
    let n = c.execute(
        "DELETE FROM policy_fields WHERE policy_id = ?1 AND field_key = ?2",
        params![id, field_key],
    )?;
    if n > 0 {
        touch(c, id)?;
    }
    Ok(n > 0)
}

pub fn add_rule(c: &Connection, policy_id: &str, rule: &RuleDef) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO policy_rules(id, policy_id, field_key, rule_type, config, ord, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![rule.id, policy_id, rule.field_key, rule.rule_type, rule.config.to_string(), rule.order, now_rfc3339()],
    )?;
    touch(c, policy_id)
}

pub fn update_rule(
    c: &Connection,
    policy_id: &str,
    rule_id: &str,
    config: &Value,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE policy_rules SET config = ?3 WHERE id = ?1 AND policy_id = ?2",
        params![rule_id, policy_id, config.to_string()],
    )?;
    touch(c, policy_id)
}

pub fn delete_rule(c: &Connection, policy_id: &str, rule_id: &str) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM policy_rules WHERE id = ?1 AND policy_id = ?2",
        params![rule_id, policy_id],
    )?;
    touch(c, policy_id)
}
