//! The quick tier as Talonic's clients call it: `POST /v1/extract`, `/v1/extractions`,
//! `POST /v1/documents/{id}/re-extract`, `GET /v1/documents/{id}/extractions` and `/v1/jobs`.
//! Extractions and jobs are runs (`engine::quick`); these handlers parse Talonic's requests and
//! answer in Talonic's shapes.

use super::body::{media_type, parse_value, read_limited, typed};
use super::documents::{
    check_upload, document, inline_upload, markdown_of, read_layer, read_multipart,
    upload_body_limit, InlineDocument, Upload,
};
use super::error::ApiError;
use super::extract::{Call, Extract, Id, Read, Write};
use super::idempotency::Reply;
use super::middleware::RequestId;
use crate::answers::{
    self, ExtractionConfidence, ExtractionDocument, ExtractionItemLinks, ExtractionJob,
    ExtractionLinks, ExtractionListItem, ExtractionProcessing, ExtractionSchema, GridStats, Job,
    JobError, JobLinks, JobResultRow, JobResults, JobResultsLinks, Page, SchemaRef,
};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::ids::{parse_id, parse_schema_ref};
use crate::engine::pipelines::RunKind;
use crate::engine::quick::{self, Extraction, JobStats};
use crate::engine::review::{Action, ResolveRequest};
use crate::engine::Effects;
use crate::store;
use crate::store::documents::NewDocument;
use crate::store::pipelines::PipelineRow;
use crate::store::Connection;
use actix_web::{web, HttpMessage, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// Talonic answers extractions of at most this many pages before returning.
const SYNC_PAGES: i64 = 5;
/// How long a synchronous extraction may take before it is answered `202` with a poll URL:
/// well under the clients' own timeouts (60 s for Talonic's SDKs), which retry a timed-out POST
/// without an idempotency key and would start the extraction again.
const SYNC_WAIT: Duration = Duration::from_secs(25);
const POLL_EVERY: Duration = Duration::from_millis(20);

/// `POST /v1/extract` as JSON. A document is named (`document_id`) or given inline
/// (`filename` and `content` or `content_base64`); multipart takes a `file` part instead, and
/// the other keys as text parts (`schema` and `options` as JSON text).
#[derive(Deserialize, ToSchema, Default)]
#[schema(as = ExtractInput)]
pub struct ExtractBody {
    /// A stored document to extract.
    document_id: Option<String>,
    /// Not served: Quire does not fetch documents from the network.
    file_url: Option<String>,
    filename: Option<String>,
    content: Option<String>,
    content_base64: Option<String>,
    mime_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The fields to extract, in any of the three schema forms.
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
    /// A saved schema: its id or short id.
    schema_id: Option<String>,
    include_markdown: Option<bool>,
    include_provenance: Option<bool>,
    /// `{ "async": true }` answers `202` at once.
    #[schema(value_type = Option<Object>)]
    options: Option<Value>,
}

/// The text parts of a multipart `POST /v1/extract` that are read; others are dropped unread.
const EXTRACT_PARTS: &[&str] = &[
    "document_id",
    "file_url",
    "schema",
    "schema_id",
    "include_markdown",
    "include_provenance",
    "options",
    "async",
];

/// The spec an extraction runs.
enum SchemaChoice {
    Inline(Value),
    Saved(String),
}

/// Which document: one uploaded with the request, or a stored one.
enum Source {
    Upload(Box<(Upload, String, crate::engine::documents::TextLayer)>),
    Stored(String),
}

struct ExtractRequest {
    source: Source,
    schema: SchemaChoice,
    options: Value,
    run_async: bool,
    hash: String,
}

/// A multipart flag: `true`/`false` in any case (Python's SDK sends `True`), `1`/`0`.
fn flag(v: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::bad(format!(
            "{name} must be true or false (got '{}')",
            v.unwrap_or_default()
        ))),
    }
}

fn asked_async(options: Option<&Value>) -> Result<bool, ApiError> {
    match options {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(o)) => match o.get("async") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad("options.async must be a boolean")),
        },
        Some(_) => Err(ApiError::bad("options must be an object")),
    }
}

fn schema_choice(schema: Option<Value>, schema_id: Option<&str>) -> Result<SchemaChoice, ApiError> {
    match (schema, schema_id) {
        (Some(_), Some(_)) => Err(ApiError::bad("Give schema or schema_id, not both")),
        (Some(Value::Null), None) | (None, None) => Err(ApiError::bad(
            "Give a schema (JSON Schema, a fields list or a map of names to types) or a schema_id",
        )),
        (Some(v), None) => Ok(SchemaChoice::Inline(v)),
        (None, Some(id)) => parse_schema_ref(id)
            .map(SchemaChoice::Saved)
            .ok_or_else(|| ApiError::bad("schema_id must be a UUID or SCH-XXXXXXXX")),
    }
}

fn no_url(url: Option<&str>) -> Result<(), ApiError> {
    match url {
        Some(_) => Err(ApiError::bad(
            "file_url is not served: Quire does not fetch documents from the network; upload the file or give a document_id",
        )),
        None => Ok(()),
    }
}

fn stored_id(raw: &str) -> Result<String, ApiError> {
    parse_id(raw).ok_or_else(|| ApiError::bad("document_id must be a UUID"))
}

async fn read_request(
    call: &Call<Extract>,
    payload: web::Payload,
) -> Result<ExtractRequest, ApiError> {
    let max_upload = call.state.config.max_upload;
    let (upload, document_id, schema, schema_id, markdown, provenance, run_async, hash) =
        match media_type(&call.req).as_deref() {
            Some("multipart/form-data") => {
                let m = read_multipart(&call.req, payload, max_upload, EXTRACT_PARTS).await?;
                let f = &m.fields;
                let get = |k: &str| f.get(k).map(String::as_str);
                no_url(get("file_url"))?;
                let schema = get("schema")
                    .map(|s| {
                        serde_json::from_str::<Value>(s).map_err(|e| {
                            ApiError::bad(format!("schema part is not valid JSON: {e}"))
                        })
                    })
                    .transpose()?;
                let options = get("options")
                    .map(|s| {
                        serde_json::from_str::<Value>(s).map_err(|e| {
                            ApiError::bad(format!("options part is not valid JSON: {e}"))
                        })
                    })
                    .transpose()?;
                let run_async = asked_async(options.as_ref())? || flag(get("async"), "async")?;
                (
                    m.upload,
                    get("document_id").map(str::to_string),
                    schema,
                    get("schema_id").map(str::to_string),
                    flag(get("include_markdown"), "include_markdown")?,
                    flag(get("include_provenance"), "include_provenance")?,
                    run_async,
                    m.hash,
                )
            }
            Some("application/json") => {
                let raw = parse_value(
                    &read_limited(&call.req, payload, upload_body_limit(max_upload)).await?,
                )?;
                let b: ExtractBody = typed(&raw)?;
                no_url(b.file_url.as_deref())?;
                let inline = match (&b.content, &b.content_base64) {
                    (None, None) => None,
                    _ => Some(inline_upload(
                        InlineDocument {
                            filename: b.filename.clone(),
                            content: b.content.clone(),
                            content_base64: b.content_base64.clone(),
                            mime_type: b.mime_type.clone(),
                            metadata: b.metadata.clone(),
                        },
                        "",
                    )?),
                };
                (
                    inline,
                    b.document_id.clone(),
                    b.schema.clone(),
                    b.schema_id.clone(),
                    b.include_markdown.unwrap_or(false),
                    b.include_provenance.unwrap_or(false),
                    asked_async(b.options.as_ref())?,
                    sha256_hex(canonical_json(&raw).as_bytes()),
                )
            }
            _ => {
                return Err(ApiError::UnsupportedMediaType(
                    "Content-Type must be multipart/form-data or application/json".into(),
                ))
            }
        };
    let source = match (upload, document_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("Give a file or a document_id, not both"));
        }
        (None, None) => {
            return Err(ApiError::MissingDocument(
                "Give a document: a 'file' part, inline content, or a document_id".into(),
            ))
        }
        (None, Some(id)) => Source::Stored(stored_id(&id)?),
        (Some(u), None) => {
            let mime = check_upload(&u, max_upload)?;
            let (u, layer) = read_layer(call, u, &mime).await?;
            Source::Upload(Box::new((u, mime, layer)))
        }
    };
    Ok(ExtractRequest {
        source,
        schema: schema_choice(schema, schema_id.as_deref())?,
        options: json!({ "include_markdown": markdown, "include_provenance": provenance }),
        run_async,
        hash,
    })
}

fn request_id(call_req: &actix_web::HttpRequest) -> Option<String> {
    call_req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
}

fn load_schema(
    c: &Connection,
    org: &str,
    choice: &SchemaChoice,
) -> Result<store::schemas::SchemaRow, ApiError> {
    match choice {
        SchemaChoice::Inline(v) => Ok(quick::inline_schema(c, org, v)?),
        SchemaChoice::Saved(id) => store::schemas::get(c, org, id, false)?
            .ok_or_else(|| ApiError::NotFound(format!("Schema {id} not found"))),
    }
}

/// The extraction as answered: its values, confidence, spec and where to find it.
fn render(
    c: &Connection,
    org: &str,
    x: &Extraction,
    request_id: Option<String>,
    job: Option<ExtractionJob>,
) -> Result<answers::Extraction, ApiError> {
    let schema = store::schemas::get(c, org, &x.run.schema_id, true)?
        .ok_or_else(|| ApiError::Internal(format!("schema {} is missing", x.run.schema_id)))?;
    let asked = |k: &str| x.run.options.get(k) == Some(&Value::Bool(true));
    let markdown = if asked("include_markdown") && x.document.status == "completed" {
        Some(markdown_of(c, &x.document)?.markdown)
    } else {
        None
    };
    let confidence = x.confidence();
    let id = x.run.id.clone();
    let pages = x.document.pages.max(1);
    Ok(answers::Extraction {
        extraction_id: id.clone(),
        request_id,
        status: x.status().into(),
        document: ExtractionDocument {
            id: x.document.id.clone(),
            filename: x.document.filename.clone(),
            pages,
            size_bytes: x.document.size_bytes,
            mime_type: x.document.mime_type.clone(),
            type_detected: x.document.kind.clone(),
            language_detected: x.document.language.clone(),
        },
        data: x.data(),
        confidence: ExtractionConfidence {
            overall: confidence.overall,
            fields: confidence.fields,
        },
        locked_fields: x.locked_fields(),
        schema: ExtractionSchema {
            source: if schema.hidden { "inline" } else { "saved" }.into(),
            id: schema.id.clone(),
            definition: schema.definition.clone(),
        },
        processing: ExtractionProcessing {
            duration_ms: x.duration_ms(),
            pages_processed: if x.status() == "complete" { pages } else { 0 },
        },
        error: x.pd.error.clone(),
        markdown,
        provenance: asked("include_provenance").then(|| x.provenance()),
        job,
        created_at: x.run.created_at.clone(),
        links: ExtractionLinks {
            self_: format!("/v1/extractions/{id}"),
            data: format!("/v1/extractions/{id}/data"),
            document: format!("/v1/documents/{}", x.document.id),
        },
        id,
    })
}

fn poll_job(id: &str) -> ExtractionJob {
    ExtractionJob {
        id: id.to_string(),
        status: "queued".into(),
        poll_url: format!("/v1/extractions/{id}"),
        estimated_seconds: 5,
    }
}

/// What the write learned that the answer needs: the run and its document's pages.
type Started = Arc<Mutex<Option<(String, i64)>>>;

/// Starts an extraction in the request's transaction and answers `202`; the caller then
/// waits for a small document and answers `200` with its values.
async fn start_and_answer(
    call: &Call<Extract>,
    source: Source,
    schema: SchemaChoice,
    options: Value,
    run_async: bool,
    hash: String,
) -> Result<HttpResponse, ApiError> {
    let models = call.state.models.names();
    let rid = request_id(&call.req);
    let started: Started = Arc::new(Mutex::new(None));
    let seen = started.clone();
    let answer_rid = rid.clone();
    let accepted = call
        .write_with(
            move || hash,
            move |tx, org| {
                let doc = match source {
                    Source::Stored(id) => document(tx, org, &id)?,
                    Source::Upload(u) => {
                        let (u, mime, layer) = *u;
                        let sha = sha256_hex(&u.content);
                        let new = NewDocument {
                            filename: &u.filename,
                            mime_type: &mime,
                            sha256: &sha,
                            metadata: &u.metadata,
                            content: &u.content,
                            layer: layer.as_layer(),
                        };
                        crate::engine::events::add_document(tx, org, new)?.0
                    }
                };
                let schema = load_schema(tx, org, &schema)?;
                let run = quick::start_extraction(tx, org, &schema, &doc.id, &models, options)?;
                let x = Extraction::of(tx, run)?;
                let body = render(tx, org, &x, rid, Some(poll_job(&x.run.id)))?;
                if let Ok(mut s) = seen.lock() {
                    *s = Some((x.run.id.clone(), doc.pages));
                }
                let effects = Effects::default()
                    .wake_if(true)
                    .event(format!("extraction {} started", x.run.id));
                Ok(Reply::accepted(body).with(effects))
            },
        )
        .await?;
    // A replayed request (same Idempotency-Key) did no work: it answers as first stored.
    let Some((id, pages)) = started.lock().ok().and_then(|s| s.clone()) else {
        return Ok(accepted);
    };
    if run_async || pages > SYNC_PAGES {
        return Ok(accepted);
    }
    // The extraction is committed: from here on a failure to wait or to read answers the
    // `202` (an error would make a client retry, and start the extraction again).
    if !wait_settled(call, &id).await.unwrap_or(false) {
        return Ok(accepted);
    }
    let read = call
        .read(move |c, org| {
            let x =
                Extraction::load(c, org, &id)?.ok_or_else(|| ApiError::not_found("Extraction"))?;
            Ok((render(c, org, &x, answer_rid, None)?, x.cells_resolved()))
        })
        .await;
    match read {
        Ok((body, resolved)) => {
            let mut answer = HttpResponse::Ok();
            cost_headers(&mut answer, resolved);
            Ok(answer.json(body))
        }
        Err(e) => {
            tracing::warn!("extraction answered 202 after its commit: {e}");
            Ok(accepted)
        }
    }
}

/// Talonic's cost headers, all five or none (its clients read them as a set): a self-hosted
/// Quire charges nothing, and says how many values the registry and the extractor resolved.
fn cost_headers(r: &mut actix_web::HttpResponseBuilder, (registry, extracted): (usize, usize)) {
    r.insert_header(("X-Talonic-Cost-Credits", "0"))
        .insert_header(("X-Talonic-Cost-EUR", "0"))
        .insert_header(("X-Talonic-Balance-Credits", "0"))
        .insert_header(("X-Talonic-Cells-Resolved-Registry", registry.to_string()))
        .insert_header(("X-Talonic-Cells-Resolved-AI", extracted.to_string()));
}

/// Waits for a run to leave `active`; false when `SYNC_WAIT` passed first.
async fn wait_settled<S>(call: &Call<S>, id: &str) -> Result<bool, ApiError> {
    let deadline = Instant::now() + SYNC_WAIT;
    loop {
        let lookup = id.to_string();
        let active = call
            .read(move |c, org| {
                Ok(store::pipelines::get(c, org, &lookup)?
                    .is_some_and(|p| p.status == crate::domain::status::RunStatus::Active))
            })
            .await?;
        if !active {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        actix_web::rt::time::sleep(POLL_EVERY).await;
    }
}

pub async fn extract(call: Call<Extract>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let r = read_request(&call, payload).await?;
    start_and_answer(&call, r.source, r.schema, r.options, r.run_async, r.hash).await
}

/// `POST /v1/documents/{id}/re-extract`: the same document through the quick tier again.
#[derive(Deserialize, ToSchema, Default)]
#[schema(as = ReExtractInput)]
pub struct ReExtractBody {
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
    schema_id: Option<String>,
    include_markdown: Option<bool>,
    include_provenance: Option<bool>,
    #[schema(value_type = Option<Object>)]
    options: Option<Value>,
}

pub async fn re_extract(
    call: Call<Extract>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let lookup = id.clone();
    call.read(move |c, org| document(c, org, &lookup).map(|_| ()))
        .await?;
    let b = call.body::<ReExtractBody>(payload, true).await?;
    let hash = sha256_hex(canonical_json(&b.raw).as_bytes());
    let p = b.parsed;
    let schema = match (&p.schema, &p.schema_id) {
        (None, None) => {
            // Without a schema, the document's latest extraction's spec runs again.
            let lookup = id.clone();
            let last = call
                .read(move |c, org| {
                    Ok(
                        store::pipelines::list_extractions(c, org, Some(&lookup), None, None, 1)?
                            .0
                            .pop(),
                    )
                })
                .await?;
            match last {
                Some(run) => SchemaChoice::Saved(run.schema_id),
                None => {
                    return Err(ApiError::bad(
                        "The document has no extraction yet: give a schema or a schema_id",
                    ))
                }
            }
        }
        _ => schema_choice(p.schema.clone(), p.schema_id.as_deref())?,
    };
    let options = json!({
        "include_markdown": p.include_markdown.unwrap_or(false),
        "include_provenance": p.include_provenance.unwrap_or(false),
    });
    let run_async = asked_async(p.options.as_ref())?;
    start_and_answer(&call, Source::Stored(id), schema, options, run_async, hash).await
}

fn list_item(x: &Extraction) -> ExtractionListItem {
    ExtractionListItem {
        id: x.run.id.clone(),
        status: x.status().into(),
        document_id: x.document.id.clone(),
        document_filename: x.document.filename.clone(),
        confidence_overall: x.confidence().overall,
        created_at: x.run.created_at.clone(),
        links: ExtractionItemLinks {
            self_: format!("/v1/extractions/{}", x.run.id),
            document: format!("/v1/documents/{}", x.document.id),
        },
    }
}

const STATUS_WORDS: &str = "processing, complete, failed";

fn extraction_status_filter(
    raw: Option<&String>,
) -> Result<Option<&'static [&'static str]>, ApiError> {
    Ok(match raw.map(String::as_str) {
        None => None,
        Some("processing") => Some(&["queued", "processing"]),
        Some("complete") => Some(&["complete", "partial"]),
        Some("failed") => Some(&["error"]),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "status must be one of {STATUS_WORDS} (got '{other}')"
            )))
        }
    })
}

async fn list_extractions(
    call: Call<Read>,
    list: String,
    document: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let filters: &[&str] = if document.is_some() {
        &["status"]
    } else {
        &["document_id", "status"]
    };
    let (q, cursors, page) = call.page(&list, 100, filters)?;
    let document = match (document, q.get("document_id")) {
        (Some(d), _) => Some(d),
        (None, Some(d)) => Some(stored_id(d)?),
        (None, None) => None,
    };
    let status = extraction_status_filter(q.get("status"))?;
    call.answer(move |c, org| {
        if let Some(d) = &document {
            // A document's extractions (a deleted one's too): 404 for another organization's.
            if !store::documents::owned(c, org, d)? {
                return Err(ApiError::not_found("Document"));
            }
        }
        let (rows, total) = store::pipelines::list_extractions(
            c,
            org,
            document.as_deref(),
            status,
            page.after,
            page.limit + 1,
        )?;
        let items = rows
            .into_iter()
            .map(|run| Extraction::of(c, run).map(|x| (x.run.seq, list_item(&x))))
            .collect::<Result<Vec<_>, _>>()?;
        let page: Page<(i64, ExtractionListItem)> =
            super::pagination::page(items, total, &page, &cursors, |(seq, _)| *seq, |r| r);
        Ok(Page {
            data: page.data.into_iter().map(|(_, item)| item).collect(),
            pagination: page.pagination,
        })
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    list_extractions(call, "extractions".into(), None).await
}

pub async fn of_document(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    list_extractions(call, format!("extractions:{id}"), Some(id)).await
}

fn found(c: &Connection, org: &str, id: &str) -> Result<Extraction, ApiError> {
    Extraction::load(c, org, id)?.ok_or_else(|| ApiError::not_found("Extraction"))
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| render(c, org, &found(c, org, &id)?, None, None))
        .await
}

/// `GET /v1/extractions/{id}/data`, as JSON or (`?format=csv`) as a CSV of one row.
pub async fn data(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let q = super::pagination::query_map(call.req.query_string())?;
    super::pagination::only_known(&q, &["format"])?;
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "format must be json or csv (got '{other}')"
            )))
        }
    };
    if !csv {
        // The values alone, as Talonic documents this route.
        return call
            .answer(move |c, org| Ok(found(c, org, &id)?.data()))
            .await;
    }
    let (name, text) = call
        .read(move |c, org| {
            let x = found(c, org, &id)?;
            let data = x.data();
            let header: Vec<String> = x.order.clone();
            let row: Vec<String> = x
                .order
                .iter()
                .map(|f| crate::domain::csv_out::cell(data.get(f).unwrap_or(&Value::Null)))
                .collect();
            let text = crate::domain::csv_out::render(&header, &[row])
                .map_err(|e| ApiError::Internal(format!("CSV: {e}")))?;
            Ok((format!("extraction-{}.csv", x.run.id), text))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .body(text))
}

/// `PATCH /v1/extractions/{id}/data`: `{ "corrections": [{ "field", "value", "reason"? }] }`.
#[derive(Deserialize, ToSchema)]
#[schema(as = ExtractionCorrections)]
pub struct CorrectionsBody {
    corrections: Option<Vec<CorrectionItem>>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ExtractionCorrection)]
pub struct CorrectionItem {
    /// The field's name (`field_name`, `key` and `path` are accepted too).
    #[serde(alias = "field_name", alias = "key", alias = "path")]
    field: Option<String>,
    #[schema(value_type = Object)]
    value: Option<Value>,
    reason: Option<String>,
}

pub async fn patch_data(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b = call
        .body_for::<CorrectionsBody, _>(found, &id, payload)
        .await?;
    let items = b
        .parsed
        .corrections
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad("corrections must be a non-empty array"))?;
    let mut checked = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = item
            .field
            .ok_or_else(|| ApiError::bad(format!("corrections[{i}].field is required")))?;
        let value = item
            .value
            .ok_or_else(|| ApiError::bad(format!("corrections[{i}].value is required")))?;
        checked.push((field, value, item.reason));
    }
    let key_id = call.auth.key_id.clone();
    let reviewer = super::reviews::reviewer(&call.req, &call.auth.key_name)?;
    call.change(move |tx, org| {
        let x = found(tx, org, &id)?;
        for (field, value, reason) in &checked {
            let req = ResolveRequest {
                action: Action::Correct,
                corrected_value: Some(value.clone()),
                reason: reason.clone(),
                key_id: key_id.clone(),
                reviewer: reviewer.clone(),
            };
            crate::engine::review::correct(tx, org, &x.pd.id, field, value, &req)?;
        }
        render(tx, org, &found(tx, org, &id)?, None, None)
    })
    .await
}

// ---- Jobs ----

/// `POST /v1/jobs`.
#[derive(Deserialize, ToSchema)]
#[schema(as = JobInput)]
pub struct JobBody {
    /// A saved schema: its id or short id.
    schema_id: Option<String>,
    /// Omitted or empty: every completed document of the organization.
    document_ids: Option<Vec<String>>,
    #[schema(max_length = 200)]
    name: Option<String>,
    /// Accepted for Talonic's clients; provenance is always kept.
    include_provenance: Option<bool>,
}

fn current_phase(run: &PipelineRow, stats: &JobStats) -> String {
    match (run.status, stats.phase) {
        (crate::domain::status::RunStatus::Active, Some(0)) => "phase_1_resolve".into(),
        (crate::domain::status::RunStatus::Active, _) => "phase_2_execute".into(),
        (crate::domain::status::RunStatus::Completed, _) => "completed".into(),
        _ => "error".into(),
    }
}

fn render_job(run: &PipelineRow, stats: &JobStats, message: Option<String>) -> Job {
    use crate::domain::status::RunStatus;
    let status = quick::job_status_word(run, stats);
    let done = stats.finished + stats.errors;
    let empty = stats.total_cells - stats.filled;
    let error = match run.status {
        RunStatus::Cancelled => Some(JobError {
            code: "cancelled".into(),
            message: "The job was cancelled".into(),
        }),
        RunStatus::Failed => Some(JobError {
            code: "all_documents_failed".into(),
            message: format!("All {} documents failed", stats.documents),
        }),
        _ => None,
    };
    Job {
        id: run.id.clone(),
        name: run.name.clone(),
        status: status.into(),
        progress: if stats.documents == 0 {
            0
        } else {
            done * 100 / stats.documents
        },
        schema: SchemaRef {
            id: run.schema_id.clone(),
            name: run.schema_name.clone(),
        },
        document_count: stats.documents,
        completed_documents: stats.finished,
        grid_stats: GridStats {
            total_cells: stats.total_cells,
            filled: stats.filled,
            empty,
            fill_rate: if stats.total_cells == 0 {
                0.0
            } else {
                stats.filled as f64 / stats.total_cells as f64
            },
        },
        current_phase: current_phase(run, stats),
        error,
        message,
        created_at: run.created_at.clone(),
        started_at: run.created_at.clone(),
        completed_at: run.completed_at.clone(),
        links: JobLinks {
            self_: format!("/v1/jobs/{}", run.id),
            results: format!("/v1/jobs/{}/results", run.id),
            cancel: (run.status == RunStatus::Active)
                .then(|| format!("/v1/jobs/{}/cancel", run.id)),
            pipeline: format!("/v1/pipelines/{}", run.id),
        },
    }
}

fn find_job(c: &Connection, org: &str, id: &str) -> Result<PipelineRow, ApiError> {
    quick::find_run(c, org, id, RunKind::Job)?.ok_or_else(|| ApiError::not_found("Job"))
}

pub async fn create_job(
    call: Call<Write>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let b = call.body::<JobBody>(payload, false).await?;
    let p = b.parsed;
    let schema_id = p
        .schema_id
        .as_deref()
        .ok_or_else(|| ApiError::bad("schema_id is required"))?;
    let schema_id = parse_schema_ref(schema_id)
        .ok_or_else(|| ApiError::bad("schema_id must be a UUID or SCH-XXXXXXXX"))?;
    let ids = p
        .document_ids
        .map(|ids| {
            ids.iter()
                .map(|d| stored_id(d))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if let Some(n) = p.name.as_deref() {
        if n.trim().is_empty() || n.chars().count() > 200 {
            return Err(ApiError::bad("name must be 1-200 characters"));
        }
    }
    let _ = p.include_provenance;
    let (max_docs, models) = (
        call.state.config.max_pipeline_documents,
        call.state.models.names(),
    );
    call.write(&b.raw, move |tx, org| {
        let schema = store::schemas::get(tx, org, &schema_id, false)?
            .ok_or_else(|| ApiError::NotFound(format!("Schema {schema_id} not found")))?;
        let name = match p.name.as_deref() {
            Some(n) => n.trim().to_string(),
            None => format!("{} job", schema.name),
        };
        let run = quick::start_job(tx, org, &schema.id, Some(&name), ids, max_docs, &models)?;
        let stats = quick::job_stats(tx, &run)?;
        let body = Job {
            status: "pending".into(),
            ..render_job(
                &run,
                &stats,
                Some("Job created and queued for processing.".into()),
            )
        };
        let effects = Effects::default().wake_if(true).event(format!(
            "job {} started: {} documents",
            run.id, run.document_count
        ));
        Ok(Reply::created(body).with(effects))
    })
    .await
}

pub async fn list_jobs(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) = call.page("jobs", 100, &["status"])?;
    let status: Option<&'static [&'static str]> = match q.get("status").map(String::as_str) {
        None => None,
        Some("queued") | Some("pending") | Some("processing") => Some(&["active"]),
        Some("complete") | Some("completed") => Some(&["completed"]),
        Some("failed") => Some(&["failed", "cancelled"]),
        Some(other) => {
            return Err(ApiError::bad(format!(
            "status must be one of pending, queued, processing, complete, failed (got '{other}')"
        )))
        }
    };
    let permit = call.heavy_if(true)?;
    let answer = call.read(move |c, org| {
        let (rows, total) =
            store::pipelines::list_of_kind(c, org, "job", status, page.after, page.limit + 1)?;
        let rows = rows
            .into_iter()
            .map(|run| quick::job_stats(c, &run).map(|s| (run.seq, render_job(&run, &s, None))))
            .collect::<Result<Vec<_>, _>>()?;
        let page: Page<(i64, Job)> =
            super::pagination::page(rows, total, &page, &cursors, |(seq, _)| *seq, |r| r);
        Ok(Page {
            data: page.data.into_iter().map(|(_, j)| j).collect(),
            pagination: page.pagination,
        })
    });
    let answer = answer.await;
    drop(permit);
    Ok(HttpResponse::Ok().json(answer?))
}

pub async fn get_job(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| {
        let run = find_job(c, org, &id)?;
        Ok(render_job(&run, &quick::job_stats(c, &run)?, None))
    })
    .await
}

pub async fn job_results(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let permit = call.heavy_if(true)?;
    let answer = call
        .read(move |c, org| {
            let run = find_job(c, org, &id)?;
            let stats = quick::job_stats(c, &run)?;
            let rows = quick::job_rows(c, &run)?;
            Ok(JobResults {
                job_id: run.id.clone(),
                job_status: quick::job_status_word(&run, &stats).into(),
                schema: SchemaRef {
                    id: run.schema_id.clone(),
                    name: run.schema_name.clone(),
                },
                total_rows: rows.len() as i64,
                data: rows
                    .into_iter()
                    .map(|r| JobResultRow {
                        id: r.pd.id,
                        document_id: r.pd.document_id,
                        filename: r.pd.filename,
                        status: r.pd.status,
                        values: r.values,
                        confidence: r.confidence,
                        validation_flags: r.flags,
                        error: r.pd.error,
                    })
                    .collect(),
                links: JobResultsLinks {
                    self_: format!("/v1/jobs/{}/results", run.id),
                    job: format!("/v1/jobs/{}", run.id),
                },
            })
        })
        .await;
    drop(permit);
    Ok(HttpResponse::Ok().json(answer?))
}

/// `POST /v1/jobs/{id}/cancel`: stops an active job; a finished one answers unchanged.
pub async fn cancel_job(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Cancel takes no options, but a body is still held to the limits every route keeps.
    let _ = call
        .optional_body_for::<Value, _>(find_job, &id, payload)
        .await?;
    call.write_with(String::new, move |tx, org| {
        let run = find_job(tx, org, &id)?;
        if run.status == crate::domain::status::RunStatus::Active {
            store::pipelines::cancel(tx, &run.id)?;
            crate::engine::events::cancelled(tx, org, &run.id)?;
        }
        let run = find_job(tx, org, &id)?;
        let stats = quick::job_stats(tx, &run)?;
        Ok(Reply::ok(render_job(&run, &stats, None)))
    })
    .await
}
