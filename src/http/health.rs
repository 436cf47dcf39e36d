use super::error::ApiError;
use super::AppState;
use crate::answers::Health;
use actix_web::{web, HttpResponse};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::Unavailable(
            "Not ready: start-up (migrations, recovery, executor) has not finished".into(),
        ));
    }
    let st = state.clone();
    let writable = super::blocking(move || Ok(st.db.writable()?)).await?;
    if !writable {
        let why = if state.db.read_only() {
            "The database file is read-only: reads are served, writes answer 503"
        } else if state.db.is_postgres() {
            "PostgreSQL refuses writes here (a standby or a read-only session), or the session holding this server's lock on the schema was lost: see the log"
        } else {
            "The database is full: reads are served, writes answer 503 and documents wait in the queue until space returns"
        };
        return Err(ApiError::Unavailable(why.into()));
    }
    Ok(HttpResponse::Ok().json(Health {
        status: "ready".into(),
    }))
}

/// Prometheus text; guarded by `--metrics-token` when one is set.
pub async fn metrics(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.config.metrics_token {
        let given = super::auth::authorization(&req)?
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(ApiError::Unauthorized(
                "GET /metrics needs the metrics token: Authorization: Bearer <token>".into(),
            ));
        }
    }
    let st = state.clone();
    let gauges = super::blocking(move || {
        st.db
            .read(|c| Ok(crate::store::pipelines::metric_gauges(c)?))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&gauges)))
}
