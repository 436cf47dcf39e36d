//! The outermost middleware: request ids, panics turned into 500s, the error envelope for every
//! non-2xx answer, rate-limit headers, and the access log.
//!
//! `tracing-actix-web`'s `TracingLogger` wraps it (see `http::server`) and opens one root span
//! per request with [`RequestSpan`], which decides the request id: the span carries it, so every
//! event logged while the request is handled (engine events after a commit, storage warnings in
//! blocking work, a streamed answer's failure) names it; the same id goes into the request's
//! [`RequestId`] extension, which `envelope`, the handlers and the error bodies read.
//!
//! Still hand-written here, for reasons: the error envelope and the metrics need the finished
//! answer and its error code, which tracing-actix-web does not produce; the access line must keep
//! its documented text form and flat fields (truncated method, the route template rather than
//! the path, the error code, client and size), while tracing-actix-web's stock root span records
//! the full target with its query string (a key sent as `?api_key=` would reach the log) and the
//! user agent, and puts the outcome on the span, which shows only where span closings are
//! logged. So our span carries the request id alone, and `envelope` writes the access line as an
//! event inside it.

use super::error::{ApiError, EnvelopeParts};
use super::rate_limit::RateInfo;
use super::{route_label, UNMATCHED_ROUTE};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Instant;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

/// The most header bytes (names, values, separators) a request may carry.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct RequestId(pub String);

fn valid_request_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn new_request_id() -> String {
    format!("req_{:016x}", rand::random::<u64>())
}

/// The request's id, decided once and kept in its extensions: the caller's `X-Request-Id` when
/// well-formed, otherwise a new `req_<16 hex>`. [`RequestSpan`] asks first; later callers get the
/// same id.
pub fn request_id(req: &ServiceRequest) -> String {
    if let Some(known) = req.extensions().get::<RequestId>() {
        return known.0.clone();
    }
    let rid = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(rid.clone()));
    rid
}

/// The root span of a request (for `tracing_actix_web::TracingLogger`): named `request`, with
/// our request id as its only field. (`TracingLogger` also files a UUID of its own,
/// `tracing_actix_web::RequestId`, in the extensions; nothing here uses it.)
///
/// Its target, `quire::request`, is kept enabled whatever `RUST_LOG` says (see
/// `logging::subscriber`), so every line logged inside it carries the id. It records nothing
/// when the request ends: `envelope` writes the access line.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let rid = request_id(request);
        tracing::info_span!(
            target: crate::logging::REQUEST_SPAN_TARGET,
            "request",
            request_id = rid.as_str()
        )
    }

    fn on_request_end<B: MessageBody>(
        _span: Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

/// Longest method and path, in bytes, that a log line repeats: both come from the client, and a
/// request with a 15 KB method must not write 15 KB of log.
const LOGGED_METHOD_BYTES: usize = 16;
const LOGGED_PATH_BYTES: usize = 256;

/// `s` cut to at most `max` bytes (at a character boundary, the cut marked with `…`), control
/// characters replaced, so a client cannot forge or flood log lines.
pub fn for_log(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 3);
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    // Decided by `RequestSpan` before this runs (or here, when nothing wraps this middleware).
    let rid = request_id(&req);
    // Only bounded forms of the method are kept: a closed label for metrics, a prefix for logs.
    let method = crate::metrics::method_label(req.method().as_str());
    let m = for_log(req.method().as_str(), LOGGED_METHOD_BYTES);
    let path = req.path().to_string();
    let logged = format!("{m} {}", for_log(&path, LOGGED_PATH_BYTES));

    // actix bounds the count of headers but not their size; a client sending megabytes of
    // header would otherwise be read in full before any handler could refuse it.
    let head_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if head_bytes > MAX_HEAD_BYTES {
        let status = actix_web::http::StatusCode::BAD_REQUEST;
        let err = ApiError::bad(format!(
            "request headers take {head_bytes} bytes; at most {MAX_HEAD_BYTES} are accepted"
        ));
        tracing::info!(target: "quire::access", "{rid} {m} <oversized head> 400 {}ms", started.elapsed().as_millis());
        return Err(Finished {
            status,
            body: EnvelopeParts::from_api(&err).into_body(status, &rid, &path),
            rid,
        }
        .into());
    }

    // The request cannot be cloned before routing (the router needs it unshared), so answers
    // for errors that escape as `Err` or as a panic are finished here without it.
    let outcome = AssertUnwindSafe(next.call(req)).catch_unwind().await;
    let res: ServiceResponse<BoxBody> = match outcome {
        Ok(Ok(r)) => r.map_into_boxed_body(),
        Ok(Err(e)) => {
            let status = e.as_response_error().status_code();
            let parts = match e.as_error::<ApiError>() {
                Some(api) => EnvelopeParts::from_api(api),
                None => EnvelopeParts::from_status(status, Some(e.to_string())),
            };
            tracing::info!(target: "quire::access", "{rid} {m} {UNMATCHED_ROUTE} {} {}ms", status.as_u16(), started.elapsed().as_millis());
            return Err(Finished {
                status,
                body: parts.into_body(status, &rid, &path),
                rid,
            }
            .into());
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!("request {rid} {logged} panicked: {what}");
            let status = actix_web::http::StatusCode::INTERNAL_SERVER_ERROR;
            let parts = EnvelopeParts::from_api(&ApiError::Internal(what));
            tracing::info!(target: "quire::access", "{rid} {m} <panic> 500 {}ms", started.elapsed().as_millis());
            return Err(Finished {
                status,
                body: parts.into_body(status, &rid, &path),
                rid,
            }
            .into());
        }
    };

    let status = res.status();
    let mut code = "";
    let res = if status.is_client_error() || status.is_server_error() {
        let parts = match res.response().error() {
            Some(err) => match err.as_error::<ApiError>() {
                Some(api) => {
                    if let ApiError::Internal(detail) = api {
                        tracing::error!("request {rid} {logged} failed: {detail}");
                    }
                    EnvelopeParts::from_api(api)
                }
                None => {
                    let detail = err.to_string();
                    if status.is_server_error() {
                        tracing::error!("request {rid} {logged} failed: {detail}");
                    }
                    EnvelopeParts::from_status(status, Some(detail))
                }
            },
            None => EnvelopeParts::from_status(status, None),
        };
        code = parts.code;
        let body = parts.into_body(status, &rid, &path);
        let (req, old) = res.into_parts();
        let mut fresh = HttpResponse::build(status);
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.append_header((name.clone(), value.clone()));
            }
        }
        ServiceResponse::new(req, fresh.json(body))
    } else {
        res
    };

    let mut res = with_trailing_newline(res);
    let rate = res.request().extensions().get::<RateInfo>().cloned();
    let route = route_label(res.request().match_pattern().as_deref());
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(r) = rate {
        h.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(r.limit),
        );
        h.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(r.remaining),
        );
        h.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(r.reset),
        );
    }
    let took = started.elapsed();
    if let Some(state) = res
        .request()
        .app_data::<actix_web::web::Data<super::AppState>>()
    {
        state
            .metrics
            .request(route, method, res.status().as_u16(), took);
    }
    let client = res
        .request()
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let bytes = match actix_web::body::MessageBody::size(res.response().body()) {
        actix_web::body::BodySize::Sized(n) => n.to_string(),
        _ => "stream".to_string(),
    };
    let (status, ms) = (res.status().as_u16(), took.as_millis() as u64);
    // A 4xx or 5xx names its error code, so a log search finds refusals by kind.
    let sep = if code.is_empty() { "" } else { " " };
    tracing::info!(
        target: "quire::access",
        request_id = rid.as_str(), method = m.as_str(), route = route, status = status,
        code = code, ms = ms, client = client.as_str(), bytes = bytes.as_str(),
        "{rid} {m} {route} {status}{sep}{code} {ms}ms {client} {bytes}"
    );
    Ok(res)
}

/// A complete envelope answer for errors that leave the middleware as `Err`.
#[derive(Debug)]
struct Finished {
    status: actix_web::http::StatusCode,
    body: serde_json::Value,
    rid: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.body)
    }
}

impl actix_web::ResponseError for Finished {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if self.status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is retryable and says when to come back, as the contract's do.
            b.insert_header((header::RETRY_AFTER, "1"));
        }
        b.insert_header(("x-request-id", self.rid.as_str()))
            .content_type("application/json")
            .body(format!("{}\n", self.body))
    }
}

/// JSON answers end with a newline, as terminal users and line-oriented tools expect. Streamed
/// answers (of unknown size) are left as they are.
fn with_trailing_newline(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return res;
    }
    res.map_body(|_, body| match body.try_into_bytes() {
        Ok(b) if !b.is_empty() && !b.ends_with(b"\n") => {
            let mut v = Vec::with_capacity(b.len() + 1);
            v.extend_from_slice(&b);
            v.push(b'\n');
            BoxBody::new(v)
        }
        Ok(b) => BoxBody::new(b),
        Err(body) => body,
    })
}
