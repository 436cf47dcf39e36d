//! Starting runs: a schema's rail compiled and frozen with a snapshot of every policy and gate.

use super::spec::compile_rail;
use super::EngineError;
use crate::domain::rail::Stage;
use crate::domain::schema::FieldDef;
use crate::store;
use crate::store::pipelines::{NewPipeline, PipelineRow};
use crate::store::Connection;
use crate::store::StoreError;
use std::collections::HashSet;

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

/// Creates a run over `document_ids` (already checked to be the organization's live documents).
pub fn create(
    c: &Connection,
    org_id: &str,
    schema_id: &str,
    name: Option<&str>,
    document_ids: &[String],
    max_docs: usize,
    models: &[String],
) -> Result<PipelineRow, EngineError> {
    let schema = store::schemas::get(c, org_id, schema_id, false)?
        .ok_or_else(|| EngineError::NotFound(format!("Schema {schema_id} not found")))?;
    let stages: Vec<Stage> = serde_json::from_value(schema.rail.clone()).unwrap_or_default();
    if stages.is_empty() {
        return Err(EngineError::Invalid(format!(
            "Schema '{}' has no rail: PUT /v1/schemas/{}/rail first",
            schema.name, schema.id
        )));
    }
    if document_ids.is_empty() || document_ids.len() > max_docs {
        return Err(EngineError::Invalid(format!(
            "A pipeline takes 1 to {max_docs} documents (got {})",
            document_ids.len()
        )));
    }
    let mut seen = HashSet::new();
    if let Some(d) = document_ids.iter().find(|d| !seen.insert(d.as_str())) {
        return Err(EngineError::Invalid(format!("Document {d} appears twice")));
    }
    let phases = compile_rail(c, org_id, &schema, &stages, models)?;
    if phases.is_empty() {
        return Err(EngineError::Invalid(
            "The rail compiles to no phases".into(),
        ));
    }
    let fields = frozen_fields(c, org_id, &schema.fields)?;
    let name = name
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
        },
    )?)
}
