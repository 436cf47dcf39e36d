//! Read models: canonical values, results rows and progress, computed from stored cells and
//! states with the liveness rules of the runner.

use super::runner::Cell;
use crate::answers::{
    CellSummary, CellVersion, Cells, FieldCells, FlagAnswer, PhaseProgress, Progress,
    ProgressError, ResultRow, Verdict,
};
use crate::domain::state::{with_fields, States, Status};
use crate::domain::status::{DocStatus, RunStatus};
use crate::store::pipelines::{PhaseRow, PipelineDoc, StatusGroup, VerdictRow};
use serde_json::{json, Map, Value};

/// One pipeline document's stored cells and states, ready to answer "which value counts".
pub struct DocView {
    pub cells: Vec<(i64, Cell, String)>,
    pub restarts: Vec<(i64, usize)>,
    pub states: States,
}

impl DocView {
    pub fn new(pd: &PipelineDoc, cells: Vec<(i64, Cell, String)>, order: &[String]) -> Self {
        DocView {
            cells,
            restarts: pd.restarts.clone(),
            states: with_fields(pd.field_states.clone(), order),
        }
    }

    pub fn is_live(&self, c: &Cell) -> bool {
        super::runner::is_live(c, &self.restarts, &self.states)
    }

    /// The canonical version: the pin's human version, else the newest live version.
    pub fn canonical(&self, field: &str) -> (Value, Option<&Cell>) {
        let pinned = self.states.get(field).filter(|s| s.pinned);
        if let Some(st) = pinned {
            let human = self
                .cells
                .iter()
                .rev()
                .map(|(_, c, _)| c)
                .find(|c| c.field == field && c.source == "human_review");
            return (st.pin.clone(), human);
        }
        let live = self
            .cells
            .iter()
            .rev()
            .map(|(_, c, _)| c)
            .filter(|c| c.field == field && self.is_live(c));
        let pins = self
            .states
            .get(field)
            .map_or(&[][..], |s| s.element_pins.as_slice());
        crate::domain::cells::current(live, pins)
    }

    /// Whether, with only each field's newest version loaded, `canonical` answers as it would
    /// with every version: no field is pinned or has pinned elements (those read older human
    /// versions), and every newest version is live (else an older one would count).
    fn newest_counts(&self) -> bool {
        self.states
            .values()
            .all(|s| !s.pinned && s.element_pins.is_empty())
            && self.cells.iter().all(|(_, c, _)| self.is_live(c))
    }

    /// The one rule for what every reader of canonical values shows (results, data products,
    /// CSV exports, cells): a held field shows as held; a field of an errored document, or one
    /// still in play in a queued or processing document, has no value to show yet.
    pub fn show(&self, field: &str, doc_status: DocStatus) -> Shown<'_> {
        let status = self.states.get(field).map(|s| s.status).unwrap_or_default();
        if status.is_held() {
            return Shown::Held;
        }
        if doc_status == DocStatus::Error
            || (status == Status::Progressing
                && matches!(doc_status, DocStatus::Queued | DocStatus::Processing))
        {
            return Shown::NotYet;
        }
        let (v, c) = self.canonical(field);
        Shown::Value(v, c)
    }

    /// What `show` gives as one JSON value: null unless there is a value to show.
    pub fn shown(&self, field: &str, doc_status: DocStatus) -> Value {
        match self.show(field, doc_status) {
            Shown::Value(v, _) => v,
            Shown::Held | Shown::NotYet => Value::Null,
        }
    }
}

/// A field as readers show it (see `DocView::show`).
pub enum Shown<'a> {
    Value(Value, Option<&'a Cell>),
    Held,
    NotYet,
}

/// The views of a page of a run's documents, every version with its provenance, read in one
/// query.
pub fn load(
    c: &crate::store::Connection,
    rows: &[PipelineDoc],
    order: &[String],
) -> Result<Vec<DocView>, crate::store::StoreError> {
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let mut by_doc = crate::store::pipelines::cells_by_doc(c, &seqs)?;
    Ok(rows
        .iter()
        .map(|pd| DocView::new(pd, by_doc.remove(&pd.seq).unwrap_or_default(), order))
        .collect())
}

/// Views of a page of a run's documents that answer `show` and `canonical` (a page of results
/// without provenance), read as `fill_shown` reads them.
pub fn load_shown(
    c: &crate::store::Connection,
    rows: &[PipelineDoc],
    order: &[String],
) -> Result<Vec<DocView>, crate::store::StoreError> {
    let mut views: Vec<(i64, DocView)> = rows
        .iter()
        .map(|pd| (pd.seq, DocView::new(pd, Vec::new(), order)))
        .collect();
    fill_shown(c, &mut views)?;
    Ok(views.into_iter().map(|(_, v)| v).collect())
}

/// Gives views (keyed by document seq, their cells empty) what `show` and `canonical` need,
/// read from each field's newest version alone. A document where that version might not be the
/// one that counts (a pinned or element-pinned field, a newest version a restart or a reopen
/// left behind) is read whole, so every view answers as one with every version would. The
/// others hold only those newest versions: they must not reach `versions`, `cells` or anything
/// else that lists a field's history.
pub fn fill_shown(
    c: &crate::store::Connection,
    views: &mut [(i64, DocView)],
) -> Result<(), crate::store::StoreError> {
    let seqs: Vec<i64> = views.iter().map(|(seq, _)| *seq).collect();
    let mut newest = crate::store::pipelines::newest_cells_by_doc(c, &seqs)?;
    for (seq, v) in views.iter_mut() {
        v.cells = newest.remove(seq).unwrap_or_default();
    }
    let whole: Vec<i64> = views
        .iter()
        .filter(|(_, v)| !v.newest_counts())
        .map(|(seq, _)| *seq)
        .collect();
    if !whole.is_empty() {
        let mut all = crate::store::pipelines::cells_by_doc_with(c, &whole, false)?;
        for (seq, v) in views.iter_mut() {
            if let Some(cells) = all.remove(seq) {
                v.cells = cells;
            }
        }
    }
    Ok(())
}

pub fn phase_id(phases: &[PhaseRow], index: usize) -> Option<String> {
    phases
        .iter()
        .find(|p| p.index == index)
        .map(|p| p.phase_id.clone())
}

pub fn cell_summary(
    v: &DocView,
    field: &str,
    doc_status: DocStatus,
    phases: &[PhaseRow],
) -> CellSummary {
    let st = v.states.get(field).cloned().unwrap_or_default();
    let c = shown_cell(v, field, doc_status);
    CellSummary {
        status: st.status.as_str().to_string(),
        version: c.map(|c| c.version),
        source: c.map(|c| c.source.clone()),
        confidence: c.and_then(|c| c.confidence),
        phase_id: c.and_then(|c| phase_id(phases, c.phase_index)),
        flags: st
            .flags
            .iter()
            .map(|f| FlagAnswer {
                stage_id: f.stage_id.clone(),
                severity: f.severity.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
    }
}

pub fn version(
    v: &DocView,
    c: &Cell,
    created_at: &str,
    canonical: bool,
    phases: &[PhaseRow],
) -> CellVersion {
    CellVersion {
        cell: c.clone(),
        phase_id: phase_id(phases, c.phase_index),
        live: v.is_live(c),
        canonical,
        created_at: created_at.to_string(),
    }
}

/// A field's versions, oldest first, the canonical one marked.
fn versions(v: &DocView, field: &str, canon: Option<i64>, phases: &[PhaseRow]) -> Vec<CellVersion> {
    v.cells
        .iter()
        .filter(|(_, c, _)| c.field == field)
        .map(|(_, c, at)| version(v, c, at, Some(c.version) == canon, phases))
        .collect()
}

/// `GET …/cells`: every field with its versions, oldest first.
pub fn cells(v: &DocView, order: &[String], doc_status: DocStatus, phases: &[PhaseRow]) -> Cells {
    let fields = order
        .iter()
        .map(|f| {
            let st = v.states.get(f).cloned().unwrap_or_default();
            let canon = shown_version(v, f, doc_status);
            FieldCells {
                field_key: f.clone(),
                status: st.status.as_str().to_string(),
                pinned: st.pinned,
                canonical_version: canon,
                note: st.note,
                versions: versions(v, f, canon, phases),
            }
        })
        .collect();
    Cells { fields }
}

/// The version provenance views mark canonical: a held field's is the value under review;
/// a field not settled yet has none.
fn shown_cell<'a>(v: &'a DocView, field: &str, doc_status: DocStatus) -> Option<&'a Cell> {
    match v.show(field, doc_status) {
        Shown::Value(_, c) => c,
        Shown::Held => v.canonical(field).1,
        Shown::NotYet => None,
    }
}

fn shown_version(v: &DocView, field: &str, doc_status: DocStatus) -> Option<i64> {
    shown_cell(v, field, doc_status).map(|c| c.version)
}

/// Per-phase and per-run counts from `(status, cursor, error_phase_index, count)` groups.
pub fn progress(
    pipeline_id: &str,
    status: RunStatus,
    generation: i64,
    total: i64,
    phases: &[PhaseRow],
    groups: &[StatusGroup],
    errors: Vec<ProgressError>,
) -> Progress {
    let done: i64 = groups
        .iter()
        .filter(|g| g.status.delivered())
        .map(|g| g.count)
        .sum();
    let errored: i64 = groups
        .iter()
        .filter(|g| g.status == DocStatus::Error)
        .map(|g| g.count)
        .sum();
    let per_phase = phases
        .iter()
        .map(|p| {
            let i = p.index as i64;
            let (mut completed, mut running, mut errs, mut errored_before) = (0, 0, 0, 0);
            for g in groups {
                let (cursor, err_at, n) = (&g.cursor, &g.error_phase_index, &g.count);
                match g.status {
                    DocStatus::Complete | DocStatus::Partial => completed += n,
                    DocStatus::Error => {
                        let at = err_at.unwrap_or(*cursor);
                        if at > i {
                            completed += n;
                        } else if at == i {
                            errs += n;
                        } else {
                            errored_before += n;
                        }
                    }
                    DocStatus::Processing if *cursor == i => running += n,
                    _ if *cursor > i => completed += n,
                    _ => {}
                }
            }
            PhaseProgress {
                phase_id: p.phase_id.clone(),
                index: p.index,
                name: p.name.clone(),
                kind: p.kind.as_str(),
                completed,
                running,
                errors: errs,
                pending: total - completed - running - errs - errored_before,
            }
        })
        .collect();
    Progress {
        pipeline_id: pipeline_id.to_string(),
        status,
        generation,
        total_documents: total,
        completed_documents: done,
        error_documents: errored,
        phases: per_phase,
        errors,
        model_usage: None,
    }
}

/// One row of `GET …/results`.
pub fn result_row(
    pd: &PipelineDoc,
    v: &DocView,
    order: &[String],
    phases: &[PhaseRow],
    with_cells: bool,
    with_provenance: bool,
) -> ResultRow {
    let fields: Map<String, Value> = order
        .iter()
        .map(|f| (f.clone(), v.shown(f, pd.status)))
        .collect();
    let cells = with_cells.then(|| {
        order
            .iter()
            .map(|f| (f.clone(), json!(cell_summary(v, f, pd.status, phases))))
            .collect()
    });
    let provenance = with_provenance.then(|| {
        order
            .iter()
            .map(|f| {
                let canon = shown_version(v, f, pd.status);
                (f.clone(), json!(versions(v, f, canon, phases)))
            })
            .collect()
    });
    ResultRow {
        pipeline_document_id: pd.id.clone(),
        document_id: pd.document_id.clone(),
        filename: pd.filename.clone(),
        status: pd.status,
        error: pd.error.clone(),
        completed_at: pd.completed_at.clone(),
        fields,
        cells,
        provenance,
    }
}

/// A verdict as the API shows it.
pub fn verdict(v: &VerdictRow, phases: &[PhaseRow]) -> Verdict {
    let ph = phases.iter().find(|p| p.index == v.phase_index);
    Verdict {
        field_key: v.field.clone(),
        phase_id: ph.map(|p| p.phase_id.clone()),
        stage_id: v.stage_id.clone(),
        stage_name: ph.map(|p| p.name.clone()),
        generation: v.generation,
        pass: v.pass,
        outcome: v.outcome.clone(),
        suppressed: v.suppressed,
        reason: v.reason.clone(),
        mechanisms: v.mechanisms.clone(),
    }
}

/// The elements a field's latest failed verdict at its holding gate named (`failingElements`
/// of its mechanisms), each with its value now and the row it was read from.
pub fn failing_elements(
    verdicts: &[crate::answers::Verdict],
    stage_id: Option<&str>,
    value: &Value,
    rows: Option<&[crate::domain::cells::RowSource]>,
) -> Vec<crate::answers::FailingElement> {
    let Some(v) = verdicts
        .iter()
        .rev()
        .find(|v| v.outcome == "fail" && stage_id.is_none_or(|s| s == v.stage_id))
    else {
        return Vec::new();
    };
    let mut indexes: Vec<usize> = v
        .mechanisms
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("failingElements")?.as_array())
        .flatten()
        .filter_map(|i| i.as_u64().map(|i| i as usize))
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
        .into_iter()
        .map(|index| crate::answers::FailingElement {
            index,
            value: value.get(index).cloned().unwrap_or(Value::Null),
            row: rows.and_then(|r| r.get(index)).cloned(),
        })
        .collect()
}
