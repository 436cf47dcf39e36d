//! The reviewer's workbench (`/ui/`) and the API explorer (`/docs`), served by the binary: plain
//! HTML, CSS and JavaScript embedded at build time (no CDN, no build step), each answer under a
//! strict Content-Security-Policy. The workbench speaks only the public `/v1` API. Also CORS,
//! off unless origins are allowed (`--cors-origin`).

use super::error::ApiError;
use super::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:literal, $path:literal) => {
        Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!("../../ui/", $path)),
        }
    };
}

const WORKBENCH: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8", "index.html"),
    asset!("app.js", "text/javascript; charset=utf-8", "app.js"),
    asset!("app.css", "text/css; charset=utf-8", "app.css"),
];

const EXPLORER: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8", "docs.html"),
    asset!("docs.js", "text/javascript; charset=utf-8", "docs.js"),
    asset!(
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        "vendor/swagger-ui/swagger-ui-bundle.js"
    ),
    asset!(
        "swagger-ui.css",
        "text/css; charset=utf-8",
        "vendor/swagger-ui/swagger-ui.css"
    ),
];

/// Nothing but this origin's own files and API; no inline script or style, no frames.
const WORKBENCH_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Swagger UI sets element styles from script, so styles may be inline; scripts may not.
const EXPLORER_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of this module, for the metrics' route labels.
pub const UI_ROUTES: &[&str] = &["/", "/ui/", "/ui/{file}", "/docs", "/docs/{file}"];

fn serve(assets: &[Asset], name: &str, csp: &str) -> Result<HttpResponse, ApiError> {
    let a = assets
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound("No such file".into()))?;
    Ok(HttpResponse::Ok()
        .content_type(a.mime)
        .insert_header(("Content-Security-Policy", csp))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        // Assets change with the binary: revalidate rather than run a stale workbench.
        .insert_header(("Cache-Control", "no-cache"))
        .body(a.body))
}

/// `GET /` → the workbench.
pub async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

pub async fn workbench() -> Result<HttpResponse, ApiError> {
    serve(WORKBENCH, "index.html", WORKBENCH_CSP)
}

pub async fn workbench_file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(WORKBENCH, &path, WORKBENCH_CSP)
}

/// `GET /docs`: the explorer itself (200, no redirect), rendering `/openapi.json`.
pub async fn explorer() -> Result<HttpResponse, ApiError> {
    serve(EXPLORER, "index.html", EXPLORER_CSP)
}

pub async fn explorer_file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(EXPLORER, &path, EXPLORER_CSP)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/ui", web::get().to(root))
        .route("/ui/", web::get().to(workbench))
        .route("/ui/{file}", web::get().to(workbench_file))
        .route("/docs", web::get().to(explorer))
        .route("/docs/{file}", web::get().to(explorer_file));
}

/// Request headers a browser front-end on an allowed origin may send.
const CORS_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, X-Reviewer, X-Request-Id";
/// Answer headers its scripts may read.
const CORS_EXPOSED: &str = "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, \
    X-RateLimit-Reset, Retry-After, Idempotent-Replayed, Content-Disposition";

fn allowed_origin(req: &HttpRequest) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let state = req.app_data::<web::Data<AppState>>()?;
    let o = origin.to_str().ok()?;
    state
        .config
        .cors_origins
        .iter()
        .any(|allowed| allowed == o)
        .then(|| origin.clone())
}

/// CORS for the origins `--cors-origin` allows, and for no other: a preflight from one is
/// answered here (204), and its requests' answers say it may read them. Without the flag no
/// header is added and browsers keep other origins out.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let origin = allowed_origin(req.request());
    let preflight = req.method() == actix_web::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (Some(o), true) = (&origin, preflight) {
        let answer = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone()))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PUT, PATCH, DELETE",
            ))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .append_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(answer));
    }
    let configured = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| !s.config.cors_origins.is_empty());
    // A refusal a middleware below returns as an error (the per-client 503, an oversized head,
    // a panic) is not a response yet and the request cannot be held here while the service
    // owns it, so the error is wrapped: its response gets the same headers when it is made.
    match next.call(req).await {
        Ok(res) => {
            let mut res = res.map_into_boxed_body();
            cors_headers(res.headers_mut(), origin, configured);
            Ok(res)
        }
        Err(inner) => Err(WithCors {
            inner,
            origin,
            configured,
        }
        .into()),
    }
}

fn cors_headers(h: &mut header::HeaderMap, origin: Option<HeaderValue>, configured: bool) {
    if configured {
        // The answer depends on the Origin header whenever origins are configured.
        h.append(
            HeaderName::from_static("vary"),
            HeaderValue::from_static("Origin"),
        );
    }
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSED),
        );
    }
}

/// An answer that left the middlewares below as an error, to be sent with the CORS headers.
#[derive(Debug)]
struct WithCors {
    inner: actix_web::Error,
    origin: Option<HeaderValue>,
    configured: bool,
}

impl std::fmt::Display for WithCors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl actix_web::ResponseError for WithCors {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.inner.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.inner.error_response();
        cors_headers(res.headers_mut(), self.origin.clone(), self.configured);
        res
    }
}
