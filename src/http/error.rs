//! The one error type of the HTTP layer and the error envelope, built in one place.

use crate::store::StoreError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MissingDocument(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("This request requires the '{0}' scope")]
    InsufficientScope(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("Method not allowed")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("A request with this Idempotency-Key is still being processed")]
    InFlight,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Rate limit exceeded; retry after {0} s")]
    RateLimited(u64),
    #[error("Internal error")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::MissingDocument(_) => "missing_document",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) | ApiError::InFlight => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Internal(_) => "internal_error",
            ApiError::Unavailable(_) => "service_unavailable",
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ApiError::InFlight
                | ApiError::RateLimited(_)
                | ApiError::Internal(_)
                | ApiError::Unavailable(_)
        )
    }

    /// The message shown to clients: internal details never leave the process.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => {
                "An internal error occurred; it has been logged with this request id".into()
            }
            other => other.to_string(),
        }
    }

    fn required_scopes(&self) -> Option<Vec<String>> {
        match self {
            ApiError::InsufficientScope(s) => Some(vec![s.to_string()]),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ApiError::Unavailable("The database is busy; retry shortly".into()),
            StoreError::Full => ApiError::Unavailable(
                "The database is full; writes are refused until space returns".into(),
            ),
            StoreError::ReadOnly => {
                ApiError::Unavailable("The database is read-only; writes are refused".into())
            }
            StoreError::Pool(_) => {
                ApiError::Unavailable("No database connection is available; retry shortly".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("blocking task failed: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::MissingDocument(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::InFlight => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The headers that belong to the error; the envelope body is written by the middleware,
    /// which knows the request id and path.
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                b.insert_header((header::ALLOW, allow.as_str()));
            }
            ApiError::RateLimited(secs) => {
                b.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            ApiError::InFlight | ApiError::Unavailable(_) => {
                b.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        b.finish()
    }
}

/// What the envelope needs to know about an error.
pub struct EnvelopeParts {
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
    pub required_scopes: Option<Vec<String>>,
}

impl EnvelopeParts {
    pub fn from_api(e: &ApiError) -> Self {
        EnvelopeParts {
            code: e.code(),
            message: e.public_message(),
            retryable: e.retryable(),
            required_scopes: e.required_scopes(),
        }
    }

    /// For errors raised by actix itself (extractors, routing, payload limits).
    pub fn from_status(status: StatusCode, detail: Option<String>) -> Self {
        let (code, default_msg) = match status.as_u16() {
            400 => ("bad_request", "Bad request"),
            401 => ("unauthorized", "Missing or invalid API key"),
            403 => ("insufficient_scope", "Forbidden"),
            404 => ("not_found", "Not found"),
            405 => ("method_not_allowed", "Method not allowed"),
            409 => ("conflict", "Conflict"),
            413 => ("payload_too_large", "The request body is too large"),
            415 => ("unsupported_media_type", "Unsupported content type"),
            429 => ("rate_limited", "Rate limit exceeded"),
            503 => ("service_unavailable", "Service unavailable"),
            s if s >= 500 => (
                "internal_error",
                "An internal error occurred; it has been logged with this request id",
            ),
            _ => ("bad_request", "Bad request"),
        };
        let message = match detail {
            Some(d) if status.is_client_error() && !d.is_empty() => d,
            _ => default_msg.to_string(),
        };
        let retryable = matches!(status.as_u16(), 429 | 500..=599);
        EnvelopeParts {
            code,
            message,
            retryable,
            required_scopes: None,
        }
    }

    pub fn into_body(self, status: StatusCode, request_id: &str, path: &str) -> Value {
        json!(crate::answers::Error {
            status_code: status.as_u16(),
            code: self.code,
            error: status.canonical_reason().unwrap_or("Error").to_string(),
            message: self.message,
            retryable: self.retryable,
            request_id: request_id.to_string(),
            timestamp: crate::domain::ids::now_rfc3339(),
            path: path.to_string(),
            required_scopes: self.required_scopes,
        })
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Invalid(m) => ApiError::BadRequest(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Internal(m) => ApiError::Internal(m),
            E::Store(s) => s.into(),
        }
    }
}
