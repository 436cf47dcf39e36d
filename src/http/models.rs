//! `GET /v1/models`: the model extractors this server is configured with, and their health.

use super::error::ApiError;
use super::extract::{Call, Read};
use crate::answers::{All, ModelStatus};
use actix_web::HttpResponse;

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let data = call
        .state
        .models
        .all()
        .into_iter()
        .map(|(config, health)| ModelStatus {
            config: (*config).clone(),
            health,
        })
        .collect();
    Ok(HttpResponse::Ok().json(All::<ModelStatus> { data }))
}
