use super::documents::{check_upload, inline_upload, read_layer, InlineDocument};
use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, Write};
use super::idempotency::Reply;
use super::pagination::{self};
use super::path_id;
use super::requests::RerunBody;
use crate::answers::{
    All, Column, Pipeline, PipelineDocument, PipelineLinks, ProgressError, ResultsHead, SchemaRef,
};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::status::{DocStatus, RunStatus};
use crate::engine::views;
use crate::engine::Effects;
use crate::store;
use crate::store::documents::NewDocument;
use crate::store::pipelines::{PipelineDoc, PipelineRow};
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

pub fn render(p: &PipelineRow) -> Pipeline {
    Pipeline {
        id: p.id.clone(),
        name: p.name.clone(),
        status: p.status,
        schema: SchemaRef {
            id: p.schema_id.clone(),
            name: p.schema_name.clone(),
        },
        phase_count: p.phase_count,
        document_count: p.document_count,
        enqueued_documents: None,
        generation: p.generation,
        created_at: p.created_at.clone(),
        updated_at: p.updated_at.clone(),
        completed_at: p.completed_at.clone(),
        links: PipelineLinks::of(&p.id),
    }
}

pub fn load(c: &Connection, org: &str, id: &str) -> Result<PipelineRow, ApiError> {
    store::pipelines::get(c, org, id)?.ok_or_else(|| ApiError::not_found("Pipeline"))
}

/// Starts a run of a schema over stored documents (`document_ids`), documents given inline, or
/// both.
#[derive(Deserialize, ToSchema)]
#[schema(as = PipelineInput)]
pub struct CreateBody {
    #[schema(format = "uuid")]
    schema_id: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    document_ids: Option<Vec<super::requests::DocumentId>>,
    documents: Option<Vec<InlineDocument>>,
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
}

pub async fn create(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let config = &call.state.config;
    let (b, raw): (CreateBody, _) =
        super::body::json_typed(&call.req, payload, config.max_body).await?;
    let schema_raw = b
        .schema_id
        .ok_or_else(|| ApiError::bad("schema_id is required"))?;
    let schema_id = crate::domain::ids::parse_schema_ref(&schema_raw)
        .ok_or_else(|| ApiError::bad("schema_id must be a UUID or SCH-XXXXXXXX"))?;
    // Parsed into their 16 bytes on arrival: a run of 1,000,000 documents holds 16 MB of ids.
    let ids: Vec<uuid::Uuid> = b
        .document_ids
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.0)
        .collect();
    let max_docs = config.max_pipeline_documents;
    let models = call.state.models.names();
    let inline = b.documents.unwrap_or_default();
    if ids.len() + inline.len() > max_docs {
        return Err(ApiError::bad(format!(
            "A pipeline takes 1 to {max_docs} documents (got {})",
            ids.len() + inline.len()
        )));
    }
    let mut uploads = Vec::with_capacity(inline.len());
    for (i, d) in inline.into_iter().enumerate() {
        let u = inline_upload(d, &format!("documents[{i}].")).map_err(|e| match e {
            ApiError::MissingDocument(m) => ApiError::bad(format!("documents[{i}]: {m}")),
            other => other,
        })?;
        let mime = check_upload(&u, config.max_upload).map_err(|e| match e {
            ApiError::MissingDocument(m) => ApiError::bad(format!("documents[{i}]: {m}")),
            other => other,
        })?;
        let (u, layer) = read_layer(&call, u, &mime).await.map_err(|e| match e {
            ApiError::BadRequest(m) => ApiError::bad(format!("documents[{i}]: {m}")),
            other => other,
        })?;
        uploads.push((u, mime, layer));
    }
    if let Some(n) = b.name.as_deref() {
        if n.trim().is_empty() || n.chars().count() > 200 {
            return Err(ApiError::bad("name must be 1-200 characters"));
        }
    }
    let name = b.name.clone();
    let body_hash = move || {
        let v = super::body::parse_value(&raw).unwrap_or_default();
        sha256_hex(canonical_json(&v).as_bytes())
    };
    call.write_with(body_hash, move |tx, org| {
        let mut buf = uuid::Uuid::encode_buffer();
        for id in &ids {
            let id: &str = id.hyphenated().encode_lower(&mut buf);
            store::documents::get(tx, org, id)?
                .ok_or_else(|| ApiError::NotFound(format!("Document {id} not found")))?;
        }
        let mut all = ids;
        all.reserve_exact(uploads.len());
        for (u, mime, layer) in &uploads {
            let sha = sha256_hex(&u.content);
            let (d, _) = crate::engine::events::add_document(
                tx,
                org,
                NewDocument {
                    filename: &u.filename,
                    mime_type: mime,
                    sha256: &sha,
                    metadata: &u.metadata,
                    content: &u.content,
                    layer: layer.as_layer(),
                },
            )?;
            all.push(crate::domain::ids::parse_uuid(&d.id).ok_or_else(|| {
                ApiError::Internal(format!("document id {} is not a UUID", d.id))
            })?);
        }
        let p = crate::engine::pipelines::create(
            tx,
            org,
            &schema_id,
            name.as_deref(),
            &all,
            max_docs,
            &models,
        )?;
        let started = Effects::default().wake_if(true).event(format!(
            "pipeline {} started: {} documents, {} phases",
            p.id, p.document_count, p.phase_count
        ));
        let body = Pipeline {
            enqueued_documents: Some(p.document_count),
            ..render(&p)
        };
        Ok(Reply::created(body).with(started))
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) = call.page("pipelines", 100, &["status", "schema_id"])?;
    let status = q.get("status").cloned();
    if let Some(s) = &status {
        if !["active", "completed", "failed", "cancelled"].contains(&s.as_str()) {
            return Err(ApiError::bad(
                "status must be one of active, completed, failed, cancelled",
            ));
        }
    }
    let schema = q
        .get("schema_id")
        .map(|s| {
            crate::domain::ids::parse_id(s).ok_or_else(|| ApiError::bad("schema_id must be a UUID"))
        })
        .transpose()?;
    call.answer(move |c, org| {
        let (status, schema) = (status.as_deref(), schema.as_deref());
        let limit = page.limit + 1;
        let (rows, total) = store::pipelines::list(c, org, status, schema, page.after, limit)?;
        Ok(pagination::page(
            rows,
            total,
            &page,
            &cursors,
            |p| p.seq,
            |p| render(&p),
        ))
    })
    .await
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| Ok(render(&load(c, org, &id)?)))
        .await
}

pub async fn cancel(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Cancel takes no options, but a body is still held to the limits every route keeps.
    let _: Body<Value> = call.optional_body_for(load, &id, payload).await?;
    call.write_with(String::new, move |tx, org| {
        load(tx, org, &id)?;
        if store::pipelines::active_count(tx, &id)? == 0 {
            return Err(ApiError::bad(
                "Nothing to cancel: no document of this pipeline is queued or processing",
            ));
        }
        store::pipelines::cancel(tx, &id)?;
        crate::engine::events::cancelled(tx, org, &id)?;
        Ok(Reply::ok(render(&load(tx, org, &id)?)))
    })
    .await
}

pub async fn progress(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    // A settled run's progress only changes with a commit: answer from the cache when none came.
    let (cached, version) = call.state.progress_cache.get(&call.auth.org_id, &id);
    if let Some(body) = cached {
        return Ok(HttpResponse::Ok().json(body));
    }
    let st = call.state.clone();
    call.answer(move |c, org| {
        let p = load(c, org, &id)?;
        let phases = store::pipelines::phases(c, &id)?;
        let groups = store::pipelines::status_counts(c, &id)?;
        let has_errors = groups.iter().any(|g| g.status == DocStatus::Error);
        let errors: Vec<ProgressError> = if has_errors {
            store::pipelines::errors(c, &id, 100)?
                .iter()
                .map(|e| ProgressError {
                    pipeline_document_id: e.pd_id.clone(),
                    document_id: e.document_id.clone(),
                    filename: e.filename.clone(),
                    phase_id: e
                        .phase_index
                        .and_then(|i| views::phase_id(&phases, i as usize)),
                    message: e.message.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut progress = views::progress(
            &p.id,
            p.status,
            p.generation,
            p.document_count,
            &phases,
            &groups,
            errors,
        );
        progress.model_usage = model_usage(c, &id, &phases)?;
        let body = json!(progress);
        if p.status != RunStatus::Active {
            st.progress_cache.put(org, &id, version, body.clone());
        }
        Ok(body)
    })
    .await
}

/// What a run's model extraction used, for a run that has a model extraction phase.
fn model_usage(
    c: &Connection,
    id: &str,
    phases: &[crate::store::pipelines::PhaseRow],
) -> Result<Option<crate::store::models::Usage>, ApiError> {
    let uses_model = phases
        .iter()
        .any(|p| p.kind == crate::domain::rail::PhaseType::Extraction && p.ref_id.is_some());
    if !uses_model {
        return Ok(None);
    }
    Ok(Some(store::models::usage(c, id)?.unwrap_or(
        crate::store::models::Usage {
            calls: 0,
            tokens_in: 0,
            tokens_out: 0,
            estimated_cost: 0.0,
        },
    )))
}

fn doc_json(pd: &PipelineDoc, phases: &[crate::store::pipelines::PhaseRow]) -> PipelineDocument {
    let moving = matches!(pd.status, DocStatus::Queued | DocStatus::Processing);
    PipelineDocument {
        id: pd.id.clone(),
        document_id: pd.document_id.clone(),
        filename: pd.filename.clone(),
        status: pd.status,
        current_phase_id: moving
            .then(|| views::phase_id(phases, pd.cursor as usize))
            .flatten(),
        generation: pd.generation,
        error: pd.error.clone(),
        waiting_for: pd.waiting_for.clone(),
        updated_at: pd.updated_at.clone(),
    }
}

pub async fn documents(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let (_, cursors, page) = call.page(&format!("pd:{id}"), 100, &[])?;
    call.answer(move |c, org| {
        let p = load(c, org, &id)?;
        let phases = store::pipelines::phases(c, &id)?;
        let rows = store::pipelines::documents(c, &id, page.after, page.limit + 1, None)?;
        Ok(pagination::page(
            rows,
            p.document_count,
            &page,
            &cursors,
            |d| d.ordinal,
            |d| doc_json(&d, &phases),
        ))
    })
    .await
}

pub async fn results(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) =
        call.page(&format!("results:{id}"), 200, &["document_id", "include"])?;
    let doc_filter = q
        .get("document_id")
        .map(|d| {
            crate::domain::ids::parse_id(d)
                .ok_or_else(|| ApiError::bad("document_id must be a UUID"))
        })
        .transpose()?;
    let include: Vec<String> = q
        .get("include")
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let (with_cells, with_prov) = (
        include.iter().any(|i| i == "cells"),
        include.iter().any(|i| i == "provenance"),
    );
    let permit = call.heavy_if(with_cells || with_prov)?;
    // A refusal (404) before the first byte is an envelope: the answer starts with the read.
    call.stream(permit, "application/json", move |sink, c, org| {
        let p = load(c, org, &id)?;
        let phases = store::pipelines::phases(c, &id)?;
        let order: Vec<String> = p.fields.iter().map(|f| f.field_name.clone()).collect();
        let pending = store::pipelines::pending_review_count(c, org, &id)?;
        let total = match &doc_filter {
            Some(d) => store::pipelines::documents(c, &id, None, 1, Some(d))?.len() as i64,
            None => p.document_count,
        };
        let head = ResultsHead {
            pipeline_id: p.id.clone(),
            spec_id: p.schema_id.clone(),
            status: p.status,
            view: "documents".into(),
            model_usage: model_usage(c, &id, &phases)?,
            generated_at: crate::domain::ids::now_rfc3339(),
            columns: p
                .fields
                .iter()
                .map(|f| Column {
                    field_key: f.field_name.clone(),
                    display_name: f.display_name.clone(),
                    data_type: f.data_type.clone(),
                })
                .collect(),
            pending_review_count: pending,
            links: PipelineLinks::of(&p.id),
        };
        let w = pagination::PageWriter::begin(sink, &head, page.limit)?;
        w.rows(page.after, total, &cursors, false, |after, n| {
            let rows = store::pipelines::documents(c, &id, after, n, doc_filter.as_deref())?;
            let views = if with_prov {
                views::load(c, &rows, &order)?
            } else {
                views::load_shown(c, &rows, &order)?
            };
            Ok(rows
                .iter()
                .zip(&views)
                .map(|(d, v)| {
                    let row = views::result_row(d, v, &order, &phases, with_cells, with_prov);
                    (d.ordinal, Some(row))
                })
                .collect())
        })
    })
    .await
}

fn pd_path(req: &HttpRequest) -> Result<(String, String), ApiError> {
    let id = path_id(req, "id")?;
    let pd = path_id(req, "pd_id")?;
    Ok((id, pd))
}

pub async fn cells(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (id, pd_id) = pd_path(&call.req)?;
    call.answer(move |c, org| {
        let p = load(c, org, &id)?;
        let pd = store::pipelines::document(c, &id, &pd_id)?
            .ok_or_else(|| ApiError::not_found("Pipeline document"))?;
        let phases = store::pipelines::phases(c, &id)?;
        let order: Vec<String> = p.fields.iter().map(|f| f.field_name.clone()).collect();
        let views = views::load(c, std::slice::from_ref(&pd), &order)?;
        Ok(views::cells(&views[0], &order, pd.status, &phases))
    })
    .await
}

pub async fn verdicts(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (id, pd_id) = pd_path(&call.req)?;
    call.answer(move |c, org| {
        load(c, org, &id)?;
        let pd = store::pipelines::document(c, &id, &pd_id)?
            .ok_or_else(|| ApiError::not_found("Pipeline document"))?;
        let phases = store::pipelines::phases(c, &id)?;
        let rows = store::pipelines::verdicts(c, pd.seq)?;
        Ok(All {
            data: rows.iter().map(|v| views::verdict(v, &phases)).collect(),
        })
    })
    .await
}

pub async fn calls(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (id, pd_id) = pd_path(&call.req)?;
    call.answer(move |c, org| {
        load(c, org, &id)?;
        let pd = store::pipelines::document(c, &id, &pd_id)?
            .ok_or_else(|| ApiError::not_found("Pipeline document"))?;
        Ok(All {
            data: store::models::calls(c, pd.seq)?,
        })
    })
    .await
}

pub async fn rerun(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Strict: a mistyped `dry_run` is refused, never run as a real rerun.
    let Body { raw, parsed: body } = call
        .optional_body_for::<RerunBody, _>(load, &id, payload)
        .await?;
    let request = crate::engine::rerun::RerunRequest {
        from_phase: body.from_phase,
        document_ids: body
            .document_ids
            .map(|ids| ids.into_iter().map(|d| d.0).collect()),
        dry_run: body.dry_run,
        refresh_extraction: body.refresh_extraction,
        requested_by: call.auth.key_id.clone(),
    };
    let dry = request.dry_run;
    let phase = request.from_phase.as_str();
    call.write(&raw, move |tx, org| {
        let answer = crate::engine::rerun::rerun(tx, org, &id, request)?;
        let mut effects = Effects::default();
        if !dry {
            effects = effects.wake_if(true).event(format!(
                "pipeline {id} rerun from {phase} (phase {}): {} documents enqueued",
                answer.from_phase_index, answer.enqueued
            ));
            effects.reruns = 1;
        }
        Ok(Reply::ok(answer).with(effects))
    })
    .await
}

pub async fn reruns(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| {
        load(c, org, &id)?;
        let rows = crate::store::reruns::list(c, &id)?;
        Ok(All {
            data: rows.iter().map(crate::engine::rerun::record).collect(),
        })
    })
    .await
}
