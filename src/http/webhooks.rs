//! `/v1/webhooks`: endpoints, their delivery history, redelivery, a test event, and what
//! receivers need to know (events, signatures, retries).

use super::error::ApiError;
use super::extract::{Body, Call, Id, Read, Write};
use super::idempotency::Reply;
use super::pagination::{self, PageRequest};
use crate::answers::{Deleted, Webhook, WebhookDelivery, WebhookEventType, WebhookLinks};
use crate::domain::ids::{format_ms, format_time, now_rfc3339};
use crate::domain::webhooks::{self as rules, ALL_EVENTS, EVENTS, TEST_EVENT};
use crate::store;
use crate::store::webhooks::{DeliveryRow, NewWebhook, WebhookRow};
use crate::store::Connection;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Most endpoints one organization may have.
const MAX_WEBHOOKS: i64 = 50;
/// Longest overlap of an old secret after a rotation: 7 days.
const MAX_OVERLAP_SECS: u64 = 7 * 24 * 3600;
/// The overlap when a rotation names none: 24 hours.
const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;

pub fn render(w: &WebhookRow, secret: Option<String>) -> Webhook {
    let status = match (w.active, &w.disabled_reason) {
        (true, _) => "active",
        (false, Some(_)) => "disabled",
        (false, None) => "inactive",
    };
    let previous = w
        .previous_secret_until
        .clone()
        .filter(|until| until.as_str() > now_rfc3339().as_str());
    Webhook {
        id: w.id.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        description: w.description.clone(),
        active: w.active,
        status,
        disabled_reason: w.disabled_reason.clone(),
        failing_since: w.failing_since_ms.map(format_ms),
        secret,
        previous_secret_expires_at: previous,
        created_at: w.created_at.clone(),
        updated_at: w.updated_at.clone(),
        links: WebhookLinks {
            self_: format!("/v1/webhooks/{}", w.id),
            deliveries: format!("/v1/webhooks/{}/deliveries", w.id),
        },
    }
}

pub fn render_delivery(d: &DeliveryRow) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id.clone(),
        event: d.event.clone(),
        event_id: d.event_id.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        response_code: d.response_code,
        latency_ms: d.latency_ms,
        error: d.error.clone(),
        response_body: d.response_body.clone(),
        next_attempt_at: (d.status == "pending").then(|| format_ms(d.next_ms)),
        redelivery_of: d.redelivery_of.clone(),
        data: (d.status != "delivered").then(|| d.data.clone()),
        created_at: d.created_at.clone(),
        updated_at: d.updated_at.clone(),
        delivered_at: d.delivered_at.clone(),
    }
}

/// A webhook to create, or the parts of one to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookInput)]
pub struct WebhookBody {
    /// Where events are POSTed: http or https; not a loopback, link-local or private address
    /// unless the server runs with `--webhooks-allow-private`.
    #[schema(max_length = 2048)]
    url: Option<String>,
    /// Event names (see `GET /v1/webhooks/events`), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 20)]
    events: Option<Vec<String>>,
    /// Default true.
    active: Option<bool>,
    #[schema(max_length = 200)]
    description: Option<String>,
}

/// A secret rotation: how long the old secret keeps signing beside the new one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RotateSecretInput)]
pub struct RotateBody {
    /// Seconds (0 to 604800; default 86400). 0 ends the old secret at once.
    #[schema(minimum = 0, maximum = 604800)]
    overlap_seconds: Option<u64>,
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() || events.len() > 20 {
        return Err(ApiError::bad("events must name 1 to 20 events"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !rules::known_event(e) {
            return Err(ApiError::bad(format!(
                "events: unknown event '{e}' (known: {}, or * for all)",
                EVENTS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    if out.iter().any(|e| e == ALL_EVENTS) {
        out = vec![ALL_EVENTS.to_string()];
    }
    Ok(out)
}

fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    match d {
        Some(t) if t.chars().count() > 200 => {
            Err(ApiError::bad("description must be at most 200 characters"))
        }
        _ => Ok(()),
    }
}

/// The URL's own checks, then (off the request thread) where its name resolves to.
async fn check_url(call_allow_private: bool, url: &str) -> Result<String, ApiError> {
    let parsed = rules::check_url(url, call_allow_private).map_err(ApiError::bad)?;
    if !call_allow_private {
        let u = parsed.clone();
        web::block(move || crate::webhooks::check_destination(&u))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::bad)?;
    }
    Ok(url.trim().to_string())
}

/// Only an active endpoint is sent anything: a test or redelivery to one that is off would wait
/// unseen until it is turned on.
fn must_be_active(w: &WebhookRow) -> Result<(), ApiError> {
    if w.active {
        return Ok(());
    }
    Err(ApiError::bad(match &w.disabled_reason {
        Some(why) => format!(
            "The webhook is disabled ({why}); turn it on with PATCH {{\"active\": true}} first"
        ),
        None => {
            "The webhook is not active; turn it on with PATCH {\"active\": true} first".to_string()
        }
    }))
}

fn load(c: &Connection, org: &str, id: &str) -> Result<WebhookRow, ApiError> {
    store::webhooks::get(c, org, id)?.ok_or_else(|| ApiError::not_found("Webhook"))
}

pub async fn create(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body::<WebhookBody>(payload, false).await?;
    let url = b
        .url
        .as_deref()
        .ok_or_else(|| ApiError::bad("url is required"))?;
    let events = check_events(
        b.events
            .as_deref()
            .ok_or_else(|| ApiError::bad("events is required"))?,
    )?;
    check_description(&b.description)?;
    let url = check_url(call.state.config.webhooks.allow_private, url).await?;
    call.write(&raw, move |tx, org| {
        let (_, total) = store::webhooks::list(tx, org, None, 0)?;
        if total >= MAX_WEBHOOKS {
            return Err(ApiError::bad(format!(
                "An organization has at most {MAX_WEBHOOKS} webhooks; delete one first"
            )));
        }
        let secret = rules::new_secret();
        let w = store::webhooks::create(
            tx,
            org,
            NewWebhook {
                url: &url,
                events: &events,
                description: b.description.as_deref(),
                active: b.active.unwrap_or(true),
                secret: &secret,
            },
        )?;
        Ok(Reply::created(render(&w, Some(secret))))
    })
    .await
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let list = store::webhooks::list;
    pagination::newest_first(&call, "webhooks", &[], list, |w| w.seq, |w| render(w, None)).await
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.answer(move |c, org| Ok(render(&load(c, org, &id)?, None)))
        .await
}

pub async fn patch(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call.body_for::<WebhookBody, _>(load, &id, payload).await?;
    let events = b.events.as_deref().map(check_events).transpose()?;
    check_description(&b.description)?;
    let url = match b.url.as_deref() {
        Some(u) => Some(check_url(call.state.config.webhooks.allow_private, u).await?),
        None => None,
    };
    call.change(move |tx, org| {
        let w = load(tx, org, &id)?;
        let description = if raw.get("description").is_some() {
            b.description.clone()
        } else {
            w.description.clone()
        };
        store::webhooks::update(
            tx,
            w.seq,
            url.as_deref().unwrap_or(&w.url),
            events.as_deref().unwrap_or(&w.events),
            description.as_deref(),
            b.active.unwrap_or(w.active),
        )?;
        Ok(render(&load(tx, org, &id)?, None))
    })
    .await
}

pub async fn delete(call: Call<Write>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        let w = load(tx, org, &id)?;
        store::webhooks::delete(tx, w.seq)?;
        Ok(Deleted { deleted: true, id })
    })
    .await
}

pub async fn rotate_secret(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Body { raw, parsed: b } = call
        .optional_body_for::<RotateBody, _>(load, &id, payload)
        .await?;
    let overlap = b.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(ApiError::bad(format!(
            "overlap_seconds must be 0 to {MAX_OVERLAP_SECS}"
        )));
    }
    call.write(&raw, move |tx, org| {
        let w = load(tx, org, &id)?;
        let secret = rules::new_secret();
        let until = (overlap > 0)
            .then(|| format_time(chrono::Utc::now() + chrono::Duration::seconds(overlap as i64)));
        store::webhooks::rotate(tx, w.seq, &secret, until.as_deref())?;
        Ok(Reply::ok(render(&load(tx, org, &id)?, Some(secret))))
    })
    .await
}

const DELIVERY_STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

pub async fn deliveries(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let (q, cursors, page) = call.page("webhook-deliveries", 100, &["status"])?;
    let status = q.get("status").cloned();
    if let Some(s) = &status {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad(format!(
                "status must be one of {}",
                DELIVERY_STATUSES.join(", ")
            )));
        }
    }
    call.answer(move |c, org| {
        let w = load(c, org, &id)?;
        let PageRequest { after, limit, .. } = page;
        let (rows, total) =
            store::webhooks::deliveries(c, w.seq, status.as_deref(), after, limit + 1)?;
        Ok(pagination::page(
            rows,
            total,
            &page,
            &cursors,
            |d| d.seq,
            |d| render_delivery(&d),
        ))
    })
    .await
}

/// A delivery's `{delivery_id}`: `dlv_` and 32 hex digits.
fn delivery_id(req: &HttpRequest) -> Result<String, ApiError> {
    let raw = req.match_info().get("delivery_id").unwrap_or("");
    let ok = raw
        .strip_prefix("dlv_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ApiError::bad(format!(
            "'{raw}' is not a valid delivery id (expected dlv_ and 32 hex digits)"
        )))
    }
}

pub async fn delivery(
    call: Call<Read>,
    Id(id): Id,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let did = delivery_id(&req)?;
    call.answer(move |c, org| {
        let w = load(c, org, &id)?;
        let d = store::webhooks::delivery_of(c, w.seq, &did)?
            .ok_or_else(|| ApiError::not_found("Delivery"))?;
        Ok(render_delivery(&d))
    })
    .await
}

pub async fn redeliver(
    call: Call<Write>,
    Id(id): Id,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let did = delivery_id(&req)?;
    let _: Body<Value> = call.optional_body_for(load, &id, payload).await?;
    let answer = call
        .write_with(String::new, move |tx, org| {
            let w = load(tx, org, &id)?;
            let d = store::webhooks::delivery_of(tx, w.seq, &did)?
                .ok_or_else(|| ApiError::not_found("Delivery"))?;
            must_be_active(&w)?;
            let new = store::webhooks::redeliver(tx, w.seq, &d)?;
            let row = store::webhooks::delivery_of(tx, w.seq, &new)?
                .ok_or_else(|| ApiError::Internal("the new delivery vanished".into()))?;
            Ok(Reply::accepted(render_delivery(&row)))
        })
        .await;
    call.state.webhooks.wake();
    answer
}

pub async fn test(
    call: Call<Write>,
    Id(id): Id,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _: Body<Value> = call.optional_body_for(load, &id, payload).await?;
    let answer = call
        .write_with(String::new, move |tx, org| {
            let w = load(tx, org, &id)?;
            must_be_active(&w)?;
            let data = json!({
                "webhook_id": w.id,
                "message": "A test event from Quire: this endpoint is reachable and verifies signatures.",
            });
            let did = store::webhooks::enqueue_to(tx, &w, TEST_EVENT, &data)?;
            let row = store::webhooks::delivery_of(tx, w.seq, &did)?
                .ok_or_else(|| ApiError::Internal("the test delivery vanished".into()))?;
            Ok(Reply::accepted(render_delivery(&row)))
        })
        .await;
    call.state.webhooks.wake();
    answer
}

/// `GET /v1/webhooks/events`.
pub async fn events(_call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let data: Vec<WebhookEventType> = EVENTS
        .iter()
        .map(|(e, d)| WebhookEventType {
            event: e.to_string(),
            description: d.to_string(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// `GET /v1/webhooks/delivery`, `/signatures`, `/retries`: how this server delivers.
pub async fn delivery_info(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let s = &call.state.config.webhooks;
    Ok(HttpResponse::Ok().json(json!({
        "method": "POST",
        "content_type": "application/json",
        "guarantee": "at least once; X-Talonic-Delivery-Id is the same on every attempt of a delivery, so a receiver that remembers it sees each event once",
        "success": "any 2xx answer within the timeout",
        "timeout_seconds": s.timeout.as_secs_f64(),
        "concurrency_per_endpoint": s.per_endpoint,
        "redirects": "not followed (a 3xx is a failed attempt)",
        "headers": ["X-Talonic-Event", "X-Talonic-Delivery-Id", "X-Talonic-Timestamp", "X-Talonic-Signature"],
        "body": { "event": "the event name", "delivery_id": "dlv_…", "timestamp": "the attempt's time, RFC 3339", "data": "the event's data", "event_id": "evt_…" },
        "retention_days": s.retention.as_secs_f64() / 86400.0,
    })))
}

pub async fn signatures(_call: Call<Read>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({
        "algorithm": "hmac-sha256",
        "header": "X-Talonic-Signature",
        "format": "sha256=<hex HMAC-SHA256 of the raw body, keyed by the whole secret including whsec_>",
        "rotation": "during a rotation's overlap the header carries two signatures, comma-separated, newest first; accept the request when any matches",
        "replay": "refuse a body whose timestamp is more than 5 minutes from your clock",
    })))
}

pub async fn retries(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let s = &call.state.config.webhooks;
    Ok(HttpResponse::Ok().json(json!({
        "schedule_seconds": s.schedule.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
        "jitter": "each pause varies by up to ±10%",
        "then": "the delivery is failed; POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver sends it again",
        "disable_after_seconds": s.disable_after.as_secs_f64(),
        "disable": "an endpoint whose every attempt failed for this long is turned off with disabled_reason; a PATCH with active: true turns it back on and its pending deliveries resume",
    })))
}
