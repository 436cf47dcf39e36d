use super::body::{json_body, typed};
use super::error::ApiError;
use super::extract::{Authed, Id, Read, Write};
use super::idempotency::{write, Reply};
use super::pagination;
use super::{blocking, AppState};
use crate::answers::{self, Deleted, Phase, Rail, SelfLink};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::schema::{self as dschema, FieldDef};
use crate::store;
use crate::store::schemas::{RegistryField, SchemaRow};
use actix_web::{web, HttpRequest, HttpResponse};
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
        id: s.id.clone(),
        short_id: s.short_id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        definition: s.definition.clone(),
        fields: s.fields.clone(),
        field_count: s.fields.len(),
        version: s.version,
        rail: s.rail.clone(),
        created_at: s.created_at.clone(),
        updated_at: s.updated_at.clone(),
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

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: SchemaBody = typed(&raw)?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::bad("name is required"))?;
    check_name(&name)?;
    let fields = input_fields(&b)?.ok_or_else(|| ApiError::bad("Give a definition or fields"))?;
    let fields = dschema::validate_fields(fields).map_err(ApiError::BadRequest)?;
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || sha256_hex(canonical_json(&raw).as_bytes()),
        move |tx| {
            let s =
                store::schemas::insert(tx, &org, name.trim(), b.description.as_deref(), &fields)?;
            Ok(Reply::created(render(&s)))
        },
    )
    .await
}

pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    pagination::newest_first(
        &state,
        &req,
        "schemas",
        store::schemas::list,
        |s| s.seq,
        render,
    )
    .await
}

pub async fn get(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let s = blocking(move || {
        st.db
            .read(|c| store::schemas::get(c, &auth.org_id, &id, false))?
            .ok_or_else(|| ApiError::not_found("Schema"))
    })
    .await?;
    Ok(HttpResponse::Ok().json(render(&s)))
}

async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    id: String,
    payload: web::Payload,
    merge: bool,
) -> Result<HttpResponse, ApiError> {
    let (st, org, lookup) = (state.clone(), auth.org_id.clone(), id.clone());
    blocking(move || {
        st.db
            .read(|c| store::schemas::get(c, &org, &lookup, false))?
            .ok_or_else(|| ApiError::not_found("Schema"))
    })
    .await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: SchemaBody = typed(&raw)?;
    if let Some(n) = &b.name {
        check_name(n)?;
    } else if !merge {
        return Err(ApiError::bad("name is required"));
    }
    let given = input_fields(&b)?;
    if given.is_none() && !merge {
        return Err(ApiError::bad("Give a definition or fields"));
    }
    let org = auth.org_id.clone();
    write(
        &state,
        &req,
        &auth,
        || sha256_hex(canonical_json(&raw).as_bytes()),
        move |tx| {
            let current = store::schemas::get(tx, &org, &id, false)?
                .ok_or_else(|| ApiError::not_found("Schema"))?;
            let fields = match given {
                Some(g) if merge => dschema::merge_fields(&current.fields, g),
                Some(g) => g,
                None => current.fields.clone(),
            };
            let fields = dschema::validate_fields(fields).map_err(ApiError::BadRequest)?;
            let used = crate::engine::spec::fields_used_by_rail(tx, &org, &current)?;
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
            let description = if merge && b.description.is_none() {
                current.description.clone()
            } else {
                b.description.clone()
            };
            let s =
                store::schemas::update(tx, &org, &current, &name, description.as_deref(), &fields)?;
            Ok(Reply::ok(render(&s)))
        },
    )
    .await
}

pub async fn replace(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(state, req, auth, id, payload, false).await
}

pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(state, req, auth, id, payload, true).await
}

pub async fn delete(
    state: web::Data<AppState>,
    auth: Authed<Write>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let body = super::write_now(&state, move |tx| {
        let s = store::schemas::get(tx, &auth.org_id, &id, false)?
            .ok_or_else(|| ApiError::not_found("Schema"))?;
        store::schemas::soft_delete(tx, &auth.org_id, &s)?;
        Ok(Deleted {
            deleted: true,
            id: s.id,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

fn render_field(f: &RegistryField) -> answers::RegistryField {
    answers::RegistryField {
        id: f.id.clone(),
        canonical_name: f.canonical_name.clone(),
        display_name: f.display_name.clone(),
        data_type: f.data_type.clone(),
        synonyms: f.synonyms.clone(),
        occurrence_count: f.occurrence_count,
        created_at: f.created_at.clone(),
    }
}

pub async fn list_fields(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    pagination::newest_first(
        &state,
        &req,
        "fields",
        store::schemas::list_registry,
        |f| f.seq,
        render_field,
    )
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
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Authed<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (st, org, lookup) = (state.clone(), auth.org_id.clone(), id.clone());
    blocking(move || {
        st.db
            .read(|c| store::schemas::get(c, &org, &lookup, false))?
            .ok_or_else(|| ApiError::not_found("Schema"))
            .map(|_| ())
    })
    .await?;
    let raw = json_body(&req, payload, state.config.max_body, false).await?;
    let b: RailBody = typed(&raw)?;
    let rail_v = b.rail.ok_or_else(|| ApiError::bad("rail is required"))?;
    let stages = crate::domain::rail::parse_stages(&rail_v).map_err(ApiError::BadRequest)?;
    let body = super::write_now(&state, move |tx| {
        let s = store::schemas::get(tx, &auth.org_id, &id, false)?
            .ok_or_else(|| ApiError::not_found("Schema"))?;
        let phases = crate::engine::spec::compile_rail(tx, &auth.org_id, &s, &stages)?;
        store::schemas::set_rail(
            tx,
            &id,
            &serde_json::to_value(&stages).unwrap_or(Value::Null),
        )?;
        Ok(rail_answer(&stages, &phases))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub async fn get_rail(
    state: web::Data<AppState>,
    auth: Authed<Read>,
    Id(id): Id,
) -> Result<HttpResponse, ApiError> {
    let body = super::read(&state, move |c| {
        let s = store::schemas::get(c, &auth.org_id, &id, false)?
            .ok_or_else(|| ApiError::not_found("Schema"))?;
        let stages: Vec<crate::domain::rail::Stage> =
            serde_json::from_value(s.rail.clone()).unwrap_or_default();
        // A rail whose policies changed since it was saved may no longer compile; show it anyway.
        let phases =
            crate::engine::spec::compile_rail(c, &auth.org_id, &s, &stages).unwrap_or_default();
        Ok(rail_answer(&stages, &phases))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
