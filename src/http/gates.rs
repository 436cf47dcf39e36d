use super::body::{json_body, typed};
use super::error::ApiError;
use super::extract::{Authed, Id, Read, StageId, Write};
use super::idempotency::{write, Reply};
use super::{blocking, AppState};
use crate::answers::{All, Deleted, Gate};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::engine::gates::{self, GateDraft};
use crate::store;
use crate::store::gates::GateRow;
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

pub fn render(g: &GateRow) -> Gate {
    Gate {
        id: g.id.clone(),
        schema_id: g.schema_id.clone(),
        name: g.name.clone(),
        ordinal: g.ordinal,
        severity: g.severity.clone(),
        field_scope: g.field_scope.clone(),
        mechanisms: g.mechanisms.clone(),
        blocking_config: g.blocking_config.clone(),
        version: g.version,
        created_at: g.created_at.clone(),
        updated_at: g.updated_at.clone(),
    }
}

/// A validation gate: which fields it judges, with which mechanisms, and what a failure does.
#[derive(Deserialize, ToSchema)]
#[schema(as = GateInput)]
pub struct GateBody {
    name: Option<String>,
    #[schema(pattern = "^(info|warning|blocking)$")]
    severity: Option<String>,
    #[serde(alias = "fieldScope")]
    field_scope: Option<Vec<String>>,
    #[schema(value_type = Option<Vec<Object>>)]
    mechanisms: Option<Value>,
    /// `{"on_block": "review_queue" | "hold"}`.
    #[serde(alias = "blockingConfig")]
    #[schema(value_type = Option<Object>)]
    blocking_config: Option<Value>,
}

fn schema(c: &Connection, org: &str, id: &str) -> Result<SchemaRow, ApiError> {
    Ok(gates::schema(c, org, id)?)
}

impl GateBody {
    fn draft(self) -> GateDraft {
        GateDraft {
            name: self.name,
            severity: self.severity,
            field_scope: self.field_scope,
            mechanisms: self.mechanisms,
            blocking_config: self.blocking_config,
        }
    }
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
            let g = gates::create(tx, &org, &sid, b.draft())?;
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
        Ok(All {
            data: rows.iter().map(render).collect(),
        })
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
        Ok(render(&gates::update(
            tx,
            &auth.org_id,
            &sid,
            &gid,
            b.draft(),
        )?))
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
        gates::delete(tx, &auth.org_id, &sid, &gid)?;
        Ok(Deleted {
            deleted: true,
            id: gid,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// Every gate id of the schema, in the new order.
#[derive(Deserialize, ToSchema)]
#[schema(as = ReorderInput)]
pub struct ReorderBody {
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
            let rows = gates::reorder(tx, &org, &sid, &ids)?;
            Ok(Reply::ok(All {
                data: rows.iter().map(render).collect(),
            }))
        },
    )
    .await
}
