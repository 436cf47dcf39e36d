//! Human review (DESIGN.md §6): resolve, reopen, and the replay of gates over stored verdicts.

use super::events::sync_held;
use super::runner::{value_hash, Cell, RunSpec};
use super::spec::load_run_spec;
use super::views::DocView;
use super::EngineError;
use crate::answers::ResolveAnswer;
use crate::domain::path;
use crate::domain::rail::PhaseType;
use crate::domain::schema::{self, FieldDef};
use crate::domain::state::{
    apply_waiting, document_status, released_waiters, with_fields, FieldState, States, Status,
};
use crate::domain::status::DocStatus;
use crate::store;
use crate::store::review::{NewDecision, PdRef};
use crate::store::Connection;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Approve,
    Correct,
    Override,
    Reopen,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "approve" => Action::Approve,
            "correct" => Action::Correct,
            "override" => Action::Override,
            "reopen" => Action::Reopen,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Correct => "correct",
            Action::Override => "override",
            Action::Reopen => "reopen",
        }
    }
}

pub struct ResolveRequest {
    pub action: Action,
    pub corrected_value: Option<Value>,
    pub reason: Option<String>,
    pub key_id: String,
    pub reviewer: String,
}

/// Checks a corrected value against the field's data type.
pub fn check_type(f: &FieldDef, v: &Value) -> Result<(), String> {
    if !schema::fits(&f.data_type, v) {
        return Err(format!(
            "corrected_value for '{}' must be {}",
            f.field_name,
            schema::wanted(&f.data_type)
        ));
    }
    match &f.items {
        Some(items) => schema::check_elements(items, v)
            .map_err(|e| format!("corrected_value for '{}': {e}", f.field_name)),
        None => Ok(()),
    }
}

/// What a decision addresses: a field (`lines`), or one element of an array field
/// (`lines[3].amount`, `lines[3]`); the field's name and the element's path.
fn addressed_field(addressed: &str) -> Result<(&str, Option<path::Path>), EngineError> {
    let element = match path::is_path(addressed) {
        true => Some(path::parse(addressed).map_err(EngineError::Invalid)?),
        false => None,
    };
    Ok((path::base(addressed), element))
}

/// Pins a person's value: the whole field, or with `element` that element only (the rest of
/// the array is still computed); a field already pinned whole takes the new array whole.
fn pin(s: &mut FieldState, element: Option<&path::Path>, final_value: &Value) {
    match element {
        Some(p) if !s.pinned => {
            let at = p.to_string();
            let within = |pinned: &str| {
                pinned == at || (p.sub.is_none() && pinned.starts_with(&format!("{at}.")))
            };
            s.element_pins.retain(|(pinned, _)| !within(pinned));
            s.element_pins
                .push((at, p.values(final_value).pop().unwrap_or_default()));
        }
        _ => {
            s.pinned = true;
            s.pin = final_value.clone();
            s.element_pins.clear();
        }
    }
}

/// The field's value with one element (`lines[3]`) or one element's sub-field
/// (`lines[3].amount`) corrected to `v`, checked against the field's sub-fields.
fn element_corrected(
    f: &FieldDef,
    current: &Value,
    p: &path::Path,
    v: Value,
) -> Result<Value, String> {
    let name = &f.field_name;
    if f.data_type != "array" {
        return Err(format!(
            "'{name}' is not an array field: address it as '{name}'"
        ));
    }
    let Some(path::Index::At(n)) = p.index else {
        return Err(format!(
            "a correction names one element, as {name}[3] or {name}[3].amount"
        ));
    };
    let len = current.as_array().map_or(0, Vec::len);
    if n >= len {
        return Err(format!(
            "'{name}' has {len} elements (from 0): {p} is not one of them"
        ));
    }
    match (&p.sub, &f.items) {
        (Some(k), Some(items)) => {
            let s = items
                .iter()
                .find(|s| &s.field_name == k)
                .ok_or_else(|| format!("'{k}' is not a sub-field of '{name}'"))?;
            if !v.is_null() && !schema::fits(&s.data_type, &v) {
                return Err(format!(
                    "corrected_value for {p} must be {}",
                    schema::wanted(&s.data_type)
                ));
            }
        }
        (Some(_), None) => return Err(format!("'{name}' has no sub-fields: correct {name}[{n}]")),
        (None, Some(items)) => schema::check_elements(items, &Value::Array(vec![v.clone()]))
            .map_err(|e| {
                format!(
                    "corrected_value for {p}: {}",
                    e.replacen("element 0", "the element", 1)
                )
            })?,
        (None, None) => {}
    }
    let mut out = current.clone();
    path::set(&mut out, p, v);
    Ok(out)
}

/// One document loaded for review work.
pub struct Doc {
    pub pd: PdRef,
    pub spec: RunSpec,
    pub view: DocView,
}

impl Doc {
    pub fn load(c: &Connection, pd: PdRef) -> Result<Self, EngineError> {
        let spec = load_run_spec(c, &pd.pipeline_id, pd.generation)?;
        let cells = store::pipelines::cells(c, &[pd.seq])?
            .into_iter()
            .map(|r| (r.seq, r.cell, r.created_at))
            .collect();
        let view = DocView {
            cells,
            restarts: pd.restarts.clone(),
            states: with_fields(pd.field_states.clone(), &spec.order),
        };
        Ok(Doc { pd, spec, view })
    }

    fn field(&self, name: &str) -> Option<&FieldDef> {
        self.spec.field(name)
    }

    fn next_version(&self, field: &str) -> i64 {
        self.view
            .cells
            .iter()
            .filter(|(_, c, _)| c.field == field)
            .map(|(_, c, _)| c.version)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// `field`'s value as phase `p` read it: its newest live version written before `p`, with
    /// the elements a person corrected put back over it.
    fn input_at(&self, field: &str, p: usize) -> Value {
        let mut earlier: Vec<&(i64, Cell, String)> = self
            .view
            .cells
            .iter()
            .filter(|(_, c, _)| c.field == field && c.phase_index < p && self.view.is_live(c))
            .collect();
        earlier.sort_by_key(|(seq, c, _)| std::cmp::Reverse((c.phase_index, *seq)));
        let newest_first = earlier.iter().map(|(_, c, _)| c);
        let pins = self
            .view
            .states
            .get(field)
            .map_or(&[][..], |s| s.element_pins.as_slice());
        crate::domain::cells::current(newest_first, pins).0
    }

    /// Stores a person's value of `field` as its next version, at confidence 1.0, placed at
    /// phase `phase_index` (the gate that held it, or after the last phase).
    fn write_human_version(
        &self,
        c: &Connection,
        field: &str,
        value: Value,
        phase_index: usize,
        note: Option<String>,
    ) -> Result<(), EngineError> {
        let cell = Cell {
            seq: 0,
            field: field.to_string(),
            version: self.next_version(field),
            value,
            source: "human_review".into(),
            phase_index,
            generation: self.pd.generation,
            pass: self.pd.pass,
            confidence: Some(1.0),
            source_text: None,
            config_version: None,
            rule_type: None,
            note,
            provenance: None,
            rows: None,
        };
        store::review::insert_human_cell(c, self.pd.seq, &cell)?;
        Ok(())
    }

    /// The newest stored cell: a field resuming now supersedes its versions up to here.
    fn cut(&self) -> i64 {
        self.view
            .cells
            .iter()
            .map(|(seq, _, _)| *seq)
            .max()
            .unwrap_or(0)
    }

    /// `(generation, pass)` of the next run of this document: a queued one runs in its pass,
    /// a claimed or terminal one continues in the next.
    fn next_run(&self) -> (i64, i64) {
        let pass = if self.pd.status == DocStatus::Queued {
            self.pd.pass
        } else {
            self.pd.pass + 1
        };
        (self.pd.generation, pass)
    }

    fn phase_id(&self, idx: usize) -> Option<String> {
        self.spec
            .phases
            .iter()
            .find(|p| p.index == idx)
            .map(|p| p.phase_id.clone())
    }
}

/// The first resolution phase with a rule for `field`.
fn first_rule_phase(spec: &RunSpec, field: &str) -> Option<usize> {
    spec.phases.iter().find_map(|p| match &p.config {
        super::runner::PhaseConfig::Resolution { rules }
            if rules
                .iter()
                .any(|(def, _)| path::base(&def.field_key) == field) =>
        {
            Some(p.index)
        }
        _ => None,
    })
}

/// The first resolution phase that computes `d` from `f` (directly or through fields that depend on `f`).
fn first_compute(spec: &RunSpec, states: &States, d: &str, f: &str) -> Option<usize> {
    for p in &spec.phases {
        if let super::runner::PhaseConfig::Resolution { rules } = &p.config {
            for (def, rule) in rules {
                if path::base(&def.field_key) != d {
                    continue;
                }
                if rule
                    .inputs()
                    .iter()
                    .any(|i| i == f || spec.deps.closure(i, states).contains(f))
                {
                    return Some(p.index);
                }
            }
        }
    }
    None
}

/// Resumes the fields that were waiting only on `f`: at the first phase that computes them
/// from `f` when that is earlier than `resume_at` (the gate), else at `resume_at`; with no
/// gate (a declarative hold) they complete when nothing computes them from `f`.
pub(crate) fn release_waiters(
    spec: &RunSpec,
    states: &mut States,
    f: &str,
    resume_at: Option<usize>,
    cut: i64,
    now: &str,
) {
    for d in released_waiters(states, &spec.order, &spec.deps) {
        let computed = first_compute(spec, states, &d, f);
        let st = states.get_mut(&d).expect("listed");
        st.blocked_by = None;
        match (computed, resume_at) {
            (Some(p), Some(g)) => st.resume(p.min(g), cut),
            (None, Some(g)) | (Some(g), None) => st.resume(g, cut),
            (None, None) => st.complete(Some(now)),
        }
    }
    apply_waiting(states, &spec.order, &spec.deps);
}

/// When a human changes `f`'s value, a field held on a value computed from the old one is held
/// on something nobody would compute now: a field blocked at a gate after the phase that
/// computes it from `f`, or a declarative hold, goes back to that phase to be computed from the
/// new value and judged again (it can be held again, as a new review item). A field held before
/// that phase, or reopened by a person, keeps its hold.
/// `changed(p)` tells whether `f`'s new value differs from what phase `p` read of it: a decision
/// that keeps the value shown can still change what an earlier phase computed from (an
/// override pins a value a later phase made).
fn release_held_dependents(
    spec: &RunSpec,
    states: &mut States,
    f: &str,
    cut: i64,
    changed: impl Fn(usize) -> bool,
) {
    let held: Vec<String> = spec
        .order
        .iter()
        .filter(|d| d.as_str() != f)
        .filter(|d| {
            states.get(d.as_str()).is_some_and(|s| {
                !s.pinned && s.reason.as_deref() != Some("reopened") && s.status.awaits_review()
            })
        })
        .cloned()
        .collect();
    for d in held {
        let Some(p) = first_compute(spec, states, &d, f).filter(|p| changed(*p)) else {
            continue;
        };
        let st = states.get_mut(&d).expect("listed");
        let recomputable = match st.status {
            Status::Blocked => st.blocked_at.is_some_and(|g| p < g),
            _ => st.trigger.as_deref() == Some("declarative"),
        };
        if recomputable {
            clear_hold(st);
            st.resume(p, cut);
        }
    }
}

fn clear_hold(st: &mut FieldState) {
    st.blocked_at = None;
    st.stage_id = None;
    st.blocked_by = None;
    st.trigger = None;
    st.routing = None;
    st.reason = None;
    st.requested_at = None;
}

/// Persists a document's new states: a terminal document with work to do goes back to the
/// queue in a new pass; otherwise its terminal status follows its fields. Returns true when
/// the executor has work.
fn persist(
    c: &Connection,
    doc: &Doc,
    before: &States,
    after: &States,
    org: &str,
) -> Result<bool, EngineError> {
    // A document an open rerun has not reset yet was read as reset: store the reset (which
    // drops its stale review rows) before writing the rows of what the review changed.
    store::reruns::materialize_doc(c, doc.pd.seq)?;
    sync_held(c, doc.pd.seq, &doc.pd.pipeline_id, org, before, after)?;
    let encoded = crate::store::states::encode(after);
    let pd = &doc.pd;
    match placement(pd.status, pd.cursor, after) {
        Placement::Keep { cursor } => {
            store::review::update_pd(c, pd.seq, pd.status, cursor, pd.pass, &encoded)?;
            Ok(false)
        }
        Placement::Queue { cursor } => {
            store::review::update_pd(c, pd.seq, DocStatus::Queued, cursor, pd.pass + 1, &encoded)?;
            store::review::reactivate_pipeline(c, &pd.pipeline_id)?;
            Ok(true)
        }
        Placement::Settle { status } => {
            store::review::update_pd(c, pd.seq, status, pd.cursor, pd.pass, &encoded)?;
            super::events::settle(c, &pd.pipeline_id)?;
            Ok(false)
        }
    }
}

/// Where a document goes after a review action changed its field states.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    /// Stays queued or processing, with this cursor.
    Keep { cursor: i64 },
    /// Back to the queue in a new pass, from this phase.
    Queue { cursor: i64 },
    /// Stays terminal, with this status.
    Settle { status: DocStatus },
}

fn placement(status: DocStatus, cursor: i64, after: &States) -> Placement {
    let next = after
        .values()
        .filter(|s| s.status == Status::Progressing)
        .map(|s| s.next as i64)
        .min();
    match (status, next) {
        // A claimed document is never touched: the writer merges the released fields into
        // its commit and continues from the earliest of them in a new pass.
        (DocStatus::Processing, _) => Placement::Keep { cursor },
        // Not claimed yet: it starts from the earliest phase where any field has work, so a
        // field released before its cursor is never carried past its own phases.
        (DocStatus::Queued, n) => Placement::Keep {
            cursor: n.map_or(cursor, |n| cursor.min(n)),
        },
        (_, Some(n)) => Placement::Queue { cursor: n },
        (_, None) => Placement::Settle {
            status: document_status(after).unwrap_or(DocStatus::Partial),
        },
    }
}

/// The answer of a resolve.
fn answer(doc: &Doc, states: &States, field: &str, action: Action, at: &str) -> ResolveAnswer {
    let st = states.get(field).cloned().unwrap_or_default();
    ResolveAnswer {
        field_key: field.to_string(),
        status: st.status.as_str().to_string(),
        current_phase_id: (st.status == Status::Progressing)
            .then(|| doc.phase_id(st.next))
            .flatten(),
        blocked_at_stage_id: (st.status == Status::Blocked)
            .then(|| st.stage_id.clone())
            .flatten(),
        blocked_by_field: st.blocked_by,
        review_trigger: st.trigger,
        review_routing: st.routing,
        review_requested_at: st.requested_at,
        resolve_action: action.as_str().to_string(),
        resolved_at: at.to_string(),
        delivered_at: (st.status == Status::Completed)
            .then(|| st.completed_at.clone())
            .flatten(),
    }
}

/// Where a decided field was held: its trigger and the gate that held it.
struct Held<'a> {
    trigger: &'a str,
    stage_id: Option<&'a str>,
    stage_name: Option<&'a str>,
    phase_index: Option<i64>,
}

/// Appends `req`'s decision on `field` to the decision log, dated by the document's next run.
#[allow(clippy::too_many_arguments)]
fn log_decision(
    c: &Connection,
    org: &str,
    doc: &Doc,
    field: &str,
    req: &ResolveRequest,
    held: Held,
    action: &str,
    prior_value: &Value,
    final_value: Option<&Value>,
    element: Option<&str>,
) -> Result<(), EngineError> {
    let entry = NewDecision {
        element,
        org_id: org,
        pipeline_id: &doc.pd.pipeline_id,
        pd_seq: doc.pd.seq,
        field_key: field,
        trigger_type: held.trigger,
        stage_id: held.stage_id,
        stage_name: held.stage_name,
        phase_index: held.phase_index,
        action,
        prior_value,
        final_value,
        reason: req.reason.as_deref(),
        decided_by: &req.key_id,
        decided_by_name: &req.reviewer,
        judged_from: doc.next_run(),
    };
    let (_, decision_id) = store::review::insert_decision(c, entry)?;
    let event = super::events::DecisionEvent {
        pd_seq: doc.pd.seq,
        decision_id: &decision_id,
        field_key: field,
        element,
        action,
        decided_by_name: &req.reviewer,
    };
    super::events::decision_made(c, org, event)?;
    Ok(())
}

/// Resolves one held field in one transaction. Returns the answer and whether the executor has work.
pub fn resolve(
    c: &Connection,
    org: &str,
    pd_id: &str,
    addressed: &str,
    req: &ResolveRequest,
) -> Result<(ResolveAnswer, bool), EngineError> {
    let (field, element) = addressed_field(addressed)?;
    if let Some(p) = element.as_ref().filter(|_| req.action != Action::Correct) {
        // An override or approval passes the gate for the whole field, and a reopen returns
        // the whole field to review: they name the field.
        return Err(EngineError::Invalid(format!(
            "{} applies to the whole field: address '{field}', not {p} (an element is corrected)",
            req.action.as_str()
        )));
    }
    let pd = store::review::find_pd(c, org, pd_id)?
        .ok_or_else(|| EngineError::NotFound("Pipeline document not found".into()))?;
    let doc = Doc::load(c, pd)?;
    let fdef = doc.field(field).cloned().ok_or_else(|| {
        EngineError::NotFound(format!("Field '{field}' is not a field of this run"))
    })?;
    if doc.pd.status == DocStatus::Error {
        return Err(EngineError::Invalid(
            "The document errored; its fields cannot be reviewed".into(),
        ));
    }
    let before = doc.view.states.clone();
    let mut states = before.clone();
    let st = states.get(field).cloned().unwrap_or_default();
    let (canonical, _) = doc.view.canonical(field);
    let now = crate::domain::ids::now_rfc3339();
    let cut = doc.cut();
    if req.action == Action::Reopen {
        if !doc.pd.status.delivered() {
            return Err(EngineError::Invalid(
                "Only a field of a terminal document can be reopened".into(),
            ));
        }
        let decisions = store::review::decisions_for(c, doc.pd.seq, field)?;
        let since: Vec<_> = decisions
            .iter()
            .rev()
            .take_while(|d| d.action != "reopen")
            .collect();
        let last = since.first().ok_or_else(|| {
            EngineError::Invalid(format!(
                "Field '{field}' has no decision since its last reopen"
            ))
        })?;
        let held = Held {
            trigger: &last.trigger_type,
            stage_id: last.stage_id.as_deref(),
            stage_name: last.stage_name.as_deref(),
            phase_index: last.phase_index,
        };
        log_decision(
            c, org, &doc, field, req, held, "reopen", &canonical, None, None,
        )?;
        let cut = store::review::max_cell_seq(c, doc.pd.seq)?;
        let s = states.get_mut(field).expect("field exists");
        s.pinned = false;
        s.pin = Value::Null;
        s.element_pins.clear();
        s.guards.clear();
        s.reopened_after = Some(cut);
        s.status = Status::PendingReview;
        s.trigger = Some(last.trigger_type.clone());
        s.routing = Some(if last.trigger_type == "gate" {
            "review_queue".into()
        } else {
            "declarative".into()
        });
        s.blocked_at = if last.trigger_type == "gate" {
            last.phase_index.map(|p| p as usize)
        } else {
            None
        };
        s.stage_id = last.stage_id.clone();
        s.reason = Some("reopened".into());
        s.requested_at = Some(now.clone());
        s.completed_at = None;
        // While pinned the field was not computed; its last computed value may rest on inputs
        // that changed since. A field a policy computes before its hold point is computed again
        // from today's inputs first, and goes back to review when it reaches that point.
        let hold_at = s.blocked_at.unwrap_or(doc.spec.phases.len());
        // A pin that outlived a rerun kept the field out of every phase the rerun re-executed,
        // so nothing of its own is live there any more: it is computed again from the start.
        // The decision's own run order says so; an override writes no version, so its cell
        // cannot (decisions recorded before migration 3 fall back to a correction's cell).
        let pinned_before_rerun = last
            .judged_from
            .is_some_and(|(generation, _)| generation < doc.pd.generation)
            || doc
                .view
                .cells
                .iter()
                .rev()
                .find(|(_, c, _)| c.field == field && c.source == "human_review")
                .is_some_and(|(_, c, _)| c.generation < doc.pd.generation);
        let computed = first_rule_phase(&doc.spec, field).filter(|p| *p < hold_at);
        let from = match (pinned_before_rerun, computed) {
            (true, _) => Some(0),
            (false, c) => c,
        };
        if let Some(p) = from {
            s.review_at = s.blocked_at;
            clear_hold(s);
            s.resume(p, cut);
        }
        apply_waiting(&mut states, &doc.spec.order, &doc.spec.deps);
        let wake = persist(c, &doc, &before, &states, org)?;
        return Ok((answer(&doc, &states, field, req.action, &now), wake));
    }
    if !st.status.awaits_review() {
        return Err(EngineError::Invalid(format!(
            "Field '{field}' is not held (it is {})",
            st.status.as_str()
        )));
    }
    let final_value = match (&element, req.action) {
        // Only a correction addresses an element (refused above for any other action).
        (Some(p), _) => {
            let v = req.corrected_value.clone().ok_or_else(|| {
                EngineError::Invalid(format!("a correction of {p} needs corrected_value"))
            })?;
            element_corrected(&fdef, &canonical, p, v).map_err(EngineError::Invalid)?
        }
        (None, Action::Approve) => {
            if req.corrected_value.is_some() {
                return Err(EngineError::Invalid(
                    "approve keeps the held value: corrected_value is not allowed".into(),
                ));
            }
            canonical.clone()
        }
        (None, Action::Correct) => {
            let v = req
                .corrected_value
                .clone()
                .ok_or_else(|| EngineError::Invalid("correct needs corrected_value".into()))?;
            check_type(&fdef, &v).map_err(EngineError::Invalid)?;
            v
        }
        (None, Action::Override) => match &req.corrected_value {
            Some(v) => {
                check_type(&fdef, v).map_err(EngineError::Invalid)?;
                v.clone()
            }
            None => canonical.clone(),
        },
        (None, Action::Reopen) => unreachable!("handled above"),
    };
    let trigger = st.trigger.clone().unwrap_or_else(|| "gate".into());
    let gate_phase = if trigger == "gate" {
        st.blocked_at
    } else {
        None
    };
    let human_phase = gate_phase.unwrap_or(doc.spec.phases.len());
    if matches!(req.action, Action::Correct | Action::Override)
        && !crate::domain::policy::same_value(&final_value, &canonical)
    {
        doc.write_human_version(
            c,
            field,
            final_value.clone(),
            human_phase,
            req.reason.clone(),
        )?;
    }
    // The gate's name as it reads now (its phase id if it was deleted since).
    let stage_display = match (gate_phase, &st.stage_id) {
        (Some(g), Some(sid)) => store::gates::name(c, sid)
            .ok()
            .flatten()
            .or_else(|| doc.phase_id(g)),
        _ => None,
    };
    let held = Held {
        trigger: &trigger,
        stage_id: st.stage_id.as_deref(),
        stage_name: stage_display.as_deref(),
        phase_index: gate_phase.map(|g| g as i64),
    };
    let action = req.action.as_str();
    log_decision(
        c,
        org,
        &doc,
        field,
        req,
        held,
        action,
        &canonical,
        Some(&final_value),
        element.as_ref().map(ToString::to_string).as_deref(),
    )?;
    {
        let s = states.get_mut(field).expect("field exists");
        if element.is_some() || matches!(req.action, Action::Correct | Action::Override) {
            pin(s, element.as_ref(), &final_value);
        }
        if let (Some(g), Action::Approve | Action::Override) = (gate_phase, req.action) {
            if !s.guards.contains(&g) {
                s.guards.push(g);
            }
        }
        if !crate::domain::policy::same_value(&final_value, &canonical) {
            // Warnings judged the value the human replaced; the gates judge the new one again.
            s.flags.clear();
        }
        clear_hold(s);
        match gate_phase {
            Some(g) => s.resume(g, cut),
            None => s.complete(Some(&now)),
        }
    }
    let changed =
        |p: usize| !crate::domain::policy::same_value(&final_value, &doc.input_at(field, p));
    release_held_dependents(&doc.spec, &mut states, field, cut, changed);
    release_waiters(&doc.spec, &mut states, field, gate_phase, cut, &now);
    let wake = persist(c, &doc, &before, &states, org)?;
    Ok((answer(&doc, &states, field, req.action, &now), wake))
}

/// A correction of a settled field outside the review queue (the quick tier's `PATCH
/// /v1/extractions/{id}/data`): a `human_review` version at confidence 1.0, the field pinned to
/// it so no rerun replaces it, and a decision row naming the caller. A field held for review is
/// resolved through the queue instead.
pub fn correct(
    c: &Connection,
    org: &str,
    pd_id: &str,
    addressed: &str,
    value: &Value,
    req: &ResolveRequest,
) -> Result<(), EngineError> {
    let (field, element) = addressed_field(addressed)?;
    let pd = store::review::find_pd(c, org, pd_id)?
        .ok_or_else(|| EngineError::NotFound("Pipeline document not found".into()))?;
    let doc = Doc::load(c, pd)?;
    let fdef = doc.field(field).cloned().ok_or_else(|| {
        EngineError::Invalid(format!("'{field}' is not a field of this extraction"))
    })?;
    if !doc.pd.status.delivered() {
        return Err(EngineError::Conflict(
            "The extraction has no settled values to correct (it is still processing or failed)"
                .into(),
        ));
    }
    let before = doc.view.states.clone();
    let mut states = before.clone();
    let st = states.get(field).cloned().unwrap_or_default();
    if st.status.is_held() {
        return Err(EngineError::Conflict(format!(
            "Field '{field}' is held for review: resolve it with POST /v1/field-reviews/{pd_id}/{field}/resolve"
        )));
    }
    let (canonical, _) = doc.view.canonical(field);
    let value = &match &element {
        Some(p) => {
            element_corrected(&fdef, &canonical, p, value.clone()).map_err(EngineError::Invalid)?
        }
        None => {
            check_type(&fdef, value).map_err(EngineError::Invalid)?;
            value.clone()
        }
    };
    let changed = !crate::domain::policy::same_value(value, &canonical);
    // Confirming the value as it stands is a correction too: a person's version, at 1.0.
    doc.write_human_version(
        c,
        field,
        value.clone(),
        doc.spec.phases.len(),
        req.reason.clone(),
    )?;
    let held = Held {
        trigger: "correction",
        stage_id: None,
        stage_name: None,
        phase_index: None,
    };
    log_decision(
        c,
        org,
        &doc,
        field,
        req,
        held,
        "correct",
        &canonical,
        Some(value),
        element.as_ref().map(ToString::to_string).as_deref(),
    )?;
    let s = states
        .get_mut(field)
        .ok_or_else(|| EngineError::Internal(format!("no state for field '{field}'")))?;
    pin(s, element.as_ref(), value);
    if changed {
        s.flags.clear();
    }
    persist(c, &doc, &before, &states, org)?;
    Ok(())
}

/// Whether a decision came after a verdict: by the document's run order, `(generation, pass)`,
/// which two events in one millisecond cannot confuse; by time only for decisions recorded
/// before that order was kept.
fn decided_after(d: &store::review::Decision, v: &store::review::VerdictKey) -> bool {
    match d.judged_from {
        Some(next) => next > (v.generation, v.pass),
        None => d.decided_at >= v.created_at,
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayCounts {
    pub replayed: usize,
    pub newly_blocked: usize,
    pub released: usize,
}

struct GateNow {
    phase: usize,
    stage_id: String,
    blocking: bool,
    routing: String,
}

/// Replays the run's gates (or one gate) over stored verdicts. The run must not be active.
pub fn replay(
    c: &Connection,
    org: &str,
    pipeline_id: &str,
    only_stage: Option<&str>,
) -> Result<(ReplayCounts, bool), EngineError> {
    let p = store::pipelines::get(c, org, pipeline_id)?
        .ok_or_else(|| EngineError::NotFound("Pipeline not found".into()))?;
    let mut counts = ReplayCounts::default();
    let mut wake = false;
    let pds = store::review::pds_of_pipeline(c, pipeline_id)?;
    let seqs: Vec<i64> = pds.iter().map(|d| d.seq).collect();
    let decisions = store::review::decisions_of_docs(c, &seqs)?;
    let mut gates_by_gen: HashMap<i64, Vec<GateNow>> = HashMap::new();
    for pd in pds {
        if pd.status == DocStatus::Error {
            continue;
        }
        let doc = Doc::load(c, pd)?;
        if let std::collections::hash_map::Entry::Vacant(slot) =
            gates_by_gen.entry(doc.pd.generation)
        {
            let mut gates = Vec::new();
            for ph in doc
                .spec
                .phases
                .iter()
                .filter(|ph| ph.kind == PhaseType::Validation)
            {
                let super::runner::PhaseConfig::Validation {
                    stage_id,
                    gate,
                    routing,
                } = &ph.config
                else {
                    continue;
                };
                if only_stage.is_some_and(|s| s != stage_id) {
                    continue;
                }
                // The gate's current severity and routing apply; a deleted gate keeps its snapshot.
                let (blocking, routing) = match store::gates::get(c, &p.schema_id, stage_id)? {
                    Some(g) => (g.severity == "blocking", g.on_block()),
                    None => (
                        gate.severity == crate::domain::gate::Severity::Blocking,
                        routing.clone(),
                    ),
                };
                gates.push(GateNow {
                    phase: ph.index,
                    stage_id: stage_id.clone(),
                    blocking,
                    routing,
                });
            }
            slot.insert(gates);
        }
        let gates = &gates_by_gen[&doc.pd.generation];
        let verdicts = store::review::verdict_keys(c, doc.pd.seq)?;
        let before = doc.view.states.clone();
        let mut states = before.clone();
        let now = crate::domain::ids::now_rfc3339();
        let live = |gen: i64, phase: usize| {
            !doc.view
                .restarts
                .iter()
                .any(|(g, s)| *g > gen && phase >= *s)
        };
        for f in &doc.spec.order {
            let st = states.get(f).cloned().unwrap_or_default();
            if st.status == Status::Blocked {
                if let Some(g) = gates
                    .iter()
                    .find(|g| Some(g.phase) == st.blocked_at && !g.blocking)
                {
                    let s = states.get_mut(f).expect("field exists");
                    clear_hold(s);
                    s.resume(g.phase + 1, doc.cut());
                    release_waiters(
                        &doc.spec,
                        &mut states,
                        f,
                        Some(g.phase + 1),
                        doc.cut(),
                        &now,
                    );
                    counts.released += 1;
                }
                continue;
            }
            if st.status.is_held() {
                continue;
            }
            counts.replayed += 1;
            let hash = value_hash(&doc.view.canonical(f).0);
            for g in gates {
                let counted = verdicts.iter().rev().find(|v| {
                    &v.field == f
                        && v.phase_index == g.phase
                        && live(v.generation, v.phase_index)
                        && v.value_hash == hash
                });
                let Some(v) = counted else { continue };
                if v.outcome != "fail" || !g.blocking {
                    continue;
                }
                let guarded = st.guards.contains(&g.phase);
                let decided_after = decisions.iter().any(|d| {
                    d.pd_id == doc.pd.id
                        && &d.field_key == f
                        && d.phase_index == Some(g.phase as i64)
                        && decided_after(d, v)
                });
                if guarded || decided_after {
                    continue;
                }
                states.get_mut(f).expect("field exists").block(
                    g.phase,
                    &g.stage_id,
                    &g.routing,
                    Some("failed_check"),
                    &now,
                );
                counts.newly_blocked += 1;
                break;
            }
        }
        apply_waiting(&mut states, &doc.spec.order, &doc.spec.deps);
        if states != before {
            wake |= persist(c, &doc, &before, &states, org)?;
        }
    }
    Ok((counts, wake))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::state::states_at as states;

    #[test]
    fn a_queued_document_moves_back_to_the_earliest_phase_with_work() {
        let s = states(&[
            ("net", Status::Progressing, 2),
            ("tax", Status::Progressing, 4),
        ]);
        assert_eq!(
            placement(DocStatus::Queued, 4, &s),
            Placement::Keep { cursor: 2 }
        );
        assert_eq!(
            placement(DocStatus::Queued, 1, &s),
            Placement::Keep { cursor: 1 }
        );
        assert_eq!(
            placement(DocStatus::Processing, 4, &s),
            Placement::Keep { cursor: 4 }
        );
        assert_eq!(
            placement(DocStatus::Partial, 5, &s),
            Placement::Queue { cursor: 2 }
        );
    }

    #[test]
    fn a_terminal_document_without_work_settles_by_its_fields() {
        let done = states(&[("net", Status::Completed, 0)]);
        assert_eq!(
            placement(DocStatus::Partial, 5, &done),
            Placement::Settle {
                status: DocStatus::Complete
            }
        );
        let held = states(&[
            ("net", Status::Completed, 0),
            ("tax", Status::PendingReview, 0),
        ]);
        assert_eq!(
            placement(DocStatus::Complete, 5, &held),
            Placement::Settle {
                status: DocStatus::Partial
            }
        );
    }

    fn decision(judged_from: Option<(i64, i64)>, at: &str) -> store::review::Decision {
        store::review::Decision {
            seq: 1,
            id: "d".into(),
            pipeline_id: "p".into(),
            pd_id: "pd".into(),
            document_id: "doc".into(),
            document_name: "a.txt".into(),
            field_key: "net".into(),
            trigger_type: "gate".into(),
            stage_id: None,
            stage_name: None,
            phase_index: Some(3),
            action: "correct".into(),
            prior_value: None,
            final_value: None,
            reason: None,
            decided_by: "k".into(),
            decided_by_name: "Ada".into(),
            decided_at: at.into(),
            judged_from,
            element: None,
        }
    }

    fn verdict(generation: i64, pass: i64, at: &str) -> store::review::VerdictKey {
        store::review::VerdictKey {
            field: "net".into(),
            phase_index: 3,
            generation,
            pass,
            outcome: "fail".into(),
            value_hash: "h".into(),
            created_at: at.into(),
        }
    }

    #[test]
    fn replay_orders_decisions_and_verdicts_by_run_not_by_millisecond() {
        let t = "2026-01-01T00:00:00.000Z";
        // Decided in pass 1 of a terminal document (next run: pass 2); judged in the same
        // millisecond by that next pass: the verdict is the newer of the two.
        assert!(!decided_after(
            &decision(Some((1, 2)), t),
            &verdict(1, 2, t)
        ));
        assert!(decided_after(&decision(Some((1, 2)), t), &verdict(1, 1, t)));
        assert!(!decided_after(
            &decision(Some((1, 5)), t),
            &verdict(2, 1, t)
        ));
        // Rows from before the order was kept fall back to time.
        assert!(decided_after(&decision(None, t), &verdict(1, 9, t)));
    }
}
