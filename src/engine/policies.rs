//! Data policies: each change is checked against the whole rule set (it must still compile: no
//! cycle, no input that is not a field of the policy) before it is stored.

use super::EngineError;
use crate::domain::ids::new_id;
use crate::domain::policy::{self, RuleDef};
use crate::store;
use crate::store::policies::PolicyRow;
use crate::store::Connection;
use serde_json::Value;

pub fn load(c: &Connection, org: &str, id: &str) -> Result<PolicyRow, EngineError> {
    store::policies::get(c, org, id)?
        .ok_or_else(|| EngineError::NotFound("Data policy not found".into()))
}

/// Deletes a policy no rail uses.
pub fn delete(c: &Connection, org: &str, id: &str) -> Result<(), EngineError> {
    load(c, org, id)?;
    let users = store::policies::rails_referencing(c, org, id)?;
    if !users.is_empty() {
        return Err(EngineError::Invalid(format!(
            "The policy is referenced by the rail of schema '{}'",
            users.join("', '")
        )));
    }
    Ok(store::policies::soft_delete(c, id)?)
}

/// Declares (or retypes) a field of the policy.
pub fn add_field(
    c: &Connection,
    org: &str,
    id: &str,
    key: &str,
    data_type: &str,
) -> Result<PolicyRow, EngineError> {
    load(c, org, id)?;
    store::policies::add_field(c, id, key, data_type)?;
    load(c, org, id)
}

/// Removes a field no rule of the policy reads or writes.
pub fn delete_field(
    c: &Connection,
    org: &str,
    id: &str,
    key: &str,
) -> Result<PolicyRow, EngineError> {
    let p = load(c, org, id)?;
    if !p.fields.iter().any(|f| f.field_key == key) {
        return Err(EngineError::NotFound("Policy field not found".into()));
    }
    let remaining: Vec<String> = p.field_keys().into_iter().filter(|f| f != key).collect();
    policy::compiled_order(&remaining, &p.rules)
        .map_err(|e| EngineError::Invalid(format!("Cannot remove field '{key}': {e}")))?;
    store::policies::delete_field(c, id, key)?;
    load(c, org, id)
}

/// Appends a rule, if the rule set still compiles with it.
pub fn add_rule(
    c: &Connection,
    org: &str,
    id: &str,
    field_key: String,
    rule_type: String,
    config: Value,
) -> Result<RuleDef, EngineError> {
    let p = load(c, org, id)?;
    let order = p.rules.iter().map(|r| r.order).max().unwrap_or(0) + 1;
    let rule = RuleDef {
        id: new_id(),
        field_key,
        rule_type,
        config,
        order,
    };
    let mut all = p.rules.clone();
    all.push(rule.clone());
    policy::compiled_order(&p.field_keys(), &all).map_err(EngineError::Invalid)?;
    store::policies::add_rule(c, id, &rule)?;
    Ok(rule)
}

/// Replaces a rule's configuration, if the rule set still compiles with it.
pub fn update_rule(
    c: &Connection,
    org: &str,
    id: &str,
    rule_id: &str,
    config: Value,
) -> Result<RuleDef, EngineError> {
    let p = load(c, org, id)?;
    let mut all = p.rules.clone();
    let r = all
        .iter_mut()
        .find(|r| r.id == rule_id)
        .ok_or_else(|| EngineError::NotFound("Rule not found".into()))?;
    r.config = config.clone();
    let updated = r.clone();
    policy::compiled_order(&p.field_keys(), &all).map_err(EngineError::Invalid)?;
    store::policies::update_rule(c, id, rule_id, &config)?;
    Ok(updated)
}

pub fn delete_rule(c: &Connection, org: &str, id: &str, rule_id: &str) -> Result<(), EngineError> {
    let p = load(c, org, id)?;
    if !p.rules.iter().any(|r| r.id == rule_id) {
        return Err(EngineError::NotFound("Rule not found".into()));
    }
    Ok(store::policies::delete_rule(c, id, rule_id)?)
}
