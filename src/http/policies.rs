use super::body::{json_body, typed};
use super::error::ApiError;
use super::extract::{Authed, Id, Read, RuleId, Write};
use super::idempotency::{write, Reply};
use super::pagination;
use super::{blocking, AppState};
use crate::answers::{All, Deleted, Policy, PolicyField, Rule};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::policy::{self, RuleDef};
use crate::domain::schema::{valid_field_name, DATA_TYPES};
use crate::engine::policies;
use crate::store;
use crate::store::policies::PolicyRow;
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
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

fn hash(v: &Value) -> String {
    sha256_hex(canonical_json(v).as_bytes())
}

fn load(c: &Connection, org: &str, id: &str) -> Result<PolicyRow, ApiError> {
    Ok(policies::load(c, org, id)?)
}

/// Checks the policy exists before the body is read (404 before 415/413/400).
async fn exists(state: &web::Data<AppState>, org: &str, id: &str) -> Result<(), ApiError> {
    let (st, org, id) = (state.clone(), org.to_string(), id.to_string());
    blocking(move || st.db.read(|c| load(c, &org, &id).map(|_| ()))).await
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: PolicyBody = typed(&raw)?;
    let name = check_name(
        b.name
            .as_deref()
            .ok_or_else(|| ApiError::bad("name is required"))?,
    )?;
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || hash(&raw),
        move |tx| {
            let p = store::policies::create(tx, &org, &name, b.description.as_deref())?;
            Ok(Reply::created(render(&p)))
        },
    )
    .await
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    pagination::newest_first(
        &state,
        &req,
        "policies",
        store::policies::list,
        |p| p.seq,
        render,
    )
    .await
}

pub async fn get(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let p = super::read(&state, move |c| load(c, &auth.org_id, &id)).await?;
    Ok(HttpResponse::Ok().json(render(&p)))
}

pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &auth.org_id, &id).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: PolicyBody = typed(&raw)?;
    let name = b.name.as_deref().map(check_name).transpose()?;
    let body = super::write_now(&state, move |tx| {
        let p = load(tx, &auth.org_id, &id)?;
        let description = if raw.get("description").is_some() {
            b.description.clone()
        } else {
            p.description.clone()
        };
        store::policies::rename(
            tx,
            &id,
            name.as_deref().unwrap_or(&p.name),
            description.as_deref(),
        )?;
        Ok(render(&load(tx, &auth.org_id, &id)?))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: Authed<Write>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let body = super::write_now(&state, move |tx| {
        policies::delete(tx, &auth.org_id, &id)?;
        Ok(Deleted { deleted: true, id })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
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
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &auth.org_id, &id).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: FieldBody = typed(&raw)?;
    let key = b
        .field_key
        .ok_or_else(|| ApiError::bad("field_key is required"))?;
    if !valid_field_name(&key) {
        return Err(ApiError::bad("field_key must match ^[a-z][a-z0-9_]{0,63}$"));
    }
    let data_type = b.data_type.unwrap_or_else(|| "string".into());
    if !DATA_TYPES.contains(&data_type.as_str()) {
        return Err(ApiError::bad(format!(
            "type must be one of {}",
            DATA_TYPES.join(", ")
        )));
    }
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || hash(&raw),
        move |tx| {
            let p = policies::add_field(tx, &org, &id, &key, &data_type)?;
            Ok(Reply::created(render(&p)))
        },
    )
    .await
}

pub async fn delete_field(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let key = req.match_info().get("field_key").unwrap_or("").to_string();
    let body = super::write_now(&state, move |tx| {
        Ok(render(&policies::delete_field(
            tx,
            &auth.org_id,
            &id,
            &key,
        )?))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// A rule: which field it writes, its type and its config. A change takes `config` alone.
#[derive(Deserialize, ToSchema)]
#[schema(as = RuleInput)]
pub struct RuleBody {
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    field_key: Option<String>,
    #[schema(
        pattern = "^(direct|format|date|number|currency|lookup|regex_replace|default|compute|unit)$"
    )]
    rule_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

pub async fn add_rule(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &auth.org_id, &id).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: RuleBody = typed(&raw)?;
    let field_key = b
        .field_key
        .ok_or_else(|| ApiError::bad("field_key is required"))?;
    let rule_type = b
        .rule_type
        .ok_or_else(|| ApiError::bad("rule_type is required"))?;
    let config = b.config.unwrap_or_else(|| json!({}));
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || hash(&raw),
        move |tx| {
            let rule = policies::add_rule(tx, &org, &id, field_key, rule_type, config)?;
            Ok(Reply::created(rule_json(&rule)))
        },
    )
    .await
}

pub async fn list_rules(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let p = super::read(&state, move |c| load(c, &auth.org_id, &id)).await?;
    Ok(HttpResponse::Ok().json(All {
        data: compiled_rules(&p),
    }))
}

pub async fn patch_rule(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    RuleId(rid): RuleId,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &auth.org_id, &id).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: RuleBody = typed(&raw)?;
    let config = b
        .config
        .ok_or_else(|| ApiError::bad("config is required"))?;
    let body = super::write_now(&state, move |tx| {
        let updated = policies::update_rule(tx, &auth.org_id, &id, &rid, config)?;
        Ok(rule_json(&updated))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn delete_rule(
    state: web::Data<AppState>,
    auth: Authed<Write>,
    Id(id): Id,
    RuleId(rid): RuleId,
) -> Result<HttpResponse, ApiError> {
    let body = super::write_now(&state, move |tx| {
        policies::delete_rule(tx, &auth.org_id, &id, &rid)?;
        Ok(Deleted {
            deleted: true,
            id: rid,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
