//! `GET /openapi.json`: the OpenAPI 3.1 description of the whole surface. The schemas are
//! derived (`utoipa`) from the types the handlers parse and answer with (`crate::answers`, the
//! request bodies); the operations come from the router's route table, one line each below, so
//! the document cannot fall behind the router (a test checks every route is described) nor
//! behind the answers (they are the same types).

use super::data_products::{CreateBody as DataProductInput, ReplayBody};
use super::documents::InlineDocument;
use super::gates::{GateBody, ReorderBody};
use super::pipelines::CreateBody as PipelineInput;
use super::policies::{FieldBody, PolicyBody, RuleBody};
use super::quick::{CorrectionsBody, ExtractBody, JobBody, ReExtractBody};
use super::requests::{BulkResolveBody, RerunBody, ResolveBody};
use super::schemas::{RailBody, SchemaBody};
use super::search::FilterBody;
use super::webhooks::{RotateBody, WebhookBody};
use super::{PUBLIC_ROUTES, ROUTES};
use crate::answers::*;
use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema as Oas};
use utoipa::ToSchema;

/// A schema to place in an operation, with the named schemas it refers to.
struct Part {
    schema: Value,
    components: Vec<(String, RefOr<Oas>)>,
}

/// `T` by reference, registered under its name.
fn named<T: ToSchema>() -> Part {
    let mut components = Vec::new();
    T::schemas(&mut components);
    components.push((T::name().into_owned(), T::schema()));
    Part {
        schema: json!({ "$ref": format!("#/components/schemas/{}", T::name()) }),
        components,
    }
}

/// `T` written out in place: generic wrappers such as `Page<T>`, whose name is not unique.
fn inline<T: ToSchema>() -> Part {
    let mut components = Vec::new();
    T::schemas(&mut components);
    Part {
        schema: json!(T::schema()),
        components,
    }
}

/// A generic wrapper (`Page<T>`, `All<T>`) written out in place, with `T` registered by name.
fn wrapped<W: ToSchema, T: ToSchema>() -> Part {
    let mut part = inline::<W>();
    part.components.extend(named::<T>().components);
    part
}

/// A page of `T`.
fn page_of<T: ToSchema>() -> Part {
    wrapped::<Page<T>, T>()
}

/// A whole list of `T`.
fn all_of<T: ToSchema>() -> Part {
    wrapped::<All<T>, T>()
}

/// `part` with `fields` required: one body type serves create (which requires them) and patch.
fn requiring(mut part: Part, fields: &[&str]) -> Part {
    part.schema = json!({ "allOf": [part.schema], "required": fields });
    part
}

/// `part` where at least one of `keys` must be present.
fn any_of(mut part: Part, keys: &[&str]) -> Part {
    part.schema = json!({ "allOf": [part.schema], "anyOf": keys.iter().map(|k| json!({ "required": [k] })).collect::<Vec<_>>() });
    part
}

/// `part` where exactly one of `keys` must be present.
fn one_of(mut part: Part, keys: &[&str]) -> Part {
    part.schema["oneOf"] = keys.iter().map(|k| json!({ "required": [k] })).collect();
    part
}

fn plain(schema: Value) -> Part {
    Part {
        schema,
        components: Vec::new(),
    }
}

/// A strict body (unknown fields refused) also takes the camelCase form of each field, as
/// API.md documents; serde's aliases are not visible to the derive.
fn with_camel_aliases(schema: &mut Value) {
    if schema["additionalProperties"] != json!(false) {
        return;
    }
    let Some(props) = schema["properties"].as_object_mut() else {
        return;
    };
    let aliases: Vec<(String, Value)> = props
        .iter()
        .filter(|(k, _)| k.contains('_'))
        .map(|(k, v)| {
            let mut parts = k.split('_');
            let first = parts.next().unwrap_or_default().to_string();
            let camel = parts.fold(first, |mut acc, p| {
                let mut cs = p.chars();
                if let Some(c) = cs.next() {
                    acc.extend(c.to_uppercase());
                    acc.push_str(cs.as_str());
                }
                acc
            });
            (camel, v.clone())
        })
        .collect();
    props.extend(aliases);
}

/// Query parameters.
fn q(name: &str, schema: Value, what: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": what })
}

fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn enum_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn page_params(max: i64) -> Vec<Value> {
    vec![
        q(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": max}),
            "page size",
        ),
        q(
            "cursor",
            json!({"type": "string"}),
            "opaque cursor from pagination.next_cursor",
        ),
    ]
}

struct Op {
    summary: &'static str,
    tag: &'static str,
    query: Vec<Value>,
    body: Option<(bool, Vec<(&'static str, Part)>)>,
    answers: Vec<(u16, &'static str, &'static str, Part)>,
}

fn op(summary: &'static str, tag: &'static str) -> Op {
    Op {
        summary,
        tag,
        query: Vec::new(),
        body: None,
        answers: Vec::new(),
    }
}

impl Op {
    fn query(mut self, params: Vec<Value>) -> Self {
        self.query.extend(params);
        self
    }
    fn page(self, max: i64) -> Self {
        self.query(page_params(max))
    }
    fn body(mut self, part: Part) -> Self {
        self.body = Some((true, vec![("application/json", part)]));
        self
    }
    /// A body that may be left out.
    fn optional_body(mut self, part: Part) -> Self {
        self.body = Some((false, vec![("application/json", part)]));
        self
    }
    fn answer(mut self, status: u16, what: &'static str, part: Part) -> Self {
        self.answers.push((status, what, "application/json", part));
        self
    }
    fn ok(self, what: &'static str, part: Part) -> Self {
        self.answer(200, what, part)
    }
    fn csv(mut self, what: &'static str) -> Self {
        let text = plain(json!({ "type": "string" }));
        self.answers.push((200, what, "text/csv", text));
        self
    }
}

/// The operation of one route and method, or `None` when it is not described (a test fails).
fn describe(method: &str, path: &str) -> Option<Op> {
    let o = match (method, path) {
        ("GET", "/healthz") => {
            op("Liveness", "operations").ok("the process answers", named::<Health>())
        }
        ("GET", "/readyz") => op(
            "Readiness: migrated, recovered, executor running, storage writable",
            "operations",
        )
        .ok("ready", named::<Health>()),
        ("GET", "/metrics") => {
            let mut o = op("Prometheus metrics (text exposition format)", "operations");
            o.answers.push((
                200,
                "metrics",
                "text/plain",
                plain(json!({ "type": "string" })),
            ));
            o
        }
        ("GET", "/openapi.json") => {
            op("This document", "operations").ok("OpenAPI 3.1", plain(json!({ "type": "object" })))
        }
        ("GET", "/v1/schemas") => op("List schemas, newest first", "schemas")
            .page(100)
            .ok("a page", page_of::<Schema>()),
        ("POST", "/v1/schemas") => op("Create a schema", "schemas")
            .body(one_of(
                requiring(named::<SchemaBody>(), &["name"]),
                &["definition", "fields"],
            ))
            .answer(201, "created", named::<Schema>()),
        ("GET", "/v1/schemas/{id}") => {
            op("Get a schema", "schemas").ok("the schema", named::<Schema>())
        }
        ("PUT", "/v1/schemas/{id}") => op(
            "Replace what the body names among name, description and fields; keep the rest",
            "schemas",
        )
        .body(any_of(
            named::<SchemaBody>(),
            &["name", "description", "definition", "fields"],
        ))
        .ok("replaced", named::<Schema>()),
        ("PATCH", "/v1/schemas/{id}") => op("Merge into a schema", "schemas")
            .body(named::<SchemaBody>())
            .ok("merged", named::<Schema>()),
        ("DELETE", "/v1/schemas/{id}") => {
            op("Soft-delete a schema", "schemas").ok("deleted", named::<Deleted>())
        }
        ("GET", "/v1/schemas/{id}/rail") => {
            op("The rail and its compiled phases", "schemas").ok("the rail", named::<Rail>())
        }
        ("PUT", "/v1/schemas/{id}/rail") => op("Replace the rail", "schemas")
            .body(requiring(named::<RailBody>(), &["rail"]))
            .ok("replaced", named::<Rail>()),
        ("GET", "/v1/schemas/{id}/validation-stages") => {
            op("List gates by ordinal", "gates").ok("all gates", all_of::<Gate>())
        }
        ("POST", "/v1/schemas/{id}/validation-stages") => op("Create a gate", "gates")
            .body(requiring(named::<GateBody>(), &["name", "severity"]))
            .answer(201, "created", named::<Gate>()),
        ("POST", "/v1/schemas/{id}/validation-stages/reorder") => op("Reorder gates", "gates")
            .body(requiring(named::<ReorderBody>(), &["stage_ids"]))
            .ok("new order", all_of::<Gate>()),
        ("GET", "/v1/schemas/{id}/validation-stages/{stage_id}") => {
            op("Get a gate", "gates").ok("the gate", named::<Gate>())
        }
        ("PATCH", "/v1/schemas/{id}/validation-stages/{stage_id}") => op("Change a gate", "gates")
            .body(named::<GateBody>())
            .ok("changed", named::<Gate>()),
        ("DELETE", "/v1/schemas/{id}/validation-stages/{stage_id}") => {
            op("Delete a gate", "gates").ok("deleted", named::<Deleted>())
        }
        ("POST", "/v1/schemas/{id}/validation-stages/{stage_id}/replay-blocking") => {
            op("Replay a gate's blocking over stored verdicts", "gates")
                .optional_body(named::<ReplayBody>())
                .ok("replayed", named::<ReplayAnswer>())
        }
        ("GET", "/v1/data-policies") => op("List data policies", "policies")
            .page(100)
            .ok("a page", page_of::<Policy>()),
        ("POST", "/v1/data-policies") => op("Create a data policy", "policies")
            .body(requiring(named::<PolicyBody>(), &["name"]))
            .answer(201, "created", named::<Policy>()),
        ("GET", "/v1/data-policies/{id}") => {
            op("Get a policy with fields and rules", "policies").ok("the policy", named::<Policy>())
        }
        ("PATCH", "/v1/data-policies/{id}") => op("Change name or description", "policies")
            .body(named::<PolicyBody>())
            .ok("changed", named::<Policy>()),
        ("DELETE", "/v1/data-policies/{id}") => {
            op("Delete a policy", "policies").ok("deleted", named::<Deleted>())
        }
        ("POST", "/v1/data-policies/{id}/fields") => op("Add a field to a policy", "policies")
            .body(requiring(named::<FieldBody>(), &["field_key"]))
            .answer(201, "added", named::<Policy>()),
        ("DELETE", "/v1/data-policies/{id}/fields/{field_key}") => {
            op("Remove a field from a policy", "policies").ok("removed", named::<Policy>())
        }
        ("GET", "/v1/data-policies/{id}/rules") => {
            op("A policy's rules in compiled order", "policies").ok("all rules", all_of::<Rule>())
        }
        ("POST", "/v1/data-policies/{id}/rules") => op("Add a rule", "policies")
            .body(requiring(named::<RuleBody>(), &["field_key", "rule_type"]))
            .answer(201, "added", named::<Rule>()),
        ("PATCH", "/v1/data-policies/{id}/rules/{rule_id}") => {
            op("Change a rule's config", "policies")
                .body(requiring(named::<RuleBody>(), &["config"]))
                .ok("changed", named::<Rule>())
        }
        ("DELETE", "/v1/data-policies/{id}/rules/{rule_id}") => {
            op("Delete a rule", "policies").ok("deleted", named::<Deleted>())
        }
        ("GET", "/v1/pipelines") => op("List pipelines", "pipelines")
            .page(100)
            .query(vec![
                q(
                    "status",
                    enum_of(&["active", "completed", "failed", "cancelled"]),
                    "filter by status",
                ),
                q("schema_id", uuid(), "filter by schema"),
            ])
            .ok("a page", page_of::<Pipeline>()),
        ("POST", "/v1/pipelines") => op("Create and start a pipeline", "pipelines")
            .body(requiring(named::<PipelineInput>(), &["schema_id"]))
            .answer(201, "started", named::<Pipeline>()),
        ("GET", "/v1/pipelines/{id}") => {
            op("Get a pipeline", "pipelines").ok("the run", named::<Pipeline>())
        }
        ("POST", "/v1/pipelines/{id}/cancel") => {
            op("Cancel every queued or processing document", "pipelines")
                .optional_body(plain(json!({ "type": "object" })))
                .ok("cancelled", named::<Pipeline>())
        }
        ("POST", "/v1/pipelines/{id}/rerun") => {
            op("Rerun a finished run from a phase", "pipelines")
                .body(named::<RerunBody>())
                .ok("enqueued, or the dry-run plan", named::<RerunAnswer>())
        }
        ("GET", "/v1/pipelines/{id}/reruns") => {
            op("Rerun history, newest first", "pipelines").ok("all reruns", all_of::<RerunRecord>())
        }
        ("GET", "/v1/pipelines/{id}/progress") => {
            op("Progress per run and per phase", "pipelines").ok("progress", named::<Progress>())
        }
        ("GET", "/v1/pipelines/{id}/documents") => {
            op("The run's documents in input order", "pipelines")
                .page(100)
                .ok("a page", page_of::<PipelineDocument>())
        }
        ("GET", "/v1/pipelines/{id}/results") => op("Results in input order", "pipelines")
            .page(200)
            .query(vec![
                q("document_id", uuid(), "one document"),
                q("include", json!({"type": "string"}), "cells,provenance"),
            ])
            .ok("a page of results", named::<ResultsPage>()),
        ("GET", "/v1/pipelines/{id}/documents/{pd_id}/cells") => {
            op("Every version of every field", "pipelines").ok("versions", named::<Cells>())
        }
        ("GET", "/v1/pipelines/{id}/documents/{pd_id}/verdicts") => {
            op("Every verdict of a document", "pipelines").ok("verdicts", all_of::<Verdict>())
        }
        ("GET", "/v1/pipelines/{id}/documents/{pd_id}/calls") => {
            op("Every call to a model server for a document", "pipelines")
                .ok("calls", all_of::<crate::store::models::Call>())
        }
        ("GET", "/v1/models") => op("The model extractors configured on this server", "models").ok(
            "models and their health",
            all_of::<crate::answers::ModelStatus>(),
        ),
        ("POST", "/v1/pipelines/{id}/data-product") => op(
            "Create or reactivate the run's data product",
            "data products",
        )
        .optional_body(named::<DataProductInput>())
        .answer(201, "created", named::<DataProductCreated>())
        .ok("reactivated", named::<DataProductCreated>()),
        ("GET", "/v1/data-products") => op("List data products", "data products")
            .page(100)
            .ok("a page", page_of::<DataProduct>()),
        ("GET", "/v1/data-products/{id}") => {
            op("Get a data product", "data products").ok("the data product", named::<DataProduct>())
        }
        ("GET", "/v1/data-products/{id}/results") => op("Data product rows", "data products")
            .page(100)
            .ok("a page", named::<DataProductPage>()),
        ("GET", "/v1/data-products/{id}/export/plain") => {
            op("Plain CSV export", "data products").csv("CSV, UTF-8 with BOM")
        }
        ("GET", "/v1/data-products/{id}/export/audit") => {
            op("Audit CSV export", "data products").csv("CSV, UTF-8 with BOM")
        }
        ("GET", "/v1/data-products/{id}/export/lines") => {
            op("Line-items CSV export: one row per element of each array field", "data products")
                .csv("CSV, UTF-8 with BOM")
        }
        ("GET", "/v1/field-reviews") => op("The review queue, newest first (or oldest)", "reviews")
            .page(100)
            .query(vec![
                q("pipeline_id", uuid(), "one run"),
                q(
                    "field_key",
                    json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}),
                    "one field",
                ),
                q("stage_id", uuid(), "held by one gate"),
                q(
                    "order",
                    enum_of(&["asc", "desc"]),
                    "oldest (asc) or newest (desc, default) first",
                ),
                q("trigger", enum_of(&["gate", "declarative"]), "trigger"),
                q("status", enum_of(&["blocked", "pending_review"]), "status"),
                q("routing", enum_of(&["hold"]), "held fields instead"),
            ])
            .ok("a page", page_of::<ReviewItem>()),
        ("GET", "/v1/field-reviews/summary") => {
            op("Queue counts", "reviews").ok("summary", named::<ReviewSummary>())
        }
        ("POST", "/v1/field-reviews/bulk-resolve") => {
            op("Resolve many items, each on its own", "reviews")
                .body(named::<BulkResolveBody>())
                .ok("per-item results", named::<BulkResolveAnswer>())
        }
        ("GET", "/v1/field-reviews/decisions") => op("The decision log, newest first", "reviews")
            .page(100)
            .query(vec![q("pipeline_id", uuid(), "one run")])
            .ok("a page", named::<DecisionList>()),
        ("GET", "/v1/field-reviews/decisions/export") => op("The decision log as CSV", "reviews")
            .query(vec![q("pipeline_id", uuid(), "one run")])
            .csv("CSV, UTF-8 with BOM"),
        ("GET", "/v1/field-reviews/{pd_id}/{field_key}") => {
            op("One review item in detail", "reviews").ok("detail", named::<ReviewDetail>())
        }
        ("POST", "/v1/field-reviews/{pd_id}/{field_key}/resolve") => {
            op("Resolve one field", "reviews")
                .body(named::<ResolveBody>())
                .ok("the field after the decision", named::<ResolveAnswer>())
        }
        ("GET", "/v1/fields") => op("The Field Registry", "schemas")
            .page(100)
            .query(vec![
                q(
                    "search",
                    json!({"type": "string"}),
                    "a substring of a name, any case",
                ),
                q("tier", json!({"type": "integer"}), "every field is tier 1"),
                q(
                    "cluster",
                    json!({"type": "string"}),
                    "a lexicon group, e.g. invoice number",
                ),
            ])
            .ok("a page", page_of::<Field>()),
        ("GET", "/v1/fields/{id}") => {
            op("One field of the Field Registry", "schemas").ok("the field", named::<Field>())
        }
        ("GET", "/v1/fields/{id}/similar") => {
            op("Fields like this one, most alike first", "schemas")
                .query(vec![q(
                    "limit",
                    json!({"type": "integer", "minimum": 1, "maximum": 100}),
                    "at most this many (default 10)",
                )])
                .ok("similar fields", named::<SimilarFields>())
        }
        ("GET", "/v1/documents") => op("List documents", "documents")
            .page(100)
            .query(vec![
                q(
                    "status",
                    enum_of(&["pending", "processing", "completed", "error"]),
                    "status",
                ),
                q(
                    "search",
                    json!({"type": "string"}),
                    "a substring of the filename",
                ),
                q(
                    "after",
                    json!({"type": "string"}),
                    "created after (RFC 3339 or a date)",
                ),
                q(
                    "before",
                    json!({"type": "string"}),
                    "created before (RFC 3339 or a date)",
                ),
                q("source_id", uuid(), "the source_id its metadata names"),
                q(
                    "order",
                    enum_of(&["asc", "desc"]),
                    "newest (desc, default) or oldest first",
                ),
            ])
            .ok("a page", page_of::<Document>()),
        ("POST", "/v1/documents/filter") => op(
            "Documents whose current extracted values meet every condition",
            "documents",
        )
        .optional_body(named::<FilterBody>())
        .ok("a page of matching documents", named::<FilterAnswer>()),
        ("GET", "/v1/search") => op(
            "Documents, values, schemas and fields containing a text",
            "documents",
        )
        .query(vec![
            q("q", json!({"type": "string"}), "the text"),
            q("query", json!({"type": "string"}), "the text (alias of q)"),
            q(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 100}),
                "per collection",
            ),
        ])
        .ok("matches", named::<SearchAnswer>()),
        ("POST", "/v1/extract") => {
            let upload = plain(
                json!({ "type": "object", "required": ["file"], "properties": {
                "file": { "type": "string", "contentMediaType": "application/octet-stream" },
                "schema": { "type": "string", "description": "the schema as JSON text" },
                "schema_id": { "type": "string" },
                "include_markdown": { "type": "string", "enum": ["true", "false"] },
                "include_provenance": { "type": "string", "enum": ["true", "false"] },
                "options": { "type": "string", "description": "JSON text, e.g. {\"async\": true}" } } }),
            );
            let mut o = op(
                "Extract a document: answered with its values (at most 5 pages) or 202 and a poll URL",
                "extractions",
            )
            .ok("extracted", named::<Extraction>())
            .answer(202, "accepted: poll links.self", named::<Extraction>());
            o.body = Some((
                true,
                vec![
                    ("application/json", named::<ExtractBody>()),
                    ("multipart/form-data", upload),
                ],
            ));
            o
        }
        ("GET", "/v1/extractions") => op("List extractions, newest first", "extractions")
            .page(100)
            .query(vec![
                q("document_id", uuid(), "one document's"),
                q(
                    "status",
                    enum_of(&["processing", "complete", "failed"]),
                    "status",
                ),
            ])
            .ok("a page", page_of::<ExtractionListItem>()),
        ("GET", "/v1/extractions/{id}") => {
            op("Get an extraction", "extractions").ok("the extraction", named::<Extraction>())
        }
        ("GET", "/v1/extractions/{id}/data") => op("An extraction's values", "extractions")
            .query(vec![q(
                "format",
                enum_of(&["json", "csv"]),
                "json (default) or csv",
            )])
            .ok(
                "the values: field name to value",
                plain(json!({ "type": "object" })),
            )
            .csv("one row, UTF-8 with BOM"),
        ("PATCH", "/v1/extractions/{id}/data") => op(
            "Correct values: each a human version, locked at confidence 1.0, and a decision",
            "extractions",
        )
        .body(named::<CorrectionsBody>())
        .ok(
            "the extraction after the corrections",
            named::<Extraction>(),
        ),
        ("POST", "/v1/documents/{id}/re-extract") => op(
            "Extract a stored document again (its latest extraction's schema unless one is given)",
            "extractions",
        )
        .optional_body(named::<ReExtractBody>())
        .ok("extracted", named::<Extraction>())
        .answer(202, "accepted: poll links.self", named::<Extraction>()),
        ("GET", "/v1/documents/{id}/extractions") => op("A document's extractions", "extractions")
            .page(100)
            .query(vec![q(
                "status",
                enum_of(&["processing", "complete", "failed"]),
                "status",
            )])
            .ok("a page", page_of::<ExtractionListItem>()),
        ("POST", "/v1/jobs") => op("Start a job: the quick tier over many documents", "jobs")
            .body(requiring(named::<JobBody>(), &["schema_id"]))
            .answer(201, "started", named::<Job>()),
        ("GET", "/v1/jobs") => op("List jobs, newest first", "jobs")
            .page(100)
            .query(vec![q(
                "status",
                enum_of(&[
                    "pending",
                    "queued",
                    "processing",
                    "complete",
                    "completed",
                    "failed",
                ]),
                "status",
            )])
            .ok("a page", page_of::<Job>()),
        ("GET", "/v1/jobs/{id}") => op("Get a job", "jobs").ok("the job", named::<Job>()),
        ("GET", "/v1/jobs/{id}/results") => {
            op("A job's values, one row per document", "jobs").ok("results", named::<JobResults>())
        }
        ("POST", "/v1/jobs/{id}/cancel") => op(
            "Cancel a job (a finished one is answered unchanged)",
            "jobs",
        )
        .ok("the job", named::<Job>()),
        ("GET", "/v1/credits/balance") => op(
            "Credit balance (a self-hosted Quire charges nothing)",
            "account",
        )
        .ok("the balance", named::<CreditBalance>()),
        ("GET", "/v1/usage") => op("Runs and model usage over the last days", "account")
            .query(vec![q(
                "days",
                json!({"type": "integer", "minimum": 1, "maximum": 365}),
                "the period (default 30)",
            )])
            .ok("usage", named::<UsageAnswer>()),
        ("POST", "/v1/webhooks") => op(
            "Create a webhook (its secret is shown only here)",
            "webhooks",
        )
        .body(requiring(named::<WebhookBody>(), &["url", "events"]))
        .answer(201, "created, with its secret", named::<Webhook>()),
        ("GET", "/v1/webhooks") => op("List webhooks, newest first", "webhooks")
            .page(100)
            .ok("a page of webhooks", page_of::<Webhook>()),
        ("GET", "/v1/webhooks/events") => op("The events a webhook can subscribe to", "webhooks")
            .ok("the events", all_of::<WebhookEventType>()),
        ("GET", "/v1/webhooks/delivery") => op("How events are delivered", "webhooks")
            .ok("delivery behaviour", plain(json!({"type": "object"}))),
        ("GET", "/v1/webhooks/signatures") => op("How deliveries are signed", "webhooks")
            .ok("the signature scheme", plain(json!({"type": "object"}))),
        ("GET", "/v1/settings/retention") => op(
            "How long versions that reruns superseded are kept",
            "settings",
        )
        .ok("the setting", named::<Retention>()),
        ("PUT", "/v1/settings/retention") => op(
            "Keep superseded versions and verdicts for N days (null: for ever); applied at once, then hourly",
            "settings",
        )
        .body(named::<crate::http::settings::RetentionBody>())
        .ok("the setting", named::<Retention>()),
        ("GET", "/v1/webhooks/retries") => op("When failed deliveries are tried again", "webhooks")
            .ok("the retry schedule", plain(json!({"type": "object"}))),
        ("GET", "/v1/webhooks/{id}") => {
            op("Get a webhook", "webhooks").ok("the webhook", named::<Webhook>())
        }
        ("PATCH", "/v1/webhooks/{id}") => op(
            "Change a webhook's url, events, description or active",
            "webhooks",
        )
        .body(named::<WebhookBody>())
        .ok("the webhook", named::<Webhook>()),
        ("DELETE", "/v1/webhooks/{id}") => {
            op("Delete a webhook and its delivery history", "webhooks")
                .ok("deleted", named::<Deleted>())
        }
        ("POST", "/v1/webhooks/{id}/rotate-secret") => op(
            "A new secret; the old one also signs during the overlap",
            "webhooks",
        )
        .optional_body(named::<RotateBody>())
        .ok("the webhook with its new secret", named::<Webhook>()),
        ("POST", "/v1/webhooks/{id}/test") => op(
            "Send a webhook.test event to this webhook",
            "webhooks",
        )
        .answer(202, "queued", named::<WebhookDelivery>()),
        ("GET", "/v1/webhooks/{id}/deliveries") => {
            op("A webhook's deliveries, newest first", "webhooks")
                .page(100)
                .query(vec![q(
                    "status",
                    enum_of(&["pending", "delivered", "failed"]),
                    "only deliveries in this state",
                )])
                .ok("a page of deliveries", page_of::<WebhookDelivery>())
        }
        ("GET", "/v1/webhooks/{id}/deliveries/{delivery_id}") => {
            op("One delivery", "webhooks").ok("the delivery", named::<WebhookDelivery>())
        }
        ("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver") => op(
            "Send a delivery's event again, as a new delivery",
            "webhooks",
        )
        .answer(202, "queued", named::<WebhookDelivery>()),
        ("GET", "/v1/pricing") => {
            op("Prices (all free, self-hosted)", "account").ok("prices", named::<Pricing>())
        }
        ("POST", "/v1/documents") => {
            let upload = plain(
                json!({ "type": "object", "required": ["file"], "properties": {
                "file": { "type": "string", "contentMediaType": "application/octet-stream" },
                "metadata": { "type": "string", "description": "a JSON object as text" } } }),
            );
            let mut o = op("Upload a document", "documents")
                .answer(201, "stored", named::<Document>())
                .ok("the same bytes were already stored", named::<Document>());
            let inline_doc = one_of(
                requiring(named::<InlineDocument>(), &["filename"]),
                &["content", "content_base64"],
            );
            o.body = Some((
                true,
                vec![
                    ("application/json", inline_doc),
                    ("multipart/form-data", upload),
                ],
            ));
            o
        }
        ("GET", "/v1/documents/{id}") => op("Get a document", "documents")
            .query(vec![q("include", enum_of(&["text"]), "include the text")])
            .ok("the document", named::<Document>()),
        ("GET", "/v1/documents/{id}/markdown") => {
            op("The document's text as Markdown, page by page", "documents")
                .ok("Markdown", named::<DocumentMarkdown>())
        }
        ("GET", "/v1/documents/{id}/pages/{page}") => {
            op("One page: its text, Markdown, words and boxes", "documents")
                .ok("the page", named::<DocumentPage>())
        }
        ("GET", "/v1/documents/{id}/pages/{page}/image") => {
            let mut o = op(
                "The page as an image: a PDF page rendered (PNG), or the uploaded image",
                "documents",
            );
            o.answers.push((
                200,
                "the image",
                "image/png",
                plain(json!({ "type": "string", "contentMediaType": "image/png" })),
            ));
            o
        }
        ("DELETE", "/v1/documents/{id}") => {
            op("Soft-delete a document", "documents").ok("deleted", named::<Deleted>())
        }
        _ => return None,
    };
    Some(o)
}

fn path_param(path: &str, name: &str) -> Value {
    let schema_ref = matches!(path, "/v1/schemas/{id}" | "/v1/schemas/{id}/rail");
    let schema = match name {
        "id" if schema_ref => {
            json!({ "anyOf": [uuid(), {"type": "string", "pattern": "^SCH-[0-9A-F]{8}$"}] })
        }
        "field_key" => json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}),
        "page" => json!({"type": "integer", "minimum": 1, "maximum": u32::MAX}),
        "delivery_id" => json!({"type": "string", "pattern": "^dlv_[0-9a-f]{32}$"}),
        _ => uuid(),
    };
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

/// Named schemas that operations refer to, collected as the document is built.
type Components = Map<String, Value>;

fn content(parts: Vec<(&str, Part)>, components: &mut Components) -> Value {
    let mut out = Map::new();
    for (media, part) in parts {
        for (name, schema) in part.components {
            let mut v = json!(schema);
            with_camel_aliases(&mut v);
            components.insert(name, v);
        }
        out.insert(media.to_string(), json!({ "schema": part.schema }));
    }
    Value::Object(out)
}

fn error_answer(what: &str, components: &mut Components) -> Value {
    json!({ "description": what, "content": content(vec![("application/json", named::<Error>())], components) })
}

fn operation(method: &str, path: &str, o: Op, components: &mut Components) -> Value {
    let public = PUBLIC_ROUTES.contains(&path);
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| path_param(path, name))
        .collect();
    params.extend(o.query);
    if method == "POST" && !public {
        params.push(
            json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"} }),
        );
    }
    if path.ends_with("/resolve") {
        params.push(
            json!({ "name": "X-Reviewer", "in": "header", "required": false,
            "schema": {"type": "string", "minLength": 1, "maxLength": 100} }),
        );
    }
    let mut responses = Map::new();
    for (status, what, media, part) in o.answers {
        let body = content(vec![(media, part)], components);
        // Two media types of one status (JSON or CSV) are one response with two contents.
        match responses.get_mut(&status.to_string()) {
            Some(existing) => {
                if let (Some(have), Value::Object(more)) =
                    (existing["content"].as_object_mut(), body)
                {
                    have.extend(more);
                }
            }
            None => {
                responses.insert(
                    status.to_string(),
                    json!({ "description": what, "content": body }),
                );
            }
        }
    }
    if public {
        if path == "/readyz" {
            let e = error_answer("not ready, or storage read-only or full", components);
            responses.insert("503".into(), e);
        }
        if path == "/metrics" {
            let e = error_answer("the metrics token is required", components);
            responses.insert("401".into(), e);
        }
    } else {
        for (code, what) in [
            ("400", "invalid path id, query, body or precondition"),
            ("401", "missing, unknown, revoked or expired key"),
            ("403", "the key lacks the scope"),
            ("404", "no such resource in this organization"),
            ("409", "idempotency conflict or a precondition"),
            ("413", "body over the limit"),
            ("415", "wrong content type"),
            ("429", "rate limited"),
            ("500", "internal error (details in the log)"),
            ("503", "database busy, full or read-only"),
        ] {
            responses.insert(code.into(), error_answer(what, components));
        }
    }
    let mut v = json!({
        "summary": o.summary,
        "operationId": format!("{}{}", method.to_lowercase(), path.replace(['/', '{', '}', '-', '.'], "_")),
        "tags": [o.tag],
        "parameters": params,
        "responses": responses,
    });
    if let Some((required, parts)) = o.body {
        v["requestBody"] = json!({ "required": required, "content": content(parts, components) });
    }
    if public {
        v["security"] = json!([]);
    }
    v
}

/// Every route/method pair of the router.
fn all_routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| (*m, *p)))
}

/// Route/method pairs of the router that have no operation here; empty when complete.
pub fn undescribed() -> Vec<String> {
    all_routes()
        .filter(|(m, p)| describe(m, p).is_none())
        .map(|(m, p)| format!("{m} {p}"))
        .collect()
}

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut components = Components::new();
    for (method, path) in all_routes() {
        if let Some(o) = describe(method, path) {
            let described = operation(method, path, o, &mut components);
            let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
            entry[method.to_lowercase()] = described;
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Quire",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted document structuring: schemas and rails, data policies, validation gates, pipelines with versioned cells, rerun from a chosen phase, human review and data products. Follows the governed tier of the Talonic API."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "tlnc_<env>_<32+ letters and digits>" } },
            "schemas": components
        }
    })
}

pub async fn serve() -> actix_web::HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| document().to_string());
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_is_described_and_nothing_else() {
        assert_eq!(undescribed(), Vec::<String>::new());
        let doc = document();
        let mut count = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let upper = method.to_uppercase();
                assert!(
                    ROUTES
                        .iter()
                        .any(|(p, ms)| p == path && ms.contains(&upper.as_str())),
                    "{upper} {path} is documented but not routed"
                );
                count += 1;
            }
        }
        let routed: usize = ROUTES.iter().map(|(_, ms)| ms.len()).sum();
        assert_eq!(count, routed);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }

    /// Components are keyed by name: two types of one name would silently describe one with the
    /// other (a model's health once replaced `/healthz`'s answer).
    #[test]
    fn types_of_the_same_name_do_not_replace_each_other() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert!(
            schemas["Health"]["properties"]["status"].is_object(),
            "{}",
            schemas["Health"]
        );
        assert!(schemas["ModelHealth"]["properties"]["in_flight"].is_object());
    }
}
