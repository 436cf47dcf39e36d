//! From stored configuration to runnable phases: rails compiled against the organization's
//! policies and the schema's gates, frozen into snapshots, and snapshots back into a `RunSpec`.

use super::runner::{PhaseConfig, RunPhase};
use super::EngineError;
use crate::domain::gate;
use crate::domain::policy::{self, RuleDef};
use crate::domain::rail::{self, GateInfo, Phase, PhaseType, PolicyInfo, Stage};
use crate::domain::schema::FieldDef;
use crate::store;
use crate::store::gates::GateRow;
use crate::store::policies::PolicyRow;
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use crate::store::StoreError;
use serde_json::{json, Value};

/// The fields a policy reads or writes: its declared fields, its rules' inputs and targets (a
/// rule on `lines[].amount` writes `lines`).
pub(super) fn fields_used(p: &PolicyRow) -> Vec<String> {
    let mut fields = p.field_keys();
    for r in &p.rules {
        if let Ok(rule) = policy::compile(&r.rule_type, &r.config) {
            for i in rule.inputs() {
                if !fields.contains(&i) {
                    fields.push(i);
                }
            }
        }
        let target = crate::domain::path::base(&r.field_key).to_string();
        if !fields.contains(&target) {
            fields.push(target);
        }
    }
    fields
}

fn policy_info(p: &PolicyRow) -> PolicyInfo {
    PolicyInfo {
        name: p.name.clone(),
        active: p.active(),
        fields: fields_used(p),
    }
}

/// Every path into an array field that a policy's rules write or read names a sub-field the
/// schema's field has (a typo would otherwise read nothing, or write a new key into every
/// element).
pub(super) fn check_policy_paths(p: &PolicyRow, fields: &[FieldDef]) -> Result<(), String> {
    for r in &p.rules {
        let mut names: Vec<String> = vec![r.field_key.clone()];
        if let Ok(rule) = policy::compile(&r.rule_type, &r.config) {
            names.extend(rule.paths());
        }
        for n in names.iter().filter(|n| crate::domain::path::is_path(n)) {
            crate::domain::schema::check_path(fields, n)
                .map_err(|e| format!("policy '{}', rule {}: {e}", p.name, r.id))?;
        }
    }
    Ok(())
}

/// The same for a gate's checks.
pub(super) fn check_gate_paths(g: &gate::Gate, fields: &[FieldDef]) -> Result<(), String> {
    for n in g.paths() {
        crate::domain::schema::check_path(fields, n)?;
    }
    Ok(())
}

/// The snapshot of a policy as a resolution phase runs it: its rules in compiled order.
pub fn policy_snapshot(p: &PolicyRow) -> Result<Value, String> {
    let order = policy::compiled_order(&p.field_keys(), &p.rules)?;
    let rules: Vec<&RuleDef> = order
        .iter()
        .filter_map(|id| p.rules.iter().find(|r| &r.id == id))
        .collect();
    Ok(json!({ "policy_id": p.id, "name": p.name, "version": p.version, "rules": rules }))
}

pub fn gate_snapshot(g: &GateRow) -> Value {
    json!({
        "stage_id": g.id, "name": g.name, "version": g.version, "severity": g.severity,
        "on_block": g.on_block(), "field_scope": g.field_scope, "mechanisms": g.mechanisms
    })
}

/// Compiles a schema's rail with the current policies and gates; each phase comes with the
/// snapshot of what it runs.
pub fn compile_rail(
    c: &Connection,
    org_id: &str,
    schema: &SchemaRow,
    stages: &[Stage],
    models: &[String],
) -> Result<Vec<(Phase, Value)>, EngineError> {
    let field_names: Vec<String> = schema.fields.iter().map(|f| f.field_name.clone()).collect();
    let gates = store::gates::list(c, &schema.id)?;
    let gate_infos: Vec<GateInfo> = gates
        .iter()
        .map(|g| GateInfo {
            id: g.id.clone(),
            name: g.name.clone(),
        })
        .collect();
    let lookup_err: std::cell::RefCell<Option<StoreError>> = Default::default();
    let lookup = |id: &str| -> Option<PolicyInfo> {
        match store::policies::get(c, org_id, id) {
            Ok(p) => p.map(|p| policy_info(&p)),
            Err(e) => {
                *lookup_err.borrow_mut() = Some(e);
                None
            }
        }
    };
    let phases = rail::compile(stages, &field_names, &lookup, &gate_infos, models);
    if let Some(e) = lookup_err.into_inner() {
        return Err(e.into());
    }
    let phases = phases.map_err(EngineError::Invalid)?;
    let mut out = Vec::with_capacity(phases.len());
    for p in phases {
        let snap = match p.kind {
            PhaseType::Transfer => json!({}),
            PhaseType::Extraction => match &p.ref_id {
                Some(model) => json!({ "extractor": "model", "model": model }),
                None => json!({ "extractor": "rules" }),
            },
            PhaseType::Resolution => {
                let id = p.ref_id.clone().unwrap_or_default();
                let pol = store::policies::get(c, org_id, &id)?.ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "phase {} ({}): policy {id} not found",
                        p.index, p.name
                    ))
                })?;
                check_policy_paths(&pol, &schema.fields)
                    .and_then(|_| policy_snapshot(&pol))
                    .map_err(|e| {
                        EngineError::Invalid(format!("phase {} ({}): {e}", p.index, p.name))
                    })?
            }
            PhaseType::Validation => {
                let g = gates
                    .iter()
                    .find(|g| Some(&g.id) == p.ref_id.as_ref())
                    .ok_or_else(|| {
                        EngineError::Invalid(format!("phase {}: gate not found", p.index))
                    })?;
                gate::compile(&g.severity, &g.field_scope, &g.mechanisms, &field_names)
                    .and_then(|compiled| check_gate_paths(&compiled, &schema.fields))
                    .map_err(|e| {
                        EngineError::Invalid(format!("phase {} ({}): {e}", p.index, p.name))
                    })?;
                gate_snapshot(g)
            }
        };
        out.push((p, snap));
    }
    Ok(out)
}

/// The fields that the rail's policies and gates use (for refusing their removal).
pub fn fields_used_by_rail(
    c: &Connection,
    org_id: &str,
    schema: &SchemaRow,
) -> Result<Vec<String>, EngineError> {
    let stages: Vec<Stage> = serde_json::from_value(schema.rail.clone()).unwrap_or_default();
    let mut used: Vec<String> = Vec::new();
    // A path into an array field (`lines[].amount`) uses the array field.
    let mut add = |f: &str| {
        let f = crate::domain::path::base(f);
        if !used.iter().any(|u| u == f) {
            used.push(f.to_string());
        }
    };
    let gates = store::gates::list(c, &schema.id)?;
    for s in &stages {
        let ids = |key: &str| -> Option<Vec<String>> {
            s.json.as_ref()?.get(key)?.as_array().map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
        };
        match s.kind.as_str() {
            "resolve" => {
                for id in ids("policy_ids").unwrap_or_default() {
                    if let Some(p) = store::policies::get(c, org_id, &id)? {
                        policy_info(&p).fields.iter().for_each(|f| add(f));
                    }
                }
            }
            "valid" => {
                let chosen: Vec<&GateRow> = match ids("stage_ids") {
                    Some(list) => gates.iter().filter(|g| list.contains(&g.id)).collect(),
                    None => gates.iter().collect(),
                };
                for g in chosen {
                    g.field_scope.iter().for_each(|f| add(f));
                    for m in g.mechanisms.as_array().into_iter().flatten() {
                        for r in m
                            .get("rules")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            for k in ["field", "left", "right", "equals"] {
                                if let Some(f) = r.get(k).and_then(Value::as_str) {
                                    add(f);
                                }
                            }
                            for f in r
                                .get("fields")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                if let Some(f) = f.as_str() {
                                    add(f);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(used)
}

/// Rebuilds a runnable phase from its stored snapshot.
pub fn run_phase(
    index: usize,
    phase_id: &str,
    kind: PhaseType,
    config_version: i64,
    snap: &Value,
    fields: &[FieldDef],
) -> Result<RunPhase, String> {
    let config = match kind {
        PhaseType::Transfer => PhaseConfig::Transfer,
        PhaseType::Extraction => PhaseConfig::Extraction {
            model: snap
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
        PhaseType::Resolution => {
            let defs: Vec<RuleDef> =
                serde_json::from_value(snap.get("rules").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.to_string())?;
            let rules = defs
                .into_iter()
                .map(|d| policy::compile(&d.rule_type, &d.config).map(|r| (d, r)))
                .collect::<Result<Vec<_>, _>>()?;
            PhaseConfig::Resolution { rules }
        }
        PhaseType::Validation => {
            let names: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
            let scope: Vec<String> =
                serde_json::from_value(snap.get("field_scope").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            let severity = snap
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("info");
            let mechanisms = snap
                .get("mechanisms")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            let gate = gate::compile(severity, &scope, &mechanisms, &names)?;
            PhaseConfig::Validation {
                stage_id: snap
                    .get("stage_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                gate,
                routing: snap
                    .get("on_block")
                    .and_then(Value::as_str)
                    .unwrap_or("review_queue")
                    .to_string(),
            }
        }
    };
    Ok(RunPhase {
        index,
        phase_id: phase_id.to_string(),
        kind,
        config_version,
        config,
    })
}

/// The run as a document of `generation` runs it: each phase with its newest snapshot taken at
/// a generation <= `generation`. A stored run that does not load is broken (`Internal`), never a
/// client's mistake; storage faults keep their kind (busy, full, corrupt).
pub fn load_run_spec(
    c: &Connection,
    pipeline_id: &str,
    generation: i64,
) -> Result<super::runner::RunSpec, EngineError> {
    let broken = |what: String| EngineError::Internal(format!("run {pipeline_id}: {what}"));
    let p = store::pipelines::get_any(c, pipeline_id)?
        .ok_or_else(|| broken("the pipeline vanished".into()))?;
    let phases = store::pipelines::phases(c, pipeline_id)?;
    let snaps = store::pipelines::snapshots(c, pipeline_id, generation)?;
    let mut run_phases = Vec::with_capacity(phases.len());
    for ph in &phases {
        let (_, version, cfg) = snaps
            .iter()
            .find(|(i, _, _)| *i == ph.index)
            .ok_or_else(|| broken(format!("phase {} has no snapshot", ph.index)))?;
        run_phases.push(
            run_phase(ph.index, &ph.phase_id, ph.kind, *version, cfg, &p.fields).map_err(broken)?,
        );
    }
    Ok(super::runner::RunSpec::new(p.fields, run_phases))
}
