//! An organization's settings: how long versions that reruns superseded are kept.

use super::error::ApiError;
use super::extract::{Body, Call, Read, Write};
use crate::answers::Retention;
use crate::store;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

/// The longest retention that can be set: 100 years.
const MAX_DAYS: i64 = 36_500;

/// How long to keep the versions and verdicts of superseded generations.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetentionInput)]
pub struct RetentionBody {
    /// Days after the rerun that superseded them; `null` keeps them for ever (the default).
    /// Required: a body without it would read as "for ever" by accident.
    #[schema(minimum = 0, maximum = 36500, required = true)]
    pub superseded_versions_days: Option<i64>,
}

fn answer(days: Option<i64>) -> Retention {
    Retention {
        superseded_versions_days: days,
        applies_to: "versions and verdicts of generations a rerun superseded; never a person's version, the decision log or what a result or data product shows".into(),
        runs: "at start, every hour, and at once after a change".into(),
    }
}

pub async fn get_retention(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    call.answer(|c, org| Ok(answer(store::retention::days(c, org)?)))
        .await
}

pub async fn put_retention(
    call: Call<Write>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body::<RetentionBody>(payload, false).await?;
    if raw.get("superseded_versions_days").is_none() {
        return Err(ApiError::bad(
            "superseded_versions_days is required: a number of days, or null to keep for ever",
        ));
    }
    if let Some(d) = b.superseded_versions_days {
        if !(0..=MAX_DAYS).contains(&d) {
            return Err(ApiError::bad(format!(
                "superseded_versions_days must be from 0 to {MAX_DAYS}, or null"
            )));
        }
    }
    let days = b.superseded_versions_days;
    let answer = call
        .change(move |tx, org| {
            store::retention::set_days(tx, org, days)?;
            Ok(answer(days))
        })
        .await?;
    call.state.housekeeper.wake();
    Ok(answer)
}
