//! What Talonic's dashboards read about an account, answered with what a self-hosted instance
//! knows: no credits are charged; model calls, tokens and their estimated cost are counted.

use super::error::ApiError;
use super::extract::{Call, Read};
use super::pagination::{only_known, query_map};
use crate::answers::{
    CreditBalance, PriceUnit, Pricing, UsageAnswer, UsageBreakdown, UsageByFunction, UsageLinks,
    UsagePeriod, UsageTotals,
};
use crate::domain::ids::format_time;
use crate::store;
use actix_web::HttpResponse;
use chrono::{Datelike, Duration, TimeZone, Utc};
use serde_json::{json, Map};

pub async fn balance(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    only_known(&query_map(call.req.query_string())?, &[])?;
    let now = Utc::now();
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let resets = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    Ok(HttpResponse::Ok().json(CreditBalance {
        balance_credits: 0.0,
        balance_eur: 0.0,
        burn_rate_30d_credits: 0.0,
        projected_runway_days: -1.0,
        tier: "self_hosted".into(),
        tier_resets_at: format_time(resets),
    }))
}

/// `GET /v1/usage?days=N` (1–365, default 30).
pub async fn usage(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let q = query_map(call.req.query_string())?;
    only_known(&q, &["days"])?;
    let days = match q.get("days") {
        None => 30,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=365).contains(n))
            .ok_or_else(|| ApiError::bad("days must be an integer from 1 to 365"))?,
    };
    let to = Utc::now();
    let from = to - Duration::days(days);
    let since = format_time(from);
    call.answer(move |c, org| {
        let models = store::models::org_usage(c, org, &since)?;
        let runs = store::models::runs_since(c, org, &since)?;
        let breakdown: Vec<UsageBreakdown> = models
            .iter()
            .map(|u| UsageBreakdown {
                operation_type: u.kind.clone(),
                model: u.model.clone(),
                input_tokens: u.tokens_in,
                output_tokens: u.tokens_out,
                cache_read_tokens: 0,
                cache_creation_tokens: 0,
                calls: u.calls,
                cost_estimate_usd: u.cost,
            })
            .collect();
        Ok(UsageAnswer {
            period: UsagePeriod {
                from: since,
                to: format_time(to),
            },
            period_days: days,
            totals: UsageTotals {
                input_tokens: models.iter().map(|u| u.tokens_in).sum(),
                output_tokens: models.iter().map(|u| u.tokens_out).sum(),
                cache_read_tokens: 0,
                cache_creation_tokens: 0,
                calls: models.iter().map(|u| u.calls).sum(),
                cost_estimate_usd: models.iter().fold(0.0, |sum, u| sum + u.cost),
            },
            breakdown,
            total_credits: 0.0,
            by_function: runs
                .into_iter()
                .map(|(kind, n)| UsageByFunction {
                    operation_type: kind,
                    operations: n,
                    credits: 0.0,
                })
                .collect(),
            links: UsageLinks {
                self_: format!("/v1/usage?days={days}"),
            },
        })
    })
    .await
}

/// `GET /v1/pricing`: every unit of work is free on a self-hosted instance.
pub async fn pricing(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    only_known(&query_map(call.req.query_string())?, &[])?;
    let unit = |unit: &str, label: &str| PriceUnit {
        unit: unit.into(),
        label: label.into(),
        credits: 0.0,
        eur: 0.0,
        free: true,
    };
    let mut multipliers = Map::new();
    multipliers.insert("self_hosted".into(), json!(0));
    Ok(HttpResponse::Ok().json(Pricing {
        currency: "EUR".into(),
        credits_per_eur: 0.0,
        multipliers,
        units: vec![
            unit("page", "Page read (PDF, image or text)"),
            unit("extraction", "Document extracted (POST /v1/extract)"),
            unit("cell", "Field value resolved in a job or pipeline"),
        ],
    }))
}
