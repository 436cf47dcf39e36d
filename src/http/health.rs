use super::error::ApiError;
use super::AppState;
use actix_web::ResponseError;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_ready() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        ApiError::Unavailable(
            "Not ready: start-up (migrations, recovery, executor) has not finished".into(),
        )
        .error_response()
    }
}
