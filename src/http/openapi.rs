//! `GET /openapi.json`: the OpenAPI 3.1 description of the whole surface, built from the router's
//! route table. Every route of `ROUTES` must have an operation below (a test checks it), so the
//! document cannot silently fall behind the router.

use super::{PUBLIC_ROUTES, ROUTES};
use serde_json::{json, Map, Value};

fn t(kind: &str) -> Value {
    json!({ "type": kind })
}
fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}
fn arr(item: Value) -> Value {
    json!({ "type": "array", "items": item })
}
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}
fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}
fn time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}
fn any() -> Value {
    json!({})
}
fn obj(props: &[(&str, Value)], required: &[&str]) -> Value {
    let p: Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({ "type": "object", "properties": p, "required": required })
}
fn list_of(item: &str) -> Value {
    obj(
        &[("data", arr(r(item))), ("pagination", r("Pagination"))],
        &["data", "pagination"],
    )
}
fn field_key() -> Value {
    json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"})
}
/// Exactly one of `keys` must be present.
fn with_one_of(mut schema: Value, keys: &[&str]) -> Value {
    schema["oneOf"] = Value::Array(keys.iter().map(|k| json!({ "required": [k] })).collect());
    schema
}
fn enum_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn schemas() -> Value {
    let links = obj(&[("self", t("string"))], &[]);
    let phase = obj(
        &[
            ("index", t("integer")),
            ("phase_id", t("string")),
            (
                "type",
                enum_of(&["transfer", "extraction", "resolution", "validation"]),
            ),
            ("name", t("string")),
        ],
        &["index", "phase_id", "type", "name"],
    );
    let stage = obj(
        &[
            (
                "type",
                enum_of(&[
                    "source", "registry", "schema", "resolve", "valid", "deliver",
                ]),
            ),
            (
                "name",
                json!({"type": "string", "minLength": 1, "maxLength": 100}),
            ),
            ("json", t("object")),
        ],
        &["type"],
    );
    let field_input = obj(
        &[
            (
                "field_name",
                json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}),
            ),
            ("display_name", t("string")),
            (
                "data_type",
                enum_of(&[
                    "string", "number", "integer", "boolean", "date", "array", "object",
                ]),
            ),
            ("description", t("string")),
            ("is_required", t("boolean")),
            ("requires_review", t("boolean")),
            ("synonyms", arr(t("string"))),
            ("depends_on", arr(t("string"))),
        ],
        &["field_name"],
    );
    let verdict = obj(
        &[
            ("fieldKey", t("string")),
            ("phaseId", t("string")),
            ("stageId", t("string")),
            ("stageName", t("string")),
            ("generation", t("integer")),
            ("pass", t("integer")),
            ("outcome", enum_of(&["pass", "fail", "skip"])),
            ("suppressed", t("boolean")),
            ("reason", nullable("string")),
            ("mechanisms", arr(t("object"))),
        ],
        &["fieldKey", "phaseId", "stageId", "outcome", "mechanisms"],
    );
    let review_item = obj(
        &[
            ("pipeline_document_id", uuid()),
            ("field_key", t("string")),
            ("field_display_name", t("string")),
            ("status", t("string")),
            ("trigger", t("string")),
            ("reason", any()),
            ("current_value", any()),
            ("confidence", any()),
            ("requested_at", any()),
            ("pipeline", t("object")),
            ("document", t("object")),
            ("links", t("object")),
        ],
        &["pipeline_document_id", "field_key", "status"],
    );
    json!({
        "Error": obj(&[
            ("statusCode", t("integer")), ("code", enum_of(&["bad_request", "missing_document", "unauthorized",
                "insufficient_scope", "not_found", "method_not_allowed", "conflict", "payload_too_large",
                "unsupported_media_type", "rate_limited", "internal_error", "service_unavailable"])),
            ("error", t("string")), ("message", t("string")), ("retryable", t("boolean")),
            ("request_id", t("string")), ("timestamp", time()), ("path", t("string")),
            ("required_scopes", arr(t("string"))),
        ], &["statusCode", "code", "error", "message", "retryable", "request_id", "timestamp", "path"]),
        "Pagination": obj(&[("total", t("integer")), ("limit", t("integer")), ("has_more", t("boolean")),
            ("next_cursor", nullable("string"))], &["total", "limit", "has_more", "next_cursor"]),
        "Links": links,
        "Health": obj(&[("status", t("string"))], &["status"]),
        "Deleted": obj(&[("deleted", t("boolean")), ("id", uuid())], &["deleted", "id"]),
        "FieldInput": field_input,
        "SchemaInput": with_one_of(obj(&[("name", json!({"type": "string", "minLength": 1, "maxLength": 100})),
            ("description", t("string")),
            ("definition", t("object")),
            ("fields", json!({"oneOf": [{"type": "array", "items": r("FieldInput"), "minItems": 1}, {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}]}))],
            &["name"]), &["definition", "fields"]),
        "SchemaPatch": obj(&[("name", t("string")), ("description", t("string")),
            ("definition", t("object")), ("fields", any())], &[]),
        "Schema": obj(&[("id", uuid()), ("short_id", t("string")), ("name", t("string")),
            ("description", nullable("string")), ("definition", t("object")), ("fields", arr(t("object"))),
            ("field_count", t("integer")), ("version", t("integer")), ("rail", arr(r("RailStage"))),
            ("created_at", time()), ("updated_at", time()), ("links", r("Links"))],
            &["id", "short_id", "name", "definition", "fields", "field_count", "version", "rail", "created_at", "updated_at"]),
        "SchemaList": list_of("Schema"),
        "RegistryField": obj(&[("id", uuid()), ("canonical_name", t("string")), ("display_name", t("string")),
            ("data_type", t("string")), ("synonyms", arr(t("string"))), ("occurrence_count", t("integer")),
            ("created_at", time())], &["id", "canonical_name", "data_type", "occurrence_count"]),
        "RegistryFieldList": list_of("RegistryField"),
        "RailStage": stage,
        "Phase": phase,
        "RailInput": obj(&[("rail", json!({"type": "array", "items": r("RailStage"), "maxItems": 50}))], &["rail"]),
        "Rail": obj(&[("rail", arr(r("RailStage"))), ("phases", arr(r("Phase")))], &["rail", "phases"]),
        "GateInput": obj(&[("name", t("string")), ("severity", enum_of(&["info", "warning", "blocking"])),
            ("field_scope", arr(t("string"))), ("mechanisms", arr(t("object"))),
            ("blocking_config", obj(&[("on_block", enum_of(&["review_queue", "hold"]))], &[]))], &["name", "severity"]),
        "GatePatch": obj(&[("name", t("string")), ("severity", enum_of(&["info", "warning", "blocking"])),
            ("field_scope", arr(t("string"))), ("mechanisms", arr(t("object"))), ("blocking_config", t("object"))], &[]),
        "Gate": obj(&[("id", uuid()), ("schema_id", uuid()), ("name", t("string")), ("ordinal", t("integer")),
            ("severity", t("string")), ("field_scope", arr(t("string"))), ("mechanisms", arr(t("object"))),
            ("blocking_config", t("object")), ("version", t("integer")), ("created_at", time()), ("updated_at", time())],
            &["id", "schema_id", "name", "ordinal", "severity", "field_scope", "mechanisms", "version"]),
        "GateList": obj(&[("data", arr(r("Gate")))], &["data"]),
        "ReorderInput": obj(&[("stage_ids", arr(uuid()))], &["stage_ids"]),
        "ReplayInput": obj(&[("pipeline_id", uuid())], &[]),
        "ReplayAnswer": obj(&[("replayed", t("integer")), ("newlyBlocked", t("integer")), ("released", t("integer"))],
            &["replayed", "newlyBlocked", "released"]),
        "Verdict": verdict,
        "VerdictList": obj(&[("data", arr(r("Verdict")))], &["data"]),
        "PolicyInput": obj(&[("name", json!({"type": "string", "minLength": 1, "maxLength": 100})), ("description", nullable("string"))], &["name"]),
        "PolicyPatch": obj(&[("name", json!({"type": ["string", "null"], "minLength": 1, "maxLength": 100})), ("description", nullable("string"))], &[]),
        "PolicyFieldInput": obj(&[("field_key", field_key()), ("type", enum_of(&["string", "number", "integer", "boolean", "date", "array", "object"]))], &["field_key"]),
        "RuleInput": obj(&[("field_key", field_key()), ("rule_type", enum_of(&["direct", "format", "date", "number",
            "currency", "lookup", "regex_replace", "default", "compute", "unit"])), ("config", t("object"))],
            &["field_key", "rule_type"]),
        "RulePatch": obj(&[("config", t("object"))], &["config"]),
        "Rule": obj(&[("id", uuid()), ("field_key", t("string")), ("rule_type", t("string")), ("config", t("object")),
            ("order", t("integer"))], &["id", "field_key", "rule_type", "config", "order"]),
        "RuleList": obj(&[("data", arr(r("Rule")))], &["data"]),
        "Policy": obj(&[("id", uuid()), ("name", t("string")), ("description", nullable("string")), ("version", t("integer")),
            ("status", enum_of(&["active", "inactive"])), ("fields", arr(t("object"))), ("rules", arr(r("Rule"))),
            ("created_at", time()), ("updated_at", time())], &["id", "name", "version", "status", "fields", "rules"]),
        "PolicyList": list_of("Policy"),
        "DocumentInput": with_one_of(obj(&[("filename", json!({"type": "string", "minLength": 1, "maxLength": 255})), ("content", json!({"type": "string", "minLength": 1})), ("content_base64", json!({"type": "string", "minLength": 1, "contentEncoding": "base64"})),
            ("mime_type", t("string")), ("metadata", t("object"))], &["filename"]), &["content", "content_base64"]),
        "DocumentUpload": obj(&[("file", json!({"type": "string", "contentMediaType": "application/octet-stream"})),
            ("metadata", t("string"))], &["file"]),
        "Document": obj(&[("id", uuid()), ("filename", t("string")), ("mime_type", t("string")), ("size_bytes", t("integer")),
            ("sha256", t("string")), ("metadata", t("object")), ("created_at", time()), ("links", r("Links")),
            ("duplicate", t("boolean")), ("text", t("string"))], &["id", "filename", "mime_type", "size_bytes", "sha256"]),
        "DocumentList": list_of("Document"),
        "PipelineInput": obj(&[("schema_id", uuid()), ("document_ids", arr(uuid())), ("documents", arr(r("DocumentInput"))),
            ("name", json!({"type": "string", "minLength": 1, "maxLength": 200}))], &["schema_id"]),
        "Pipeline": obj(&[("id", uuid()), ("name", t("string")), ("status", enum_of(&["active", "completed", "failed", "cancelled"])),
            ("schema", t("object")), ("phase_count", t("integer")), ("document_count", t("integer")),
            ("enqueued_documents", t("integer")), ("generation", t("integer")), ("created_at", time()),
            ("updated_at", time()), ("completed_at", any()), ("links", t("object"))],
            &["id", "name", "status", "schema", "phase_count", "document_count"]),
        "PipelineList": list_of("Pipeline"),
        "Progress": obj(&[("pipelineId", uuid()), ("status", t("string")), ("generation", t("integer")),
            ("totalDocuments", t("integer")), ("completedDocuments", t("integer")), ("errorDocuments", t("integer")),
            ("phases", arr(t("object"))), ("errors", arr(t("object")))],
            &["pipelineId", "status", "generation", "totalDocuments", "completedDocuments", "errorDocuments", "phases", "errors"]),
        "PipelineDocument": obj(&[("id", uuid()), ("document_id", uuid()), ("filename", t("string")),
            ("status", enum_of(&["queued", "processing", "complete", "partial", "error"])), ("current_phase_id", any()),
            ("generation", t("integer")), ("error", any()), ("updated_at", time())], &["id", "document_id", "status"]),
        "PipelineDocumentList": list_of("PipelineDocument"),
        "Results": obj(&[("pipeline_id", uuid()), ("spec_id", uuid()), ("status", t("string")), ("view", t("string")),
            ("generated_at", time()), ("columns", arr(t("object"))), ("data", arr(t("object"))),
            ("pagination", r("Pagination")), ("pending_review_count", t("integer")), ("links", t("object"))],
            &["pipeline_id", "spec_id", "status", "columns", "data", "pagination"]),
        "Cells": obj(&[("fields", arr(t("object")))], &["fields"]),
        "RerunInput": json!({"type": "object", "additionalProperties": false, "properties": {
            "from_phase": enum_of(&["transfer", "extraction", "resolution", "validation"]),
            "document_ids": arr(uuid()), "documentIds": arr(uuid()),
            "dry_run": t("boolean"), "dryRun": t("boolean")}, "required": ["from_phase"]}),
        "RerunAnswer": obj(&[("enqueued", t("integer")), ("fromPhaseIndex", t("integer")), ("dryRun", t("boolean")),
            ("plan", t("object"))], &["enqueued", "fromPhaseIndex"]),
        "RerunRecord": obj(&[("id", uuid()), ("generation", t("integer")), ("from_phase", t("string")),
            ("from_phase_index", t("integer")), ("enqueued", t("integer")), ("document_ids", any()),
            ("requested_at", time()), ("requested_by", any()), ("finished_at", any()), ("outcome", any())],
            &["id", "generation", "from_phase", "from_phase_index", "enqueued"]),
        "RerunList": obj(&[("data", arr(r("RerunRecord")))], &["data"]),
        "DataProductInput": obj(&[("name", t("string"))], &[]),
        "DataProduct": obj(&[("id", uuid()), ("name", t("string")), ("pipeline_id", uuid()), ("status", t("string")),
            ("created_at", time()), ("updated_at", time())], &["id", "name", "pipeline_id", "status"]),
        "DataProductCreated": obj(&[("dataProduct", r("DataProduct")), ("shareToken", t("null"))], &["dataProduct", "shareToken"]),
        "DataProductList": list_of("DataProduct"),
        "DataProductResults": obj(&[("data", arr(obj(&[("pipeline_document_id", uuid()), ("document_id", uuid()),
            ("filename", t("string")), ("fields", t("object")), ("held", arr(t("string")))],
            &["pipeline_document_id", "fields", "held"]))), ("pagination", r("Pagination"))], &["data", "pagination"]),
        "ReviewItem": review_item,
        "ReviewList": list_of("ReviewItem"),
        "ReviewSummary": obj(&[("total", t("integer")), ("byTrigger", t("object")), ("byPipeline", arr(t("object")))],
            &["total", "byTrigger", "byPipeline"]),
        "ReviewDetail": obj(&[("item", r("ReviewItem")), ("field", t("object")), ("cellHistory", arr(t("object"))),
            ("matchedSpan", any()), ("verdicts", arr(r("Verdict"))), ("priorDecisions", arr(r("Decision")))],
            &["item", "field", "cellHistory", "matchedSpan", "verdicts", "priorDecisions"]),
        "ResolveInput": json!({"type": "object", "additionalProperties": false, "properties": {
            "action": enum_of(&["approve", "correct", "override", "reopen"]), "corrected_value": any(),
            "correctedValue": any(), "reason": t("string")}, "required": ["action"]}),
        "ResolveAnswer": obj(&[("fieldKey", t("string")), ("status", t("string")), ("currentPhaseId", any()),
            ("blockedAtStageId", any()), ("blockedByField", any()), ("reviewTrigger", any()), ("reviewRouting", any()),
            ("reviewRequestedAt", any()), ("resolveAction", any()), ("resolvedAt", any()), ("deliveredAt", any())],
            &["fieldKey", "status"]),
        "BulkResolveInput": json!({"type": "object", "additionalProperties": false, "properties": {
            "items": {"type": "array", "minItems": 1, "maxItems": 500, "items": obj(&[("pipeline_document_id", t("string")),
                ("field_key", t("string"))], &["pipeline_document_id", "field_key"])},
            "action": enum_of(&["approve", "correct", "override", "reopen"]), "corrected_value": any(),
            "correctedValue": any(), "reason": t("string")}, "required": ["items", "action"]}),
        "BulkResolveAnswer": obj(&[("resolved", t("integer")), ("failed", t("integer")), ("results", arr(t("object")))],
            &["resolved", "failed", "results"]),
        "Decision": obj(&[("id", uuid()), ("pipelineId", uuid()), ("pipelineDocumentId", uuid()), ("documentId", uuid()),
            ("documentName", any()), ("fieldKey", t("string")), ("triggerType", t("string")), ("stageId", any()),
            ("stageName", any()), ("action", t("string")), ("priorValue", any()), ("finalValue", any()),
            ("reason", any()), ("decidedBy", t("string")), ("decidedByName", any()), ("decidedAt", time())],
            &["id", "pipelineId", "pipelineDocumentId", "fieldKey", "action", "decidedAt"]),
        "DecisionList": obj(&[("total", t("integer")), ("entries", arr(r("Decision"))), ("pagination", r("Pagination"))],
            &["total", "entries", "pagination"]),
    })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(status: u16, schema: &str, what: &str) -> (u16, Value) {
    (
        status,
        json!({ "description": what, "content": json_content(r(schema)) }),
    )
}

fn csv(what: &str) -> (u16, Value) {
    (
        200,
        json!({ "description": what, "content": { "text/csv": { "schema": { "type": "string" } } } }),
    )
}

/// Query parameters.
fn q(name: &str, schema: Value, what: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": what })
}

fn page(max: i64) -> Vec<Value> {
    vec![
        q(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": max}),
            "page size",
        ),
        q(
            "cursor",
            t("string"),
            "opaque cursor from pagination.next_cursor",
        ),
    ]
}

struct Op {
    summary: &'static str,
    tag: &'static str,
    query: Vec<Value>,
    body: Option<Value>,
    answers: Vec<(u16, Value)>,
}

fn op(
    summary: &'static str,
    tag: &'static str,
    body: Option<&str>,
    answers: Vec<(u16, Value)>,
) -> Op {
    Op {
        summary,
        tag,
        query: Vec::new(),
        body: body.map(|b| json!({ "required": true, "content": json_content(r(b)) })),
        answers,
    }
}

/// The operation of one route and method, or `None` when it is not described (a test fails).
fn describe(method: &str, path: &str) -> Option<Op> {
    let o = match (method, path) {
        ("GET", "/healthz") => op(
            "Liveness",
            "operations",
            None,
            vec![ok(200, "Health", "the process answers")],
        ),
        ("GET", "/readyz") => op(
            "Readiness: migrated, recovered, executor running, storage writable",
            "operations",
            None,
            vec![ok(200, "Health", "ready")],
        ),
        ("GET", "/metrics") => op(
            "Prometheus metrics (text exposition format)",
            "operations",
            None,
            vec![(
                200,
                json!({"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            )],
        ),
        ("GET", "/openapi.json") => op(
            "This document",
            "operations",
            None,
            vec![(
                200,
                json!({"description": "OpenAPI 3.1", "content": json_content(t("object"))}),
            )],
        ),
        ("GET", "/v1/schemas") => Op {
            query: page(100),
            ..op(
                "List schemas, newest first",
                "schemas",
                None,
                vec![ok(200, "SchemaList", "a page")],
            )
        },
        ("POST", "/v1/schemas") => op(
            "Create a schema",
            "schemas",
            Some("SchemaInput"),
            vec![ok(201, "Schema", "created")],
        ),
        ("GET", "/v1/schemas/{id}") => op(
            "Get a schema",
            "schemas",
            None,
            vec![ok(200, "Schema", "the schema")],
        ),
        ("PUT", "/v1/schemas/{id}") => op(
            "Replace name, description and fields",
            "schemas",
            Some("SchemaInput"),
            vec![ok(200, "Schema", "replaced")],
        ),
        ("PATCH", "/v1/schemas/{id}") => op(
            "Merge into a schema",
            "schemas",
            Some("SchemaPatch"),
            vec![ok(200, "Schema", "merged")],
        ),
        ("DELETE", "/v1/schemas/{id}") => op(
            "Soft-delete a schema",
            "schemas",
            None,
            vec![ok(200, "Deleted", "deleted")],
        ),
        ("GET", "/v1/schemas/{id}/rail") => op(
            "The rail and its compiled phases",
            "schemas",
            None,
            vec![ok(200, "Rail", "the rail")],
        ),
        ("PUT", "/v1/schemas/{id}/rail") => op(
            "Replace the rail",
            "schemas",
            Some("RailInput"),
            vec![ok(200, "Rail", "replaced")],
        ),
        ("GET", "/v1/schemas/{id}/validation-stages") => op(
            "List gates by ordinal",
            "gates",
            None,
            vec![ok(200, "GateList", "all gates")],
        ),
        ("POST", "/v1/schemas/{id}/validation-stages") => op(
            "Create a gate",
            "gates",
            Some("GateInput"),
            vec![ok(201, "Gate", "created")],
        ),
        ("POST", "/v1/schemas/{id}/validation-stages/reorder") => op(
            "Reorder gates",
            "gates",
            Some("ReorderInput"),
            vec![ok(200, "GateList", "new order")],
        ),
        ("GET", "/v1/schemas/{id}/validation-stages/{stage_id}") => op(
            "Get a gate",
            "gates",
            None,
            vec![ok(200, "Gate", "the gate")],
        ),
        ("PATCH", "/v1/schemas/{id}/validation-stages/{stage_id}") => op(
            "Change a gate",
            "gates",
            Some("GatePatch"),
            vec![ok(200, "Gate", "changed")],
        ),
        ("DELETE", "/v1/schemas/{id}/validation-stages/{stage_id}") => op(
            "Delete a gate",
            "gates",
            None,
            vec![ok(200, "Deleted", "deleted")],
        ),
        ("POST", "/v1/schemas/{id}/validation-stages/{stage_id}/replay-blocking") => Op {
            body: Some(json!({ "required": false, "content": json_content(r("ReplayInput")) })),
            ..op(
                "Replay a gate's blocking over stored verdicts",
                "gates",
                None,
                vec![ok(200, "ReplayAnswer", "replayed")],
            )
        },
        ("GET", "/v1/data-policies") => Op {
            query: page(100),
            ..op(
                "List data policies",
                "policies",
                None,
                vec![ok(200, "PolicyList", "a page")],
            )
        },
        ("POST", "/v1/data-policies") => op(
            "Create a data policy",
            "policies",
            Some("PolicyInput"),
            vec![ok(201, "Policy", "created")],
        ),
        ("GET", "/v1/data-policies/{id}") => op(
            "Get a policy with fields and rules",
            "policies",
            None,
            vec![ok(200, "Policy", "the policy")],
        ),
        ("PATCH", "/v1/data-policies/{id}") => op(
            "Change name or description",
            "policies",
            Some("PolicyPatch"),
            vec![ok(200, "Policy", "changed")],
        ),
        ("DELETE", "/v1/data-policies/{id}") => op(
            "Delete a policy",
            "policies",
            None,
            vec![ok(200, "Deleted", "deleted")],
        ),
        ("POST", "/v1/data-policies/{id}/fields") => op(
            "Add a field to a policy",
            "policies",
            Some("PolicyFieldInput"),
            vec![ok(201, "Policy", "added")],
        ),
        ("DELETE", "/v1/data-policies/{id}/fields/{field_key}") => op(
            "Remove a field from a policy",
            "policies",
            None,
            vec![ok(200, "Policy", "removed")],
        ),
        ("GET", "/v1/data-policies/{id}/rules") => op(
            "A policy's rules in compiled order",
            "policies",
            None,
            vec![ok(200, "RuleList", "all rules")],
        ),
        ("POST", "/v1/data-policies/{id}/rules") => op(
            "Add a rule",
            "policies",
            Some("RuleInput"),
            vec![ok(201, "Rule", "added")],
        ),
        ("PATCH", "/v1/data-policies/{id}/rules/{rule_id}") => op(
            "Change a rule's config",
            "policies",
            Some("RulePatch"),
            vec![ok(200, "Rule", "changed")],
        ),
        ("DELETE", "/v1/data-policies/{id}/rules/{rule_id}") => op(
            "Delete a rule",
            "policies",
            None,
            vec![ok(200, "Deleted", "deleted")],
        ),
        ("GET", "/v1/pipelines") => Op {
            query: [
                page(100),
                vec![
                    q(
                        "status",
                        enum_of(&["active", "completed", "failed", "cancelled"]),
                        "filter by status",
                    ),
                    q("schema_id", uuid(), "filter by schema"),
                ],
            ]
            .concat(),
            ..op(
                "List pipelines",
                "pipelines",
                None,
                vec![ok(200, "PipelineList", "a page")],
            )
        },
        ("POST", "/v1/pipelines") => op(
            "Create and start a pipeline",
            "pipelines",
            Some("PipelineInput"),
            vec![ok(201, "Pipeline", "started")],
        ),
        ("GET", "/v1/pipelines/{id}") => op(
            "Get a pipeline",
            "pipelines",
            None,
            vec![ok(200, "Pipeline", "the run")],
        ),
        ("POST", "/v1/pipelines/{id}/cancel") => Op {
            body: Some(json!({ "required": false, "content": json_content(t("object")) })),
            ..op(
                "Cancel every queued or processing document",
                "pipelines",
                None,
                vec![ok(200, "Pipeline", "cancelled")],
            )
        },
        ("POST", "/v1/pipelines/{id}/rerun") => op(
            "Rerun a finished run from a phase",
            "pipelines",
            Some("RerunInput"),
            vec![ok(200, "RerunAnswer", "enqueued, or the dry-run plan")],
        ),
        ("GET", "/v1/pipelines/{id}/reruns") => op(
            "Rerun history, newest first",
            "pipelines",
            None,
            vec![ok(200, "RerunList", "all reruns")],
        ),
        ("GET", "/v1/pipelines/{id}/progress") => op(
            "Progress per run and per phase",
            "pipelines",
            None,
            vec![ok(200, "Progress", "progress")],
        ),
        ("GET", "/v1/pipelines/{id}/documents") => Op {
            query: page(100),
            ..op(
                "The run's documents in input order",
                "pipelines",
                None,
                vec![ok(200, "PipelineDocumentList", "a page")],
            )
        },
        ("GET", "/v1/pipelines/{id}/results") => Op {
            query: [
                page(200),
                vec![
                    q("document_id", uuid(), "one document"),
                    q("include", t("string"), "cells,provenance"),
                ],
            ]
            .concat(),
            ..op(
                "Results in input order",
                "pipelines",
                None,
                vec![ok(200, "Results", "a page of results")],
            )
        },
        ("GET", "/v1/pipelines/{id}/documents/{pd_id}/cells") => op(
            "Every version of every field",
            "pipelines",
            None,
            vec![ok(200, "Cells", "versions")],
        ),
        ("GET", "/v1/pipelines/{id}/documents/{pd_id}/verdicts") => op(
            "Every verdict of a document",
            "pipelines",
            None,
            vec![ok(200, "VerdictList", "verdicts")],
        ),
        ("POST", "/v1/pipelines/{id}/data-product") => Op {
            body: Some(
                json!({ "required": false, "content": json_content(r("DataProductInput")) }),
            ),
            ..op(
                "Create or reactivate the run's data product",
                "data products",
                None,
                vec![
                    ok(201, "DataProductCreated", "created"),
                    ok(200, "DataProductCreated", "reactivated"),
                ],
            )
        },
        ("GET", "/v1/data-products") => Op {
            query: page(100),
            ..op(
                "List data products",
                "data products",
                None,
                vec![ok(200, "DataProductList", "a page")],
            )
        },
        ("GET", "/v1/data-products/{id}") => op(
            "Get a data product",
            "data products",
            None,
            vec![ok(200, "DataProduct", "the data product")],
        ),
        ("GET", "/v1/data-products/{id}/results") => Op {
            query: page(100),
            ..op(
                "Data product rows",
                "data products",
                None,
                vec![ok(200, "DataProductResults", "a page")],
            )
        },
        ("GET", "/v1/data-products/{id}/export/plain") => op(
            "Plain CSV export",
            "data products",
            None,
            vec![csv("CSV, UTF-8 with BOM")],
        ),
        ("GET", "/v1/data-products/{id}/export/audit") => op(
            "Audit CSV export",
            "data products",
            None,
            vec![csv("CSV, UTF-8 with BOM")],
        ),
        ("GET", "/v1/field-reviews") => Op {
            query: [
                page(100),
                vec![
                    q("pipeline_id", uuid(), "one run"),
                    q("trigger", enum_of(&["gate", "declarative"]), "trigger"),
                    q("status", enum_of(&["blocked", "pending_review"]), "status"),
                    q("routing", enum_of(&["hold"]), "held fields instead"),
                ],
            ]
            .concat(),
            ..op(
                "The review queue, newest first",
                "reviews",
                None,
                vec![ok(200, "ReviewList", "a page")],
            )
        },
        ("GET", "/v1/field-reviews/summary") => op(
            "Queue counts",
            "reviews",
            None,
            vec![ok(200, "ReviewSummary", "summary")],
        ),
        ("POST", "/v1/field-reviews/bulk-resolve") => op(
            "Resolve many items, each on its own",
            "reviews",
            Some("BulkResolveInput"),
            vec![ok(200, "BulkResolveAnswer", "per-item results")],
        ),
        ("GET", "/v1/field-reviews/decisions") => Op {
            query: [page(100), vec![q("pipeline_id", uuid(), "one run")]].concat(),
            ..op(
                "The decision log, newest first",
                "reviews",
                None,
                vec![ok(200, "DecisionList", "a page")],
            )
        },
        ("GET", "/v1/field-reviews/decisions/export") => Op {
            query: vec![q("pipeline_id", uuid(), "one run")],
            ..op(
                "The decision log as CSV",
                "reviews",
                None,
                vec![csv("CSV, UTF-8 with BOM")],
            )
        },
        ("GET", "/v1/field-reviews/{pd_id}/{field_key}") => op(
            "One review item in detail",
            "reviews",
            None,
            vec![ok(200, "ReviewDetail", "detail")],
        ),
        ("POST", "/v1/field-reviews/{pd_id}/{field_key}/resolve") => op(
            "Resolve one field",
            "reviews",
            Some("ResolveInput"),
            vec![ok(200, "ResolveAnswer", "the field after the decision")],
        ),
        ("GET", "/v1/fields") => Op {
            query: page(100),
            ..op(
                "The Field Registry",
                "schemas",
                None,
                vec![ok(200, "RegistryFieldList", "a page")],
            )
        },
        ("GET", "/v1/documents") => Op {
            query: page(100),
            ..op(
                "List documents",
                "documents",
                None,
                vec![ok(200, "DocumentList", "a page")],
            )
        },
        ("POST", "/v1/documents") => Op {
            body: Some(json!({ "required": true, "content": {
                "application/json": { "schema": r("DocumentInput") },
                "multipart/form-data": { "schema": r("DocumentUpload") } } })),
            ..op(
                "Upload a document",
                "documents",
                None,
                vec![
                    ok(201, "Document", "stored"),
                    ok(200, "Document", "the same bytes were already stored"),
                ],
            )
        },
        ("GET", "/v1/documents/{id}") => Op {
            query: vec![q("include", enum_of(&["text"]), "include the text")],
            ..op(
                "Get a document",
                "documents",
                None,
                vec![ok(200, "Document", "the document")],
            )
        },
        ("DELETE", "/v1/documents/{id}") => op(
            "Soft-delete a document",
            "documents",
            None,
            vec![ok(200, "Deleted", "deleted")],
        ),
        _ => return None,
    };
    Some(o)
}

fn path_param(name: &str) -> Value {
    let schema = if name == "field_key" {
        json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"})
    } else {
        uuid()
    };
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

fn error_answer(what: &str) -> Value {
    json!({ "description": what, "content": json_content(r("Error")) })
}

fn operation(method: &str, path: &str, o: Op) -> Value {
    let public = PUBLIC_ROUTES.contains(&path);
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(path_param)
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
    for (status, v) in o.answers {
        responses.insert(status.to_string(), v);
    }
    if public {
        if path == "/readyz" {
            responses.insert(
                "503".into(),
                error_answer("not ready, or storage read-only or full"),
            );
        }
        if path == "/metrics" {
            responses.insert("401".into(), error_answer("the metrics token is required"));
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
            responses.insert(code.into(), error_answer(what));
        }
    }
    let mut v = json!({
        "summary": o.summary,
        "operationId": format!("{}{}", method.to_lowercase(), path.replace(['/', '{', '}', '-', '.'], "_")),
        "tags": [o.tag],
        "parameters": params,
        "responses": responses,
    });
    if let Some(b) = o.body {
        v["requestBody"] = b;
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
    for (method, path) in all_routes() {
        if let Some(o) = describe(method, path) {
            let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
            entry[method.to_lowercase()] = operation(method, path, o);
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
            "schemas": schemas()
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
}
