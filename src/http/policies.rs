use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, RuleId, Write};
use super::idempotency::Reply;
use super::pagination;
use crate::answers::{All, Deleted, Policy, PolicyField, Rule};
use crate::domain::policy::{self, RuleDef};
use crate::domain::schema::{valid_field_name, DATA_TYPES};
use crate::engine::policies;
use crate::store;
use crate::store::policies::PolicyRow;
use crate::store::Connection;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

fn rule_json(r: &RuleDef) -> Rule {
    Rule {
        id: r.id.clone(),
        field_key: r.field_key.clone(),
        rule_type: r.rule_type.clone(),
        config: r.config.clone(),
        order: r.order,
    }
}

/// Rules in compiled order (stored order when the set does not compile, which validation prevents).
fn compiled_rules(p: &PolicyRow) -> Vec<Rule> {
    match policy::compiled_order(&p.field_keys(), &p.rules) {
        Ok(order) => order
            .iter()
            .filter_map(|id| p.rules.iter().find(|r| &r.id == id))
            .map(rule_json)
            .collect(),
        Err(_) => p.rules.iter().map(rule_json).collect(),
    }
}

pub fn render(p: &PolicyRow) -> Policy {
    Policy {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        version: p.version,
        status: if p.active() { "active" } else { "inactive" },
        fields: p
            .fields
            .iter()
            .map(|f| PolicyField {
                field_key: f.field_key.clone(),
                data_type: f.data_type.clone(),
                created_at: f.created_at.clone(),
            })
            .collect(),
        rules: compiled_rules(p),
        created_at: p.created_at.clone(),
        updated_at: p.updated_at.clone(),
    }
}

/// A data policy's name and description.
#[derive(Deserialize, ToSchema)]
#[schema(as = PolicyInput)]
pub struct PolicyBody {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    description: Option<String>,
}

fn check_name(n: &str) -> Result<String, ApiError> {
    let t = n.trim();
    if t.is_empty() || t.chars().count() > 100 {
        return Err(ApiError::bad("name must be 1-100 characters"));
    }
    Ok(t.to_string())
}

fn load(c: &Connection, org: &str, id: &str) -> Result<PolicyRow, ApiError> {
    Ok(policies::load(c, org, id)?)
}

pub async fn create(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body::<PolicyBody>(payload, false).await?;
    let name = check_name(
        b.name
            .as_deref()
            .ok_or_else(|| ApiError::bad("name is required"))?,
    )?;
    call.write(&raw, move |tx, org| {
        let p = store::policies::create(tx, org, &name, b.description.as_deref())?;
        Ok(Reply::created(render(&p)))
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let list = store::policies::list;
    pagination::newest_first(&call, "policies", &[], list, |p| p.seq, render).await
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| Ok(render(&load(c, org, &id)?)))
        .await
}

pub async fn patch(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body_for::<PolicyBody, _>(load, &id, payload).await?;
    let name = b.name.as_deref().map(check_name).transpose()?;
    call.change(move |tx, org| {
        let p = load(tx, org, &id)?;
        let description = if raw.get("description").is_some() {
            b.description.clone()
        } else {
            p.description.clone()
        };
        let name = name.as_deref().unwrap_or(&p.name);
        store::policies::rename(tx, &id, name, description.as_deref())?;
        Ok(render(&load(tx, org, &id)?))
    })
    .await
}

pub async fn delete(call: Call<Write>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        policies::delete(tx, org, &id)?;
        Ok(Deleted { deleted: true, id })
    })
    .await
}

/// A field the policy resolves, with its type (`string` when absent).
#[derive(Deserialize, ToSchema)]
#[schema(as = PolicyFieldInput)]
pub struct FieldBody {
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    field_key: Option<String>,
    #[serde(rename = "type")]
    #[schema(pattern = "^(string|number|integer|boolean|date|array|object)$")]
    data_type: Option<String>,
}

pub async fn add_field(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: Body<FieldBody> = call.body_for(load, &id, payload).await?;
    let key = b
        .parsed
        .field_key
        .ok_or_else(|| ApiError::bad("field_key is required"))?;
    if !valid_field_name(&key) {
        return Err(ApiError::bad("field_key must match ^[a-z][a-z0-9_]{0,63}$"));
    }
    let data_type = b.parsed.data_type.unwrap_or_else(|| "string".into());
    if !DATA_TYPES.contains(&data_type.as_str()) {
        return Err(ApiError::bad(format!(
            "type must be one of {}",
            DATA_TYPES.join(", ")
        )));
    }
    call.write(&b.raw, move |tx, org| {
        let p = policies::add_field(tx, org, &id, &key, &data_type)?;
        Ok(Reply::created(render(&p)))
    })
    .await
}

pub async fn delete_field(call: Call<Write>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let key = call
        .req
        .match_info()
        .get("field_key")
        .unwrap_or("")
        .to_string();
    call.change(move |tx, org| Ok(render(&policies::delete_field(tx, org, &id, &key)?)))
        .await
}

/// A rule: which field it writes, its type and its config. A change takes `config` alone.
#[derive(Deserialize, ToSchema)]
#[schema(as = RuleInput)]
pub struct RuleBody {
    /// A field of the policy, or a sub-field of every element of an array field
    /// (`lines[].amount`).
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}(\\[\\]\\.[a-z][a-z0-9_]{0,63})?$")]
    field_key: Option<String>,
    #[schema(
        pattern = "^(direct|format|date|number|currency|lookup|regex_replace|default|compute|unit)$"
    )]
    rule_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

pub async fn add_rule(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: Body<RuleBody> = call.body_for(load, &id, payload).await?;
    let field_key = b
        .parsed
        .field_key
        .ok_or_else(|| ApiError::bad("field_key is required"))?;
    let rule_type = b
        .parsed
        .rule_type
        .ok_or_else(|| ApiError::bad("rule_type is required"))?;
    let config = b.parsed.config.unwrap_or_else(|| json!({}));
    call.write(&b.raw, move |tx, org| {
        let rule = policies::add_rule(tx, org, &id, field_key, rule_type, config)?;
        Ok(Reply::created(rule_json(&rule)))
    })
    .await
}

pub async fn list_rules(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| {
        Ok(All {
            data: compiled_rules(&load(c, org, &id)?),
        })
    })
    .await
}

pub async fn patch_rule(
    call: Call<Write>,
    Id(id): Id,
    RuleId(rid): RuleId,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: Body<RuleBody> = call.body_for(load, &id, payload).await?;
    let config = b
        .parsed
        .config
        .ok_or_else(|| ApiError::bad("config is required"))?;
    call.change(move |tx, org| {
        Ok(rule_json(&policies::update_rule(
            tx, org, &id, &rid, config,
        )?))
    })
    .await
}

pub async fn delete_rule(
    call: Call<Write>,
    Id(id): Id,
    RuleId(rid): RuleId,
) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        policies::delete_rule(tx, org, &id, &rid)?;
        Ok(Deleted {
            deleted: true,
            id: rid,
        })
    })
    .await
}
