use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, SchemaRef, Write};
use super::idempotency::Reply;
use super::pagination;
use crate::answers::{self, Deleted, Phase, Rail, SelfLink};
use crate::domain::schema::{self as dschema, FieldDef};
use crate::store;
use crate::store::schemas::{RegistryField, SchemaRow};
use crate::store::Connection;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// A schema's name, description and fields: `definition` (a JSON Schema object) or `fields`
/// (an array of field objects, or an object of names to types), not both.
#[derive(Deserialize, ToSchema)]
#[schema(as = SchemaInput)]
pub struct SchemaBody {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    description: Option<String>,
    #[schema(value_type = Option<Object>)]
    definition: Option<Value>,
    fields: Option<Value>,
}

/// A rail: its stages in order, at most 50.
#[derive(Deserialize, ToSchema)]
#[schema(as = RailInput)]
pub struct RailBody {
    #[schema(value_type = Option<Vec<Object>>, max_items = 50)]
    rail: Option<Value>,
}

pub fn render(s: &SchemaRow) -> answers::Schema {
    answers::Schema {
        schema: s.clone(),
        field_count: s.fields.len(),
        links: SelfLink::to(format!("/v1/schemas/{}", s.id)),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 100 {
        return Err(ApiError::bad("name must be 1-100 characters"));
    }
    Ok(())
}

/// The fields given by `definition` or `fields` (exactly one), or `None` when neither is.
fn input_fields(b: &SchemaBody) -> Result<Option<Vec<FieldDef>>, ApiError> {
    match (&b.definition, &b.fields) {
        (Some(_), Some(_)) => Err(ApiError::bad("Give either definition or fields, not both")),
        (Some(d), None) => Ok(Some(
            dschema::fields_from_definition(d).map_err(ApiError::BadRequest)?,
        )),
        (None, Some(f)) => Ok(Some(
            dschema::fields_from_input(f).map_err(ApiError::BadRequest)?,
        )),
        (None, None) => Ok(None),
    }
}

/// The schema, 404 unless it is the caller's and not deleted.
fn load(c: &Connection, org: &str, id: &str) -> Result<SchemaRow, ApiError> {
    store::schemas::get(c, org, id, false)?.ok_or_else(|| ApiError::not_found("Schema"))
}

pub async fn create(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body::<SchemaBody>(payload, false).await?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::bad("name is required"))?;
    check_name(&name)?;
    let fields = input_fields(&b)?.ok_or_else(|| ApiError::bad("Give a definition or fields"))?;
    let fields = dschema::validate_fields(fields).map_err(ApiError::BadRequest)?;
    call.write(&raw, move |tx, org| {
        let s = store::schemas::insert(tx, org, name.trim(), b.description.as_deref(), &fields)?;
        Ok(Reply::created(render(&s)))
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    pagination::newest_first(
        &call,
        "schemas",
        &[],
        store::schemas::list,
        |s| s.seq,
        render,
    )
    .await
}

pub async fn get(call: Call<Read>, SchemaRef(id): SchemaRef) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| Ok(render(&load(c, org, &id)?)))
        .await
}

async fn update(
    call: Call<Write>,
    id: String,
    payload: web::Payload,
    merge: bool,
) -> Result<HttpResponse, ApiError> {
    let lookup = id.clone();
    call.read(move |c, org| load(c, org, &lookup).map(|_| ()))
        .await?;
    let Body { raw, parsed: b } = call.body::<SchemaBody>(payload, false).await?;
    if let Some(n) = &b.name {
        check_name(n)?;
    }
    let given = input_fields(&b)?;
    // A PUT replaces what it names and keeps what it leaves out, as Talonic's clients expect
    // (an update with only a name renames); naming nothing is a mistake, not a no-op.
    if !merge && b.name.is_none() && b.description.is_none() && given.is_none() {
        return Err(ApiError::bad(
            "Give at least one of name, description, definition or fields",
        ));
    }
    call.write(&raw, move |tx, org| {
        let current = load(tx, org, &id)?;
        let fields = match given {
            Some(g) if merge => dschema::merge_fields(&current.fields, g),
            Some(g) => g,
            None => current.fields.clone(),
        };
        let fields = dschema::validate_fields(fields).map_err(ApiError::BadRequest)?;
        let used = crate::engine::spec::fields_used_by_rail(tx, org, &current)?;
        if let Some(f) = used
            .iter()
            .find(|u| !fields.iter().any(|f| &f.field_name == *u))
        {
            return Err(ApiError::bad(format!(
                "Field '{f}' is used by a policy or gate of the rail and cannot be removed"
            )));
        }
        let name = b
            .name
            .as_deref()
            .map(str::trim)
            .unwrap_or(&current.name)
            .to_string();
        let description = b
            .description
            .clone()
            .or_else(|| current.description.clone());
        let s = store::schemas::update(tx, org, &current, &name, description.as_deref(), &fields)?;
        Ok(Reply::ok(render(&s)))
    })
    .await
}

pub async fn replace(
    call: Call<Write>,
    SchemaRef(id): SchemaRef,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(call, id, payload, false).await
}

pub async fn patch(
    call: Call<Write>,
    SchemaRef(id): SchemaRef,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(call, id, payload, true).await
}

pub async fn delete(call: Call<Write>, SchemaRef(id): SchemaRef) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        let s = load(tx, org, &id)?;
        store::schemas::soft_delete(tx, org, &s)?;
        Ok(Deleted {
            deleted: true,
            id: s.id,
        })
    })
    .await
}

fn field_names(f: &RegistryField) -> Vec<String> {
    let mut names = vec![f.canonical_name.clone(), f.display_name.clone()];
    names.extend(f.synonyms.iter().cloned());
    names
}

fn render_field(f: &RegistryField) -> answers::Field {
    answers::Field {
        id: f.id.clone(),
        canonical_name: f.canonical_name.clone(),
        display_name: f.display_name.clone(),
        data_type: f.data_type.clone(),
        synonyms: f.synonyms.clone(),
        tier: 1,
        cluster_name: crate::domain::labels::cluster_of(&field_names(f)).map(str::to_string),
        occurrence_count: f.occurrence_count,
        created_at: f.created_at.clone(),
        items: f.items.clone(),
        links: answers::FieldLinks {
            self_: format!("/v1/fields/{}", f.id),
            similar: format!("/v1/fields/{}/similar", f.id),
        },
    }
}

/// `GET /v1/fields`: `search` (a substring of any of its names, any case), `tier`, `cluster`.
pub async fn list_fields(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) = call.page("fields", 100, &["search", "tier", "cluster"])?;
    let search = q.get("search").map(|s| s.to_lowercase());
    let tier = q
        .get("tier")
        .map(|t| {
            t.parse::<i64>()
                .map_err(|_| ApiError::bad("tier must be an integer"))
        })
        .transpose()?;
    let cluster = q.get("cluster").map(|c| c.to_lowercase());
    call.answer(move |c, org| {
        let matching: Vec<(i64, answers::Field)> = store::schemas::registry_all(c, org)?
            .iter()
            .filter(|f| {
                search.as_ref().is_none_or(|s| {
                    field_names(f)
                        .iter()
                        .any(|n| n.to_lowercase().contains(s.as_str()))
                })
            })
            .map(|f| (f.seq, render_field(f)))
            .filter(|(_, f)| tier.is_none_or(|t| t == f.tier))
            .filter(|(_, f)| {
                cluster.as_ref().is_none_or(|want| {
                    f.cluster_name
                        .as_ref()
                        .is_some_and(|n| n.to_lowercase() == *want)
                })
            })
            .collect();
        let total = matching.len() as i64;
        let rows: Vec<(i64, answers::Field)> = matching
            .into_iter()
            .filter(|(seq, _)| page.after.is_none_or(|a| *seq < a))
            .take(page.limit as usize + 1)
            .collect();
        let p = pagination::page(rows, total, &page, &cursors, |(seq, _)| *seq, |r| r);
        Ok(answers::Page {
            data: p.data.into_iter().map(|(_, f)| f).collect(),
            pagination: p.pagination,
        })
    })
    .await
}

fn registry_field(c: &Connection, org: &str, id: &str) -> Result<RegistryField, ApiError> {
    store::schemas::registry_field(c, org, id)?.ok_or_else(|| ApiError::not_found("Field"))
}

pub async fn get_field(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| Ok(render_field(&registry_field(c, org, &id)?)))
        .await
}

/// `GET /v1/fields/{id}/similar`: the registry's other fields, most alike first (the same
/// lexicon group, then shared words), those with nothing in common left out.
pub async fn similar_fields(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let q = pagination::query_map(call.req.query_string())?;
    pagination::only_known(&q, &["limit"])?;
    let limit = match q.get("limit") {
        None => 10,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad("limit must be an integer from 1 to 100"))?,
    };
    call.answer(move |c, org| {
        let me = registry_field(c, org, &id)?;
        let mine = field_names(&me);
        let mut alike: Vec<answers::SimilarField> = store::schemas::registry_all(c, org)?
            .iter()
            .filter(|f| f.id != me.id)
            .map(|f| answers::SimilarField {
                similarity: crate::domain::labels::similarity(&mine, &field_names(f)),
                field: render_field(f),
            })
            .filter(|s| s.similarity > 0.0)
            .collect();
        alike.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        alike.truncate(limit);
        Ok(answers::SimilarFields {
            field_id: me.id,
            data: alike,
        })
    })
    .await
}

fn rail_answer(
    rail: &[crate::domain::rail::Stage],
    phases: &[(crate::domain::rail::Phase, Value)],
) -> Rail {
    Rail {
        rail: json!(rail),
        phases: phases
            .iter()
            .map(|(p, _)| Phase {
                index: p.index,
                phase_id: p.phase_id.clone(),
                kind: p.kind.as_str(),
                name: p.name.clone(),
            })
            .collect(),
    }
}

pub async fn put_rail(
    call: Call<Write>,
    SchemaRef(id): SchemaRef,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let lookup = id.clone();
    call.read(move |c, org| load(c, org, &lookup).map(|_| ()))
        .await?;
    let b: Body<RailBody> = call.body(payload, false).await?;
    let rail_v = b
        .parsed
        .rail
        .ok_or_else(|| ApiError::bad("rail is required"))?;
    let stages = crate::domain::rail::parse_stages(&rail_v).map_err(ApiError::BadRequest)?;
    let models = call.state.models.names();
    call.change(move |tx, org| {
        let s = load(tx, org, &id)?;
        let phases = crate::engine::spec::compile_rail(tx, org, &s, &stages, &models)?;
        store::schemas::set_rail(tx, &s.id, &json!(stages))?;
        Ok(rail_answer(&stages, &phases))
    })
    .await
}

pub async fn get_rail(
    call: Call<Read>,
    SchemaRef(id): SchemaRef,
) -> Result<HttpResponse, ApiError> {
    let models = call.state.models.names();
    call.answer(move |c, org| {
        let s = load(c, org, &id)?;
        let stages: Vec<crate::domain::rail::Stage> =
            serde_json::from_value(s.rail.clone()).unwrap_or_default();
        // A rail whose policies changed since it was saved may no longer compile; show it anyway.
        let phases =
            crate::engine::spec::compile_rail(c, org, &s, &stages, &models).unwrap_or_default();
        Ok(rail_answer(&stages, &phases))
    })
    .await
}
