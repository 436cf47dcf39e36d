use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, StageId, Write};
use super::idempotency::Reply;
use crate::answers::{All, Deleted};
use crate::engine::gates::{self, GateDraft};
use crate::store;
use crate::store::gates::GateRow;
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

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
    call: Call<Write>,
    Id(sid): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: Body<GateBody> = call.body_for(schema, &sid, payload).await?;
    call.write(&b.raw, move |tx, org| {
        let g = gates::create(tx, org, &sid, b.parsed.draft())?;
        Ok(Reply::created(g))
    })
    .await
}

pub async fn list(call: Call<Read>, Id(sid): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| {
        schema(c, org, &sid)?;
        let rows = store::gates::list(c, &sid)?;
        Ok(All { data: rows })
    })
    .await
}

/// The gate, 404 unless it and its schema are the caller's.
fn gate(c: &Connection, org: &str, sid: &str, gid: &str) -> Result<GateRow, ApiError> {
    schema(c, org, sid)?;
    store::gates::get(c, sid, gid)?.ok_or_else(|| ApiError::not_found("Validation stage"))
}

pub async fn get(
    call: Call<Read>,
    Id(sid): Id,
    StageId(gid): StageId,
) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| gate(c, org, &sid, &gid)).await
}

pub async fn patch(
    call: Call<Write>,
    Id(sid): Id,
    StageId(gid): StageId,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (s2, g2) = (sid.clone(), gid.clone());
    call.read(move |c, org| gate(c, org, &s2, &g2).map(|_| ()))
        .await?;
    let b: Body<GateBody> = call.body(payload, false).await?;
    call.change(move |tx, org| Ok(gates::update(tx, org, &sid, &gid, b.parsed.draft())?))
        .await
}

pub async fn delete(
    call: Call<Write>,
    Id(sid): Id,
    StageId(gid): StageId,
) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        gates::delete(tx, org, &sid, &gid)?;
        Ok(Deleted {
            deleted: true,
            id: gid,
        })
    })
    .await
}

/// Every gate id of the schema, in the new order.
#[derive(Deserialize, ToSchema)]
#[schema(as = ReorderInput)]
pub struct ReorderBody {
    #[serde(alias = "stageIds")]
    stage_ids: Option<Vec<String>>,
}

pub async fn reorder(
    call: Call<Write>,
    Id(sid): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b: Body<ReorderBody> = call.body_for(schema, &sid, payload).await?;
    let ids = b
        .parsed
        .stage_ids
        .ok_or_else(|| ApiError::bad("stage_ids is required"))?;
    call.write(&b.raw, move |tx, org| {
        let rows = gates::reorder(tx, org, &sid, &ids)?;
        Ok(Reply::ok(All { data: rows }))
    })
    .await
}
