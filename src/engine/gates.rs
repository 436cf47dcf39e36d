//! Validation stages (gates) of a schema: each one compiled against the schema's fields before
//! it is stored, none deleted while a rail uses it.

use super::EngineError;
use crate::domain::gate;
use crate::store;
use crate::store::gates::{GateInput, GateRow};
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use serde_json::{json, Value};

/// A gate as asked for: absent parts keep the current gate's (an update) or take defaults.
#[derive(Debug, Default)]
pub struct GateDraft {
    pub name: Option<String>,
    pub severity: Option<String>,
    pub field_scope: Option<Vec<String>>,
    pub mechanisms: Option<Value>,
    pub blocking_config: Option<Value>,
}

pub fn schema(c: &Connection, org: &str, id: &str) -> Result<SchemaRow, EngineError> {
    store::schemas::get(c, org, id, false)?
        .ok_or_else(|| EngineError::NotFound("Schema not found".into()))
}

pub fn load(c: &Connection, schema_id: &str, id: &str) -> Result<GateRow, EngineError> {
    store::gates::get(c, schema_id, id)?
        .ok_or_else(|| EngineError::NotFound("Validation stage not found".into()))
}

fn blocking_config(v: Option<Value>) -> Result<Value, EngineError> {
    let on_block = match v
        .as_ref()
        .and_then(|b| b.get("on_block").or_else(|| b.get("onBlock")))
    {
        None | Some(Value::Null) => "review_queue",
        Some(Value::String(s)) if s == "review_queue" || s == "hold" => s.as_str(),
        Some(_) => {
            return Err(EngineError::Invalid(
                "blocking_config.on_block must be \"review_queue\" or \"hold\"".into(),
            ))
        }
    };
    if v.as_ref().is_some_and(|b| !b.is_object() && !b.is_null()) {
        return Err(EngineError::Invalid(
            "blocking_config must be an object".into(),
        ));
    }
    Ok(json!({ "on_block": on_block }))
}

/// The gate as it would be stored: the draft over `base`, compiled against the schema's fields.
fn settled(s: &SchemaRow, d: GateDraft, base: Option<&GateRow>) -> Result<Stored, EngineError> {
    let name = d
        .name
        .or_else(|| base.map(|g| g.name.clone()))
        .ok_or_else(|| EngineError::Invalid("name is required".into()))?;
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(EngineError::Invalid("name must be 1-100 characters".into()));
    }
    let severity = d
        .severity
        .or_else(|| base.map(|g| g.severity.clone()))
        .ok_or_else(|| EngineError::Invalid("severity is required".into()))?;
    let field_scope = d
        .field_scope
        .or_else(|| base.map(|g| g.field_scope.clone()))
        .unwrap_or_default();
    let mechanisms = d
        .mechanisms
        .or_else(|| base.map(|g| g.mechanisms.clone()))
        .unwrap_or_else(|| json!([]));
    let blocking_config = match (d.blocking_config, base) {
        (None, Some(g)) => g.blocking_config.clone(),
        (v, _) => blocking_config(v)?,
    };
    let names: Vec<String> = s.fields.iter().map(|f| f.field_name.clone()).collect();
    gate::compile(&severity, &field_scope, &mechanisms, &names)
        .and_then(|g| super::spec::check_gate_paths(&g, &s.fields))
        .map_err(EngineError::Invalid)?;
    Ok(Stored {
        name,
        severity,
        field_scope,
        mechanisms,
        blocking_config,
    })
}

struct Stored {
    name: String,
    severity: String,
    field_scope: Vec<String>,
    mechanisms: Value,
    blocking_config: Value,
}

impl Stored {
    fn input(&self) -> GateInput<'_> {
        GateInput {
            name: &self.name,
            severity: &self.severity,
            field_scope: &self.field_scope,
            mechanisms: &self.mechanisms,
            blocking_config: &self.blocking_config,
        }
    }
}

pub fn create(
    c: &Connection,
    org: &str,
    schema_id: &str,
    draft: GateDraft,
) -> Result<GateRow, EngineError> {
    let s = schema(c, org, schema_id)?;
    let g = settled(&s, draft, None)?;
    Ok(store::gates::create(c, org, schema_id, g.input())?)
}

pub fn update(
    c: &Connection,
    org: &str,
    schema_id: &str,
    id: &str,
    draft: GateDraft,
) -> Result<GateRow, EngineError> {
    let s = schema(c, org, schema_id)?;
    let current = load(c, schema_id, id)?;
    let g = settled(&s, draft, Some(&current))?;
    store::gates::update(c, id, g.input())?;
    load(c, schema_id, id)
}

/// Deletes a gate no rail uses.
pub fn delete(c: &Connection, org: &str, schema_id: &str, id: &str) -> Result<(), EngineError> {
    schema(c, org, schema_id)?;
    load(c, schema_id, id)?;
    let users = store::policies::rails_referencing(c, org, id)?;
    if !users.is_empty() {
        return Err(EngineError::Invalid(format!(
            "The validation stage is referenced by the rail of schema '{}'",
            users.join("', '")
        )));
    }
    Ok(store::gates::soft_delete(c, id)?)
}

/// Puts the schema's gates in the given order; every gate listed exactly once.
pub fn reorder(
    c: &Connection,
    org: &str,
    schema_id: &str,
    ids: &[String],
) -> Result<Vec<GateRow>, EngineError> {
    schema(c, org, schema_id)?;
    let current = store::gates::list(c, schema_id)?;
    let mut asked = ids.to_vec();
    asked.sort();
    asked.dedup();
    let mut existing: Vec<String> = current.iter().map(|g| g.id.clone()).collect();
    existing.sort();
    if asked.len() != ids.len() || asked != existing {
        return Err(EngineError::Invalid(
            "stage_ids must list every validation stage of the schema exactly once".into(),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        store::gates::set_ordinal(c, id, i as i64 + 1)?;
    }
    Ok(store::gates::list(c, schema_id)?)
}
