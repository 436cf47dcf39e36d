//! Webhook events of the engine's changes. Each is written into the outbox by the transaction
//! that makes the change, so a rolled-back change has no event and a committed one always has
//! its event. Nothing is gathered or written for an event no active endpoint subscribes to.

use super::EngineError;
use crate::domain::state::{FieldState, States};
use crate::domain::status::DocStatus;
use crate::store::data_products::DataProduct;
use crate::store::documents::{DocumentRow, NewDocument};
use crate::store::pipelines::PipelineRow;
use crate::store::{self, Connection, StoreError};
use serde_json::{json, Value};

fn emit(
    c: &Connection,
    org: &str,
    event: &str,
    data: impl FnOnce(&Connection) -> Result<Value, StoreError>,
) -> Result<(), StoreError> {
    let hooks = store::webhooks::subscribers(c, org, event)?;
    if !hooks.is_empty() {
        store::webhooks::enqueue(c, org, event, &hooks, &data(c)?)?;
    }
    Ok(())
}

fn load_run(c: &Connection, pipeline_id: &str) -> Result<PipelineRow, StoreError> {
    store::pipelines::get_any(c, pipeline_id)?
        .ok_or_else(|| StoreError::Refused(format!("pipeline {pipeline_id} vanished")))
}

/// Settles a run (`store::pipelines::settle`) and tells what settling it did: the run's end
/// (`extraction.*` for an extraction, else `pipeline.*`), each rerun it finished, and that its
/// data product, if it has one, is ready again.
pub fn settle(c: &Connection, pipeline_id: &str) -> Result<Option<&'static str>, StoreError> {
    let settled = store::pipelines::settle(c, pipeline_id)?;
    if settled.status.is_none() && settled.reruns.is_empty() {
        return Ok(None);
    }
    let org = store::queue::org_of(c, pipeline_id)?;
    // Settling can finish a rerun without moving the run (a run cancelled meanwhile).
    for r in &settled.reruns {
        emit(c, &org, "rerun.completed", |_| {
            Ok(json!({
                "rerun_id": r.id,
                "pipeline_id": pipeline_id,
                "generation": r.generation,
                "from_phase": r.from_phase,
                "outcome": r.outcome,
            }))
        })?;
    }
    let Some(status) = settled.status else {
        return Ok(None);
    };
    let run = load_run(c, pipeline_id)?;
    if run.kind == "extraction" {
        let event = if status == "completed" {
            "extraction.complete"
        } else {
            "extraction.failed"
        };
        emit(c, &org, event, |c| {
            match super::quick::Extraction::of(c, run.clone()) {
                Ok(x) => Ok(json!({
                    "extraction_id": x.run.id,
                    "document_id": x.document.id,
                    "schema_id": x.run.schema_id,
                    "status": x.status(),
                    "confidence": x.confidence().overall,
                    "error": x.pd.error,
                })),
                Err(EngineError::Store(e)) => Err(e),
                // A broken extraction still settled: say so rather than hold up the writer's
                // whole batch over the event's details.
                Err(other) => Ok(json!({
                    "extraction_id": run.id,
                    "schema_id": run.schema_id,
                    "status": if status == "completed" { "complete" } else { "failed" },
                    "error": other.to_string(),
                })),
            }
        })?;
    } else {
        let counts = doc_counts(c, pipeline_id)?;
        let event = match status {
            "failed" => "pipeline.failed",
            _ if counts.partial + counts.error > 0 => "pipeline.partial",
            _ => "pipeline.completed",
        };
        emit(c, &org, event, |_| Ok(run_data(&run, &counts)))?;
    }
    if let Some(dp) = store::data_products::of_pipeline(c, pipeline_id)? {
        data_product_ready(c, &org, &dp)?;
    }
    Ok(Some(status))
}

#[derive(Default)]
struct Counts {
    complete: i64,
    partial: i64,
    error: i64,
}

fn doc_counts(c: &Connection, pipeline_id: &str) -> Result<Counts, StoreError> {
    let mut n = Counts::default();
    for g in store::pipelines::status_counts(c, pipeline_id)? {
        match g.status {
            DocStatus::Complete => n.complete += g.count,
            DocStatus::Partial => n.partial += g.count,
            DocStatus::Error => n.error += g.count,
            _ => {}
        }
    }
    Ok(n)
}

fn run_data(run: &PipelineRow, n: &Counts) -> Value {
    json!({
        "pipeline_id": run.id,
        "name": run.name,
        "kind": run.kind,
        "schema_id": run.schema_id,
        "generation": run.generation,
        "document_count": run.document_count,
        "documents": { "complete": n.complete, "partial": n.partial, "error": n.error },
        "links": { "self": format!("/v1/pipelines/{}", run.id) },
    })
}

/// A run was cancelled (its documents already ended).
pub fn cancelled(c: &Connection, org: &str, pipeline_id: &str) -> Result<(), StoreError> {
    emit(c, org, "pipeline.cancelled", |c| {
        let run = load_run(c, pipeline_id)?;
        Ok(run_data(&run, &doc_counts(c, pipeline_id)?))
    })
}

pub fn rerun_enqueued(
    c: &Connection,
    org: &str,
    pipeline_id: &str,
    rerun_id: &str,
    from_phase: &str,
    enqueued: i64,
) -> Result<(), StoreError> {
    emit(c, org, "rerun.enqueued", |_| {
        Ok(json!({
            "rerun_id": rerun_id,
            "pipeline_id": pipeline_id,
            "from_phase": from_phase,
            "enqueued": enqueued,
        }))
    })
}

pub fn data_product_ready(c: &Connection, org: &str, dp: &DataProduct) -> Result<(), StoreError> {
    emit(c, org, "data_product.ready", |c| {
        Ok(json!({
            "data_product_id": dp.id,
            "name": dp.name,
            "pipeline_id": dp.pipeline_id,
            "rows": store::pipelines::finished_count(c, &dp.pipeline_id)?,
            "links": { "self": format!("/v1/data-products/{}", dp.id) },
        }))
    })
}

/// What a decision event tells: the decision, its field (and the element of a table it
/// changed, when it changed one), the action and who took it.
pub struct DecisionEvent<'a> {
    pub pd_seq: i64,
    pub decision_id: &'a str,
    pub field_key: &'a str,
    pub element: Option<&'a str>,
    pub action: &'a str,
    pub decided_by_name: &'a str,
}

/// A decision entered the log.
pub fn decision_made(c: &Connection, org: &str, d: DecisionEvent) -> Result<(), StoreError> {
    emit(c, org, "review.decision_made", |c| {
        let pd = store::review::pd_by_seq(c, d.pd_seq)?.ok_or_else(|| {
            StoreError::Refused(format!("pipeline document {} vanished", d.pd_seq))
        })?;
        let mut data = json!({
            "decision_id": d.decision_id,
            "pipeline_id": pd.pipeline_id,
            "pipeline_document_id": pd.id,
            "document_id": pd.document_id,
            "field_key": d.field_key,
            "action": d.action,
            "decided_by_name": d.decided_by_name,
        });
        if let Some(e) = d.element {
            data["element"] = json!(e);
        }
        Ok(data)
    })
}

/// Keeps the review queue's index in step (`store::queue::sync_held`) and tells of every field
/// that has just become held.
pub fn sync_held(
    c: &Connection,
    pd_seq: i64,
    pipeline_id: &str,
    org: &str,
    before: &States,
    after: &States,
) -> Result<(), StoreError> {
    store::queue::sync_held(c, pd_seq, pipeline_id, org, before, after)?;
    let fresh = FieldState::default();
    let new: Vec<(&String, &FieldState)> = after
        .iter()
        .filter(|(f, a)| {
            a.status.awaits_review() && !before.get(*f).unwrap_or(&fresh).status.awaits_review()
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let hooks = store::webhooks::subscribers(c, org, "review.item_created")?;
    if hooks.is_empty() {
        return Ok(());
    }
    let pd = store::review::pd_by_seq(c, pd_seq)?
        .ok_or_else(|| StoreError::Refused(format!("pipeline document {pd_seq} vanished")))?;
    for (field, s) in new {
        let data = json!({
            "pipeline_id": pipeline_id,
            "pipeline_document_id": pd.id,
            "document_id": pd.document_id,
            "field_key": field,
            "status": s.status.as_str(),
            "trigger": s.trigger.as_deref().unwrap_or("gate"),
            "routing": s.routing.as_deref().unwrap_or("review_queue"),
            "reason": s.reason,
            "requested_at": s.requested_at,
            "links": { "self": format!("/v1/field-reviews/{}/{}", pd.id, field) },
        });
        store::webhooks::enqueue(c, org, "review.item_created", &hooks, &data)?;
    }
    Ok(())
}

/// A document of a run ended in error (its phase failed, it was given up on or quarantined).
pub fn document_failed(c: &Connection, pd_seq: i64) -> Result<(), StoreError> {
    let Some(f) = store::pipelines::failed_document(c, pd_seq)? else {
        return Ok(());
    };
    emit(c, &f.org_id, "document.failed", |_| {
        Ok(json!({
            "stage": "pipeline",
            "document_id": f.document_id,
            "filename": f.filename,
            "pipeline_id": f.pipeline_id,
            "pipeline_document_id": f.id,
            "phase_index": f.error_phase_index,
            "error": f.error,
        }))
    })
}

/// Stores an upload (`store::documents::insert_or_find`); a new document this server could not
/// read is a `document.failed` at intake.
pub fn add_document(
    c: &Connection,
    org: &str,
    new: NewDocument,
) -> Result<(DocumentRow, bool), StoreError> {
    let (doc, dup) = store::documents::insert_or_find(c, org, new)?;
    if !dup && doc.status == "error" {
        emit(c, org, "document.failed", |_| {
            Ok(json!({
                "stage": "intake",
                "document_id": doc.id,
                "filename": doc.filename,
                "error": doc.error,
            }))
        })?;
    }
    Ok((doc, dup))
}
