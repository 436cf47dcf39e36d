//! Request bodies: content types, size limits and JSON parsing with errors that name the field.

use super::error::ApiError;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The media type of the request without parameters, lower-cased.
pub fn media_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty())
}

/// The request's declared `Content-Length`, if any.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads the whole payload, refusing more than `limit` bytes with 413. A declared length sizes
/// the buffer once: growing it by doubling would hold up to three times a large body (the
/// 40 MB of ids that create a 1,000,000-document run) while the last copy is made.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "The request body exceeds the limit of {limit} bytes"
    ))
}

/// Checks the content type (415) and reads the body (413). `None` for an empty body without a
/// content type, which `allow_empty` endpoints take as `{}`.
pub async fn json_body(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
    allow_empty: bool,
) -> Result<Value, ApiError> {
    let declared = declared_length(req);
    match media_type(req).as_deref() {
        Some("application/json") => {}
        None if allow_empty && declared.unwrap_or(0) == 0 => {
            let bytes = read_limited(req, payload, limit).await?;
            if bytes.is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ));
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ))
        }
    }
    let bytes = read_limited(req, payload, limit).await?;
    if bytes.is_empty() {
        if allow_empty {
            return Ok(Value::Object(Default::default()));
        }
        return Err(ApiError::bad(
            "The request body is empty; a JSON object is required",
        ));
    }
    parse_value(&bytes)
}

pub fn parse_value(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("Malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad("The request body must be a JSON object"));
    }
    Ok(v)
}

/// Deserializes a typed body, naming the offending field on error.
pub fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            ApiError::bad(format!("Invalid body: {inner}"))
        } else {
            ApiError::bad(format!("Invalid field '{path}': {inner}"))
        }
    })
}

/// Like `json_body` followed by `typed`, without building the intermediate JSON tree (large
/// bodies such as a pipeline of 100,000 document ids). Also returns the raw bytes.
pub async fn json_typed<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
) -> Result<(T, Bytes), ApiError> {
    if media_type(req).as_deref() != Some("application/json") {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    let bytes = read_limited(req, payload, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "The request body is empty; a JSON object is required",
        ));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad("The request body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad(format!("Malformed JSON: {inner}"))
        } else if path == "." || path.is_empty() {
            ApiError::bad(format!("Invalid body: {inner}"))
        } else {
            ApiError::bad(format!("Invalid field '{path}': {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad(format!("Malformed JSON: {e}")))?;
    Ok((value, bytes))
}
