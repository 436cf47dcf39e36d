//! The document runner: one document from its cursor to the last phase, computed in memory
//! without I/O. Each phase yields one `Step` that the writer commits on its own.

use crate::domain::canonical::canonical_json;
use crate::domain::cells::RowSource;
pub use crate::domain::cells::{Cell, NewVerdict, Step};
use crate::domain::extract::{self, Extracted, FieldSpec};
use crate::domain::gate::{self, Evidence, Gate, Outcome, Severity};
use crate::domain::policy::{self, Rule, RuleDef};
use crate::domain::prompt;
use crate::domain::rail::PhaseType;
use crate::domain::schema::FieldDef;
use crate::domain::state::{apply_waiting, Deps, Flag, States, Status};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};

/// Whether a version still counts. A rerun that restarted the document at index s ends the
/// liveness of earlier generations' versions at s and after; a later pass that resumed the
/// field at r ends its earlier passes' versions at r and after; human versions stay live until
/// a reopen of their field ends them.
pub fn is_live(c: &Cell, restarts: &[(i64, usize)], states: &States) -> bool {
    let st = states.get(&c.field);
    if c.source == "human_review" {
        return st
            .and_then(|s| s.reopened_after)
            .is_none_or(|cut| c.seq > cut);
    }
    !restarts
        .iter()
        .any(|(g, s)| *g > c.generation && c.phase_index >= *s)
        && !st.is_some_and(|s| s.superseded(c.seq, c.phase_index))
}

#[derive(Debug, Clone)]
pub enum PhaseConfig {
    Transfer,
    /// By the rules, or by the named model (its answer is fetched before the run).
    Extraction {
        model: Option<String>,
    },
    Resolution {
        rules: Vec<(RuleDef, Rule)>,
    },
    Validation {
        stage_id: String,
        gate: Gate,
        routing: String,
    },
}

#[derive(Debug, Clone)]
pub struct RunPhase {
    pub index: usize,
    pub phase_id: String,
    pub kind: PhaseType,
    pub config_version: i64,
    pub config: PhaseConfig,
}

/// Everything about a run (at one generation) that a document needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub fields: Vec<FieldDef>,
    pub order: Vec<String>,
    pub phases: Vec<RunPhase>,
    pub deps: Deps,
    pub extract_specs: Vec<FieldSpec>,
    pub matcher: extract::Matcher,
    /// Each field's folded name, display name and synonyms, for transfer.
    pub folded_names: HashMap<String, Vec<String>>,
}

impl RunSpec {
    pub fn new(fields: Vec<FieldDef>, phases: Vec<RunPhase>) -> Self {
        let order: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
        let mut deps = Deps::default();
        for f in &fields {
            if !f.depends_on.is_empty() {
                deps.declared
                    .insert(f.field_name.clone(), f.depends_on.iter().cloned().collect());
            }
        }
        for p in &phases {
            if let PhaseConfig::Resolution { rules } = &p.config {
                for (def, rule) in rules {
                    let target = crate::domain::path::base(&def.field_key);
                    let reads: BTreeSet<String> =
                        rule.inputs().into_iter().filter(|i| i != target).collect();
                    deps.computed
                        .entry(target.to_string())
                        .or_default()
                        .extend(reads);
                }
            }
        }
        let extract_specs: Vec<FieldSpec> = fields.iter().map(FieldSpec::from).collect();
        let matcher = extract::Matcher::new(&extract_specs);
        let folded_names = fields
            .iter()
            .map(|f| {
                let mut names = vec![fold_key(&f.field_name), fold_key(&f.display_name)];
                names.extend(f.synonyms.iter().map(|s| fold_key(s)));
                (f.field_name.clone(), names)
            })
            .collect();
        RunSpec {
            fields,
            order,
            phases,
            deps,
            extract_specs,
            matcher,
            folded_names,
        }
    }

    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.field_name == name)
    }
}

/// Output budgets: no value and no document's new versions may grow past these (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub value: usize,
    pub document: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            value: 1024 * 1024,
            document: 16 * 1024 * 1024,
        }
    }
}

/// One document's stored situation when a worker picks it up.
pub struct DocCtx {
    pub content: Vec<u8>,
    pub mime: String,
    /// A binary document's pages (none for the text formats): extracted values are placed on
    /// them, and a scanned page's OCR confidence scales the value's.
    pub pages: Vec<crate::intake::Page>,
    /// The document's language (ISO 639-1) where intake could tell it.
    pub language: Option<String>,
    /// A model extractor's answer for this document (or why there is none), fetched before
    /// the run when its extraction phase uses a model.
    pub model_answer: Option<Result<crate::domain::prompt::Answer, String>>,
    /// Why the document could not be read at intake: extraction ends the run in error with it.
    pub unreadable: Option<String>,
    pub metadata: Map<String, Value>,
    pub cells: Vec<Cell>,
    /// `(generation, restart index)` of each rerun that restarted this document.
    pub restarts: Vec<(i64, usize)>,
    pub states: States,
    pub generation: i64,
    pub pass: i64,
    pub cursor: usize,
    /// Final values of decisions since each field's latest reopen.
    pub decisions: Vec<(String, Value)>,
    pub now: String,
    pub budget: Budget,
}

impl DocCtx {
    pub fn is_live(&self, c: &Cell) -> bool {
        is_live(c, &self.restarts, &self.states)
    }

    /// Input of a phase: the pin, else the newest live earlier version (with the elements a
    /// person corrected put back over it), else null.
    pub fn input(&self, field: &str, phase: usize) -> (Value, Option<&Cell>) {
        let st = self.states.get(field);
        if let Some(st) = st.filter(|s| s.pinned) {
            let human = self
                .cells
                .iter()
                .rev()
                .find(|c| c.field == field && c.source == "human_review");
            return (st.pin.clone(), human);
        }
        let earlier = self
            .cells
            .iter()
            .rev()
            .filter(|c| c.field == field && c.phase_index < phase && self.is_live(c));
        let pins = st.map_or(&[][..], |s| s.element_pins.as_slice());
        crate::domain::cells::current(earlier, pins)
    }

    /// `v` with a reviewer's corrections of single elements of `field` put back over it: a
    /// phase recomputes the array, never the elements a person set. A correction whose element
    /// the new value lacks is kept (for a later value that has it) and named in the note.
    fn with_element_pins(&mut self, field: &str, v: Value) -> Value {
        let Some(st) = self.states.get_mut(field) else {
            return v;
        };
        if st.element_pins.is_empty() {
            return v;
        }
        let (out, missing) = crate::domain::path::apply_pins(&v, &st.element_pins);
        if !missing.is_empty() {
            st.note = Some(format!(
                "a reviewer's correction of {} finds no such element in the new value; it is kept for when one has it",
                missing.join(", ")
            ));
        }
        out
    }

    fn next_version(&self, field: &str) -> i64 {
        self.cells
            .iter()
            .filter(|c| c.field == field)
            .map(|c| c.version)
            .max()
            .unwrap_or(0)
            + 1
    }
}

pub struct RunResult {
    pub steps: Vec<Step>,
    /// Field states as the run found them, and as it left them.
    pub states_before: States,
    pub states_after: States,
    /// `(phase index, message)` when a phase failed for the whole document.
    pub error: Option<(usize, String)>,
}

pub fn value_hash(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(canonical_json(v).as_bytes())[..8])
}

fn fold_key(s: &str) -> String {
    extract::fold_label(s)
}

/// Runs the document from its cursor through the last phase.
pub fn run(spec: &RunSpec, ctx: &mut DocCtx) -> RunResult {
    let states_before = ctx.states.clone();
    let mut steps = Vec::new();
    let mut extracted: Option<HashMap<String, Extracted>> = None;
    let mut folded_text: Option<String> = None;
    let last = spec.phases.len().saturating_sub(1);
    let mut written = 0usize;
    for phase in spec.phases.iter().skip(ctx.cursor) {
        let i = phase.index;
        let started = std::time::Instant::now();
        let mut new_cells: Vec<Cell> = Vec::new();
        let mut verdicts = Vec::new();
        let in_play = |ctx: &DocCtx, f: &str, judge: bool| {
            ctx.states
                .get(f)
                .is_some_and(|s| s.in_play_at(i) && (judge || !s.pinned))
        };
        match &phase.config {
            PhaseConfig::Transfer => {
                for f in &spec.fields {
                    if !in_play(ctx, &f.field_name, false) {
                        continue;
                    }
                    let names = &spec.folded_names[&f.field_name];
                    let hit = ctx
                        .metadata
                        .iter()
                        .find(|(k, v)| !v.is_null() && names.contains(&fold_key(k)));
                    if let Some((k, v)) = hit.map(|(k, v)| (k.clone(), v.clone())) {
                        let v = ctx.with_element_pins(&f.field_name, v);
                        if over_value_budget(ctx, &f.field_name, &v) {
                            continue;
                        }
                        let input = ctx.input(&f.field_name, i).0;
                        if !policy::same_value(&input, &v) {
                            new_cells.push(cell(
                                ctx,
                                &f.field_name,
                                v,
                                "registry_transfer",
                                phase,
                                Some(1.0),
                                Some(format!("metadata.{k}")),
                                None,
                            ));
                        }
                    }
                }
            }
            PhaseConfig::Extraction { model } => {
                if let Some(why) = &ctx.unreadable {
                    let states_after = ctx.states.clone();
                    return RunResult {
                        steps,
                        states_before,
                        states_after,
                        error: Some((i, why.clone())),
                    };
                }
                if extracted.is_none() {
                    let read = match (model, &ctx.model_answer) {
                        (None, _) => extract::extract_with(
                            &ctx.content,
                            &ctx.mime,
                            &spec.extract_specs,
                            &spec.matcher,
                            ctx.language.as_deref(),
                        ),
                        (Some(_), Some(Ok(answer))) => Ok(prompt::extracted(
                            answer,
                            &spec.extract_specs,
                            &String::from_utf8_lossy(&ctx.content),
                            ctx.language.as_deref().is_some_and(|l| l != "en"),
                        )),
                        (Some(name), Some(Err(why))) => Err(format!("model '{name}': {why}")),
                        (Some(name), None) => {
                            Err(format!("model '{name}' has not answered for this document"))
                        }
                    };
                    match read {
                        Ok(map) => extracted = Some(map),
                        Err(msg) => {
                            let states_after = ctx.states.clone();
                            return RunResult {
                                steps,
                                states_before,
                                states_after,
                                error: Some((i, msg)),
                            };
                        }
                    }
                }
                let found = extracted.as_ref().expect("just set");
                // What a model answered that could not be used, on its field.
                if let (Some(name), Some(Ok(answer))) = (model, &ctx.model_answer) {
                    for (field, note) in &answer.notes {
                        if found.contains_key(field) {
                            continue;
                        }
                        if let Some(st) = ctx.states.get_mut(field) {
                            st.note = Some(format!(
                                "model '{name}': {}",
                                note.as_str().unwrap_or_default()
                            ));
                        }
                    }
                }
                for f in &spec.fields {
                    if !in_play(ctx, &f.field_name, false)
                        || !ctx.input(&f.field_name, i).0.is_null()
                    {
                        continue;
                    }
                    if let Some(x) = found.get(&f.field_name) {
                        if over_value_budget(ctx, &f.field_name, &x.value) {
                            continue;
                        }
                        let provenance = if x.rows.is_empty() {
                            crate::intake::layout::locate(&ctx.pages, &x.source_text, &x.printed)
                        } else {
                            crate::intake::layout::locate_row(&ctx.pages, &x.source_text)
                        };
                        // A value read from a scan is as sure as the OCR that read it.
                        let confidence = match provenance.as_ref().and_then(|p| p.ocr_confidence) {
                            Some(ocr) => x.confidence * f64::from(ocr),
                            None => x.confidence,
                        };
                        let value = ctx.with_element_pins(&f.field_name, x.value.clone());
                        let mut c = cell(
                            ctx,
                            &f.field_name,
                            value,
                            if model.is_some() {
                                "model_extraction"
                            } else {
                                "rules_extraction"
                            },
                            phase,
                            Some(confidence),
                            Some(x.source_text.clone()),
                            None,
                        );
                        c.provenance = provenance;
                        c.note = x.note.clone();
                        if !x.rows.is_empty() {
                            c.rows = Some(
                                x.rows
                                    .iter()
                                    .map(|line| RowSource {
                                        source_text: line.clone(),
                                        provenance: crate::intake::layout::locate_row(
                                            &ctx.pages, line,
                                        ),
                                    })
                                    .collect(),
                            );
                        }
                        new_cells.push(c);
                    }
                }
            }
            PhaseConfig::Resolution { rules } => {
                resolve(spec, ctx, phase, rules, &mut new_cells);
            }
            PhaseConfig::Validation {
                stage_id,
                gate,
                routing,
            } => {
                let text = if gate.reads_text() {
                    folded_text
                        .get_or_insert_with(|| {
                            gate::fold_text(&String::from_utf8_lossy(&ctx.content))
                        })
                        .as_str()
                } else {
                    ""
                };
                verdicts = validate(spec, ctx, phase, stage_id, gate, routing, text);
            }
        }
        written += new_cells
            .iter()
            .map(|c| policy::value_size(&c.value))
            .sum::<usize>();
        if written > ctx.budget.document {
            let states_after = ctx.states.clone();
            return RunResult {
                steps,
                states_before,
                states_after,
                error: Some((
                    i,
                    format!(
                        "the document's new values reached {written} bytes, over the budget of {} bytes per document",
                        ctx.budget.document
                    ),
                )),
            };
        }
        // Versions written in this phase count for later phases of this run.
        for c in &new_cells {
            ctx.cells.push(c.clone());
        }
        for st in ctx.states.values_mut() {
            if st.in_play_at(i) {
                st.next = i + 1;
            }
        }
        if i == last {
            finish(spec, ctx);
        }
        steps.push(Step {
            phase_index: i,
            kind: phase.kind,
            elapsed: started.elapsed(),
            cells: new_cells,
            verdicts,
        });
    }
    if ctx.cursor >= spec.phases.len() {
        // Resumed past the last phase: the fields that were released complete now.
        finish(spec, ctx);
    }
    let states_after = ctx.states.clone();
    RunResult {
        steps,
        states_before,
        states_after,
        error: None,
    }
}

/// A value over the per-value budget is not written: the field keeps a note saying why.
fn over_value_budget(ctx: &mut DocCtx, field: &str, v: &Value) -> bool {
    let size = policy::value_size(v);
    if size <= ctx.budget.value {
        return false;
    }
    if let Some(st) = ctx.states.get_mut(field) {
        st.note = Some(policy::over_budget(size, ctx.budget.value));
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn cell(
    ctx: &DocCtx,
    field: &str,
    value: Value,
    source: &str,
    phase: &RunPhase,
    confidence: Option<f64>,
    source_text: Option<String>,
    rule_type: Option<String>,
) -> Cell {
    Cell {
        seq: 0,
        field: field.to_string(),
        version: ctx.next_version(field),
        value,
        source: source.to_string(),
        phase_index: phase.index,
        generation: ctx.generation,
        pass: ctx.pass,
        confidence,
        source_text,
        config_version: Some(phase.config_version),
        rule_type,
        note: None,
        provenance: None,
        rows: None,
    }
}

fn resolve(
    spec: &RunSpec,
    ctx: &mut DocCtx,
    phase: &RunPhase,
    rules: &[(RuleDef, Rule)],
    out: &mut Vec<Cell>,
) {
    let i = phase.index;
    // Working values: what each field holds as this phase goes, with its confidence.
    let mut work: HashMap<String, (Value, Option<f64>)> = HashMap::new();
    for f in &spec.order {
        let (v, c) = ctx.input(f, i);
        let conf =
            c.and_then(|c| c.confidence)
                .or(if ctx.states.get(f).is_some_and(|s| s.pinned) {
                    Some(1.0)
                } else {
                    None
                });
        work.insert(f.clone(), (v, conf));
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut noted: BTreeSet<String> = BTreeSet::new();
    let mut k = 0;
    while k < rules.len() {
        let key = rules[k].0.field_key.clone();
        let chain_end = rules[k..]
            .iter()
            .position(|(d, _)| d.field_key != key)
            .map(|p| k + p)
            .unwrap_or(rules.len());
        let chain = &rules[k..chain_end];
        k = chain_end;
        // A chain on `lines[].amount` runs on that sub-field of each element of `lines`.
        let field = crate::domain::path::base(&key).to_string();
        let each = crate::domain::path::every(&key).filter(|p| p.sub.is_some());
        let playing = ctx
            .states
            .get(&field)
            .is_some_and(|s| s.in_play_at(i) && !s.pinned);
        if done.contains(&key) {
            continue;
        }
        done.insert(key.clone());
        if !playing {
            // A field not in play keeps what this phase made of it in an earlier pass; the
            // rules after its chain read that, as they did then.
            let (v, c) = ctx.input(&field, i + 1);
            let conf = c
                .and_then(|c| c.confidence)
                .or(work.get(&field).and_then(|w| w.1));
            work.insert(field, (v, conf));
            continue;
        }
        let (input, input_conf) = work.get(&field).cloned().unwrap_or((Value::Null, None));
        let mut confs: Vec<f64> = input_conf.into_iter().collect();
        for (_, rule) in chain {
            for read in rule.inputs() {
                if let Some(c) = work.get(&read).and_then(|w| w.1) {
                    confs.push(c);
                }
            }
        }
        let outcome = match &each {
            None => run_chain(chain, &field, &input, &work, ctx.budget.value),
            Some(path) => run_chain_on_elements(chain, path, &input, &work, ctx.budget.value),
        };
        let (current, last_changer, failed) = match outcome {
            Ok((v, changer)) => (v, changer, None),
            Err(note) => (input.clone(), None, Some(note)),
        };
        if let Some(note) = failed {
            if let Some(st) = ctx.states.get_mut(&field) {
                st.note = Some(note);
            }
            noted.insert(field);
            continue;
        }
        // A field's chains on its elements share its note: a later one that passes does not
        // clear what an earlier one's failure said.
        if !noted.contains(&field) {
            if let Some(st) = ctx.states.get_mut(&field) {
                st.note = None;
            }
        }
        let current = ctx.with_element_pins(&field, current);
        if !policy::same_value(&current, &input) {
            let conf = confs
                .iter()
                .copied()
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.min(c))))
                .or(Some(1.0));
            let mut c = cell(
                ctx,
                &field,
                current.clone(),
                "policy_resolution",
                phase,
                conf,
                None,
                last_changer,
            );
            c.version += out.iter().filter(|o| o.field == field).count() as i64;
            out.push(c);
            work.insert(field, (current, conf));
        }
    }
}

type Work = HashMap<String, (Value, Option<f64>)>;

/// Runs a chain of rules on a value: the chain's own field (`own`) reads the value so far,
/// other fields the phase's work. The result and the type of the last rule that changed it,
/// or the note of the rule that failed.
fn run_chain(
    chain: &[(RuleDef, Rule)],
    own: &str,
    input: &Value,
    work: &Work,
    limit: usize,
) -> Result<(Value, Option<String>), String> {
    let mut current = input.clone();
    let mut last_changer = None;
    for (def, rule) in chain {
        let lookup = |name: &str| {
            if name == own {
                current.clone()
            } else {
                work.get(name).map(|w| w.0.clone()).unwrap_or(Value::Null)
            }
        };
        match policy::apply_within(rule, &current, &lookup, limit) {
            Ok(v) => {
                if !policy::same_value(&v, &current) {
                    last_changer = Some(def.rule_type.clone());
                }
                current = v;
            }
            Err(note) => return Err(format!("{} rule {}: {note}", def.rule_type, def.id)),
        }
    }
    Ok((current, last_changer))
}

/// A chain on `lines[].amount`: run on the `amount` of every element of the array, which keeps
/// its other sub-fields. An element rule that fails names the element; a value that is not an
/// array (or null) passes unchanged.
fn run_chain_on_elements(
    chain: &[(RuleDef, Rule)],
    path: &crate::domain::path::Path,
    input: &Value,
    work: &Work,
    limit: usize,
) -> Result<(Value, Option<String>), String> {
    let Value::Array(list) = input else {
        return Ok((input.clone(), None));
    };
    let (key, sub) = (path.to_string(), path.sub.as_deref().unwrap_or_default());
    let mut out = Vec::with_capacity(list.len());
    let mut last_changer = None;
    for (n, element) in list.iter().enumerate() {
        let Value::Object(obj) = element else {
            out.push(element.clone());
            continue;
        };
        let x = obj.get(sub).cloned().unwrap_or(Value::Null);
        let (v, changer) =
            run_chain(chain, &key, &x, work, limit).map_err(|e| format!("{}: {e}", path.at(n)))?;
        let mut obj = obj.clone();
        obj.insert(sub.to_string(), v);
        last_changer = changer.or(last_changer);
        out.push(Value::Object(obj));
    }
    Ok((Value::Array(out), last_changer))
}

fn validate(
    spec: &RunSpec,
    ctx: &mut DocCtx,
    phase: &RunPhase,
    stage_id: &str,
    g: &Gate,
    routing: &str,
    text: &str,
) -> Vec<NewVerdict> {
    let i = phase.index;
    let canonical = |ctx: &DocCtx, f: &str| -> Value { ctx.input(f, i + 1).0 };
    let scope: Vec<&String> = if g.field_scope.is_empty() {
        spec.order.iter().collect()
    } else {
        g.field_scope.iter().collect()
    };
    let mut verdicts = Vec::new();
    for f in scope {
        if !ctx.states.get(f).is_some_and(|s| s.in_play_at(i)) {
            continue;
        }
        let (value, version) = ctx.input(f, i + 1);
        let extracted_cell = ctx.cells.iter().rev().find(|c| {
            &c.field == f && crate::domain::cells::is_extracted(&c.source) && ctx.is_live(c)
        });
        let by_model = extracted_cell.is_some_and(|c| c.source == "model_extraction");
        let extracted = extracted_cell.map(|c| c.value.clone());
        let ev = Evidence {
            value: &value,
            source: version.map(|c| c.source.as_str()),
            rule_type: version.and_then(|c| c.rule_type.as_deref()),
            confidence: version.and_then(|c| c.confidence),
            extracted: extracted.as_ref(),
            samples: match &ctx.model_answer {
                Some(Ok(a)) if by_model => a.agreement(f),
                _ => None,
            },
        };
        let lookup = |name: &str| -> (Value, bool) {
            let held = ctx.states.get(name).is_some_and(|s| s.status.is_held());
            (canonical(ctx, name), held)
        };
        let j = gate::judge(g, f, &ev, &lookup, text);
        verdicts.push(NewVerdict {
            field: f.clone(),
            phase_index: i,
            stage_id: stage_id.to_string(),
            outcome: j.outcome,
            suppressed: false,
            reason: j.reason,
            mechanisms: j.mechanisms,
            value_hash: value_hash(&value),
        });
    }
    let now = ctx.now.clone();
    for v in verdicts.iter_mut() {
        if v.outcome != Outcome::Fail {
            continue;
        }
        let st = ctx.states.get_mut(&v.field).expect("judged fields exist");
        let reason = v.reason.unwrap_or("failed_check").to_string();
        match g.severity {
            Severity::Info => {}
            Severity::Warning => st.flags.push(Flag {
                phase: i,
                stage_id: stage_id.into(),
                severity: "warning".into(),
                reason,
            }),
            Severity::Blocking if st.guards.contains(&i) => {
                v.suppressed = true;
                st.flags.push(Flag {
                    phase: i,
                    stage_id: stage_id.into(),
                    severity: "warning".into(),
                    reason,
                });
            }
            Severity::Blocking => st.block(i, stage_id, routing, v.reason, &now),
        }
    }
    for v in &verdicts {
        let st = ctx.states.get_mut(&v.field).expect("judged fields exist");
        if st.review_at == Some(i) {
            st.await_review(Some((i, stage_id.to_string())), &now);
        }
    }
    apply_waiting(&mut ctx.states, &spec.order, &spec.deps);
    verdicts
}

fn finish(spec: &RunSpec, ctx: &mut DocCtx) {
    let now = ctx.now.clone();
    for f in &spec.fields {
        let canonical = ctx.input(&f.field_name, usize::MAX).0;
        let decided = ctx
            .decisions
            .iter()
            .any(|(field, v)| field == &f.field_name && policy::same_value(v, &canonical));
        let Some(st) = ctx.states.get_mut(&f.field_name) else {
            continue;
        };
        if st.status != Status::Progressing {
            continue;
        }
        if let Some(g) = st.review_at {
            // A reopened field whose gate was not on its way this time still goes back to review.
            let stage = spec.phases.iter().find_map(|p| match &p.config {
                PhaseConfig::Validation { stage_id, .. } if p.index == g => Some(stage_id.clone()),
                _ => None,
            });
            st.await_review(stage.map(|s| (g, s)), &now);
            continue;
        }
        if f.requires_review && !decided {
            st.status = Status::PendingReview;
            st.trigger = Some("declarative".into());
            st.routing = Some("declarative".into());
            st.reason = Some("requires_review".into());
            st.requested_at = Some(now.clone());
            st.blocked_at = None;
        } else {
            st.complete(None);
        }
    }
    apply_waiting(&mut ctx.states, &spec.order, &spec.deps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schema::{fields_from_input, validate_fields};
    use crate::domain::state::with_fields;
    use serde_json::json;

    fn rule(id: &str, field: &str, t: &str, config: Value, order: i64) -> (RuleDef, Rule) {
        let def = RuleDef {
            id: id.into(),
            field_key: field.into(),
            rule_type: t.into(),
            config: config.clone(),
            order,
        };
        (def, policy::compile(t, &config).unwrap())
    }

    /// The test fields with `total` computed by `expr`, and a gate of `severity` checking
    /// `gate_rules`.
    fn total_computed(expr: &str, gate_rules: Value, severity: &str) -> RunSpec {
        let rules = vec![rule("r1", "total", "compute", json!({ "expr": expr }), 1)];
        spec(fields(), rules, gate_rules, severity)
    }

    fn spec(
        fields: Value,
        rules: Vec<(RuleDef, Rule)>,
        gate_rules: Value,
        severity: &str,
    ) -> RunSpec {
        let fields = validate_fields(fields_from_input(&fields).unwrap()).unwrap();
        let names: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
        let gate = gate::compile(
            severity,
            &[],
            &json!([{"type": "business_rules", "rules": gate_rules}]),
            &names,
        )
        .unwrap();
        let phases = vec![
            RunPhase {
                index: 0,
                phase_id: "transfer".into(),
                kind: PhaseType::Transfer,
                config_version: 1,
                config: PhaseConfig::Transfer,
            },
            RunPhase {
                index: 1,
                phase_id: "extraction".into(),
                kind: PhaseType::Extraction,
                config_version: 1,
                config: PhaseConfig::Extraction { model: None },
            },
            RunPhase {
                index: 2,
                phase_id: "resolution".into(),
                kind: PhaseType::Resolution,
                config_version: 1,
                config: PhaseConfig::Resolution { rules },
            },
            RunPhase {
                index: 3,
                phase_id: "validation".into(),
                kind: PhaseType::Validation,
                config_version: 1,
                config: PhaseConfig::Validation {
                    stage_id: "gate-1".into(),
                    gate,
                    routing: "review_queue".into(),
                },
            },
        ];
        RunSpec::new(fields, phases)
    }

    fn ctx(spec: &RunSpec, text: &str, metadata: Value) -> DocCtx {
        DocCtx {
            content: text.as_bytes().to_vec(),
            mime: "text/plain".into(),
            pages: Vec::new(),
            language: None,
            model_answer: None,
            unreadable: None,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            cells: Vec::new(),
            restarts: Vec::new(),
            states: with_fields(States::new(), &spec.order),
            generation: 1,
            pass: 1,
            cursor: 0,
            decisions: Vec::new(),
            now: "2026-01-01T00:00:00.000Z".into(),
            budget: Budget::default(),
        }
    }

    fn fields() -> Value {
        json!([{"field_name": "net", "data_type": "number"}, {"field_name": "tax", "data_type": "number"},
               {"field_name": "total", "data_type": "number"}, {"field_name": "vendor"}])
    }

    /// A table whose amounts a policy converts and sums, one of its amounts corrected by a
    /// person: every phase's value carries the person's amount, and the sum reads it.
    #[test]
    fn a_pinned_element_stands_over_what_extraction_and_policies_compute_and_sums_read_it() {
        let fields = json!([{"field_name": "net", "data_type": "number"},
            {"field_name": "lines", "data_type": "array", "items": {"item": "string", "amount": "number"}}]);
        let rules = vec![
            rule(
                "unit",
                "lines[].amount",
                "unit",
                json!({"from": "m", "to": "cm"}),
                1,
            ),
            rule(
                "sum",
                "net",
                "compute",
                json!({"expr": "sum(lines[].amount)"}),
                2,
            ),
        ];
        let spec = spec(fields, rules, json!([]), "blocking");
        let doc = "| Item | Amount |\n|---|---|\n| a | 1 |\n| b | 2 |\n";
        let mut c = ctx(&spec, doc, json!({}));
        c.states.get_mut("lines").unwrap().element_pins = vec![
            ("lines[1].amount".into(), json!(5)),
            ("lines[7].amount".into(), json!(9)),
        ];
        let out = run(&spec, &mut c);
        assert!(out.error.is_none(), "{:?}", out.error);
        let written = |phase: usize, field: &str| {
            out.steps
                .iter()
                .find(|s| s.phase_index == phase)
                .and_then(|s| s.cells.iter().find(|c| c.field == field))
                .map(|c| c.value.clone())
        };
        assert_eq!(
            written(1, "lines"),
            Some(json!([{"item": "a", "amount": 1}, {"item": "b", "amount": 5}])),
            "extraction wrote the person's amount"
        );
        assert_eq!(
            written(2, "lines"),
            Some(json!([{"item": "a", "amount": 100}, {"item": "b", "amount": 5}])),
            "the conversion ran on every element but the pinned one"
        );
        assert_eq!(
            written(2, "net"),
            Some(json!(105)),
            "the sum read the pinned amount"
        );
        let note = c.states["lines"].note.clone().unwrap_or_default();
        assert!(note.contains("lines[7].amount"), "{note}");
    }

    #[test]
    fn phases_write_versions_only_when_values_change() {
        let s = spec(
            fields(),
            vec![
                rule("r1", "net", "number", json!({}), 1),
                rule("r2", "total", "compute", json!({"expr": "net + tax"}), 2),
            ],
            json!([]),
            "info",
        );
        let mut c = ctx(
            &s,
            // `1,000` is ambiguous to the extractor (kept as text); the number rule reads it.
            "Net: 1,000\nTax: 190\nVendor: Acme",
            json!({"vendor": "Acme Corp"}),
        );
        let r = run(&s, &mut c);
        assert!(r.error.is_none());
        assert_eq!(r.steps.len(), 4);
        let transfer = &r.steps[0].cells;
        assert_eq!(
            (
                transfer.len(),
                transfer[0].value.clone(),
                transfer[0].source.as_str()
            ),
            (1, json!("Acme Corp"), "registry_transfer")
        );
        let extraction: Vec<&str> = r.steps[1].cells.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            extraction,
            vec!["net", "tax"],
            "vendor already had a value from transfer"
        );
        let resolution = &r.steps[2].cells;
        assert_eq!(
            resolution.len(),
            2,
            "tax was already a number and is not rewritten"
        );
        assert_eq!(
            (resolution[0].field.as_str(), resolution[0].value.clone()),
            ("net", json!(1000))
        );
        assert_eq!(
            (resolution[1].field.as_str(), resolution[1].value.clone()),
            ("total", json!(1190))
        );
        assert_eq!(resolution[1].confidence, Some(0.95));
        assert_eq!(resolution[1].rule_type.as_deref(), Some("compute"));
        assert_eq!(resolution[0].version, 2);
        assert!(c.states.values().all(|s| s.status == Status::Completed));
    }

    #[test]
    fn values_read_from_a_scan_are_placed_on_their_page_and_as_sure_as_the_ocr() {
        use crate::intake::{Page, Word};
        let s = spec(fields(), Vec::new(), json!([]), "info");
        let word = |text: &str, x0: f32, conf: f32| Word {
            text: text.into(),
            x0,
            y0: 100.0,
            x1: x0 + 40.0,
            y1: 112.0,
            conf: Some(conf),
        };
        let text = "Vendor | Acme\nTax | 1.234,50";
        let page = Page {
            number: 1,
            width: 800.0,
            height: 1000.0,
            text: text.into(),
            markdown: String::new(),
            words: vec![word("Tax", 10.0, 0.9), word("1.234,50", 300.0, 0.5)],
            ocr: true,
        };
        let mut c = ctx(&s, text, json!({}));
        c.pages = vec![page];
        let r = run(&s, &mut c);
        let tax = r.steps[1].cells.iter().find(|c| c.field == "tax").unwrap();
        assert_eq!(tax.value, json!(1234.5));
        assert_eq!(tax.confidence, Some(0.95 * 0.5));
        let p = tax.provenance.as_ref().expect("placed on its page");
        assert_eq!((p.page, p.start, p.end), (1, 20, 28));
        assert_eq!(p.bbox, Some([300.0, 100.0, 340.0, 112.0]));
        let vendor = r.steps[1]
            .cells
            .iter()
            .find(|c| c.field == "vendor")
            .unwrap();
        assert_eq!(
            vendor.confidence,
            Some(0.95),
            "no words print it: no OCR to scale by"
        );
        assert!(vendor.provenance.as_ref().is_some_and(|p| p.bbox.is_none()));
    }

    #[test]
    fn a_chain_reads_its_own_value_as_the_earlier_rules_left_it() {
        let rules = vec![
            rule("r1", "total", "number", json!({}), 1),
            rule(
                "r2",
                "total",
                "compute",
                json!({"expr": "round(total * 2, 2)"}),
                2,
            ),
        ];
        let s = spec(fields(), rules, json!([]), "info");
        let mut c = ctx(&s, "Total: 1,000.25", json!({}));
        let r = run(&s, &mut c);
        assert_eq!(r.steps[2].cells[0].value, json!(2000.5));
        assert!(c.states["total"].note.is_none());
    }

    #[test]
    fn a_rule_that_cannot_produce_a_value_leaves_a_note_not_an_error() {
        let s = total_computed("net / tax", json!([]), "info");
        let mut c = ctx(&s, "Net: 5\nTax: 0", json!({}));
        let r = run(&s, &mut c);
        assert!(r.error.is_none());
        assert!(r.steps[2].cells.is_empty());
        assert!(c.states["total"]
            .note
            .as_deref()
            .unwrap()
            .contains("division by zero"));
        assert_eq!(c.states["total"].status, Status::Completed);
    }

    #[test]
    fn a_blocking_failure_holds_the_field_and_a_guard_lets_it_through() {
        let gate_rules = json!([{"check": "sum", "fields": ["net", "tax"], "equals": "total"}]);
        let s = spec(fields(), vec![], gate_rules.clone(), "blocking");
        let mut c = ctx(&s, "Net: 5\nTax: 1\nTotal: 7", json!({}));
        run(&s, &mut c);
        assert_eq!(c.states["total"].status, Status::Blocked);
        assert_eq!(c.states["total"].blocked_at, Some(3));
        assert_eq!(c.states["net"].status, Status::Completed);
        let mut guarded = ctx(&s, "Net: 5\nTax: 1\nTotal: 7", json!({}));
        guarded.states.get_mut("total").unwrap().guards.push(3);
        let r = run(&s, &mut guarded);
        let v = r.steps[3]
            .verdicts
            .iter()
            .find(|v| v.field == "total")
            .unwrap();
        assert!(v.suppressed && v.outcome == Outcome::Fail);
        assert_eq!(guarded.states["total"].status, Status::Completed);
        assert_eq!(guarded.states["total"].flags[0].severity, "warning");
    }

    #[test]
    fn requires_review_holds_until_a_decision_matches_the_value() {
        let f = json!([{"field_name": "vendor", "requires_review": true}, {"field_name": "note", "depends_on": ["vendor"]}]);
        let s = spec(f, vec![], json!([]), "info");
        let mut c = ctx(&s, "Vendor: Acme\nNote: hi", json!({}));
        run(&s, &mut c);
        assert_eq!(c.states["vendor"].status, Status::PendingReview);
        assert_eq!(c.states["note"].status, Status::Waiting);
        let mut decided = ctx(&s, "Vendor: Acme\nNote: hi", json!({}));
        decided.decisions.push(("vendor".into(), json!("Acme")));
        run(&s, &mut decided);
        assert_eq!(decided.states["vendor"].status, Status::Completed);
        assert_eq!(decided.states["note"].status, Status::Completed);
    }

    #[test]
    fn an_unreadable_document_errors_at_extraction_after_committing_transfer() {
        let s = spec(fields(), vec![], json!([]), "info");
        let mut c = ctx(&s, "", json!({}));
        c.content = vec![0xff, 0xfe];
        let r = run(&s, &mut c);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.error.as_ref().map(|e| e.0), Some(1));
    }

    /// Stores the run's new versions (gives them sequences) and answers the newest sequence.
    fn store(c: &mut DocCtx) -> i64 {
        for (k, cell) in c.cells.iter_mut().enumerate() {
            cell.seq = k as i64 + 1;
        }
        c.cells.len() as i64
    }

    /// What a resolve does to a held `field` at the gate (phase 3) whose dependent `total`
    /// waits on it: pin the human value, resume the field at the gate and `total` at the
    /// resolution phase, in a new pass.
    fn correct_at_gate(c: &mut DocCtx, field: &str, value: Value) {
        let cut = store(c);
        let st = c.states.get_mut(field).unwrap();
        st.pinned = true;
        st.pin = value;
        st.resume(3, cut);
        c.states.get_mut("total").unwrap().resume(2, cut);
        c.pass += 1;
        c.cursor = 2;
    }

    fn tax_gate() -> Value {
        json!([{"field": "tax", "check": "range", "max": 50}])
    }

    #[test]
    fn a_later_pass_that_writes_nothing_leaves_the_input_not_the_earlier_pass_output() {
        let s = total_computed("net + tax", tax_gate(), "blocking");
        let mut c = ctx(&s, "Net: 100\nTax: 99\nTotal: 119", json!({}));
        run(&s, &mut c);
        assert_eq!(c.states["tax"].status, Status::Blocked);
        assert_eq!(c.states["total"].status, Status::Waiting);
        assert_eq!(c.input("total", usize::MAX).0, json!(199));
        correct_at_gate(&mut c, "tax", json!(19));
        let r = run(&s, &mut c);
        assert!(
            r.steps[0].cells.is_empty(),
            "119 equals the phase's input: nothing is written"
        );
        assert_eq!(
            c.input("total", usize::MAX).0,
            json!(119),
            "the stated 119, not the first pass's 199"
        );
        let first = c.cells.iter().find(|x| x.value == json!(199)).unwrap();
        assert!(!c.is_live(first));
        assert_eq!(c.states["total"].status, Status::Completed);
    }

    #[test]
    fn a_later_pass_whose_rule_fails_leaves_no_value_and_a_note() {
        let s = total_computed("net / tax", tax_gate(), "blocking");
        let mut c = ctx(&s, "Net: 100\nTax: 99", json!({}));
        run(&s, &mut c);
        assert!(c.input("total", usize::MAX).0.is_number());
        correct_at_gate(&mut c, "tax", json!(0));
        run(&s, &mut c);
        assert_eq!(c.input("total", usize::MAX).0, Value::Null);
        assert!(c.states["total"]
            .note
            .as_deref()
            .unwrap()
            .contains("division by zero"));
    }

    #[test]
    fn a_rule_reads_what_earlier_rules_of_its_phase_made_of_fields_not_in_play() {
        let f = json!([{"field_name": "net"}, {"field_name": "tax", "data_type": "number"},
                       {"field_name": "total", "data_type": "number"}, {"field_name": "vendor"}]);
        let s = spec(
            f,
            vec![
                rule("r1", "net", "number", json!({}), 1),
                rule("r2", "total", "compute", json!({"expr": "net + tax"}), 2),
            ],
            tax_gate(),
            "blocking",
        );
        let mut c = ctx(&s, "Net: 1,000.50\nTax: 99", json!({}));
        run(&s, &mut c);
        assert_eq!(c.input("net", usize::MAX).0, json!(1000.5));
        correct_at_gate(&mut c, "tax", json!(19));
        run(&s, &mut c);
        assert_eq!(c.input("total", usize::MAX).0, json!(1019.5));
        assert!(c.states["total"].note.is_none());
    }

    #[test]
    fn a_reopened_field_computed_again_goes_back_to_review_at_its_gate() {
        let s = total_computed("net + tax", json!([]), "blocking");
        let mut c = ctx(&s, "Net: 1\nTax: 2", json!({}));
        run(&s, &mut c);
        assert_eq!(c.states["total"].status, Status::Completed);
        let cut = store(&mut c);
        let st = c.states.get_mut("total").unwrap();
        st.review_at = Some(3);
        st.resume(2, cut);
        c.pass += 1;
        c.cursor = 2;
        c.metadata.clear();
        run(&s, &mut c);
        let st = &c.states["total"];
        assert_eq!(st.status, Status::PendingReview);
        assert_eq!(
            (st.blocked_at, st.trigger.as_deref(), st.reason.as_deref()),
            (Some(3), Some("gate"), Some("reopened"))
        );
        assert_eq!(st.review_at, None);
    }

    #[test]
    fn inputs_are_pins_or_live_earlier_versions_so_reruns_never_stack_rules() {
        let s = spec(
            fields(),
            vec![rule("r1", "net", "compute", json!({"expr": "net * 2"}), 1)],
            json!([]),
            "info",
        );
        let mut c = ctx(&s, "Net: 10", json!({}));
        run(&s, &mut c);
        assert_eq!(c.input("net", 4).0, json!(20));
        // A rerun from resolution: generation 2 restarts at index 2; the phase reads extraction's 10.
        c.restarts.push((2, 2));
        c.generation = 2;
        c.cursor = 2;
        c.states = with_fields(States::new(), &s.order);
        for st in c.states.values_mut() {
            st.next = 2;
        }
        let r = run(&s, &mut c);
        assert_eq!(
            r.steps[0].cells[0].value,
            json!(20),
            "the first run's result, not 40"
        );
        assert_eq!(c.input("net", 4).0, json!(20));
        assert_eq!(
            c.cells
                .iter()
                .filter(|x| c.is_live(x) && x.field == "net")
                .count(),
            2
        );
        // A pinned field is never recomputed.
        c.states.get_mut("net").unwrap().pinned = true;
        c.states.get_mut("net").unwrap().pin = json!(99);
        assert_eq!(c.input("net", 2).0, json!(99));
    }
}
