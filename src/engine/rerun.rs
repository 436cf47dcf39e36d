//! Rerun a finished run from a chosen phase (DESIGN.md §7), in one immediate transaction.

use super::events::sync_held;
use super::spec::{gate_snapshot, load_run_spec, policy_snapshot};
use super::EngineError;
use crate::answers::{RerunAnswer, RerunPlan, RerunRecord};
use crate::domain::gate;
use crate::domain::rail::PhaseType;
use crate::domain::state::{apply_waiting, with_fields, FieldState, States, Status};
use crate::domain::status::DocStatus;
use crate::store;
use crate::store::pipelines::{PhaseRow, PipelineRow};
use crate::store::reruns::NewRerun;
use crate::store::Connection;
use serde_json::Value;
use std::collections::HashSet;

pub struct RerunRequest {
    pub from_phase: PhaseType,
    /// Pipeline document ids; `None` reruns every document.
    pub document_ids: Option<Vec<String>>,
    pub dry_run: bool,
    /// Its runs ask a model extractor again instead of reading kept answers.
    pub refresh_extraction: bool,
    pub requested_by: String,
}

/// A field's state at its document's restart: progressing from the restart, keeping what a
/// rerun never touches (pin, guards), unless a gate before the restart holds it.
fn reset_state(st: &FieldState, restart: usize) -> FieldState {
    if held_before(st, restart) {
        return st.clone();
    }
    FieldState {
        pinned: st.pinned,
        pin: st.pin.clone(),
        element_pins: st.element_pins.clone(),
        guards: st.guards.clone(),
        reopened_after: st.reopened_after,
        resumed: st.resumed.clone(),
        review_at: st.review_at,
        // Flags from gates before the restart still describe live verdicts.
        flags: st
            .flags
            .iter()
            .filter(|f| f.phase < restart)
            .cloned()
            .collect(),
        ..FieldState::default()
    }
}

/// Held by a gate that lies before the restart, which is not re-executed: blocked there, or
/// reopened after a decision at that gate (§6: a reopened field is back in review at its gate).
fn held_before(st: &FieldState, restart: usize) -> bool {
    let at_gate = match st.status {
        Status::Blocked => true,
        Status::PendingReview => st.trigger.as_deref() == Some("gate"),
        _ => false,
    };
    at_gate && st.blocked_at.is_some_and(|b| b < restart)
}

fn fresh_snapshots(
    c: &Connection,
    org: &str,
    p: &PipelineRow,
    phases: &[PhaseRow],
    from: usize,
) -> Result<Vec<(usize, Value)>, EngineError> {
    let names: Vec<String> = p.fields.iter().map(|f| f.field_name.clone()).collect();
    let mut out = Vec::new();
    for ph in phases.iter().filter(|ph| ph.index >= from) {
        let at = format!("phase {} ({} '{}')", ph.index, ph.phase_id, ph.name);
        let id = ph.ref_id.clone().unwrap_or_default();
        match ph.kind {
            PhaseType::Resolution => {
                // A policy deleted since keeps its old snapshot.
                let Some(pol) = store::policies::get(c, org, &id)? else {
                    continue;
                };
                if !pol.active() {
                    return Err(EngineError::Invalid(format!(
                        "{at}: policy '{}' is no longer active",
                        pol.name
                    )));
                }
                let snap = super::spec::check_policy_paths(&pol, &p.fields)
                    .and_then(|_| policy_snapshot(&pol))
                    .map_err(|e| EngineError::Invalid(format!("{at}: {e}")))?;
                if let Some(f) = super::spec::fields_used(&pol)
                    .iter()
                    .find(|f| !names.contains(f))
                {
                    return Err(EngineError::Invalid(format!("{at}: policy '{}' uses field '{f}', which is not a field of the run's schema", pol.name)));
                }
                out.push((ph.index, snap));
            }
            PhaseType::Validation => {
                let Some(g) = store::gates::get(c, &p.schema_id, &id)? else {
                    continue;
                };
                gate::compile(&g.severity, &g.field_scope, &g.mechanisms, &names)
                    .and_then(|compiled| super::spec::check_gate_paths(&compiled, &p.fields))
                    .map_err(|e| EngineError::Invalid(format!("{at}: {e}")))?;
                out.push((ph.index, gate_snapshot(&g)));
            }
            PhaseType::Transfer | PhaseType::Extraction => {}
        }
    }
    Ok(out)
}

pub fn rerun(
    c: &Connection,
    org: &str,
    pipeline_id: &str,
    req: RerunRequest,
) -> Result<RerunAnswer, EngineError> {
    let p = store::pipelines::get(c, org, pipeline_id)?
        .ok_or_else(|| EngineError::NotFound("Pipeline not found".into()))?;
    let active = store::pipelines::active_count(c, pipeline_id)?;
    if active > 0 {
        return Err(EngineError::Invalid(format!("{active} document(s) of this pipeline are queued or processing; wait until every document is terminal")));
    }
    let phases = store::pipelines::phases(c, pipeline_id)?;
    let from = phases
        .iter()
        .find(|ph| ph.kind == req.from_phase)
        .map(|ph| ph.index)
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "This pipeline has no {} phase",
                req.from_phase.as_str()
            ))
        })?;
    if !store::reruns::has_record_set(c, pipeline_id)? {
        return Err(EngineError::Invalid("This pipeline has no record set: no document ever completed, so there is nothing to rerun".into()));
    }
    let ids_json: Option<String> = match &req.document_ids {
        None => None,
        Some(ids) => {
            if ids.is_empty() {
                return Err(EngineError::Invalid(
                    "document_ids must not be empty".into(),
                ));
            }
            let mut seen = HashSet::new();
            if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
                return Err(EngineError::Invalid(format!(
                    "document_ids: {dup} appears twice"
                )));
            }
            let json = serde_json::to_string(ids).unwrap_or_default();
            if store::reruns::target_count(c, pipeline_id, Some(&json))? != ids.len() as i64 {
                return Err(EngineError::Invalid(
                    "document_ids: every id must be a pipeline document of this run".into(),
                ));
            }
            Some(json)
        }
    };
    let ids = ids_json.as_deref();
    let targets = match ids {
        Some(_) => store::reruns::target_count(c, pipeline_id, ids)? as usize,
        // A run's documents are fixed at its creation.
        None => p.document_count as usize,
    };
    let snaps = fresh_snapshots(c, org, &p, &phases, from)?;
    let restart_of = |d: &store::reruns::DocState| -> usize {
        match (d.status, d.error_phase_index) {
            (DocStatus::Error, Some(e)) => from.min(e.max(0) as usize),
            (DocStatus::Error, None) => 0,
            _ => from,
        }
    };
    let order: Vec<String> = p.fields.iter().map(|f| f.field_name.clone()).collect();
    // Documents whose states keep something (a block before the restart, a pin, a guard) are
    // reset one by one; all others reset in one statement.
    const CHUNK: i64 = 1000;
    if req.dry_run {
        let earliest = store::reruns::earliest_restart(c, pipeline_id, ids, from)?
            .map(|e| e.max(0) as usize)
            .unwrap_or(from);
        let mut kept = 0usize;
        let mut after = 0i64;
        loop {
            let chunk = store::reruns::keeping_docs(c, pipeline_id, ids, after, CHUNK)?;
            for d in &chunk {
                let restart = restart_of(d);
                kept += with_fields(d.field_states.clone(), &order)
                    .values()
                    .filter(|s| held_before(s, restart))
                    .count();
            }
            match chunk.last() {
                Some(d) => after = d.seq,
                None => break,
            }
        }
        return Ok(RerunAnswer {
            enqueued: targets,
            from_phase_index: from,
            dry_run: Some(true),
            plan: Some(RerunPlan {
                phases: phases
                    .iter()
                    .filter(|ph| ph.index >= earliest)
                    .map(|ph| ph.phase_id.clone())
                    .collect(),
                documents: targets,
                kept_blocked_fields: kept,
                preserved_decisions: store::reruns::target_decisions(c, pipeline_id, ids)?,
            }),
        });
    }
    let generation = p.generation + 1;
    for (idx, snap) in &snaps {
        let (version, _) = store::reruns::latest_snapshot(c, pipeline_id, *idx)?;
        store::reruns::add_snapshot(c, pipeline_id, *idx, version + 1, generation, snap)?;
    }
    store::reruns::start_generation(c, pipeline_id, generation)?;
    // Dependencies come from the fresh snapshots.
    let spec = load_run_spec(c, pipeline_id, generation)?;
    let reset = |d: &store::reruns::DocState| -> Result<(), EngineError> {
        let restart = restart_of(d);
        let before: States = with_fields(d.field_states.clone(), &order);
        let mut after: States = before
            .iter()
            .map(|(f, s)| (f.clone(), reset_state(s, restart)))
            .collect();
        apply_waiting(&mut after, &spec.order, &spec.deps);
        let mut restarts = d.restarts.clone();
        restarts.push((generation, restart));
        store::reruns::restart_document(
            c,
            d.seq,
            generation,
            restart,
            &crate::store::states::encode(&after),
            &serde_json::to_string(&restarts).unwrap_or_default(),
        )?;
        sync_held(c, d.seq, pipeline_id, org, &before, &after)?;
        Ok(())
    };
    match ids {
        // The whole run: only the documents whose reset keeps something are written now; the
        // writer resets the rest as it reaches them, and every reader sees them reset meanwhile
        // (the view `pipeline_documents`). The call costs O(those documents), not O(the run).
        None => {
            let eager = store::reruns::eager_docs(c, pipeline_id, from)?;
            for seqs in eager.chunks(CHUNK as usize) {
                for d in &store::reruns::docs_by_seq(c, seqs)? {
                    reset(d)?;
                }
            }
            store::reruns::start_lazy(c, pipeline_id, generation, from)?;
        }
        // A subset: O(the ids named), reset in the call.
        Some(_) => {
            let mut after_seq = 0i64;
            loop {
                let chunk = store::reruns::keeping_docs(c, pipeline_id, ids, after_seq, CHUNK)?;
                for d in &chunk {
                    reset(d)?;
                }
                match chunk.last() {
                    Some(d) => after_seq = d.seq,
                    None => break,
                }
            }
            store::reruns::restart_rest(c, pipeline_id, ids, from, generation)?;
        }
    }
    let doc_ids: Option<Vec<String>> = req.document_ids.clone();
    let rerun_id = store::reruns::insert(
        c,
        NewRerun {
            pipeline_id,
            generation,
            from_phase: req.from_phase.as_str(),
            from_phase_index: from,
            enqueued: targets,
            document_ids: doc_ids.as_deref(),
            requested_by: &req.requested_by,
            refresh_extraction: req.refresh_extraction,
        },
    )?;
    super::events::rerun_enqueued(
        c,
        org,
        pipeline_id,
        &rerun_id,
        req.from_phase.as_str(),
        targets as i64,
    )?;
    Ok(RerunAnswer {
        enqueued: targets,
        from_phase_index: from,
        dry_run: None,
        plan: None,
    })
}

/// A rerun as its run's history shows it.
pub fn record(r: &store::reruns::RerunRow) -> RerunRecord {
    RerunRecord {
        id: r.id.clone(),
        generation: r.generation,
        from_phase: r.from_phase.clone(),
        from_phase_index: r.from_phase_index,
        enqueued: r.enqueued,
        document_ids: r.document_ids.clone(),
        requested_at: r.requested_at.clone(),
        requested_by: r.requested_by.clone(),
        finished_at: r.finished_at.clone(),
        outcome: r.outcome.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(status: Status, trigger: &str, at: Option<usize>) -> FieldState {
        FieldState {
            status,
            trigger: Some(trigger.into()),
            blocked_at: at,
            pinned: true,
            pin: serde_json::json!(40),
            resumed: vec![(9, 2)],
            ..FieldState::default()
        }
    }

    #[test]
    fn holds_at_gates_before_the_restart_stand_reopened_ones_included() {
        for st in [
            held(Status::Blocked, "gate", Some(1)),
            held(Status::PendingReview, "gate", Some(1)),
        ] {
            assert_eq!(reset_state(&st, 2), st, "{:?} is kept whole", st.status);
        }
    }

    #[test]
    fn everything_else_restarts_keeping_pins_guards_and_superseded_passes() {
        for st in [
            held(Status::Blocked, "gate", Some(2)),
            held(Status::PendingReview, "gate", Some(3)),
            held(Status::PendingReview, "declarative", None),
            held(Status::Completed, "gate", None),
        ] {
            let r = reset_state(&st, 2);
            assert_eq!((r.status, r.next), (Status::Progressing, 0));
            assert_eq!((r.pinned, r.pin.clone()), (true, serde_json::json!(40)));
            assert_eq!(r.resumed, vec![(9, 2)], "earlier passes stay superseded");
            assert_eq!(r.blocked_at, None);
        }
    }
}
