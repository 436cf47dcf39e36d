//! The HTTP surface (actix only): routes, one file per resource, and the shared conventions.

pub mod auth;
pub mod body;
pub mod data_products;
pub mod documents;
pub mod error;
pub mod gates;
pub mod health;
pub mod idempotency;
pub mod middleware;
pub mod pagination;
pub mod pipelines;
pub mod policies;
pub mod rate_limit;
pub mod reviews;
pub mod schemas;

use crate::config::Config;
use crate::store::{Db, StoreError};
use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpRequest, HttpResponse, HttpServer};
use error::ApiError;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct AppState {
    pub db: Db,
    pub executor: std::sync::Arc<crate::engine::executor::Executor>,
    pub config: Config,
    pub keys: auth::KeyCache,
    pub limiter: rate_limit::RateLimiter,
    pub started_ms: i64,
    pub cursor_secret: Vec<u8>,
    /// Progress answers of settled runs, valid until the database changes.
    pub progress_cache: ProgressCache,
    ready: AtomicBool,
}

/// Cached answers by (organization, pipeline).
type ProgressMap = std::collections::HashMap<(String, String), serde_json::Value>;

/// Progress of settled runs, keyed by (organization, pipeline), dropped on any commit.
pub struct ProgressCache {
    watch: crate::store::ChangeWatch,
    /// The data version the map was filled at, and the map.
    inner: parking_lot::Mutex<(i64, ProgressMap)>,
}

impl ProgressCache {
    fn new(db: &Db) -> Result<Self, StoreError> {
        Ok(ProgressCache {
            watch: crate::store::ChangeWatch::new(db)?,
            inner: parking_lot::Mutex::new((-1, Default::default())),
        })
    }

    /// The cached answer, and the data version it was looked up at.
    pub fn get(&self, org: &str, pipeline: &str) -> (Option<serde_json::Value>, i64) {
        let Ok(version) = self.watch.version() else {
            return (None, -1);
        };
        let mut g = self.inner.lock();
        if g.0 != version {
            g.0 = version;
            g.1.clear();
        }
        (
            g.1.get(&(org.to_string(), pipeline.to_string())).cloned(),
            version,
        )
    }

    /// Keeps an answer computed at `version` if nothing was committed since.
    pub fn put(&self, org: &str, pipeline: &str, version: i64, value: serde_json::Value) {
        let Ok(now) = self.watch.version() else {
            return;
        };
        let mut g = self.inner.lock();
        if now == version && g.0 == version && g.1.len() < 10_000 {
            g.1.insert((org.to_string(), pipeline.to_string()), value);
        }
    }
}

impl AppState {
    pub fn new(
        db: Db,
        config: Config,
        executor: std::sync::Arc<crate::engine::executor::Executor>,
    ) -> Result<Self, StoreError> {
        let keys = auth::KeyCache::new(db.dedicated()?)?;
        let cursor_secret = db.write(false, |tx| {
            let existing: Option<String> = crate::store::optional(tx.query_row(
                "SELECT value FROM settings WHERE key = 'cursor_secret'",
                [],
                |r| r.get(0),
            ))?;
            match existing {
                Some(s) => Ok::<_, StoreError>(s),
                None => {
                    let s = hex::encode(rand::random::<[u8; 32]>());
                    tx.execute(
                        "INSERT INTO settings(key, value) VALUES ('cursor_secret', ?1)",
                        [&s],
                    )?;
                    Ok(s)
                }
            }
        })?;
        let progress_cache = ProgressCache::new(&db)?;
        Ok(AppState {
            progress_cache,
            db,
            executor,
            config,
            keys,
            limiter: Default::default(),
            started_ms: crate::domain::ids::now_ms(),
            cursor_secret: cursor_secret.into_bytes(),
            ready: AtomicBool::new(false),
        })
    }

    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Parses a path id: 400 when it is not a UUID.
pub fn path_id(req: &HttpRequest, name: &str) -> Result<String, ApiError> {
    let raw = req.match_info().get(name).unwrap_or("");
    crate::domain::ids::parse_id(raw)
        .ok_or_else(|| ApiError::bad(format!("'{raw}' is not a valid id (expected a UUID)")))
}

/// Runs blocking database work off the actix worker.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await?
}

async fn not_found_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route".into()))
}

/// A resource whose other methods answer 405 with `Allow`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow.to_string()))
    }))
}

async fn debug_panic() -> HttpResponse {
    panic!("deliberate panic from the debug route")
}

pub fn routes(cfg: &mut web::ServiceConfig, debug: bool) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
        .service(
            resource("/v1/schemas", "GET, POST")
                .route(web::get().to(schemas::list))
                .route(web::post().to(schemas::create)),
        )
        .service(
            resource("/v1/schemas/{id}", "GET, PUT, PATCH, DELETE")
                .route(web::get().to(schemas::get))
                .route(web::put().to(schemas::replace))
                .route(web::patch().to(schemas::patch))
                .route(web::delete().to(schemas::delete)),
        )
        .service(
            resource("/v1/schemas/{id}/rail", "GET, PUT")
                .route(web::get().to(schemas::get_rail))
                .route(web::put().to(schemas::put_rail)),
        )
        .service(
            resource("/v1/schemas/{id}/validation-stages", "GET, POST")
                .route(web::get().to(gates::list))
                .route(web::post().to(gates::create)),
        )
        .service(
            resource("/v1/schemas/{id}/validation-stages/reorder", "POST")
                .route(web::post().to(gates::reorder)),
        )
        .service(
            resource(
                "/v1/schemas/{id}/validation-stages/{stage_id}",
                "GET, PATCH, DELETE",
            )
            .route(web::get().to(gates::get))
            .route(web::patch().to(gates::patch))
            .route(web::delete().to(gates::delete)),
        )
        .service(
            resource("/v1/data-policies", "GET, POST")
                .route(web::get().to(policies::list))
                .route(web::post().to(policies::create)),
        )
        .service(
            resource("/v1/data-policies/{id}", "GET, PATCH, DELETE")
                .route(web::get().to(policies::get))
                .route(web::patch().to(policies::patch))
                .route(web::delete().to(policies::delete)),
        )
        .service(
            resource("/v1/data-policies/{id}/fields", "POST")
                .route(web::post().to(policies::add_field)),
        )
        .service(
            resource("/v1/data-policies/{id}/fields/{field_key}", "DELETE")
                .route(web::delete().to(policies::delete_field)),
        )
        .service(
            resource("/v1/data-policies/{id}/rules", "GET, POST")
                .route(web::get().to(policies::list_rules))
                .route(web::post().to(policies::add_rule)),
        )
        .service(
            resource("/v1/data-policies/{id}/rules/{rule_id}", "PATCH, DELETE")
                .route(web::patch().to(policies::patch_rule))
                .route(web::delete().to(policies::delete_rule)),
        )
        .service(
            resource("/v1/pipelines", "GET, POST")
                .route(web::get().to(pipelines::list))
                .route(web::post().to(pipelines::create)),
        )
        .service(resource("/v1/pipelines/{id}", "GET").route(web::get().to(pipelines::get)))
        .service(
            resource("/v1/pipelines/{id}/cancel", "POST").route(web::post().to(pipelines::cancel)),
        )
        .service(
            resource("/v1/pipelines/{id}/rerun", "POST").route(web::post().to(pipelines::rerun)),
        )
        .service(
            resource("/v1/pipelines/{id}/reruns", "GET").route(web::get().to(pipelines::reruns)),
        )
        .service(
            resource("/v1/pipelines/{id}/progress", "GET")
                .route(web::get().to(pipelines::progress)),
        )
        .service(
            resource("/v1/pipelines/{id}/documents", "GET")
                .route(web::get().to(pipelines::documents)),
        )
        .service(
            resource("/v1/pipelines/{id}/results", "GET").route(web::get().to(pipelines::results)),
        )
        .service(
            resource("/v1/pipelines/{id}/documents/{pd_id}/cells", "GET")
                .route(web::get().to(pipelines::cells)),
        )
        .service(
            resource("/v1/pipelines/{id}/documents/{pd_id}/verdicts", "GET")
                .route(web::get().to(pipelines::verdicts)),
        )
        .service(
            resource("/v1/pipelines/{id}/data-product", "POST")
                .route(web::post().to(data_products::create)),
        )
        .service(resource("/v1/data-products", "GET").route(web::get().to(data_products::list)))
        .service(resource("/v1/data-products/{id}", "GET").route(web::get().to(data_products::get)))
        .service(
            resource("/v1/data-products/{id}/results", "GET")
                .route(web::get().to(data_products::results)),
        )
        .service(
            resource("/v1/data-products/{id}/export/plain", "GET")
                .route(web::get().to(data_products::export_plain)),
        )
        .service(
            resource("/v1/data-products/{id}/export/audit", "GET")
                .route(web::get().to(data_products::export_audit)),
        )
        .service(
            resource(
                "/v1/schemas/{id}/validation-stages/{stage_id}/replay-blocking",
                "POST",
            )
            .route(web::post().to(data_products::replay_blocking)),
        )
        .service(resource("/v1/field-reviews", "GET").route(web::get().to(reviews::list)))
        .service(
            resource("/v1/field-reviews/summary", "GET").route(web::get().to(reviews::summary)),
        )
        .service(
            resource("/v1/field-reviews/bulk-resolve", "POST")
                .route(web::post().to(reviews::bulk_resolve)),
        )
        .service(
            resource("/v1/field-reviews/decisions", "GET").route(web::get().to(reviews::decisions)),
        )
        .service(
            resource("/v1/field-reviews/decisions/export", "GET")
                .route(web::get().to(reviews::decisions_export)),
        )
        .service(
            resource("/v1/field-reviews/{pd_id}/{field_key}", "GET")
                .route(web::get().to(reviews::detail)),
        )
        .service(
            resource("/v1/field-reviews/{pd_id}/{field_key}/resolve", "POST")
                .route(web::post().to(reviews::resolve)),
        )
        .service(resource("/v1/fields", "GET").route(web::get().to(schemas::list_fields)))
        .service(
            resource("/v1/documents", "GET, POST")
                .route(web::get().to(documents::list))
                .route(web::post().to(documents::create)),
        )
        .service(
            resource("/v1/documents/{id}", "GET, DELETE")
                .route(web::get().to(documents::get))
                .route(web::delete().to(documents::delete)),
        );
    if debug {
        cfg.service(resource("/v1/_debug/panic", "GET").route(web::get().to(debug_panic)));
    }
}

pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    config: &Config,
) -> std::io::Result<Server> {
    let debug = config.debug_routes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(middleware::envelope))
            .configure(|c| routes(c, debug))
            .default_service(web::to(not_found_route))
    })
    .workers(config.http_workers)
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(5))
    .shutdown_timeout(config.shutdown_timeout)
    .listen(listener)?
    .run();
    Ok(server)
}
