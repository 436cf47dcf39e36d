//! `Idempotency-Key` handling around every POST: 2xx answers are stored in the transaction of
//! the request's effect and replayed for the same fingerprint.

use super::auth::AuthContext;
use super::error::ApiError;
use super::AppState;
use crate::domain::canonical::sha256_hex;
use crate::engine::Effects;
use crate::store::idempotency::{self, Claim};
use crate::store::Transaction;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

/// A successful write's answer, and what it asks of the world once committed.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub effects: Effects,
}

impl Reply {
    pub fn ok(body: impl serde::Serialize) -> Self {
        Reply {
            status: StatusCode::OK,
            body: serde_json::json!(body),
            effects: Effects::default(),
        }
    }
    pub fn created(body: impl serde::Serialize) -> Self {
        Reply {
            status: StatusCode::CREATED,
            body: serde_json::json!(body),
            effects: Effects::default(),
        }
    }
    pub fn accepted(body: impl serde::Serialize) -> Self {
        Reply {
            status: StatusCode::ACCEPTED,
            body: serde_json::json!(body),
            effects: Effects::default(),
        }
    }
    pub fn with(mut self, effects: Effects) -> Self {
        self.effects = effects;
        self
    }
}

pub(super) fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let s = raw
        .to_str()
        .ok()
        .filter(|s| (1..=255).contains(&s.len()) && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| ApiError::bad("Idempotency-Key must be 1-255 printable ASCII characters"))?;
    Ok(Some(s.to_string()))
}

/// Runs `op` in one durable immediate transaction, with idempotency when the header is present.
/// `body_hash` gives the SHA-256 of the canonical body; it is only computed when the request
/// carries an `Idempotency-Key`.
pub async fn write<F>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    auth: &AuthContext,
    body_hash: impl FnOnce() -> String,
    op: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(&Transaction) -> Result<Reply, ApiError> + Send + 'static,
{
    let key = idempotency_key(req)?;
    let st = state.clone();
    let Some(key) = key else {
        // What the fingerprint would read (a whole request body) is not kept through the write.
        drop(body_hash);
        let reply = super::block(move || st.db.write(true, op)).await??;
        return Ok(respond(state, req, reply));
    };
    let fingerprint = sha256_hex(
        format!(
            "{}\n{}\n{}\n{}",
            req.method(),
            req.path(),
            req.query_string(),
            body_hash()
        )
        .as_bytes(),
    );
    let org = auth.org_id.clone();
    let (k, fp, node) = (key.clone(), fingerprint.clone(), state.node.id());
    let claim = super::block(move || {
        st.db.write(false, |tx| {
            idempotency::claim(tx, &org, &k, &fp, &node).map_err(ApiError::from)
        })
    })
    .await??;
    match claim {
        Claim::Mismatch => {
            return Err(ApiError::Conflict(
                "This Idempotency-Key was already used with a different request".into(),
            ))
        }
        Claim::InFlight => return Err(ApiError::InFlight),
        Claim::Replay {
            status,
            content_type,
            body,
        } => {
            return Ok(
                HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                    .insert_header(("Idempotent-Replayed", "true"))
                    .content_type(content_type)
                    .body(body),
            )
        }
        Claim::Proceed => {}
    }
    let st = state.clone();
    let org = auth.org_id.clone();
    let k = key.clone();
    let result = super::block(move || {
        st.db.write(true, |tx| {
            let reply = op(tx)?;
            let bytes =
                serde_json::to_vec(&reply.body).map_err(|e| ApiError::Internal(e.to_string()))?;
            if reply.status.is_success() {
                idempotency::complete(
                    tx,
                    &org,
                    &k,
                    reply.status.as_u16(),
                    "application/json",
                    &bytes,
                )?;
            }
            Ok(reply)
        })
    })
    .await?;
    match result {
        Ok(reply) => Ok(respond(state, req, reply)),
        Err(e) => {
            let st = state.clone();
            let org = auth.org_id.clone();
            let released = super::block(move || {
                st.db
                    .write(false, |tx| idempotency::release(tx, &org, &key))
            })
            .await;
            if let Ok(Err(err)) = released {
                tracing::warn!("could not release an idempotency marker: {err}");
            }
            Err(e)
        }
    }
}

/// The committed write's answer, once its effects are applied.
fn respond(state: &web::Data<AppState>, req: &HttpRequest, reply: Reply) -> HttpResponse {
    state.after_commit(req, reply.effects);
    HttpResponse::build(reply.status).json(reply.body)
}
