//! Finding documents by what they say and by what was extracted from them:
//! `GET /v1/search` and `POST /v1/documents/filter` (a query, so scope `read`).

use super::error::ApiError;
use super::extract::{Call, Read};
use super::pagination::{only_known, query_map};
use crate::answers::{
    FilterAnswer, FilterPagination, FilterWarning, FilteredDocument, SearchAnswer, SearchDocument,
    SearchField, SearchFieldMatch, SearchSchema,
};
use crate::domain::query::{self, Op};
use crate::engine::quick::{current_values, DocValues};
use crate::store;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /v1/search?q=…` (or `query=`), `limit` per collection (1–100, default 20).
pub async fn search(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let q = query_map(call.req.query_string())?;
    only_known(&q, &["q", "query"])?;
    let text = q
        .get("q")
        .or_else(|| q.get("query"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be an integer from 1 to 100"))?,
    };
    if q.contains_key("cursor") {
        return Err(ApiError::bad(
            "search is not paginated: narrow the query or raise limit",
        ));
    }
    // It reads every document's text and current values: a heavy read.
    let permit = call.heavy_if(true)?;
    let answer = call.read(move |c, org| {
        if text.is_empty() {
            return Ok(empty());
        }
        let needle = text.to_lowercase();
        let documents = store::documents::search(c, org, &text, limit)?
            .into_iter()
            .map(|d| SearchDocument {
                id: d.id,
                name: d.filename,
            })
            .collect();
        let registry = store::schemas::registry_all(c, org)?;
        let values = current_values(c, org)?;
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        // How many documents show a value of each field now.
        for d in &values {
            for (f, v) in &d.values {
                if !v.is_null() {
                    *counts.entry(f.clone()).or_default() += 1;
                }
            }
        }
        let field_matches = value_matches(&values, &needle, limit as usize)
            .into_iter()
            .map(|((field, value), n)| {
                let reg = registry.iter().find(|r| r.canonical_name == field);
                SearchFieldMatch {
                    resolved_field_id: reg.map(|r| r.id.clone()),
                    display_name: reg.map(|r| r.display_name.clone()).unwrap_or(field.clone()),
                    data_type: reg.map(|r| r.data_type.clone()),
                    filterable: true,
                    field_name: field,
                    matched_value: value,
                    document_count: n,
                }
            })
            .collect();
        let schemas = store::schemas::list(c, org, None, i64::MAX)?
            .0
            .into_iter()
            .filter(|s| s.name.to_lowercase().contains(&needle))
            .take(limit as usize)
            .map(|s| SearchSchema {
                id: s.id,
                name: s.name,
            })
            .collect();
        let fields = registry
            .iter()
            .filter(|r| {
                r.canonical_name.to_lowercase().contains(&needle)
                    || r.display_name.to_lowercase().contains(&needle)
                    || r.synonyms
                        .iter()
                        .any(|s| s.to_lowercase().contains(&needle))
            })
            .take(limit as usize)
            .map(|r| SearchField {
                id: Some(r.id.clone()),
                canonical_name: r.canonical_name.clone(),
                display_name: r.display_name.clone(),
                document_count: Some(counts.get(&r.canonical_name).copied().unwrap_or(0)),
                filterable: true,
                data_type: Some(r.data_type.clone()),
            })
            .collect();
        Ok(SearchAnswer {
            documents,
            field_matches,
            sources: Vec::new(),
            schemas,
            fields,
        })
    });
    let answer = answer.await;
    drop(permit);
    Ok(HttpResponse::Ok().json(answer?))
}

fn empty() -> SearchAnswer {
    SearchAnswer {
        documents: Vec::new(),
        field_matches: Vec::new(),
        sources: Vec::new(),
        schemas: Vec::new(),
        fields: Vec::new(),
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Current values containing `needle`, by (field, value), with how many documents show them;
/// the most common first.
fn value_matches(values: &[DocValues], needle: &str, limit: usize) -> Vec<((String, String), i64)> {
    let mut hits: BTreeMap<(String, String), i64> = BTreeMap::new();
    for d in values {
        for (field, v) in &d.values {
            if let Some(t) = as_text(v).filter(|t| t.to_lowercase().contains(needle)) {
                *hits.entry((field.clone(), t)).or_default() += 1;
            }
        }
    }
    let mut out: Vec<_> = hits.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit);
    out
}

/// `POST /v1/documents/filter`.
#[derive(Deserialize, ToSchema, Default)]
#[schema(as = FilterInput)]
pub struct FilterBody {
    /// ANDed together.
    conditions: Option<Vec<ConditionBody>>,
    /// A substring of the filename, any case.
    search: Option<String>,
    sort: Option<SortBody>,
    /// 1-based (default 1).
    page: Option<i64>,
    /// The `pagination.next_cursor` of the previous page (instead of `page`).
    cursor: Option<String>,
    /// Default 50; more than 500 reads as 500.
    limit: Option<i64>,
    /// Narrows to documents whose metadata names this `source_id`.
    source_id: Option<String>,
    source_connection_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = FilterCondition)]
pub struct ConditionBody {
    /// A field's name or its Field Registry id.
    #[serde(alias = "fieldId", alias = "field")]
    field_id: Option<String>,
    /// eq, neq, gt, gte, lt, lte, between, contains, is_empty, is_not_empty.
    operator: Option<String>,
    #[schema(value_type = Object)]
    value: Option<Value>,
    #[serde(alias = "valueTo")]
    #[schema(value_type = Object)]
    value_to: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = FilterSort)]
pub struct SortBody {
    #[serde(alias = "fieldId", alias = "field")]
    field_id: Option<String>,
    /// asc or desc.
    direction: Option<String>,
}

struct Condition {
    field: String,
    op: Op,
    value: Value,
    value_to: Value,
}

fn conditions(raw: Vec<ConditionBody>) -> Result<Vec<Condition>, ApiError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, c)| {
            let field = c
                .field_id
                .filter(|f| !f.trim().is_empty())
                .ok_or_else(|| ApiError::bad(format!("conditions[{i}].fieldId is required")))?;
            let op_name = c
                .operator
                .ok_or_else(|| ApiError::bad(format!("conditions[{i}].operator is required")))?;
            let op = Op::parse(&op_name).ok_or_else(|| {
                ApiError::bad(format!(
                    "conditions[{i}].operator must be one of {} (got '{op_name}')",
                    query::OPERATORS
                ))
            })?;
            let value = c.value.unwrap_or(Value::Null);
            let value_to = c.value_to.unwrap_or(Value::Null);
            if op.operands() >= 1 && value.is_null() {
                return Err(ApiError::bad(format!(
                    "conditions[{i}].value is required for {op_name}"
                )));
            }
            if op.operands() == 2 && value_to.is_null() {
                return Err(ApiError::bad(format!(
                    "conditions[{i}].valueTo is required for between"
                )));
            }
            Ok(Condition {
                field,
                op,
                value,
                value_to,
            })
        })
        .collect()
}

/// A condition's field as documents know it: a registry id names its canonical name.
fn field_name(field: &str, registry: &[store::schemas::RegistryField]) -> String {
    registry
        .iter()
        .find(|r| r.id == field)
        .map(|r| r.canonical_name.clone())
        .unwrap_or_else(|| field.to_string())
}

pub async fn filter(call: Call<Read>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    // Every POST takes an Idempotency-Key and refuses a malformed one; a query has no effect
    // to replay, so a well-formed key changes nothing.
    super::idempotency::idempotency_key(&call.req)?;
    let b = call.body::<FilterBody>(payload, true).await?.parsed;
    let conds = conditions(b.conditions.unwrap_or_default())?;
    // Talonic clamps the page size to 500; a page size under 1 is a mistake.
    let limit = b.limit.unwrap_or(50).min(500);
    if limit < 1 {
        return Err(ApiError::bad("limit must be 1 or more"));
    }
    let cursors = call
        .state
        .cursors
        .scope(&call.auth.org_id, "documents:filter");
    // Pages are numbered; a cursor (what the Python SDK sends) names the next one.
    let page = match (&b.cursor, b.page) {
        (Some(_), Some(_)) => return Err(ApiError::bad("Give page or cursor, not both")),
        (Some(c), None) => cursors.decode(c)?,
        (None, p) => p.unwrap_or(1),
    };
    if !(1..=1_000_000).contains(&page) {
        return Err(ApiError::bad("page must be from 1 to 1000000"));
    }
    let source = b.source_id.or(b.source_connection_id);
    if let Some(s) = &source {
        crate::domain::ids::parse_id(s).ok_or_else(|| ApiError::bad("source_id must be a UUID"))?;
    }
    let sort = match b.sort {
        None => None,
        Some(s) => {
            let field = s
                .field_id
                .ok_or_else(|| ApiError::bad("sort.fieldId is required"))?;
            let desc = match s.direction.as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(_) => return Err(ApiError::bad("sort.direction must be asc or desc")),
            };
            Some((field, desc))
        }
    };
    let search = b.search.map(|s| s.to_lowercase()).filter(|s| !s.is_empty());
    // It reads every document's current values: a heavy read.
    let permit = call.heavy_if(true)?;
    let answer = call.read(move |c, org| {
        let registry = store::schemas::registry_all(c, org)?;
        let conds: Vec<Condition> = conds
            .into_iter()
            .map(|cd| Condition {
                field: field_name(&cd.field, &registry),
                ..cd
            })
            .collect();
        let mut warnings = Vec::new();
        for cd in &conds {
            match registry.iter().find(|r| r.canonical_name == cd.field) {
                None => warnings.push(FilterWarning {
                    code: "unknown_field".into(),
                    message: format!(
                        "No field named '{}' in the Field Registry: nothing matches it",
                        cd.field
                    ),
                    field: cd.field.clone(),
                }),
                Some(r) if cd.op.orders() && !query::orders_meaningfully(&r.data_type) => warnings
                    .push(FilterWarning {
                        code: "ordering_on_text".into(),
                        message: format!(
                            "'{}' is a {} field: its values are compared as text",
                            cd.field, r.data_type
                        ),
                        field: cd.field.clone(),
                    }),
                Some(_) => {}
            }
        }
        let sources: Option<Vec<String>> = match &source {
            None => None,
            Some(s) => Some(
                store::documents::list_filtered(
                    c,
                    org,
                    &store::documents::DocFilter {
                        source_id: Some(s.clone()),
                        ..Default::default()
                    },
                    None,
                    i64::MAX,
                )?
                .0
                .into_iter()
                .map(|d| d.id)
                .collect(),
            ),
        };
        let null = Value::Null;
        let mut hits: Vec<DocValues> = current_values(c, org)?
            .into_iter()
            .filter(|d| sources.as_ref().is_none_or(|s| s.contains(&d.document_id)))
            .filter(|d| {
                search
                    .as_ref()
                    .is_none_or(|s| d.filename.to_lowercase().contains(s))
            })
            .filter(|d| {
                conds.iter().all(|cd| {
                    let v = d.values.get(&cd.field).unwrap_or(&null);
                    query::matches(cd.op, v, &cd.value, &cd.value_to)
                })
            })
            .collect();
        if let Some((field, desc)) = &sort {
            let field = field_name(field, &registry);
            hits.sort_by(|a, b| {
                let (x, y) = (
                    a.values.get(&field).unwrap_or(&null),
                    b.values.get(&field).unwrap_or(&null),
                );
                let ord = order_values(x, y);
                if *desc {
                    ord.reverse()
                } else {
                    ord
                }
            });
        }
        let total = hits.len() as i64;
        // page ≤ 10^6 and limit ≤ 500: no overflow.
        let data = hits
            .into_iter()
            .skip(((page - 1) * limit) as usize)
            .take(limit as usize)
            .map(|d| FilteredDocument {
                document_id: d.document_id,
                filename: d.filename,
                fields: d.values,
            })
            .collect();
        Ok(FilterAnswer {
            data,
            total,
            page,
            pagination: FilterPagination {
                total,
                limit,
                has_more: page * limit < total,
                next_cursor: (page * limit < total).then(|| cursors.encode(page + 1)),
            },
            warnings,
        })
    });
    let answer = answer.await;
    drop(permit);
    Ok(HttpResponse::Ok().json(answer?))
}

/// Values in sort order, a total order whatever a field holds: numbers by size, then the rest
/// as text, missing values last.
fn order_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::Null => 2,
            _ => 1,
        }
    }
    rank(a)
        .cmp(&rank(b))
        .then_with(|| match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => as_text(a).cmp(&as_text(b)),
        })
}

#[cfg(test)]
mod tests {
    use super::order_values;
    use serde_json::json;

    #[test]
    fn mixed_values_sort_in_one_total_order() {
        let mut v = vec![
            json!("1a"),
            json!(10),
            json!(null),
            json!(9),
            json!("b"),
            json!(2.5),
        ];
        v.sort_by(order_values);
        assert_eq!(
            v,
            vec![
                json!(2.5),
                json!(9),
                json!(10),
                json!("1a"),
                json!("b"),
                json!(null)
            ]
        );
    }
}
