//! The quick tier (Talonic's `/v1/extract`, `/v1/extractions`, `/v1/jobs`). An extraction is a
//! run of the fixed rail `[registry, schema]` (`pipelines::quick_rail`) over one document; a
//! job is the same rail over many. Both are stored and executed like any run (cells, versions,
//! provenance); this module starts them and reads them back in the terms Talonic's clients use.

use super::pipelines::{self, RunKind, RunRequest};
use super::views::{self, DocView, Shown};
use super::EngineError;
use crate::domain::canonical::sha256_hex;
use crate::domain::schema::{fields_from_any, validate_fields};
use crate::domain::status::{DocStatus, RunStatus};
use crate::store;
use crate::store::documents::DocumentRow;
use crate::store::pipelines::{PipelineDoc, PipelineRow};
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use serde_json::{json, Map, Value};

/// The spec of a schema given inline (any of the three forms): validated, and stored hidden
/// under a digest of its fields, so the same inline schema is the same spec every time.
pub fn inline_schema(c: &Connection, org: &str, raw: &Value) -> Result<SchemaRow, EngineError> {
    let invalid = |e: String| EngineError::Invalid(format!("schema: {e}"));
    let fields = validate_fields(fields_from_any(raw).map_err(invalid)?).map_err(invalid)?;
    let digest = sha256_hex(
        serde_json::to_string(&fields)
            .unwrap_or_default()
            .as_bytes(),
    );
    let name = format!("inline {}", &digest[..12]);
    Ok(store::schemas::find_or_insert_hidden(
        c, org, &name, &fields,
    )?)
}

/// Starts an extraction of one stored document.
pub fn start_extraction(
    c: &Connection,
    org: &str,
    schema: &SchemaRow,
    document_id: &str,
    models: &[String],
    options: Value,
) -> Result<PipelineRow, EngineError> {
    pipelines::start(
        c,
        org,
        RunRequest {
            schema_id: &schema.id,
            name: Some(&format!("extraction with {}", schema.name)),
            document_ids: &pipelines::uuids(&[document_id])?,
            max_docs: 1,
            models,
            kind: RunKind::Extraction,
            options,
        },
    )
}

/// Starts a job over `document_ids`, or over every completed document of the organization.
pub fn start_job(
    c: &Connection,
    org: &str,
    schema_id: &str,
    name: Option<&str>,
    document_ids: Option<Vec<String>>,
    max_docs: usize,
    models: &[String],
) -> Result<PipelineRow, EngineError> {
    let ids = match document_ids {
        Some(ids) if !ids.is_empty() => {
            for id in &ids {
                store::documents::get(c, org, id)?
                    .ok_or_else(|| EngineError::NotFound(format!("Document {id} not found")))?;
            }
            ids
        }
        _ => {
            let ids = store::documents::completed_ids(c, org, max_docs as i64 + 1)?;
            if ids.is_empty() {
                return Err(EngineError::Invalid(
                    "The organization has no completed documents to run: upload some first".into(),
                ));
            }
            if ids.len() > max_docs {
                return Err(EngineError::Invalid(format!(
                    "The organization has more than {max_docs} completed documents: name them in document_ids"
                )));
            }
            ids
        }
    };
    pipelines::start(
        c,
        org,
        RunRequest {
            schema_id,
            name,
            document_ids: &pipelines::uuids(&ids)?,
            max_docs,
            models,
            kind: RunKind::Job,
            options: json!({}),
        },
    )
}

/// A run of `kind`, `None` when it is not the organization's or of another kind.
pub fn find_run(
    c: &Connection,
    org: &str,
    id: &str,
    kind: RunKind,
) -> Result<Option<PipelineRow>, EngineError> {
    Ok(store::pipelines::get(c, org, id)?.filter(|p| p.kind == kind.as_str()))
}

/// An extraction as its readers see it: its run, its one document and that document's cells.
pub struct Extraction {
    pub run: PipelineRow,
    pub pd: PipelineDoc,
    pub document: DocumentRow,
    pub view: DocView,
    pub order: Vec<String>,
}

/// Per-field confidence and their mean.
pub struct Confidence {
    pub overall: Option<f64>,
    pub fields: Map<String, Value>,
}

impl Extraction {
    pub fn load(c: &Connection, org: &str, id: &str) -> Result<Option<Self>, EngineError> {
        let Some(run) = find_run(c, org, id, RunKind::Extraction)? else {
            return Ok(None);
        };
        Ok(Some(Self::of(c, run)?))
    }

    /// The extraction a run of kind `extraction` is.
    pub fn of(c: &Connection, run: PipelineRow) -> Result<Self, EngineError> {
        let pd = store::pipelines::documents(c, &run.id, None, 1, None)?
            .pop()
            .ok_or_else(|| {
                EngineError::Internal(format!("extraction {} has no document", run.id))
            })?;
        let document = store::documents::get_any(c, &pd.document_id)?.ok_or_else(|| {
            EngineError::Internal(format!("document {} is missing", pd.document_id))
        })?;
        let order: Vec<String> = run.fields.iter().map(|f| f.field_name.clone()).collect();
        let view = views::load(c, std::slice::from_ref(&pd), &order)?
            .pop()
            .ok_or_else(|| EngineError::Internal("no view of the document".into()))?;
        Ok(Extraction {
            run,
            pd,
            document,
            view,
            order,
        })
    }

    /// `processing`, `complete` or `failed`, in Talonic's words.
    pub fn status(&self) -> &'static str {
        doc_status_word(self.pd.status)
    }

    /// The values as results show them: a field still in play or held reads null.
    pub fn data(&self) -> Map<String, Value> {
        self.order
            .iter()
            .map(|f| (f.clone(), self.view.shown(f, self.pd.status)))
            .collect()
    }

    pub fn confidence(&self) -> Confidence {
        let mut fields = Map::new();
        for f in &self.order {
            if let Shown::Value(v, Some(cell)) = self.view.show(f, self.pd.status) {
                if let (false, Some(conf)) = (v.is_null(), cell.confidence) {
                    fields.insert(f.clone(), json!(conf));
                }
            }
        }
        Confidence {
            // Nothing found is no confidence at all: 0, not null (clients read it as a number).
            overall: Some(mean(fields.values().filter_map(Value::as_f64)).unwrap_or(0.0)),
            fields,
        }
    }

    /// How many shown values came from the Field Registry (the document's metadata) and how
    /// many from an extractor: Talonic's `X-Talonic-Cells-Resolved-*` figures.
    pub fn cells_resolved(&self) -> (usize, usize) {
        let mut by = (0, 0);
        for f in &self.order {
            if let Shown::Value(v, Some(cell)) = self.view.show(f, self.pd.status) {
                if v.is_null() {
                    continue;
                }
                if cell.source == "registry_transfer" {
                    by.0 += 1;
                } else if crate::domain::cells::is_extracted(&cell.source) {
                    by.1 += 1;
                }
            }
        }
        by
    }

    /// Where each shown value was read (page, span, box), for `include_provenance`.
    pub fn provenance(&self) -> Map<String, Value> {
        self.order
            .iter()
            .filter_map(|f| match self.view.show(f, self.pd.status) {
                Shown::Value(_, Some(cell)) => {
                    cell.provenance.as_ref().map(|p| (f.clone(), json!(p)))
                }
                _ => None,
            })
            .collect()
    }

    /// The fields a person corrected: pinned, at confidence 1.0.
    pub fn locked_fields(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|f| self.view.states.get(f.as_str()).is_some_and(|s| s.pinned))
            .cloned()
            .collect()
    }

    /// From creation to the document's settling (or to now while it runs).
    pub fn duration_ms(&self) -> i64 {
        let end = self
            .pd
            .completed_at
            .clone()
            .unwrap_or_else(crate::domain::ids::now_rfc3339);
        millis_between(&self.run.created_at, &end)
    }
}

/// A document's status in Talonic's extraction words.
pub fn doc_status_word(s: DocStatus) -> &'static str {
    match s {
        DocStatus::Queued | DocStatus::Processing => "processing",
        DocStatus::Complete | DocStatus::Partial => "complete",
        DocStatus::Error => "failed",
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = xs.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    // Four decimals: a mean of 0.95s reads 0.95, not 0.9499999999999998.
    (n > 0).then(|| (sum / n as f64 * 10_000.0).round() / 10_000.0)
}

fn millis_between(from: &str, to: &str) -> i64 {
    match (
        chrono::DateTime::parse_from_rfc3339(from),
        chrono::DateTime::parse_from_rfc3339(to),
    ) {
        (Ok(a), Ok(b)) => (b - a).num_milliseconds().max(0),
        _ => 0,
    }
}

/// A job's figures: documents finished, and how full its grid of documents × fields is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobStats {
    pub documents: i64,
    pub finished: i64,
    pub errors: i64,
    pub processing: i64,
    pub total_cells: i64,
    pub filled: i64,
    /// The lowest phase a document still in play is at.
    pub phase: Option<usize>,
}

/// One row of a job's results.
pub struct JobRow {
    pub pd: PipelineDoc,
    pub values: Map<String, Value>,
    pub confidence: Option<f64>,
    pub flags: Vec<Value>,
}

/// Walks every document of a run in input order, a batch at a time.
fn each_document(
    c: &Connection,
    run: &PipelineRow,
    mut f: impl FnMut(&PipelineDoc, &DocView),
) -> Result<(), EngineError> {
    let order: Vec<String> = run.fields.iter().map(|f| f.field_name.clone()).collect();
    let mut after = None;
    loop {
        let rows = store::pipelines::documents(c, &run.id, after, 256, None)?;
        if rows.is_empty() {
            return Ok(());
        }
        let views = views::load(c, &rows, &order)?;
        for (pd, v) in rows.iter().zip(&views) {
            f(pd, v);
        }
        after = rows.last().map(|r| r.ordinal);
    }
}

pub fn job_stats(c: &Connection, run: &PipelineRow) -> Result<JobStats, EngineError> {
    let mut s = JobStats {
        documents: run.document_count,
        ..JobStats::default()
    };
    let fields: Vec<&str> = run.fields.iter().map(|f| f.field_name.as_str()).collect();
    each_document(c, run, |pd, v| {
        match pd.status {
            DocStatus::Complete | DocStatus::Partial => s.finished += 1,
            DocStatus::Error => s.errors += 1,
            DocStatus::Queued | DocStatus::Processing => {
                s.processing += 1;
                let at = pd.cursor.max(0) as usize;
                s.phase = Some(s.phase.map_or(at, |p| p.min(at)));
            }
        }
        s.total_cells += fields.len() as i64;
        s.filled += fields
            .iter()
            .filter(|f| !v.shown(f, pd.status).is_null())
            .count() as i64;
    })?;
    Ok(s)
}

pub fn job_rows(c: &Connection, run: &PipelineRow) -> Result<Vec<JobRow>, EngineError> {
    let fields: Vec<String> = run.fields.iter().map(|f| f.field_name.clone()).collect();
    let mut out = Vec::new();
    each_document(c, run, |pd, v| {
        let mut values = Map::new();
        let mut confs = Vec::new();
        let mut flags = Vec::new();
        for f in &fields {
            match v.show(f, pd.status) {
                Shown::Value(val, cell) => {
                    if let (false, Some(conf)) = (val.is_null(), cell.and_then(|c| c.confidence)) {
                        confs.push(conf);
                    }
                    values.insert(f.clone(), val);
                }
                Shown::Held | Shown::NotYet => {
                    values.insert(f.clone(), Value::Null);
                }
            }
            if let Some(st) = v.states.get(f.as_str()) {
                flags.extend(st.flags.iter().map(|fl| json!({ "field": f, "flag": fl })));
            }
        }
        out.push(JobRow {
            pd: pd.clone(),
            values,
            confidence: mean(confs.into_iter()),
            flags,
        });
    })?;
    Ok(out)
}

/// A job's status in Talonic's words: `queued` until a document starts, `processing`, then
/// `complete`, or `failed` (all documents errored, or the job was cancelled).
pub fn job_status_word(run: &PipelineRow, stats: &JobStats) -> &'static str {
    match run.status {
        RunStatus::Active if stats.finished + stats.errors == 0 && stats.phase == Some(0) => {
            "queued"
        }
        RunStatus::Active => "processing",
        RunStatus::Completed => "complete",
        RunStatus::Failed | RunStatus::Cancelled => "failed",
    }
}

/// A document's current values: for each field, what the newest delivered run that extracted
/// it shows.
pub struct DocValues {
    pub document_id: String,
    pub filename: String,
    pub values: Map<String, Value>,
}

/// Every live document of the organization that has delivered values, newest first.
pub fn current_values(c: &Connection, org: &str) -> Result<Vec<DocValues>, EngineError> {
    let runs = store::pipelines::delivered(c, org)?;
    let seqs: Vec<i64> = runs.iter().map(|(pd, _)| pd.seq).collect();
    let mut cells = store::pipelines::cells_by_doc(c, &seqs)?;
    let mut out: Vec<DocValues> = Vec::new();
    for (pd, fields) in runs {
        let order: Vec<String> = fields.iter().map(|f| f.field_name.clone()).collect();
        let view = DocView::new(&pd, cells.remove(&pd.seq).unwrap_or_default(), &order);
        if out.last().is_none_or(|d| d.document_id != pd.document_id) {
            out.push(DocValues {
                document_id: pd.document_id.clone(),
                filename: pd.filename.clone(),
                values: Map::new(),
            });
        }
        if let Some(doc) = out.last_mut() {
            // Runs come newest first: an older run fills only the fields no newer one has.
            for f in &order {
                if !doc.values.contains_key(f) {
                    doc.values.insert(f.clone(), view.shown(f, pd.status));
                }
            }
        }
    }
    Ok(out)
}
