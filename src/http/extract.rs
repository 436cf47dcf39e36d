//! Extractors for the handlers' preamble: the contract's first checks, 401 → 403 (scope) → 429
//! → 400 (malformed path id), read off the handler's signature instead of repeated in its body.
//!
//! Actix builds every extractor of a handler at once and polls them in argument order, returning
//! the first error it meets. These answer at once (no I/O), so argument order is check order.
//! Existence (404) and the body (415/413/400) stay in the handler, after them: they wait on I/O,
//! and a waiting extractor would let a later one answer first.

use super::auth::AuthContext;
use super::error::ApiError;
use super::{path_id, AppState};
use crate::domain::keys::Scope;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};
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

impl<S: NeedsScope> FromRequest for Authed<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            app_state(req)
                .and_then(|st| st.authorize(req, S::SCOPE))
                .map(|a| Authed(a, PhantomData)),
        )
    }
}

macro_rules! path_ids {
    ($($(#[$doc:meta])* $name:ident => $param:literal;)+) => {$(
        $(#[$doc])*
        pub struct $name(pub String);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Ready<Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                ready(path_id(req, $param).map($name))
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
