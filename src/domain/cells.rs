//! What a document's run writes: cell versions and verdicts, grouped by phase into steps. The
//! runner computes them and the store persists them; both speak these types.

use crate::domain::gate::{self, Outcome};
use serde_json::Value;

/// A stored or new cell version (`seq` is 0 until stored). Answered as a version of its field's
/// cell (`answers::CellVersion`), without what the answer already says or keeps internal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Cell {
    #[serde(skip)]
    pub seq: i64,
    #[serde(skip)]
    pub field: String,
    pub version: i64,
    pub value: Value,
    /// What wrote it: `rules_extraction`, `policy`, `human`, …
    pub source: String,
    pub phase_index: usize,
    pub generation: i64,
    pub pass: i64,
    pub confidence: Option<f64>,
    /// The document text it was read from.
    pub source_text: Option<String>,
    pub config_version: Option<i64>,
    #[serde(skip)]
    pub rule_type: Option<String>,
    pub note: Option<String>,
    /// Where an extracted value stands in a PDF, DOCX or image: absent for the text formats
    /// and for values no extraction read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// An array value read from a table: where each element was read, in the array's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowSource>>,
}

/// Where one element of an array value was read: its table row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RowSource {
    /// The row as the document's text gives it (a CSV record, a table's line).
    pub source_text: String,
    /// The row's place on its page, in a PDF, DOCX or image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Where a value stands in a document's text layer (`GET /v1/documents/{id}/pages/{page}`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Provenance {
    /// From 1.
    pub page: u32,
    /// The value's characters in the page's text, `[start, end)`.
    pub start: usize,
    pub end: usize,
    /// The box around the words that print it, `[x0, y0, x1, y1]` from the page's top-left
    /// corner in the page's units (absent where the page has no word boxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// The mean OCR confidence (0–1) of those words, for a scanned page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_confidence: Option<f32>,
}

/// A field's value from its live versions (`newest_first`) and the version it comes from: the
/// newest. For a field a person corrected single elements of (`element_pins`), the newest that
/// a phase computed, with those elements put back over it: the person's own whole-array
/// versions record the decisions, the pins carry them over whatever the phases compute now
/// (without a computed version, the newest of any).
pub fn current<'a, I>(
    newest_first: I,
    element_pins: &[(String, Value)],
) -> (Value, Option<&'a Cell>)
where
    I: Iterator<Item = &'a Cell> + Clone,
{
    let found = match element_pins {
        [] => newest_first.into_iter().next(),
        _ => newest_first
            .clone()
            .find(|c| c.source != "human_review")
            .or_else(|| newest_first.into_iter().next()),
    };
    match found {
        Some(c) if element_pins.is_empty() => (c.value.clone(), Some(c)),
        Some(c) => (
            crate::domain::path::apply_pins(&c.value, element_pins).0,
            Some(c),
        ),
        None => (Value::Null, None),
    }
}

/// Whether a version was written by an extractor (the rules or a model).
pub fn is_extracted(source: &str) -> bool {
    matches!(source, "rules_extraction" | "model_extraction")
}

#[derive(Debug, Clone)]
pub struct NewVerdict {
    pub field: String,
    pub phase_index: usize,
    pub stage_id: String,
    pub outcome: Outcome,
    pub suppressed: bool,
    pub reason: Option<&'static str>,
    pub mechanisms: Vec<gate::MechanismResult>,
    pub value_hash: String,
}

pub struct Step {
    pub phase_index: usize,
    pub kind: crate::domain::rail::PhaseType,
    /// Computation time of the phase, for the metrics.
    pub elapsed: std::time::Duration,
    pub cells: Vec<Cell>,
    pub verdicts: Vec<NewVerdict>,
}
