//! Starting runs: a schema's rail compiled and frozen with a snapshot of every policy and gate.

use super::spec::compile_rail;
use super::EngineError;
use crate::domain::rail::Stage;
use crate::domain::schema::FieldDef;
use crate::store;
use crate::store::pipelines::{NewPipeline, PipelineRow};
use crate::store::schemas::SchemaRow;
use crate::store::Connection;
use crate::store::StoreError;
use serde_json::Value;
use uuid::Uuid;

/// The schema's fields with the organization's Field Registry synonyms merged in, frozen with
/// the run so that transfer and extraction see what the registry knew when it started.
fn frozen_fields(
    c: &Connection,
    org_id: &str,
    fields: &[FieldDef],
) -> Result<Vec<FieldDef>, StoreError> {
    let registry = store::schemas::registry_synonyms(c, org_id)?;
    Ok(fields
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if let Some((_, syn)) = registry.iter().find(|(n, _)| n == &f.field_name) {
                for s in syn {
                    if !f.synonyms.contains(s) {
                        f.synonyms.push(s.clone());
                    }
                }
            }
            f
        })
        .collect())
}

/// What a run is and how it starts.
pub struct RunRequest<'a> {
    pub schema_id: &'a str,
    pub name: Option<&'a str>,
    pub document_ids: &'a [Uuid],
    pub max_docs: usize,
    pub models: &'a [String],
    /// `pipeline`: the schema's own rail; `extraction` and `job`: the quick tier's fixed rail.
    pub kind: RunKind,
    pub options: Value,
}

/// A governed pipeline runs its schema's rail; the quick tier's extractions and jobs run
/// `[registry, schema]` with the extractor the schema's rail names (the rules one otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Pipeline,
    Extraction,
    Job,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Pipeline => "pipeline",
            RunKind::Extraction => "extraction",
            RunKind::Job => "job",
        }
    }
}

/// The quick tier's rail for `schema`: the Field Registry, then extraction configured as the
/// schema's own rail configures it.
pub fn quick_rail(schema: &SchemaRow) -> Vec<Stage> {
    let own: Vec<Stage> = serde_json::from_value(schema.rail.clone()).unwrap_or_default();
    let extraction = own.into_iter().find(|s| s.kind == "schema");
    vec![
        Stage {
            kind: "registry".into(),
            name: "Field Registry".into(),
            json: None,
        },
        Stage {
            kind: "schema".into(),
            name: extraction
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "Extraction".into()),
            json: extraction.and_then(|s| s.json),
        },
    ]
}

/// Stored documents' ids as a run takes them (one that is not an id names no document).
pub fn uuids<S: AsRef<str>>(ids: &[S]) -> Result<Vec<Uuid>, EngineError> {
    ids.iter()
        .map(|d| {
            let d = d.as_ref();
            crate::domain::ids::parse_uuid(d)
                .ok_or_else(|| EngineError::NotFound(format!("Document {d} not found")))
        })
        .collect()
}

/// Creates a run over `document_ids` (already checked to be the organization's live documents).
pub fn create(
    c: &Connection,
    org_id: &str,
    schema_id: &str,
    name: Option<&str>,
    document_ids: &[Uuid],
    max_docs: usize,
    models: &[String],
) -> Result<PipelineRow, EngineError> {
    start(
        c,
        org_id,
        RunRequest {
            schema_id,
            name,
            document_ids,
            max_docs,
            models,
            kind: RunKind::Pipeline,
            options: Value::Object(Default::default()),
        },
    )
}

/// Creates a run of any kind.
pub fn start(c: &Connection, org_id: &str, r: RunRequest) -> Result<PipelineRow, EngineError> {
    let (schema_id, document_ids, max_docs) = (r.schema_id, r.document_ids, r.max_docs);
    let schema = store::schemas::get(c, org_id, schema_id, false)?
        .ok_or_else(|| EngineError::NotFound(format!("Schema {schema_id} not found")))?;
    let stages: Vec<Stage> = match r.kind {
        RunKind::Pipeline => serde_json::from_value(schema.rail.clone()).unwrap_or_default(),
        RunKind::Extraction | RunKind::Job => quick_rail(&schema),
    };
    if stages.is_empty() {
        return Err(EngineError::Invalid(format!(
            "Schema '{}' has no rail: PUT /v1/schemas/{}/rail first",
            schema.name, schema.id
        )));
    }
    if document_ids.is_empty() || document_ids.len() > max_docs {
        return Err(EngineError::Invalid(format!(
            "A run takes 1 to {max_docs} documents (got {})",
            document_ids.len()
        )));
    }
    // Duplicates by sorting positions (4 bytes an id) rather than hashing the ids: a run of
    // 1,000,000 documents would otherwise hold its ids twice.
    let mut order: Vec<u32> = (0..document_ids.len() as u32).collect();
    order.sort_unstable_by(|a, b| document_ids[*a as usize].cmp(&document_ids[*b as usize]));
    if let Some(w) = order
        .windows(2)
        .find(|w| document_ids[w[0] as usize] == document_ids[w[1] as usize])
    {
        return Err(EngineError::Invalid(format!(
            "Document {} appears twice",
            document_ids[w[0] as usize]
        )));
    }
    let phases = compile_rail(c, org_id, &schema, &stages, r.models)?;
    if phases.is_empty() {
        return Err(EngineError::Invalid(
            "The rail compiles to no phases".into(),
        ));
    }
    let fields = frozen_fields(c, org_id, &schema.fields)?;
    let name = r
        .name
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} run", schema.name));
    Ok(store::pipelines::insert(
        c,
        NewPipeline {
            org_id,
            schema_id: &schema.id,
            schema_name: &schema.name,
            name: &name,
            fields: &fields,
            phases: &phases,
            document_ids,
            kind: r.kind.as_str(),
            options: &r.options,
        },
    )?)
}
