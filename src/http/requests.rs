//! The bodies of the strict routes (API.md §1: rerun, resolve, bulk resolve), as types: unknown
//! fields refused, the documented camelCase spellings taken as aliases, every value checked as it
//! is parsed (a phase name, an action, a UUID, a reason's length), once. `body::typed` names the
//! field that failed.

use crate::domain::rail::PhaseType;
use crate::engine::review::Action;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/pipelines/{id}/rerun`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RerunInput)]
pub struct RerunBody {
    #[serde(alias = "fromPhase")]
    #[schema(value_type = String, pattern = "^(transfer|extraction|resolution|validation)$")]
    pub from_phase: PhaseType,
    /// Pipeline document ids; absent reruns every document. `null` is refused: a subset that
    /// came out empty-handed must not turn into the whole run.
    #[serde(default, alias = "documentIds", deserialize_with = "not_null")]
    #[schema(value_type = Vec<String>)]
    pub document_ids: Option<Vec<PipelineDocumentId>>,
    #[serde(default, alias = "dryRun")]
    pub dry_run: bool,
    /// Ask the model again even where an answer for the same document and prompt is kept.
    #[serde(default, alias = "refreshExtraction")]
    pub refresh_extraction: bool,
}

/// A strict decision body: `action`, `corrected_value` and `reason`, after the fields given
/// before them. Written once for both decision routes, since serde cannot flatten shared fields
/// into a struct that refuses unknown ones.
macro_rules! decision_body {
    ($(#[$meta:meta])* $name:ident as $doc:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        #[schema(as = $doc)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            #[schema(value_type = String, pattern = "^(approve|correct|override|reopen)$")]
            pub action: Action,
            /// The new value of `correct` and `override`. Present-and-null is a correction to
            /// null, so `null` is kept apart from absence.
            #[serde(default, alias = "correctedValue", deserialize_with = "present")]
            #[schema(value_type = Object)]
            pub corrected_value: Option<Value>,
            #[serde(default)]
            #[schema(value_type = Option<String>, max_length = 2000)]
            pub reason: Option<Reason>,
        }
    };
}

decision_body! {
    /// `POST /v1/field-reviews/{pd_id}/{field_key}/resolve`: one decision on one held field.
    ResolveBody as ResolveInput {}
}

decision_body! {
    /// `POST /v1/field-reviews/bulk-resolve`: one decision for up to 500 held fields.
    BulkResolveBody as BulkResolveInput {
        #[schema(min_items = 1, max_items = 500)]
        items: Vec<BulkItem>,
    }
}

/// One held field of a bulk resolve. Its id is checked per item (a bad one fails that item in
/// the answer, as a missing one does), so it stays text here.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkItem {
    #[serde(alias = "pipelineDocumentId")]
    pub pipeline_document_id: String,
    #[serde(alias = "fieldKey")]
    pub field_key: String,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "must be an array of pipeline document ids, not null (leave it out for every document)",
        )),
    }
}

/// A pipeline document's id, a UUID in its canonical spelling.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct PipelineDocumentId(pub String);

impl TryFrom<String> for PipelineDocumentId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        crate::domain::ids::parse_id(&s)
            .map(PipelineDocumentId)
            .ok_or_else(|| format!("'{s}' is not a pipeline document id (a UUID)"))
    }
}

/// A stored document's id in a request that may name a great many (a run of up to
/// `--max-pipeline-documents`): parsed on arrival into its 16 bytes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct DocumentId(pub uuid::Uuid);

impl TryFrom<String> for DocumentId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        crate::domain::ids::parse_uuid(&s)
            .map(DocumentId)
            .ok_or_else(|| format!("'{s}' is not a UUID"))
    }
}

/// A reviewer's reason, at most 2,000 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Reason(pub String);

impl TryFrom<String> for Reason {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.chars().count() > 2000 {
            return Err("a reason has at most 2000 characters".into());
        }
        Ok(Reason(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::typed;
    use serde_json::json;

    fn refusal<T: std::fmt::Debug + serde::de::DeserializeOwned>(v: Value) -> String {
        typed::<T>(&v).expect_err("refused").to_string()
    }

    #[test]
    fn strict_bodies_name_what_is_wrong_and_take_the_camel_case_spellings() {
        let b: RerunBody = typed(&json!({"from_phase": "resolution", "dryRun": true})).unwrap();
        assert_eq!((b.from_phase, b.dry_run), (PhaseType::Resolution, true));
        let m = refusal::<RerunBody>(json!({"from_phase": "resolution", "mode": 1}));
        assert!(m.contains("unknown field `mode`"), "{m}");
        let m = refusal::<RerunBody>(json!({"from_phase": "later"}));
        assert!(
            m.contains("'from_phase'") && m.contains("`resolution`"),
            "{m}"
        );
        let m = refusal::<RerunBody>(json!({"from_phase": "resolution", "document_ids": ["x"]}));
        assert!(
            m.contains("'document_ids[0]'") && m.contains("not a pipeline document id"),
            "{m}"
        );
        let m = refusal::<RerunBody>(json!({"from_phase": "resolution", "document_ids": null}));
        assert!(
            m.contains("'document_ids'") && m.contains("not null"),
            "{m}"
        );
        let m = refusal::<RerunBody>(
            json!({"from_phase": "resolution", "document_ids": [], "documentIds": []}),
        );
        assert!(m.contains("duplicate field"), "{m}");

        let r: ResolveBody = typed(&json!({"action": "correct", "correctedValue": null})).unwrap();
        assert_eq!(
            r.corrected_value,
            Some(Value::Null),
            "null is a value, not absence"
        );
        let r: ResolveBody = typed(&json!({"action": "approve"})).unwrap();
        assert_eq!(r.corrected_value, None);
        let m = refusal::<ResolveBody>(json!({"action": "maybe"}));
        assert!(m.contains("'action'") && m.contains("`approve`"), "{m}");
        let m = refusal::<ResolveBody>(json!({"action": "approve", "reason": "x".repeat(2001)}));
        assert!(m.contains("'reason'") && m.contains("2000"), "{m}");

        let b: BulkResolveBody = typed(&json!({"action": "approve",
            "items": [{"pipelineDocumentId": "p", "fieldKey": "f"}]}))
        .unwrap();
        assert_eq!(b.items[0].field_key, "f");
    }
}
