//! Extractors for the handlers' preamble: the contract's first checks, 401 → 403 (scope) → 429
//! → 400 (malformed path id), read off the handler's signature instead of repeated in its body.
//!
//! Actix builds every extractor of a handler at once and polls them in argument order, returning
//! the first error it meets. On SQLite these answer at once (no I/O), so argument order is check
//! order. On PostgreSQL the key check waits on the database (the key cache's change watch and
//! the shared rate bucket are round trips), so it runs on the blocking pool, off actix's
//! worker; a malformed path id's 400 then waits for it (`KeyCheckPending`), and argument order
//! is check order still. Existence (404) and the body (415/413/400) stay in the handler, after
//! them.

use super::auth::{authorization, unauthorized, AuthContext};
use super::body::{json_body, typed};
use super::error::ApiError;
use super::idempotency::{self, Reply};
use super::limits::{answer_streamed, ChunkSink, HeavyPermit};
use super::pagination::{self, query_map, CursorScope, PageRequest};
use super::{path_id, AppState};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::keys::Scope;
use crate::store::{Connection, Transaction};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::ready;
use std::marker::PhantomData;
use std::ops::Deref;

/// The scope a route needs.
pub trait NeedsScope {
    const SCOPE: Scope;
}

/// Routes that only read.
pub struct Read;
/// Routes that change something.
pub struct Write;

impl NeedsScope for Read {
    const SCOPE: Scope = Scope::Read;
}

impl NeedsScope for Write {
    const SCOPE: Scope = Scope::Write;
}

/// The quick tier's extraction routes (a `write` key may call them too).
pub struct Extract;

impl NeedsScope for Extract {
    const SCOPE: Scope = Scope::Extract;
}

/// The scopes whose routes change something: their calls get the write helpers.
pub trait Writes {}
impl Writes for Write {}
impl Writes for Extract {}

/// The caller's key, checked (known, live, within its rate limit) and holding scope `S`.
pub struct Authed<S>(pub AuthContext, PhantomData<S>);

impl<S> Deref for Authed<S> {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("the application state is missing".into()))
}

/// Set while a request's key is being checked off the worker: the path ids' extractors hold
/// their 400 until it is over, so that a 401/403/429 answers first.
#[derive(Clone)]
struct KeyCheckPending(tokio::sync::watch::Receiver<bool>);

type Authenticated = (web::Data<AppState>, AuthContext);

/// The caller's key checked for `scope`: in place on SQLite, on the blocking pool on
/// PostgreSQL.
fn authenticate(
    req: &HttpRequest,
    scope: Scope,
) -> LocalBoxFuture<'static, Result<Authenticated, ApiError>> {
    let st = match app_state(req) {
        Ok(st) => st.clone(),
        Err(e) => return Box::pin(ready(Err(e))),
    };
    if !st.db.is_postgres() {
        let auth = st.authorize(req, scope);
        return Box::pin(ready(auth.map(|a| (st, a))));
    }
    let raw = match authorization(req) {
        Ok(Some(raw)) => raw.to_string(),
        Ok(None) => return Box::pin(ready(Err(unauthorized()))),
        Err(e) => return Box::pin(ready(Err(e))),
    };
    let (done, pending) = tokio::sync::watch::channel(false);
    req.extensions_mut().insert(KeyCheckPending(pending));
    let req = req.clone();
    Box::pin(async move {
        let checking = st.clone();
        let checked = super::block(move || checking.check_key(&raw, scope)).await;
        let _ = done.send(true);
        let checked = checked?;
        if let Some(info) = checked.figures {
            req.extensions_mut().insert(info);
        }
        checked.auth.map(|a| (st, a))
    })
}

/// A path extractor's answer, an error held until the request's key check is over.
fn after_key_check<T: 'static>(
    req: &HttpRequest,
    parsed: Result<T, ApiError>,
) -> LocalBoxFuture<'static, Result<T, ApiError>> {
    let pending = match &parsed {
        Err(_) => req.extensions().get::<KeyCheckPending>().cloned(),
        Ok(_) => None,
    };
    match pending {
        None => Box::pin(ready(parsed)),
        Some(KeyCheckPending(mut done)) => Box::pin(async move {
            // A check dropped unfinished (the request ended) closes the channel: answer then.
            let _ = done.wait_for(|d| *d).await;
            parsed
        }),
    }
}

impl<S: NeedsScope> FromRequest for Authed<S> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = authenticate(req, S::SCOPE);
        Box::pin(async move { Ok(Authed(auth.await?.1, PhantomData)) })
    }
}

macro_rules! path_ids {
    ($($(#[$doc:meta])* $name:ident => $param:literal;)+) => {$(
        $(#[$doc])*
        pub struct $name(pub String);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                after_key_check(req, path_id(req, $param).map($name))
            }
        }
    )+};
}

path_ids! {
    /// The resource's id (`{id}` in the route), a UUID.
    Id => "id";
    /// A validation stage's id (`{stage_id}`), a UUID.
    StageId => "stage_id";
    /// A policy rule's id (`{rule_id}`), a UUID.
    RuleId => "rule_id";
}

/// A schema's `{id}` in the route: its UUID or its `short_id`.
pub struct SchemaRef(pub String);

impl FromRequest for SchemaRef {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or("");
        let parsed = crate::domain::ids::parse_schema_ref(raw)
            .map(SchemaRef)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "'{raw}' is not a valid schema id (expected a UUID or SCH-XXXXXXXX)"
                ))
            });
        after_key_check(req, parsed)
    }
}

/// A handler's call: the application, the request and the caller's key holding scope `S`.
/// Its methods are the steps every handler takes in the contract's order: existence, body,
/// then the read or the write, each off the actix worker.
pub struct Call<S> {
    pub state: web::Data<AppState>,
    pub req: HttpRequest,
    pub auth: Authed<S>,
}

impl<S: NeedsScope> FromRequest for Call<S> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = authenticate(req, S::SCOPE);
        let req = req.clone();
        Box::pin(async move {
            let (state, auth) = auth.await?;
            Ok(Call {
                state,
                req,
                auth: Authed(auth, PhantomData),
            })
        })
    }
}

/// A JSON body as sent (its canonical hash fingerprints an idempotent write) and as parsed.
pub struct Body<T> {
    pub raw: Value,
    pub parsed: T,
}

impl<S> Call<S> {
    /// The caller's organization.
    pub fn org(&self) -> String {
        self.auth.org_id.clone()
    }

    /// A read on a pooled connection in the caller's organization.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let org = self.org();
        super::read(&self.state, move |c| f(c, &org)).await
    }

    /// A read answered as `200` JSON.
    pub async fn answer<T: Serialize + Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &str) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Ok().json(self.read(f).await?))
    }

    /// An answer written as it is read, inside one read snapshot: built whole up to 1 MiB,
    /// streamed past that (`limits::answer_streamed`).
    pub async fn stream(
        &self,
        permit: Option<HeavyPermit>,
        content_type: &'static str,
        f: impl FnOnce(&mut ChunkSink, &Connection, &str) -> Result<(), ApiError> + Send + 'static,
    ) -> Result<HttpResponse, ApiError> {
        let (st, org) = (self.state.clone(), self.org());
        answer_streamed(
            self.state.heavy.clone(),
            permit,
            content_type,
            move |sink| st.db.read_snapshot(|c| f(sink, c, &org)),
        )
        .await
    }

    /// A heavy-read permit (503 when all are taken) when `needed`.
    pub fn heavy_if(&self, needed: bool) -> Result<Option<HeavyPermit>, ApiError> {
        needed.then(|| self.state.heavy.try_enter()).transpose()
    }

    /// The JSON body, parsed into `T` (an empty body reads as `{}` when `empty_ok`).
    pub async fn body<T: DeserializeOwned>(
        &self,
        payload: web::Payload,
        empty_ok: bool,
    ) -> Result<Body<T>, ApiError> {
        let raw = json_body(&self.req, payload, self.state.config.max_body, empty_ok).await?;
        let parsed = typed(&raw)?;
        Ok(Body { raw, parsed })
    }
}

impl<S> Call<S> {
    /// The body of a request on the resource `id`, read once `find` has found it: a missing
    /// resource is 404 before the body's own checks (415, 413, 400).
    pub async fn body_for<T: DeserializeOwned, R: 'static>(
        &self,
        find: fn(&Connection, &str, &str) -> Result<R, ApiError>,
        id: &str,
        payload: web::Payload,
    ) -> Result<Body<T>, ApiError> {
        self.found(find, id, payload, false).await
    }

    /// As `body_for`, for a body that may be left out (it reads as `{}`).
    pub async fn optional_body_for<T: DeserializeOwned, R: 'static>(
        &self,
        find: fn(&Connection, &str, &str) -> Result<R, ApiError>,
        id: &str,
        payload: web::Payload,
    ) -> Result<Body<T>, ApiError> {
        self.found(find, id, payload, true).await
    }

    async fn found<T: DeserializeOwned, R: 'static>(
        &self,
        find: fn(&Connection, &str, &str) -> Result<R, ApiError>,
        id: &str,
        payload: web::Payload,
        empty_ok: bool,
    ) -> Result<Body<T>, ApiError> {
        let id = id.to_string();
        self.read(move |c, org| find(c, org, &id).map(|_| ()))
            .await?;
        self.body(payload, empty_ok).await
    }

    /// The query string, and the page it asks of the caller's list `list` (at most `max` rows;
    /// cursors are sealed to the organization and the list). A query parameter that is neither
    /// `limit`, `cursor` nor one of `filters` is refused: a filter the list does not know must
    /// not answer as if it had been applied.
    pub fn page(
        &self,
        list: &str,
        max: i64,
        filters: &[&str],
    ) -> Result<(HashMap<String, String>, CursorScope, PageRequest), ApiError> {
        let q = query_map(self.req.query_string())?;
        pagination::only_known(&q, filters)?;
        let cursors = self.state.cursors.scope(&self.auth.org_id, list);
        let page = pagination::parse(&q, &cursors, max)?;
        Ok((q, cursors, page))
    }
}

impl Call<Read> {
    /// A durable write a read route makes on the side (a cache), with no answer of its own.
    pub async fn change_quietly(
        &self,
        f: impl FnOnce(&Transaction) -> Result<(), ApiError> + Send + 'static,
    ) -> Result<(), ApiError> {
        super::write_now(&self.state, f).await
    }
}

impl<S: Writes> Call<S> {
    /// An idempotent write (`Idempotency-Key`) fingerprinted by the body it was asked with.
    pub async fn write(
        &self,
        raw: &Value,
        op: impl FnOnce(&Transaction, &str) -> Result<Reply, ApiError> + Send + 'static,
    ) -> Result<HttpResponse, ApiError> {
        self.write_with(|| sha256_hex(canonical_json(raw).as_bytes()), op)
            .await
    }

    /// An idempotent write fingerprinted by `body_hash` (computed only when a key is given).
    pub async fn write_with(
        &self,
        body_hash: impl FnOnce() -> String,
        op: impl FnOnce(&Transaction, &str) -> Result<Reply, ApiError> + Send + 'static,
    ) -> Result<HttpResponse, ApiError> {
        let org = self.org();
        idempotency::write(&self.state, &self.req, &self.auth, body_hash, move |tx| {
            op(tx, &org)
        })
        .await
    }

    /// A durable write that needs no idempotency (PUT, PATCH, DELETE), answered as `200` JSON.
    pub async fn change<T: Serialize + Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction, &str) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<HttpResponse, ApiError> {
        let org = self.org();
        let body = super::write_now(&self.state, move |tx| f(tx, &org)).await?;
        Ok(HttpResponse::Ok().json(body))
    }
}
