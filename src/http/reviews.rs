use super::error::ApiError;
use super::extract::{Body, Call, Read, Write};
use super::idempotency::Reply;
use super::pagination::{self, query_map};
use super::requests::{BulkResolveBody, Reason, ResolveBody};
use crate::answers::{
    BulkItemResult, BulkResolveAnswer, DecisionList, HistoryEntry, MatchedSpan, NamedRef,
    PipelineCount, ReviewDetail, ReviewItem, ReviewLinks, ReviewSummary, TriggerCounts,
};
use crate::domain::csv_out;
use crate::domain::schema::FieldDef;
use crate::domain::state::with_fields;
use crate::engine::review::{self, Action, ResolveRequest};
use crate::engine::views::{self, DocView};
use crate::engine::Effects;
use crate::store;
use crate::store::review::{PdRef, QueueFilter};
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use std::collections::HashMap;

/// A pipeline document's fields and view, for rendering queue items.
struct Loaded {
    pd: PdRef,
    fields: Vec<FieldDef>,
    view: DocView,
}

/// The documents of review items with their views: every version with its provenance when
/// `history` (an item's detail), else what shows an item's canonical value and confidence.
fn load_docs(
    c: &Connection,
    seqs: &[i64],
    history: bool,
) -> Result<HashMap<i64, Loaded>, ApiError> {
    let mut docs = Vec::new();
    let mut shown = Vec::new();
    for seq in seqs {
        if docs.iter().any(|(s, _, _)| s == seq) {
            continue;
        }
        let Some(pd) = store::review::pd_by_seq(c, *seq)? else {
            continue;
        };
        let fields: Vec<FieldDef> = pd.fields.clone();
        let order: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
        let view = DocView {
            cells: Vec::new(),
            restarts: pd.restarts.clone(),
            states: with_fields(pd.field_states.clone(), &order),
        };
        shown.push((*seq, view));
        docs.push((*seq, pd, fields));
    }
    if history {
        let mut cells = store::pipelines::cells_by_doc(c, seqs)?;
        for (seq, view) in shown.iter_mut() {
            view.cells = cells.remove(seq).unwrap_or_default();
        }
    } else {
        views::fill_shown(c, &mut shown)?;
    }
    Ok(docs
        .into_iter()
        .zip(shown)
        .map(|((seq, pd, fields), (_, view))| (seq, Loaded { pd, fields, view }))
        .collect())
}

fn item_json(l: &Loaded, field: &str) -> ReviewItem {
    let st = l.view.states.get(field).cloned().unwrap_or_default();
    let (value, version) = l.view.canonical(field);
    let display = l
        .fields
        .iter()
        .find(|f| f.field_name == field)
        .map(|f| f.display_name.clone())
        .unwrap_or_else(|| field.to_string());
    let base = format!("/v1/field-reviews/{}/{}", l.pd.id, field);
    ReviewItem {
        pipeline_document_id: l.pd.id.clone(),
        field_key: field.to_string(),
        field_display_name: display,
        status: st.status.as_str().to_string(),
        trigger: st.trigger,
        reason: st.reason,
        current_value: value,
        confidence: version.and_then(|c| c.confidence),
        requested_at: st.requested_at,
        pipeline: NamedRef {
            id: l.pd.pipeline_id.clone(),
            name: l.pd.pipeline_name.clone(),
        },
        document: NamedRef {
            id: l.pd.document_id.clone(),
            name: l.pd.filename.clone(),
        },
        links: ReviewLinks {
            resolve: format!("{base}/resolve"),
            self_: base,
        },
    }
}

/// The optional `pipeline_id` query filter: 400 unless it is a UUID.
fn pipeline_filter(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    q.get("pipeline_id")
        .map(|p| {
            crate::domain::ids::parse_id(p)
                .ok_or_else(|| ApiError::bad("pipeline_id must be a UUID"))
        })
        .transpose()
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    // Each order is its own list: a cursor of one is refused by the other.
    let ascending = pagination::ascending(call.req.query_string())?;
    let (q, cursors, page) = call.page(
        if ascending { "reviews:asc" } else { "reviews" },
        100,
        &[
            "pipeline_id",
            "trigger",
            "status",
            "routing",
            "field_key",
            "stage_id",
            "order",
        ],
    )?;
    let field_key = q.get("field_key").cloned();
    if field_key
        .as_deref()
        .is_some_and(|f| !crate::domain::schema::valid_field_name(f))
    {
        return Err(ApiError::bad("field_key must be a field name"));
    }
    let stage_id = q
        .get("stage_id")
        .map(|s| {
            crate::domain::ids::parse_id(s).ok_or_else(|| ApiError::bad("stage_id must be a UUID"))
        })
        .transpose()?;
    let pipeline = pipeline_filter(&q)?;
    let trigger = q.get("trigger").cloned();
    if trigger
        .as_deref()
        .is_some_and(|t| t != "gate" && t != "declarative")
    {
        return Err(ApiError::bad("trigger must be gate or declarative"));
    }
    let status = q.get("status").cloned();
    if status
        .as_deref()
        .is_some_and(|s| s != "blocked" && s != "pending_review")
    {
        return Err(ApiError::bad("status must be blocked or pending_review"));
    }
    let hold = match q.get("routing").map(String::as_str) {
        None | Some("review_queue") => false,
        Some("hold") => true,
        Some(_) => return Err(ApiError::bad("routing must be review_queue or hold")),
    };
    call.answer(move |c, org| {
        let f = QueueFilter {
            org_id: org,
            pipeline_id: pipeline.as_deref(),
            trigger: trigger.as_deref(),
            status: status.as_deref(),
            hold,
            field_key: field_key.as_deref(),
            stage_id: stage_id.as_deref(),
            ascending,
        };
        let (rows, total) = store::review::queue(c, &f, page.after, page.limit + 1)?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.pd_seq).collect();
        let docs = load_docs(c, &seqs, false)?;
        // Read in the same snapshot as the queue rows: a row whose document did not load is a
        // storage fault, not an item to show.
        let items = rows
            .iter()
            .map(|r| match docs.get(&r.pd_seq) {
                Some(l) => Ok((r.seq, item_json(l, &r.field_key))),
                None => Err(ApiError::Internal(format!(
                    "review row {} names a run document that did not load",
                    r.seq
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(pagination::page(
            items,
            total,
            &page,
            &cursors,
            |r| r.0,
            |r| r.1,
        ))
    })
    .await
}

pub async fn summary(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| {
        let rows = store::review::queue_summary(c, org)?;
        let total: i64 = rows.iter().map(|r| r.3).sum();
        let by = |t: &str| rows.iter().filter(|r| r.0 == t).map(|r| r.3).sum::<i64>();
        let mut per: Vec<(String, String, i64)> = Vec::new();
        for (_, pid, name, n) in &rows {
            match per.iter_mut().find(|p| &p.0 == pid) {
                Some(p) => p.2 += n,
                None => per.push((pid.clone(), name.clone(), *n)),
            }
        }
        Ok::<_, ApiError>(ReviewSummary {
            total,
            by_trigger: TriggerCounts {
                gate: by("gate"),
                declarative: by("declarative"),
            },
            by_pipeline: per
                .into_iter()
                .map(|(pipeline_id, pipeline_name, count)| PipelineCount {
                    pipeline_id,
                    pipeline_name,
                    count,
                })
                .collect(),
        })
    })
    .await
}

fn pd_field(req: &HttpRequest) -> Result<(String, String), ApiError> {
    let pd = super::path_id(req, "pd_id")?;
    let field = req.match_info().get("field_key").unwrap_or("").to_string();
    Ok((pd, field))
}

/// Finds the value's text in the document when no span was stored (case and whitespace folded).
fn find_span(text: &str, value: &Value) -> Option<String> {
    let needle = match value {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let fold = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let n = fold(&needle);
    if n.is_empty() {
        return None;
    }
    text.lines()
        .find(|l| fold(l).contains(&n))
        .map(|l| l.trim().to_string())
}

pub async fn detail(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (pd_id, field) = pd_field(&call.req)?;
    call.answer(move |c, org| {
        let pd = store::review::find_pd(c, org, &pd_id)?
            .ok_or_else(|| ApiError::not_found("Pipeline document"))?;
        let docs = load_docs(c, &[pd.seq], true)?;
        let l = docs
            .get(&pd.seq)
            .ok_or_else(|| ApiError::not_found("Pipeline document"))?;
        let fdef = l
            .fields
            .iter()
            .find(|f| f.field_name == field)
            .ok_or_else(|| ApiError::not_found("Field"))?;
        let history: Vec<HistoryEntry> = l
            .view
            .cells
            .iter()
            .filter(|(_, c, _)| c.field == field)
            .map(|(_, c, _)| HistoryEntry {
                cell_version: c.version,
                source: c.source.clone(),
                value: c.value.clone(),
                source_text: c.source_text.clone(),
            })
            .collect();
        let (value, version) = l.view.canonical(&field);
        let extracted = version
            .filter(|c| crate::domain::cells::is_extracted(&c.source))
            .or_else(|| {
                l.view
                    .cells
                    .iter()
                    .rev()
                    .find(|(_, c, _)| {
                        c.field == field && crate::domain::cells::is_extracted(&c.source)
                    })
                    .map(|(_, c, _)| c)
            });
        let span = match extracted.and_then(|c| Some((c.source_text.clone()?, c))) {
            // Placed when it was read (a PDF, DOCX or image).
            Some((text, cell)) if cell.provenance.is_some() => cell
                .provenance
                .as_ref()
                .map(|p| MatchedSpan::placed(text, p)),
            Some((text, _)) => Some(MatchedSpan::on(&doc_pages(c, l)?, text, &value, false)),
            None => {
                let pages = doc_pages(c, l)?;
                let text = if pages.is_empty() {
                    String::from_utf8(crate::store::documents::content(c, &l.pd.document_id)?)
                        .unwrap_or_default()
                } else {
                    crate::intake::full_text(&pages)
                };
                find_span(&text, &value).map(|line| MatchedSpan::on(&pages, line, &value, true))
            }
        };
        let phases = store::pipelines::phases(c, &l.pd.pipeline_id)?;
        let verdicts: Vec<_> = store::pipelines::verdicts(c, l.pd.seq)?
            .iter()
            .filter(|v| v.field == field)
            .map(|v| views::verdict(v, &phases))
            .collect();
        let stage = l.view.states.get(&field).and_then(|s| s.stage_id.clone());
        let failing_elements = views::failing_elements(
            &verdicts,
            stage.as_deref(),
            &value,
            extracted.and_then(|c| c.rows.as_deref()),
        );
        let decisions = store::review::decisions_for(c, l.pd.seq, &field)?;
        let waiting_dependents = l
            .fields
            .iter()
            .filter(|f| {
                l.view.states.get(&f.field_name).is_some_and(|s| {
                    s.status == crate::domain::state::Status::Waiting
                        && (s.blocked_by.as_deref() == Some(field.as_str())
                            || f.depends_on.contains(&field))
                })
            })
            .map(|f| f.field_name.clone())
            .collect();
        Ok(ReviewDetail {
            waiting_dependents,
            failing_elements,
            item: item_json(l, &field),
            field: fdef.clone(),
            cell_history: history,
            matched_span: span,
            verdicts,
            prior_decisions: decisions,
        })
    })
    .await
}

fn doc_pages(c: &Connection, l: &Loaded) -> Result<Vec<crate::intake::Page>, ApiError> {
    Ok(store::documents::pages(c, &l.pd.document_id)?
        .into_iter()
        .map(|r| r.page)
        .collect())
}

/// The reviewer's name: `X-Reviewer`, else the key's name.
pub fn reviewer(req: &HttpRequest, key_name: &str) -> Result<String, ApiError> {
    match req.headers().get("x-reviewer") {
        None => Ok(key_name.to_string()),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad("X-Reviewer must be 1-100 printable characters"))?
                .trim()
                .to_string();
            if s.is_empty() || s.chars().count() > 100 || s.chars().any(|c| c.is_control()) {
                return Err(ApiError::bad(
                    "X-Reviewer must be 1-100 printable characters",
                ));
            }
            Ok(s)
        }
    }
}

/// The engine's command from a decision's body, by the caller's key and reviewer.
fn decision(
    call: &Call<Write>,
    action: Action,
    corrected_value: Option<Value>,
    reason: Option<Reason>,
) -> Result<ResolveRequest, ApiError> {
    Ok(ResolveRequest {
        action,
        corrected_value,
        reason: reason.map(|r| r.0),
        key_id: call.auth.key_id.clone(),
        reviewer: reviewer(&call.req, &call.auth.key_name)?,
    })
}

/// The run document, 404 unless it is the caller's.
fn run_document(c: &Connection, org: &str, pd_id: &str) -> Result<PdRef, ApiError> {
    store::review::find_pd(c, org, pd_id)?.ok_or_else(|| ApiError::not_found("Pipeline document"))
}

pub async fn resolve(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let (pd_id, field) = pd_field(&call.req)?;
    let Body { raw, parsed: b } = call
        .body_for::<ResolveBody, _>(run_document, &pd_id, payload)
        .await?;
    let request = decision(&call, b.action, b.corrected_value, b.reason)?;
    let action = request.action.as_str();
    call.write(&raw, move |tx, org| {
        let (answer, wake) = review::resolve(tx, org, &pd_id, &field, &request)?;
        let mut effects = Effects::default()
            .wake_if(wake)
            .event(format!("review decision {action} on {pd_id}/{field}"));
        effects.decisions.push(action);
        Ok(Reply::ok(answer).with(effects))
    })
    .await
}

pub async fn bulk_resolve(
    call: Call<Write>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body::<BulkResolveBody>(payload, false).await?;
    if b.items.is_empty() || b.items.len() > 500 {
        return Err(ApiError::bad("items must hold 1 to 500 entries"));
    }
    let targets: Vec<(String, String)> = b
        .items
        .into_iter()
        .map(|i| (i.pipeline_document_id, i.field_key))
        .collect();
    let request = decision(&call, b.action, b.corrected_value, b.reason)?;
    let action = request.action.as_str();
    call.write(&raw, move |tx, org| {
        let mut results = Vec::with_capacity(targets.len());
        let mut resolved = 0;
        let mut effects = Effects::default();
        for (pd, field) in &targets {
            let item = store::Savepoint::begin(tx)?;
            let outcome = match crate::domain::ids::parse_id(pd) {
                None => Err(crate::engine::EngineError::NotFound(
                    "Pipeline document not found".into(),
                )),
                Some(id) => review::resolve(tx, org, &id, field, &request),
            };
            match outcome {
                Ok((_, wake)) => {
                    item.commit()?;
                    effects = effects.wake_if(wake);
                    effects.decisions.push(action);
                    resolved += 1;
                    results.push(BulkItemResult {
                        pipeline_document_id: pd.clone(),
                        field_key: field.clone(),
                        ok: true,
                        error: None,
                    });
                }
                Err(crate::engine::EngineError::Store(e)) if e.is_unavailable() => {
                    return Err(e.into())
                }
                Err(e) => {
                    drop(item);
                    results.push(BulkItemResult {
                        pipeline_document_id: pd.clone(),
                        field_key: field.clone(),
                        ok: false,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        let effects = effects.event(format!(
            "bulk review {action}: {resolved} resolved, {} failed",
            targets.len() - resolved
        ));
        let answer = BulkResolveAnswer {
            resolved,
            failed: targets.len() - resolved,
            results,
        };
        Ok(Reply::ok(answer).with(effects))
    })
    .await
}

pub async fn decisions(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) = call.page("decisions", 100, &["pipeline_id"])?;
    let pipeline = pipeline_filter(&q)?;
    call.answer(move |c, org| {
        let run = pipeline.as_deref();
        let (rows, total) = store::review::list_decisions(c, org, run, page.after, page.limit + 1)?;
        let page = pagination::page(rows, total, &page, &cursors, |d| d.seq, |d| d);
        Ok::<_, ApiError>(DecisionList {
            total,
            entries: page.data,
            pagination: page.pagination,
        })
    })
    .await
}

pub async fn decisions_export(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let pipeline = pipeline_filter(&query_map(call.req.query_string())?)?;
    let text = call
        .read(move |c, org| {
            let (rows, _) =
                store::review::list_decisions(c, org, pipeline.as_deref(), None, i64::MAX)?;
            let header: Vec<String> = [
                "id",
                "pipelineId",
                "pipelineDocumentId",
                "documentId",
                "documentName",
                "fieldKey",
                "triggerType",
                "stageId",
                "stageName",
                "action",
                "priorValue",
                "finalValue",
                "reason",
                "decidedBy",
                "decidedByName",
                "decidedAt",
                "element",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let opt = |v: &Option<Value>| v.as_ref().map(csv_out::cell).unwrap_or_default();
            let s = |v: &Option<String>| v.as_deref().map(csv_out::neutralize).unwrap_or_default();
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.pipeline_id.clone(),
                        d.pd_id.clone(),
                        d.document_id.clone(),
                        csv_out::neutralize(&d.document_name),
                        d.field_key.clone(),
                        d.trigger_type.clone(),
                        s(&d.stage_id),
                        s(&d.stage_name),
                        d.action.clone(),
                        opt(&d.prior_value),
                        opt(&d.final_value),
                        s(&d.reason),
                        d.decided_by.clone(),
                        csv_out::neutralize(&d.decided_by_name),
                        d.decided_at.clone(),
                        s(&d.element),
                    ]
                })
                .collect();
            csv_out::render(&header, &body).map_err(ApiError::Internal)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"field-review-decisions.csv\"",
        ))
        .body(text))
}
