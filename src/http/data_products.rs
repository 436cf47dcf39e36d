use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, StageId, Write};
use super::idempotency::Reply;
use super::pagination::{self};
use crate::answers::{DataProductCreated, DataProductRow, ReplayAnswer};
use crate::domain::csv_out;
use crate::domain::schema::FieldDef;
use crate::domain::status::DocStatus;
use crate::engine::review;
use crate::engine::views::{DocView, Shown};
use crate::engine::Effects;
use crate::store;
use crate::store::data_products::DataProduct;
use crate::store::pipelines::PipelineRow;
use crate::store::Connection;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Names the data product; the run's name when absent.
#[derive(Deserialize, ToSchema)]
#[schema(as = DataProductInput)]
pub struct CreateBody {
    name: Option<String>,
}

/// 400 unless the run is settled with something to deliver.
fn check_replayable(c: &Connection, pipeline_id: &str) -> Result<(), ApiError> {
    let active = store::pipelines::active_count(c, pipeline_id)?;
    if active > 0 {
        return Err(ApiError::bad(format!(
            "{active} document(s) of this pipeline are queued or processing"
        )));
    }
    Ok(())
}

pub async fn create(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let run = super::pipelines::load;
    let Body { raw, parsed: b } = call
        .optional_body_for::<CreateBody, _>(run, &id, payload)
        .await?;
    if let Some(n) = &b.name {
        if n.trim().is_empty() || n.chars().count() > 200 {
            return Err(ApiError::bad("name must be 1-200 characters"));
        }
    }
    call.write(&raw, move |tx, org| {
        let p = super::pipelines::load(tx, org, &id)?;
        check_replayable(tx, &id)?;
        let delivered = store::pipelines::finished_count(tx, &id)?;
        if delivered == 0 {
            return Err(ApiError::bad(
                "No document of this pipeline is complete or partial",
            ));
        }
        let default_name = format!("{} — Data Product", p.name);
        let (dp, created) = store::data_products::upsert(
            tx,
            org,
            &id,
            b.name.as_deref().map(str::trim),
            &default_name,
        )?;
        let (_, wake) = review::replay(tx, org, &id, None)?;
        // When the replay sent documents back to work, the run's settling tells instead.
        if created && !wake {
            crate::engine::events::data_product_ready(tx, org, &dp)?;
        }
        let body = DataProductCreated {
            data_product: dp,
            share_token: None,
        };
        let reply = if created {
            Reply::created(body)
        } else {
            Reply::ok(body)
        };
        Ok(reply.with(Effects::default().wake_if(wake)))
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let list = store::data_products::list;
    pagination::newest_first(
        &call,
        "data-products",
        &[],
        list,
        |d| d.seq,
        DataProduct::clone,
    )
    .await
}

/// The run a data product delivers.
fn run_of(c: &Connection, org: &str, id: &str) -> Result<PipelineRow, ApiError> {
    let d = load(c, org, id)?;
    store::pipelines::get(c, org, &d.pipeline_id)?.ok_or_else(|| ApiError::not_found("Pipeline"))
}

fn load(c: &Connection, org: &str, id: &str) -> Result<DataProduct, ApiError> {
    store::data_products::get(c, org, id)?.ok_or_else(|| ApiError::not_found("Data product"))
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| load(c, org, &id)).await
}

/// One delivered row: values, with held fields empty, and what a row needs for the audit export.
struct Row {
    ordinal: i64,
    status: DocStatus,
    pd_id: String,
    document_id: String,
    filename: String,
    view: DocView,
}

fn rows(
    c: &Connection,
    docs: Vec<crate::store::pipelines::PipelineDoc>,
    fields: &[FieldDef],
) -> Result<Vec<Row>, ApiError> {
    let order: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
    let seqs: Vec<i64> = docs.iter().map(|d| d.seq).collect();
    let mut cells = store::pipelines::cells_by_doc(c, &seqs)?;
    Ok(docs
        .into_iter()
        .filter(|d| d.status != DocStatus::Error)
        .map(|d| Row {
            ordinal: d.ordinal,
            status: d.status,
            view: DocView::new(&d, cells.remove(&d.seq).unwrap_or_default(), &order),
            pd_id: d.id,
            document_id: d.document_id,
            filename: d.filename,
        })
        .collect())
}

pub async fn results(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let (_, cursors, page) = call.page(&format!("dp:{id}"), 100, &[])?;
    // A refusal (404) before the first byte is an envelope: the answer starts with the read.
    call.stream(None, "application/json", move |sink, c, org| {
        let p = run_of(c, org, &id)?;
        let total = store::pipelines::delivered_count(c, &p.id)?;
        let w = pagination::PageWriter::begin(sink, &Map::new(), page.limit)?;
        w.rows(page.after, total, &cursors, true, |after, n| {
            let raw = store::pipelines::documents(c, &p.id, after, n, None)?;
            let positions: Vec<i64> = raw.iter().map(|d| d.ordinal).collect();
            let mut kept = rows(c, raw, &p.fields)?.into_iter().peekable();
            // Error documents are not delivered: their positions pass without a row.
            Ok(positions
                .into_iter()
                .map(|pos| match kept.next_if(|r| r.ordinal == pos) {
                    Some(r) => (pos, Some(delivered_row(&r, &p.fields))),
                    None => (pos, None),
                })
                .collect())
        })
    })
    .await
}

/// A delivered row as the results list shows it: values, with held fields empty and named.
fn delivered_row(r: &Row, fields: &[FieldDef]) -> DataProductRow {
    let mut values = Map::new();
    let mut held = Vec::new();
    for f in fields {
        let name = &f.field_name;
        if matches!(r.view.show(name, r.status), Shown::Held) {
            held.push(name.clone());
        }
        values.insert(name.clone(), r.view.shown(name, r.status));
    }
    DataProductRow {
        pipeline_document_id: r.pd_id.clone(),
        document_id: r.document_id.clone(),
        filename: r.filename.clone(),
        fields: values,
        held,
    }
}

/// Rows of documents read per page while an export streams.
const EXPORT_PAGE: i64 = 200;

/// What a CSV export shows, one line per document or per element of an array field.
#[derive(Clone, Copy, PartialEq)]
enum Export {
    /// The scalar fields' values.
    Plain,
    /// The scalar fields' values with each one's source, confidence and reviewer.
    Audit,
    /// One line per element of each array field's shown value.
    Lines,
}

/// The fields a plain or audit export has a column for: every field but the tables (arrays
/// with sub-fields), which are the line-items export's. A plain list stays a JSON cell.
fn scalar(f: &FieldDef) -> bool {
    f.items.is_none()
}

async fn export(call: Call<Read>, id: String, kind: Export) -> Result<HttpResponse, ApiError> {
    let permit = call.heavy_if(true)?;
    let audit = kind == Export::Audit;
    call.stream(permit, "text/csv; charset=utf-8", move |sink, c, org| {
        let p = run_of(c, org, &id)?;
        let arrays: Vec<&FieldDef> = p.fields.iter().filter(|f| !scalar(f)).collect();
        let columns = element_columns(&arrays);
        let mut header = Vec::new();
        if kind == Export::Lines {
            header.extend(["document_id", "filename", "field", "index"].map(String::from));
            header.extend(columns.iter().cloned());
        }
        for f in p
            .fields
            .iter()
            .filter(|f| scalar(f) && kind != Export::Lines)
        {
            header.push(f.field_name.clone());
            if audit {
                for suffix in ["source", "confidence", "reviewer"] {
                    header.push(format!("{}__{suffix}", f.field_name));
                }
            }
        }
        sink.write(csv_out::BOM.as_bytes())?;
        sink.write(&csv_out::lines(&[header]).map_err(ApiError::Internal)?)?;
        // Wide rows make short pages, so one page's cells and lines stay small.
        let per_page = pagination::within_budget(EXPORT_PAGE, p.fields.len(), 1024);
        let mut after = None;
        loop {
            let docs = store::pipelines::documents(c, &p.id, after, per_page, None)?;
            let n = docs.len() as i64;
            after = docs.last().map(|d| d.ordinal);
            let decisions = if audit {
                let seqs: Vec<i64> = docs.iter().map(|d| d.seq).collect();
                store::review::decisions_of_docs(c, &seqs)?
            } else {
                Vec::new()
            };
            let page = rows(c, docs, &p.fields)?;
            let lines: Vec<Vec<String>> = match kind {
                Export::Lines => page
                    .iter()
                    .flat_map(|r| element_lines(r, &arrays, &columns))
                    .collect(),
                _ => page
                    .iter()
                    .map(|r| export_line(r, &p.fields, audit, &decisions))
                    .collect(),
            };
            sink.write(&csv_out::lines(&lines).map_err(ApiError::Internal)?)?;
            if n < per_page {
                return Ok(());
            }
        }
    })
    .await
}

/// One CSV line of a delivered row: values (and, for the audit export, each value's source,
/// confidence and reviewer), through the readers' one rule for what is shown.
fn export_line(
    r: &Row,
    fields: &[FieldDef],
    audit: bool,
    decisions: &[store::review::Decision],
) -> Vec<String> {
    let mut line = Vec::new();
    for f in fields.iter().filter(|f| scalar(f)) {
        let name = &f.field_name;
        let (value, version) = match r.view.show(name, r.status) {
            Shown::Value(v, c) => (v, c),
            shown => {
                let first = match (audit, shown) {
                    (true, Shown::Held) => "PENDING_REVIEW".to_string(),
                    _ => String::new(),
                };
                line.push(first);
                if audit {
                    line.extend([String::new(), String::new(), String::new()]);
                }
                continue;
            }
        };
        if !audit {
            line.push(csv_out::cell(&value));
            continue;
        }
        let reviewer = decisions
            .iter()
            .rev()
            .find(|d| d.pd_id == r.pd_id && &d.field_key == name && d.action != "reopen")
            .map(|d| csv_out::neutralize(&d.decided_by_name))
            .unwrap_or_default();
        line.push(csv_out::cell(&value));
        line.push(version.map(|c| c.source.clone()).unwrap_or_default());
        line.push(
            version
                .and_then(|c| c.confidence)
                .map(|x| x.to_string())
                .unwrap_or_default(),
        );
        line.push(reviewer);
    }
    line
}

/// The sub-field columns of the line-items export: every array field's, in schema order, each
/// name once (two tables that share a column name share the column).
fn element_columns(arrays: &[&FieldDef]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in arrays.iter().flat_map(|f| f.items.iter().flatten()) {
        if !out.contains(&s.field_name) {
            out.push(s.field_name.clone());
        }
    }
    out
}

/// A delivered row's line items: one line per element of each table field whose value is
/// shown (a held field has none yet).
fn element_lines(r: &Row, arrays: &[&FieldDef], columns: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for f in arrays {
        let Shown::Value(Value::Array(list), _) = r.view.show(&f.field_name, r.status) else {
            continue;
        };
        for (i, e) in list.iter().enumerate() {
            let mut line = vec![
                r.document_id.clone(),
                csv_out::neutralize(&r.filename),
                f.field_name.clone(),
                i.to_string(),
            ];
            // An element that is not an object (which no table field accepts) has no columns.
            line.extend(
                columns
                    .iter()
                    .map(|k| e.get(k).map(csv_out::cell).unwrap_or_default()),
            );
            out.push(line);
        }
    }
    out
}

pub async fn export_plain(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    export(call, id, Export::Plain).await
}

pub async fn export_audit(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    export(call, id, Export::Audit).await
}

/// `GET /v1/data-products/{id}/export/lines`: the array fields' elements, one line each.
pub async fn export_lines(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    export(call, id, Export::Lines).await
}

/// Limits a replay to one run; every settled run of the schema when absent.
#[derive(Deserialize, ToSchema)]
#[schema(as = ReplayInput)]
pub struct ReplayBody {
    #[serde(alias = "pipelineId")]
    pipeline_id: Option<String>,
}

pub async fn replay_blocking(
    call: Call<Write>,
    Id(sid): Id,
    StageId(gid): StageId,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let g2 = gid.clone();
    call.read(move |c, org| {
        crate::store::schemas::get(c, org, &sid, true)?
            .ok_or_else(|| ApiError::not_found("Schema"))?;
        store::gates::get(c, &sid, &g2)?
            .ok_or_else(|| ApiError::not_found("Validation stage"))
            .map(|_| ())
    })
    .await?;
    let Body { raw, parsed: b } = call.body::<ReplayBody>(payload, true).await?;
    let only = b
        .pipeline_id
        .map(|p| {
            crate::domain::ids::parse_id(&p)
                .ok_or_else(|| ApiError::bad("pipeline_id must be a UUID"))
        })
        .transpose()?;
    call.write(&raw, move |tx, org| {
        let runs: Vec<String> = match &only {
            Some(p) => {
                let run = super::pipelines::load(tx, org, p)?;
                if !store::pipelines::runs_phase(tx, &run.id, &gid)? {
                    return Err(ApiError::bad(
                        "That pipeline does not run this validation stage",
                    ));
                }
                vec![run.id]
            }
            None => store::pipelines::running_phase(tx, org, &gid)?,
        };
        for r in &runs {
            check_replayable(tx, r)?;
        }
        let mut total = review::ReplayCounts::default();
        let mut effects = Effects::default();
        for r in &runs {
            let (n, wake) = review::replay(tx, org, r, Some(&gid))?;
            total.replayed += n.replayed;
            total.newly_blocked += n.newly_blocked;
            total.released += n.released;
            effects = effects.wake_if(wake);
        }
        let answer = ReplayAnswer {
            replayed: total.replayed,
            newly_blocked: total.newly_blocked,
            released: total.released,
        };
        Ok(Reply::ok(answer).with(effects))
    })
    .await
}
