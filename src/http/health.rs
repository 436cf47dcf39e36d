use super::error::ApiError;
use super::AppState;
use crate::answers::Health;
use actix_web::{web, HttpResponse};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        node: None,
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
    if state.node.lapsed() {
        return Err(ApiError::Unavailable(format!(
            "This node's lease ran out (it was paused, or could not reach the database for {}s): other nodes may have taken back its work; it registers again before it claims more",
            state.node.lease.as_secs()
        )));
    }
    Ok(HttpResponse::Ok().json(Health {
        status: "ready".into(),
        node: Some(state.node.id()),
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
    let (gauges, nodes) = super::blocking(move || {
        st.db.read(|c| {
            Ok((
                crate::store::pipelines::metric_gauges(c)?,
                crate::store::nodes::live(c)?,
            ))
        })
    })
    .await?;
    let mut body = state.metrics.render(&gauges);
    crate::metrics::render_node(&mut body, &state.node, nodes);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
