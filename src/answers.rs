//! The answers of the HTTP API as types. Handlers and engine views build these and serialize
//! them; `GET /openapi.json` derives its schemas from the same types (`utoipa`), so the document
//! and the bytes on the wire come from one definition. Doc comments are the schemas'
//! descriptions. Field names are the wire names: snake_case where API.md has it, camelCase
//! where the Talonic contract does (progress, review answers, decisions).
//!
//! Values that are the user's own data (field values, metadata, rule configs, mechanisms) stay
//! `serde_json::Value`: their shape is whatever the Spec and the document made them.

use crate::domain::cells::Cell;
use crate::domain::schema::FieldDef;
use crate::domain::status::{DocStatus, RunStatus};
pub use crate::store::data_products::DataProduct;
pub use crate::store::gates::GateRow as Gate;
pub use crate::store::review::Decision;
pub use crate::store::schemas::RegistryField;
use crate::store::schemas::SchemaRow;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `{"status": "ok"}` from `/healthz`, `{"status": "ready"}` from `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// On `/readyz`: the id this node claims work under (`name/…`, fresh at each start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An organization's retention of superseded versions.
#[derive(Serialize, ToSchema)]
pub struct Retention {
    /// Days a superseded version is kept after the rerun that superseded it; `null`: for ever.
    pub superseded_versions_days: Option<i64>,
    /// What a purge may remove.
    pub applies_to: String,
    /// When the setting is applied.
    pub runs: String,
}

/// The answer of every delete.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
    pub id: String,
}

/// Where a resource lives.
#[derive(Serialize, ToSchema)]
pub struct SelfLink {
    #[serde(rename = "self")]
    pub self_: String,
}

impl SelfLink {
    pub fn to(path: String) -> Self {
        SelfLink { self_: path }
    }
}

/// A page's position in its list. `limit` is the limit asked: a page of large rows may hold fewer.
#[derive(Serialize, ToSchema)]
pub struct Pagination {
    pub total: i64,
    pub limit: i64,
    pub has_more: bool,
    /// Opaque; give it back as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// One page of a list, newest first unless the operation says otherwise.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// A whole list, not paged (it is bounded by what owns it).
#[derive(Serialize, ToSchema)]
pub struct All<T> {
    pub data: Vec<T>,
}

/// A configured model extractor and its health.
#[derive(Serialize, ToSchema)]
pub struct ModelStatus {
    #[serde(flatten)]
    pub config: crate::models::ModelConfig,
    pub health: crate::models::Health,
}

/// The error envelope of every non-2xx answer.
#[derive(Serialize, ToSchema)]
pub struct Error {
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    #[schema(value_type = String, example = "bad_request")]
    pub code: &'static str,
    /// The status's reason phrase.
    pub error: String,
    /// What was wrong, in words a client can show.
    pub message: String,
    /// Whether the same request may succeed later (429, 5xx).
    pub retryable: bool,
    pub request_id: String,
    pub timestamp: String,
    pub path: String,
    /// Present on 403: the scope the key lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scopes: Option<Vec<String>>,
}

/// A Spec: output fields and the rail of stages they run through.
#[derive(Serialize, ToSchema)]
pub struct Schema {
    #[serde(flatten)]
    pub schema: SchemaRow,
    pub field_count: usize,
    pub links: SelfLink,
}

/// One compiled phase of a rail.
#[derive(Serialize, ToSchema)]
pub struct Phase {
    pub index: usize,
    pub phase_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "extraction")]
    pub kind: &'static str,
    pub name: String,
}

/// A rail as stored and as compiled into phases.
#[derive(Serialize, ToSchema)]
pub struct Rail {
    #[schema(value_type = Vec<Object>)]
    pub rail: Value,
    pub phases: Vec<Phase>,
}

/// What replaying a gate's blocking over stored verdicts changed.
#[derive(Serialize, ToSchema)]
pub struct ReplayAnswer {
    pub replayed: usize,
    #[serde(rename = "newlyBlocked")]
    pub newly_blocked: usize,
    pub released: usize,
}

/// A gate's or rule's judgement of one field in one pass.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub field_key: String,
    pub phase_id: Option<String>,
    pub stage_id: String,
    pub stage_name: Option<String>,
    pub generation: i64,
    pub pass: i64,
    /// `pass`, `fail` or `skip`.
    pub outcome: String,
    pub suppressed: bool,
    pub reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub mechanisms: Value,
}

/// A rule of a data policy.
#[derive(Serialize, ToSchema)]
pub struct Rule {
    pub id: String,
    pub field_key: String,
    pub rule_type: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub order: i64,
}

/// A field a data policy declares.
#[derive(Serialize, ToSchema)]
pub struct PolicyField {
    pub field_key: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub created_at: String,
}

/// A data policy: fields and the rules that resolve them, in compiled order.
#[derive(Serialize, ToSchema)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub version: i64,
    /// `active` or `inactive` (a policy without rules).
    #[schema(value_type = String)]
    pub status: &'static str,
    pub fields: Vec<PolicyField>,
    pub rules: Vec<Rule>,
    pub created_at: String,
    pub updated_at: String,
}

/// A stored document.
#[derive(Serialize, ToSchema)]
pub struct Document {
    pub id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: String,
    /// `completed` once its text is read; `error` when this server could not read it.
    pub status: String,
    /// Why it could not be read (with status `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pages: i64,
    /// What kind of document it calls itself: `invoice`, `receipt`, `credit_note`,
    /// `purchase_order`, `quote`, `contract`; null when nothing says.
    pub type_detected: Option<String>,
    /// ISO 639-1 (`en`, `de`) where the text tells it reliably.
    pub language_detected: Option<String>,
    pub links: DocumentLinks,
    /// On upload: present and true when these bytes were already stored (answered 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// With `?include=text`: the document's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Where a document and its readings live.
#[derive(Serialize, ToSchema)]
pub struct DocumentLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub markdown: String,
}

/// One page of a document's text layer (`GET /v1/documents/{id}/pages/{n}`).
#[derive(Serialize, ToSchema)]
pub struct DocumentPage {
    pub document_id: String,
    #[serde(flatten)]
    pub page: crate::intake::Page,
}

/// A document as Markdown, page by page (`GET /v1/documents/{id}/markdown`).
#[derive(Serialize, ToSchema)]
pub struct DocumentMarkdown {
    pub document_id: String,
    pub pages: Vec<MarkdownPage>,
    /// The pages' Markdown joined, pages apart by a rule.
    pub markdown: String,
}

/// One page's Markdown.
#[derive(Serialize, ToSchema)]
pub struct MarkdownPage {
    pub number: u32,
    pub markdown: String,
}

/// The schema a pipeline runs.
#[derive(Serialize, ToSchema)]
pub struct SchemaRef {
    pub id: String,
    pub name: String,
}

/// Where a pipeline's parts live.
#[derive(Serialize, ToSchema)]
pub struct PipelineLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub progress: String,
    pub results: String,
}

impl PipelineLinks {
    pub fn of(id: &str) -> Self {
        PipelineLinks {
            self_: format!("/v1/pipelines/{id}"),
            progress: format!("/v1/pipelines/{id}/progress"),
            results: format!("/v1/pipelines/{id}/results"),
        }
    }
}

/// A pipeline: one run of a schema over documents.
#[derive(Serialize, ToSchema)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub status: RunStatus,
    pub schema: SchemaRef,
    pub phase_count: i64,
    pub document_count: i64,
    /// On create: how many documents were enqueued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enqueued_documents: Option<i64>,
    pub generation: i64,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
    pub links: PipelineLinks,
}

/// A document of a run.
#[derive(Serialize, ToSchema)]
pub struct PipelineDocument {
    pub id: String,
    pub document_id: String,
    pub filename: String,
    pub status: DocStatus,
    /// The phase it is at while queued or processing.
    pub current_phase_id: Option<String>,
    pub generation: i64,
    pub error: Option<String>,
    /// Why a queued document waits (for a model's answer, or a model server that is down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub updated_at: String,
}

/// Counts of one phase.
#[derive(Serialize, ToSchema)]
pub struct PhaseProgress {
    #[serde(rename = "phaseId")]
    pub phase_id: String,
    pub index: usize,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub completed: i64,
    pub running: i64,
    pub errors: i64,
    pub pending: i64,
}

/// A document that ended in error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressError {
    pub pipeline_document_id: String,
    pub document_id: String,
    pub filename: String,
    pub phase_id: Option<String>,
    pub message: Option<String>,
}

/// Progress of a run and of each phase.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub pipeline_id: String,
    pub status: RunStatus,
    pub generation: i64,
    pub total_documents: i64,
    pub completed_documents: i64,
    pub error_documents: i64,
    pub phases: Vec<PhaseProgress>,
    /// Up to 100 documents in error.
    pub errors: Vec<ProgressError>,
    /// Calls to model servers, tokens and estimated cost, for a run that extracts with a model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<crate::store::models::Usage>,
}

/// A column of the results: a field of the schema.
#[derive(Serialize, ToSchema)]
pub struct Column {
    pub field_key: String,
    pub display_name: String,
    pub data_type: String,
}

/// What a results page says before its rows.
#[derive(Serialize, ToSchema)]
pub struct ResultsHead {
    pub pipeline_id: String,
    pub spec_id: String,
    pub status: RunStatus,
    /// Always `documents`.
    pub view: String,
    pub generated_at: String,
    pub columns: Vec<Column>,
    /// Fields waiting for a reviewer in this run.
    pub pending_review_count: i64,
    /// As in the progress answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_usage: Option<crate::store::models::Usage>,
    pub links: PipelineLinks,
}

/// A flag a gate of warning or info severity left on a field.
#[derive(Serialize, ToSchema)]
pub struct FlagAnswer {
    pub stage_id: String,
    pub severity: String,
    pub reason: String,
}

/// A field's state and the version results show (`include=cells`).
#[derive(Serialize, ToSchema)]
pub struct CellSummary {
    pub status: String,
    pub version: Option<i64>,
    pub source: Option<String>,
    pub confidence: Option<f64>,
    pub phase_id: Option<String>,
    pub flags: Vec<FlagAnswer>,
}

/// One version of a field's cell, with its provenance.
#[derive(Serialize, ToSchema)]
pub struct CellVersion {
    #[serde(flatten)]
    pub cell: Cell,
    pub phase_id: Option<String>,
    /// Whether this version still counts (a later pass or rerun supersedes earlier ones).
    pub live: bool,
    /// Whether this is the version results show.
    pub canonical: bool,
    pub created_at: String,
}

/// One document's row of results: its fields' values as results show them (a held field or
/// one not settled yet is null), and with `include` its cells' states and provenance.
#[derive(Serialize, ToSchema)]
pub struct ResultRow {
    pub pipeline_document_id: String,
    pub document_id: String,
    pub filename: String,
    pub status: DocStatus,
    pub error: Option<String>,
    pub completed_at: Option<String>,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, CellSummary>>)]
    pub cells: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, Vec<CellVersion>>>)]
    pub provenance: Option<Map<String, Value>>,
}

/// A page of results, in input order. Written as it is read (`http::pagination::PageWriter`):
/// the head's fields, then `data`, then `pagination`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ResultsPage {
    #[schema(inline)]
    pub head: ResultsHead,
    pub data: Vec<ResultRow>,
    pub pagination: Pagination,
}

/// Every version of one field.
#[derive(Serialize, ToSchema)]
pub struct FieldCells {
    pub field_key: String,
    pub status: String,
    pub pinned: bool,
    pub canonical_version: Option<i64>,
    pub note: Option<String>,
    pub versions: Vec<CellVersion>,
}

/// Every version of every field of one document.
#[derive(Serialize, ToSchema)]
pub struct Cells {
    pub fields: Vec<FieldCells>,
}

/// What a rerun would do (`dry_run`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RerunPlan {
    pub phases: Vec<String>,
    pub documents: usize,
    /// Fields held at a gate before the restart phase, kept as they are.
    pub kept_blocked_fields: usize,
    /// Human decisions on the documents, all kept.
    pub preserved_decisions: i64,
}

/// The answer of a rerun.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RerunAnswer {
    pub enqueued: usize,
    pub from_phase_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RerunPlan>,
}

/// A rerun in a run's history.
#[derive(Serialize, ToSchema)]
pub struct RerunRecord {
    pub id: String,
    pub generation: i64,
    pub from_phase: String,
    pub from_phase_index: i64,
    pub enqueued: i64,
    /// The subset asked, or null for every document.
    #[schema(value_type = Option<Vec<String>>)]
    pub document_ids: Option<Value>,
    pub requested_at: String,
    pub requested_by: String,
    pub finished_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<Value>,
}

/// The answer of creating (201) or reactivating (200) a data product.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataProductCreated {
    pub data_product: DataProduct,
    /// Sharing is not offered by a self-hosted Quire: always null.
    #[schema(value_type = Option<String>)]
    pub share_token: Option<()>,
}

/// A delivered document's row: values, with held fields null and named in `held`.
#[derive(Serialize, ToSchema)]
pub struct DataProductRow {
    pub pipeline_document_id: String,
    pub document_id: String,
    pub filename: String,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    pub held: Vec<String>,
}

/// A page of a data product's rows (written as it is read, like results).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DataProductPage {
    pub data: Vec<DataProductRow>,
    pub pagination: Pagination,
}

/// The run an item belongs to.
#[derive(Serialize, ToSchema)]
pub struct NamedRef {
    pub id: String,
    pub name: String,
}

/// Where a review item lives and where it is resolved.
#[derive(Serialize, ToSchema)]
pub struct ReviewLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub resolve: String,
}

/// A field held for a reviewer.
#[derive(Serialize, ToSchema)]
pub struct ReviewItem {
    pub pipeline_document_id: String,
    pub field_key: String,
    pub field_display_name: String,
    /// `blocked` or `pending_review`.
    pub status: String,
    /// `gate` or `declarative`.
    pub trigger: Option<String>,
    pub reason: Option<String>,
    pub current_value: Value,
    pub confidence: Option<f64>,
    pub requested_at: Option<String>,
    pub pipeline: NamedRef,
    pub document: NamedRef,
    pub links: ReviewLinks,
}

/// Held fields of one run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineCount {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub count: i64,
}

/// Counts by trigger.
#[derive(Serialize, ToSchema)]
pub struct TriggerCounts {
    pub gate: i64,
    pub declarative: i64,
}

/// The queue's counts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSummary {
    pub total: i64,
    pub by_trigger: TriggerCounts,
    pub by_pipeline: Vec<PipelineCount>,
}

/// One version of the held field, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub cell_version: i64,
    pub source: String,
    pub value: Value,
    pub source_text: Option<String>,
}

/// The document text the value was read from; `approximate` when it was found afterwards. For a
/// PDF, DOCX or image, also where it stands: its page, the value's characters in the page's
/// text (`GET /v1/documents/{id}/pages/{page}`) and, where the page has word boxes, the box
/// around it.
#[derive(Serialize, ToSchema)]
pub struct MatchedSpan {
    pub text: String,
    pub approximate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<usize>,
    /// `[x0, y0, x1, y1]` from the page's top-left corner, in the page's units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
}

impl MatchedSpan {
    /// The span of `text` where extraction placed its value.
    pub fn placed(text: String, p: &crate::domain::cells::Provenance) -> Self {
        MatchedSpan {
            text,
            approximate: false,
            page: Some(p.page),
            start: Some(p.start),
            end: Some(p.end),
            bbox: p.bbox,
        }
    }

    /// The span of `text`, placed on `pages` where they tell where `value` stands.
    pub fn on(
        pages: &[crate::intake::Page],
        text: String,
        value: &Value,
        approximate: bool,
    ) -> Self {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match crate::intake::layout::locate(pages, &text, &shown) {
            Some(p) => MatchedSpan {
                approximate,
                ..MatchedSpan::placed(text, &p)
            },
            None => MatchedSpan {
                text,
                approximate,
                page: None,
                start: None,
                end: None,
                bbox: None,
            },
        }
    }
}

/// A review item with what a reviewer needs to decide.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewDetail {
    pub item: ReviewItem,
    pub field: FieldDef,
    pub cell_history: Vec<HistoryEntry>,
    pub matched_span: Option<MatchedSpan>,
    pub verdicts: Vec<Verdict>,
    pub prior_decisions: Vec<Decision>,
    /// Fields of the document that wait on this one (they depend on it and are held until it
    /// is decided).
    pub waiting_dependents: Vec<String>,
    /// For an array field held by a check on every element: the elements that failed it.
    pub failing_elements: Vec<FailingElement>,
}

/// An element of an array field that failed a gate's check, as it stands now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingElement {
    /// From 0: `lines[index]`.
    pub index: usize,
    #[schema(value_type = Object)]
    pub value: Value,
    /// The table row it was read from, where it was read from one.
    pub row: Option<crate::domain::cells::RowSource>,
}

/// The field after a decision.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolveAnswer {
    pub field_key: String,
    pub status: String,
    pub current_phase_id: Option<String>,
    pub blocked_at_stage_id: Option<String>,
    pub blocked_by_field: Option<String>,
    pub review_trigger: Option<String>,
    pub review_routing: Option<String>,
    pub review_requested_at: Option<String>,
    pub resolve_action: String,
    pub resolved_at: String,
    pub delivered_at: Option<String>,
}

/// One item's outcome in a bulk resolve.
#[derive(Serialize, ToSchema)]
pub struct BulkItemResult {
    pub pipeline_document_id: String,
    pub field_key: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer of a bulk resolve: each item resolved or refused on its own.
#[derive(Serialize, ToSchema)]
pub struct BulkResolveAnswer {
    pub resolved: usize,
    pub failed: usize,
    pub results: Vec<BulkItemResult>,
}

/// A page of the decision log.
#[derive(Serialize, ToSchema)]
pub struct DecisionList {
    pub total: i64,
    pub entries: Vec<Decision>,
    pub pagination: Pagination,
}

// ---- The quick tier (Talonic's /v1/extract, /v1/extractions, /v1/jobs) ----

/// The document an extraction read.
#[derive(Serialize, ToSchema)]
pub struct ExtractionDocument {
    pub id: String,
    pub filename: String,
    /// Pages of a PDF or image; 1 for a text document.
    pub pages: i64,
    pub size_bytes: i64,
    pub mime_type: String,
    pub type_detected: Option<String>,
    pub language_detected: Option<String>,
}

/// How sure the extractor was: per field with a value, and their mean.
#[derive(Serialize, ToSchema)]
pub struct ExtractionConfidence {
    pub overall: Option<f64>,
    /// Field name → confidence (0–1); a corrected field is 1.0.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ExtractionProcessing {
    pub duration_ms: i64,
    pub pages_processed: i64,
}

/// The spec an extraction ran: `inline` (given with the request) or `saved` (a schema id).
#[derive(Serialize, ToSchema)]
pub struct ExtractionSchema {
    pub source: String,
    pub id: String,
    #[schema(value_type = Object)]
    pub definition: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ExtractionLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub data: String,
    pub document: String,
}

/// Where to poll an extraction answered before it finished (`202`).
#[derive(Serialize, ToSchema)]
pub struct ExtractionJob {
    pub id: String,
    /// `queued` or `processing`.
    pub status: String,
    pub poll_url: String,
    pub estimated_seconds: i64,
}

/// An extraction: one document run through the quick tier's rail.
#[derive(Serialize, ToSchema)]
pub struct Extraction {
    pub id: String,
    /// The same as `id` (Talonic's synchronous answer names it so).
    pub extraction_id: String,
    /// The request that created it, on `POST /v1/extract` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `processing`, `complete` or `failed`.
    pub status: String,
    pub document: ExtractionDocument,
    /// Field name → value; null while processing, when not found, or when the run failed.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub confidence: ExtractionConfidence,
    /// Fields corrected by a person (pinned at confidence 1.0).
    pub locked_fields: Vec<String>,
    pub schema: ExtractionSchema,
    pub processing: ExtractionProcessing,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The document as Markdown, when asked for with `include_markdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// Field name → where its value was read (page, span, box), with `include_provenance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<Map<String, Value>>,
    /// On a `202`: where to poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<ExtractionJob>,
    pub created_at: String,
    pub links: ExtractionLinks,
}

#[derive(Serialize, ToSchema)]
pub struct ExtractionItemLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub document: String,
}

/// An extraction in a list.
#[derive(Serialize, ToSchema)]
pub struct ExtractionListItem {
    pub id: String,
    pub status: String,
    pub document_id: String,
    pub document_filename: String,
    pub confidence_overall: Option<f64>,
    pub created_at: String,
    pub links: ExtractionItemLinks,
}

/// How full a job's grid of documents × fields is.
#[derive(Serialize, ToSchema)]
pub struct GridStats {
    pub total_cells: i64,
    pub filled: i64,
    pub empty: i64,
    /// `filled / total_cells`, 0 for an empty grid.
    pub fill_rate: f64,
}

#[derive(Serialize, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub results: String,
    /// Present while the job can be cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
    /// The run behind the job, with Quire's own views of it.
    pub pipeline: String,
}

/// A job: a run of the quick tier's rail over many documents.
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub name: String,
    /// `queued`, `processing`, `complete` or `failed`.
    pub status: String,
    /// 0–100: documents finished (or errored) of all.
    pub progress: i64,
    pub schema: SchemaRef,
    pub document_count: i64,
    pub completed_documents: i64,
    pub grid_stats: GridStats,
    /// While running: `phase_1_resolve` (the Field Registry) or `phase_2_execute`
    /// (extraction); then `completed` or `error`.
    pub current_phase: String,
    /// Present when the job failed or was cancelled.
    pub error: Option<JobError>,
    /// On creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub links: JobLinks,
}

/// One document's row of a job's results.
#[derive(Serialize, ToSchema)]
pub struct JobResultRow {
    /// The pipeline document's id.
    pub id: String,
    pub document_id: String,
    pub filename: String,
    /// `queued`, `processing`, `complete`, `partial` or `error`.
    pub status: DocStatus,
    #[schema(value_type = Object)]
    pub values: Map<String, Value>,
    /// Mean confidence of the row's values.
    pub confidence: Option<f64>,
    #[schema(value_type = Vec<Object>)]
    pub validation_flags: Vec<Value>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobResultsLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub job: String,
}

/// `GET /v1/jobs/{id}/results`.
#[derive(Serialize, ToSchema)]
pub struct JobResults {
    pub job_id: String,
    pub job_status: String,
    pub schema: SchemaRef,
    pub total_rows: i64,
    pub data: Vec<JobResultRow>,
    pub links: JobResultsLinks,
}

/// A field of the Field Registry as Talonic's clients read it.
#[derive(Serialize, ToSchema, Clone)]
pub struct Field {
    pub id: String,
    pub canonical_name: String,
    pub display_name: String,
    pub data_type: String,
    pub synonyms: Vec<String>,
    /// Quire's registry has one tier: every field is tier 1.
    pub tier: i64,
    /// The lexicon group the field belongs to (`invoice number`, `total`, …), if any.
    pub cluster_name: Option<String>,
    /// How many schemas use it.
    pub occurrence_count: i64,
    pub created_at: String,
    /// An array field's sub-fields (each element of its value is an object of these).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<crate::domain::schema::FieldDef>>,
    pub links: FieldLinks,
}

#[derive(Serialize, ToSchema, Clone)]
pub struct FieldLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub similar: String,
}

/// A field like another, and how alike (0–1).
#[derive(Serialize, ToSchema)]
pub struct SimilarField {
    #[serde(flatten)]
    pub field: Field,
    pub similarity: f64,
}

/// `GET /v1/fields/{id}/similar`.
#[derive(Serialize, ToSchema)]
pub struct SimilarFields {
    pub field_id: String,
    pub data: Vec<SimilarField>,
}

/// A document found by `GET /v1/search`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchDocument {
    pub id: String,
    /// Its filename.
    pub name: String,
}

/// Extracted values that contain the query, by field and value.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchFieldMatch {
    /// The Field Registry's id of the field, when it has one.
    pub resolved_field_id: Option<String>,
    pub field_name: String,
    pub display_name: String,
    pub matched_value: String,
    pub document_count: i64,
    pub data_type: Option<String>,
    /// Usable as a `fieldId` of `POST /v1/documents/filter`.
    pub filterable: bool,
}

/// A schema found by `GET /v1/search`.
#[derive(Serialize, ToSchema)]
pub struct SearchSchema {
    pub id: String,
    pub name: String,
}

/// A registry field found by `GET /v1/search`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchField {
    pub id: Option<String>,
    pub canonical_name: String,
    pub display_name: String,
    pub document_count: Option<i64>,
    pub filterable: bool,
    pub data_type: Option<String>,
}

/// `GET /v1/search`: every collection, empty arrays where nothing matched. `sources` is always
/// empty: Quire has no source connections.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchAnswer {
    pub documents: Vec<SearchDocument>,
    pub field_matches: Vec<SearchFieldMatch>,
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<Value>,
    pub schemas: Vec<SearchSchema>,
    pub fields: Vec<SearchField>,
}

/// A document that passed `POST /v1/documents/filter`, with its current values.
#[derive(Serialize, ToSchema)]
pub struct FilteredDocument {
    pub document_id: String,
    pub filename: String,
    /// Its latest delivered run's values.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

/// A condition that could not mean what it says (an ordering on text, an unknown field).
#[derive(Serialize, ToSchema)]
pub struct FilterWarning {
    pub code: String,
    pub message: String,
    pub field: String,
}

/// `POST /v1/documents/filter`: one page of the matching documents.
#[derive(Serialize, ToSchema)]
pub struct FilterAnswer {
    pub data: Vec<FilteredDocument>,
    pub total: i64,
    /// 1-based.
    pub page: i64,
    pub pagination: FilterPagination,
    pub warnings: Vec<FilterWarning>,
}

/// Pages of a filter are numbered (`page`), not cursors.
#[derive(Serialize, ToSchema)]
pub struct FilterPagination {
    pub total: i64,
    pub limit: i64,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// `GET /v1/credits/balance`: a self-hosted Quire charges nothing.
#[derive(Serialize, ToSchema)]
pub struct CreditBalance {
    pub balance_credits: f64,
    pub balance_eur: f64,
    pub burn_rate_30d_credits: f64,
    /// -1: nothing is consumed.
    pub projected_runway_days: f64,
    /// `self_hosted`.
    pub tier: String,
    /// The first day of next month (UTC).
    pub tier_resets_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct UsagePeriod {
    pub from: String,
    pub to: String,
}

/// Model tokens and calls.
#[derive(Serialize, ToSchema)]
pub struct UsageTotals {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Always 0: Quire does not use a provider's prompt cache.
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub calls: i64,
    /// From the models' configured prices per 1,000 tokens.
    pub cost_estimate_usd: f64,
}

/// Model usage of one kind of run and one model.
#[derive(Serialize, ToSchema)]
pub struct UsageBreakdown {
    /// `extraction`, `job` or `pipeline`.
    pub operation_type: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub calls: i64,
    pub cost_estimate_usd: f64,
}

/// Work of one kind in the period, and the credits it cost (none).
#[derive(Serialize, ToSchema)]
pub struct UsageByFunction {
    /// `extraction`, `job` or `pipeline`.
    pub operation_type: String,
    /// Runs started.
    pub operations: i64,
    pub credits: f64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageLinks {
    #[serde(rename = "self")]
    pub self_: String,
}

/// `GET /v1/usage?days=N`.
#[derive(Serialize, ToSchema)]
pub struct UsageAnswer {
    pub period: UsagePeriod,
    pub period_days: i64,
    pub totals: UsageTotals,
    pub breakdown: Vec<UsageBreakdown>,
    pub total_credits: f64,
    pub by_function: Vec<UsageByFunction>,
    pub links: UsageLinks,
}

/// What one unit of work costs (nothing, self-hosted).
#[derive(Serialize, ToSchema)]
pub struct PriceUnit {
    pub unit: String,
    pub label: String,
    pub credits: f64,
    pub eur: f64,
    pub free: bool,
}

/// `GET /v1/pricing`.
#[derive(Serialize, ToSchema)]
pub struct Pricing {
    pub currency: String,
    pub credits_per_eur: f64,
    #[schema(value_type = Object)]
    pub multipliers: Map<String, Value>,
    pub units: Vec<PriceUnit>,
}

/// A webhook endpoint. `secret` is present only in the answers of create and rotate-secret.
#[derive(Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Event names, or `*` for every event.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    /// `active`, `inactive` (turned off by a PATCH) or `disabled` (turned off after failing;
    /// `disabled_reason` says why).
    pub status: &'static str,
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed, while it keeps failing.
    pub failing_since: Option<String>,
    /// The signing secret (`whsec_…`), shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// After a rotation, until when the previous secret signs as well.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub links: WebhookLinks,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub deliveries: String,
}

/// One delivery of one event to one endpoint: the same id over every attempt.
#[derive(Serialize, ToSchema)]
pub struct WebhookDelivery {
    pub id: String,
    pub event: String,
    pub event_id: String,
    /// `pending` (due again at `next_attempt_at`), `delivered` or `failed` (the schedule is spent).
    pub status: String,
    pub attempts: i64,
    /// The last attempt's HTTP status, when the receiver answered.
    pub response_code: Option<i64>,
    pub latency_ms: Option<i64>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The start of the receiver's answer to the last failed attempt.
    pub response_body: Option<String>,
    pub next_attempt_at: Option<String>,
    /// The delivery this one sends again.
    pub redelivery_of: Option<String>,
    /// The event's data, for a delivery that has not been delivered.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

/// An event a webhook may subscribe to.
#[derive(Serialize, ToSchema)]
pub struct WebhookEventType {
    pub event: String,
    pub description: String,
}
