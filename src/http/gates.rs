use super::body::{json_body, typed};
use super::error::ApiError;
use super::extract::{Authed, Id, Read, StageId, Write};
use super::idempotency::{write, Reply};
use super::{blocking, AppState};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::gate;
use crate::store;
use crate::store::gates::{GateInput, GateRow};
use crate::store::policies::rails_referencing;
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn render(g: &GateRow) -> Value {
    json!({
        "id": g.id, "schema_id": g.schema_id, "name": g.name, "ordinal": g.ordinal, "severity": g.severity,
        "field_scope": g.field_scope, "mechanisms": g.mechanisms, "blocking_config": g.blocking_config,
        "version": g.version, "created_at": g.created_at, "updated_at": g.updated_at
    })
}

#[derive(Deserialize)]
struct GateBody {
    name: Option<String>,
    severity: Option<String>,
    #[serde(alias = "fieldScope")]
    field_scope: Option<Vec<String>>,
    mechanisms: Option<Value>,
    #[serde(alias = "blockingConfig")]
    blocking_config: Option<Value>,
}

fn schema(c: &Connection, org: &str, id: &str) -> Result<SchemaRow, ApiError> {
    store::schemas::get(c, org, id, false)?.ok_or_else(|| ApiError::not_found("Schema"))
}

fn blocking_config(v: Option<Value>) -> Result<Value, ApiError> {
    let on_block = match v
        .as_ref()
        .and_then(|b| b.get("on_block").or_else(|| b.get("onBlock")))
    {
        None | Some(Value::Null) => "review_queue",
        Some(Value::String(s)) if s == "review_queue" || s == "hold" => s.as_str(),
        Some(_) => {
            return Err(ApiError::bad(
                "blocking_config.on_block must be \"review_queue\" or \"hold\"",
            ))
        }
    };
    if v.as_ref().is_some_and(|b| !b.is_object() && !b.is_null()) {
        return Err(ApiError::bad("blocking_config must be an object"));
    }
    Ok(json!({ "on_block": on_block }))
}

/// The gate as it would be stored, validated against the schema's fields.
fn validated(
    s: &SchemaRow,
    b: &GateBody,
    base: Option<&GateRow>,
) -> Result<(String, String, Vec<String>, Value, Value), ApiError> {
    let name = b
        .name
        .clone()
        .or_else(|| base.map(|g| g.name.clone()))
        .ok_or_else(|| ApiError::bad("name is required"))?;
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad("name must be 1-100 characters"));
    }
    let severity = b
        .severity
        .clone()
        .or_else(|| base.map(|g| g.severity.clone()))
        .ok_or_else(|| ApiError::bad("severity is required"))?;
    let scope = b
        .field_scope
        .clone()
        .or_else(|| base.map(|g| g.field_scope.clone()))
        .unwrap_or_default();
    let mechanisms = b
        .mechanisms
        .clone()
        .or_else(|| base.map(|g| g.mechanisms.clone()))
        .unwrap_or_else(|| json!([]));
    let bc = match (&b.blocking_config, base) {
        (None, Some(g)) => g.blocking_config.clone(),
        (v, _) => blocking_config(v.clone())?,
    };
    let names: Vec<String> = s.fields.iter().map(|f| f.field_name.clone()).collect();
    gate::compile(&severity, &scope, &mechanisms, &names).map_err(ApiError::BadRequest)?;
    Ok((name, severity, scope, mechanisms, bc))
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(sid): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (st, org, s2) = (state.clone(), auth.org_id.clone(), sid.clone());
    blocking(move || st.db.read(|c| schema(c, &org, &s2).map(|_| ()))).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: GateBody = typed(&raw)?;
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || sha256_hex(canonical_json(&raw).as_bytes()),
        move |tx| {
            let s = schema(tx, &org, &sid)?;
            let (name, severity, scope, mechanisms, bc) = validated(&s, &b, None)?;
            let g = store::gates::create(
                tx,
                &org,
                &sid,
                GateInput {
                    name: &name,
                    severity: &severity,
                    field_scope: &scope,
                    mechanisms: &mechanisms,
                    blocking_config: &bc,
                },
            )?;
            Ok(Reply::created(render(&g)))
        },
    )
    .await
}

pub async fn list(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(sid): Id,
) -> Result<HttpResponse, ApiError> {
    let body = super::read(&state, move |c| {
        schema(c, &auth.org_id, &sid)?;
        let rows = store::gates::list(c, &sid)?;
        Ok(json!({ "data": rows.iter().map(render).collect::<Vec<_>>() }))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn get(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(sid): Id,
    StageId(gid): StageId,
) -> Result<HttpResponse, ApiError> {
    let body = super::read(&state, move |c| {
        schema(c, &auth.org_id, &sid)?;
        let g = store::gates::get(c, &sid, &gid)?
            .ok_or_else(|| ApiError::not_found("Validation stage"))?;
        Ok(render(&g))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(sid): Id,
    StageId(gid): StageId,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (st, org, s2, g2) = (state.clone(), auth.org_id.clone(), sid.clone(), gid.clone());
    blocking(move || {
        st.db.read(|c| {
            schema(c, &org, &s2)?;
            store::gates::get(c, &s2, &g2)?
                .ok_or_else(|| ApiError::not_found("Validation stage"))
                .map(|_| ())
        })
    })
    .await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: GateBody = typed(&raw)?;
    let body = super::write_now(&state, move |tx| {
        let s = schema(tx, &auth.org_id, &sid)?;
        let current = store::gates::get(tx, &sid, &gid)?
            .ok_or_else(|| ApiError::not_found("Validation stage"))?;
        let (name, severity, scope, mechanisms, bc) = validated(&s, &b, Some(&current))?;
        store::gates::update(
            tx,
            &gid,
            GateInput {
                name: &name,
                severity: &severity,
                field_scope: &scope,
                mechanisms: &mechanisms,
                blocking_config: &bc,
            },
        )?;
        let g = store::gates::get(tx, &sid, &gid)?
            .ok_or_else(|| ApiError::not_found("Validation stage"))?;
        Ok(render(&g))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: Authed<Write>,
    Id(sid): Id,
    StageId(gid): StageId,
) -> Result<HttpResponse, ApiError> {
    let body = super::write_now(&state, move |tx| {
        schema(tx, &auth.org_id, &sid)?;
        store::gates::get(tx, &sid, &gid)?
            .ok_or_else(|| ApiError::not_found("Validation stage"))?;
        let users = rails_referencing(tx, &auth.org_id, &gid)?;
        if !users.is_empty() {
            return Err(ApiError::bad(format!(
                "The validation stage is referenced by the rail of schema '{}'",
                users.join("', '")
            )));
        }
        store::gates::soft_delete(tx, &gid)?;
        Ok(json!({ "deleted": true, "id": gid }))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
struct ReorderBody {
    #[serde(alias = "stageIds")]
    stage_ids: Option<Vec<String>>,
}

pub async fn reorder(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(sid): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (st, org, s2) = (state.clone(), auth.org_id.clone(), sid.clone());
    blocking(move || st.db.read(|c| schema(c, &org, &s2).map(|_| ()))).await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: ReorderBody = typed(&raw)?;
    let ids = b
        .stage_ids
        .ok_or_else(|| ApiError::bad("stage_ids is required"))?;
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || sha256_hex(canonical_json(&raw).as_bytes()),
        move |tx| {
            schema(tx, &org, &sid)?;
            let current = store::gates::list(tx, &sid)?;
            let mut sorted_ids = ids.clone();
            sorted_ids.sort();
            sorted_ids.dedup();
            let mut existing: Vec<String> = current.iter().map(|g| g.id.clone()).collect();
            existing.sort();
            if sorted_ids.len() != ids.len() || sorted_ids != existing {
                return Err(ApiError::bad(
                    "stage_ids must list every validation stage of the schema exactly once",
                ));
            }
            for (i, id) in ids.iter().enumerate() {
                store::gates::set_ordinal(tx, id, i as i64 + 1)?;
            }
            let rows = store::gates::list(tx, &sid)?;
            Ok(Reply::ok(
                json!({ "data": rows.iter().map(render).collect::<Vec<_>>() }),
            ))
        },
    )
    .await
}
