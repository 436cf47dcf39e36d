//! The HTTP surface (actix only): routes, one file per resource, and the shared conventions.

pub mod account;
pub mod auth;
pub mod body;
pub mod data_products;
pub mod documents;
pub mod error;
pub mod extract;
pub mod gates;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod middleware;
pub mod models;
pub mod openapi;
pub mod pagination;
pub mod pipelines;
pub mod policies;
pub mod quick;
pub mod rate_limit;
pub mod requests;
pub mod reviews;
pub mod schemas;
pub mod search;
pub mod settings;
pub mod ui;
pub mod webhooks;

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
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The model extractors this server is configured with, and their health.
    pub models: std::sync::Arc<crate::models::Registry>,
    /// Delivers the webhook outbox.
    pub webhooks: std::sync::Arc<crate::webhooks::Dispatcher>,
    /// Applies retention settings.
    pub housekeeper: std::sync::Arc<crate::housekeeping::Housekeeper>,
    /// This process among the nodes sharing the database.
    pub node: std::sync::Arc<crate::node::Node>,
    pub config: Config,
    pub keys: auth::KeyCache,
    pub limiter: rate_limit::RateLimiter,
    /// Seals and opens pagination cursors.
    pub cursors: pagination::CursorKey,
    /// Progress answers of settled runs, valid until the database changes.
    pub progress_cache: ProgressCache,
    /// Requests in progress per client address.
    pub clients: std::sync::Arc<limits::ClientSlots>,
    /// Heavy reads running at once.
    pub heavy: std::sync::Arc<limits::HeavyReads>,
    ready: AtomicBool,
}

/// Cached answers by (organization, pipeline).
type ProgressMap = std::collections::HashMap<(String, String), serde_json::Value>;

/// Progress of settled runs, keyed by (organization, pipeline), dropped on any commit.
pub struct ProgressCache {
    watch: std::sync::Arc<crate::store::ChangeWatch>,
    /// The data version the map was filled at, and the map.
    inner: parking_lot::Mutex<(i64, ProgressMap)>,
}

impl ProgressCache {
    fn new(watch: std::sync::Arc<crate::store::ChangeWatch>) -> Result<Self, StoreError> {
        Ok(ProgressCache {
            watch,
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
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        models: std::sync::Arc<crate::models::Registry>,
        webhooks: std::sync::Arc<crate::webhooks::Dispatcher>,
        housekeeper: std::sync::Arc<crate::housekeeping::Housekeeper>,
    ) -> Result<Self, StoreError> {
        // A watch each: on PostgreSQL a read is a round trip on the watch's one connection, and
        // a request's key check and its progress answer are asked from different threads.
        let keys = auth::KeyCache::new(
            &db,
            std::sync::Arc::new(crate::store::ChangeWatch::new(&db)?),
        )?;
        let watch = std::sync::Arc::new(crate::store::ChangeWatch::new(&db)?);
        let cursors =
            pagination::CursorKey::new(crate::store::settings::cursor_secret(&db)?.as_bytes());
        let progress_cache = ProgressCache::new(watch)?;
        let limiter = rate_limit::RateLimiter::for_db(&db);
        Ok(AppState {
            progress_cache,
            node: executor.node().clone(),
            heavy: limits::HeavyReads::new(config.max_heavy_reads),
            db,
            executor,
            metrics,
            models,
            webhooks,
            housekeeper,
            config,
            keys,
            limiter,
            cursors,
            clients: Default::default(),
            ready: AtomicBool::new(false),
        })
    }

    /// Applies what a committed command asks: its events are logged inside the request's span
    /// (which gives each line its `request_id`; the message starts with the id too), the metrics
    /// count its reruns and decisions, the executor is woken for queued work.
    pub fn after_commit(&self, req: &HttpRequest, effects: crate::engine::Effects) {
        use actix_web::HttpMessage;
        if !effects.events.is_empty() {
            let rid = req
                .extensions()
                .get::<middleware::RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            for l in &effects.events {
                tracing::info!(target: "quire::engine", "{rid} {l}");
            }
        }
        for _ in 0..effects.reruns {
            self.metrics.rerun();
        }
        for action in effects.decisions {
            self.metrics.decision(action);
        }
        if effects.wake {
            self.executor.wake();
        }
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

/// `web::block` inside the caller's span: what the blocking thread logs (storage warnings, for
/// instance) carries the request's id like what the handler logs.
pub async fn block<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, actix_web::error::BlockingError> {
    let span = tracing::Span::current();
    web::block(move || span.in_scope(|| crate::store::blocking_section(f))).await
}

/// Runs blocking database work off the actix worker.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    block(f).await?
}

/// A read on a pooled connection, off the actix worker.
pub async fn read<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&crate::store::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = state.clone();
    blocking(move || st.db.read(f)).await
}

/// A durable write transaction that needs no idempotency (PUT, PATCH, DELETE), off the worker.
pub async fn write_now<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&crate::store::Transaction) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = state.clone();
    blocking(move || st.db.write(true, f)).await
}

async fn not_found_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("No such route".into()))
}

/// A resource whose other methods answer 405 with `Allow`.
fn resource(path: &str, methods: &[&str]) -> actix_web::Resource {
    let allow = methods.join(", ");
    web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) }
    }))
}

async fn debug_panic() -> HttpResponse {
    panic!("deliberate panic from the debug route")
}

/// The route table: registration, the OpenAPI completeness test and the isolation matrix all
/// read it, so a route cannot exist in one and be missing from another.
macro_rules! route_table {
    ($($path:literal => { $($method:ident => $handler:path),+ $(,)? }),+ $(,)?) => {
        /// Every route: its path template and its methods (upper case).
        pub const ROUTES: &[(&str, &[&str])] = &[$(($path, &[$(route_method!($method)),+])),+];

        fn register(cfg: &mut web::ServiceConfig) {
            $(cfg.service(resource($path, &[$(route_method!($method)),+])
                $(.route(web::$method().to($handler)))+);)+
        }
    };
}

macro_rules! route_method {
    (get) => {
        "GET"
    };
    (post) => {
        "POST"
    };
    (put) => {
        "PUT"
    };
    (patch) => {
        "PATCH"
    };
    (delete) => {
        "DELETE"
    };
}

// Order matters where a literal segment shares a position with a parameter
// (`/v1/field-reviews/summary` before `/v1/field-reviews/{pd_id}/{field_key}`).
route_table! {
    "/healthz" => { get => health::healthz },
    "/readyz" => { get => health::readyz },
    "/metrics" => { get => health::metrics },
    "/openapi.json" => { get => openapi::serve },
    "/v1/schemas" => { get => schemas::list, post => schemas::create },
    "/v1/schemas/{id}" => { get => schemas::get, put => schemas::replace, patch => schemas::patch, delete => schemas::delete },
    "/v1/schemas/{id}/rail" => { get => schemas::get_rail, put => schemas::put_rail },
    "/v1/schemas/{id}/validation-stages" => { get => gates::list, post => gates::create },
    "/v1/schemas/{id}/validation-stages/reorder" => { post => gates::reorder },
    "/v1/schemas/{id}/validation-stages/{stage_id}" => { get => gates::get, patch => gates::patch, delete => gates::delete },
    "/v1/data-policies" => { get => policies::list, post => policies::create },
    "/v1/data-policies/{id}" => { get => policies::get, patch => policies::patch, delete => policies::delete },
    "/v1/data-policies/{id}/fields" => { post => policies::add_field },
    "/v1/data-policies/{id}/fields/{field_key}" => { delete => policies::delete_field },
    "/v1/data-policies/{id}/rules" => { get => policies::list_rules, post => policies::add_rule },
    "/v1/data-policies/{id}/rules/{rule_id}" => { patch => policies::patch_rule, delete => policies::delete_rule },
    "/v1/pipelines" => { get => pipelines::list, post => pipelines::create },
    "/v1/pipelines/{id}" => { get => pipelines::get },
    "/v1/pipelines/{id}/cancel" => { post => pipelines::cancel },
    "/v1/pipelines/{id}/rerun" => { post => pipelines::rerun },
    "/v1/pipelines/{id}/reruns" => { get => pipelines::reruns },
    "/v1/pipelines/{id}/progress" => { get => pipelines::progress },
    "/v1/pipelines/{id}/documents" => { get => pipelines::documents },
    "/v1/pipelines/{id}/results" => { get => pipelines::results },
    "/v1/pipelines/{id}/documents/{pd_id}/cells" => { get => pipelines::cells },
    "/v1/pipelines/{id}/documents/{pd_id}/verdicts" => { get => pipelines::verdicts },
    "/v1/pipelines/{id}/documents/{pd_id}/calls" => { get => pipelines::calls },
    "/v1/models" => { get => models::list },
    "/v1/pipelines/{id}/data-product" => { post => data_products::create },
    "/v1/data-products" => { get => data_products::list },
    "/v1/data-products/{id}" => { get => data_products::get },
    "/v1/data-products/{id}/results" => { get => data_products::results },
    "/v1/data-products/{id}/export/plain" => { get => data_products::export_plain },
    "/v1/data-products/{id}/export/audit" => { get => data_products::export_audit },
    "/v1/data-products/{id}/export/lines" => { get => data_products::export_lines },
    "/v1/schemas/{id}/validation-stages/{stage_id}/replay-blocking" => { post => data_products::replay_blocking },
    "/v1/field-reviews" => { get => reviews::list },
    "/v1/field-reviews/summary" => { get => reviews::summary },
    "/v1/field-reviews/bulk-resolve" => { post => reviews::bulk_resolve },
    "/v1/field-reviews/decisions" => { get => reviews::decisions },
    "/v1/field-reviews/decisions/export" => { get => reviews::decisions_export },
    "/v1/field-reviews/{pd_id}/{field_key}" => { get => reviews::detail },
    "/v1/field-reviews/{pd_id}/{field_key}/resolve" => { post => reviews::resolve },
    "/v1/fields" => { get => schemas::list_fields },
    "/v1/fields/{id}" => { get => schemas::get_field },
    "/v1/fields/{id}/similar" => { get => schemas::similar_fields },
    "/v1/documents" => { get => documents::list, post => documents::create },
    "/v1/documents/filter" => { post => search::filter },
    "/v1/search" => { get => search::search },
    "/v1/credits/balance" => { get => account::balance },
    "/v1/usage" => { get => account::usage },
    "/v1/pricing" => { get => account::pricing },
    "/v1/extract" => { post => quick::extract },
    "/v1/extractions" => { get => quick::list },
    "/v1/extractions/{id}" => { get => quick::get },
    "/v1/extractions/{id}/data" => { get => quick::data, patch => quick::patch_data },
    "/v1/documents/{id}/re-extract" => { post => quick::re_extract },
    "/v1/documents/{id}/extractions" => { get => quick::of_document },
    "/v1/jobs" => { get => quick::list_jobs, post => quick::create_job },
    "/v1/jobs/{id}" => { get => quick::get_job },
    "/v1/jobs/{id}/results" => { get => quick::job_results },
    "/v1/jobs/{id}/cancel" => { post => quick::cancel_job },
    "/v1/documents/{id}" => { get => documents::get, delete => documents::delete },
    "/v1/documents/{id}/markdown" => { get => documents::markdown },
    "/v1/documents/{id}/pages/{page}" => { get => documents::page },
    "/v1/documents/{id}/pages/{page}/image" => { get => documents::page_image },
    "/v1/settings/retention" => { get => settings::get_retention, put => settings::put_retention },
    "/v1/webhooks" => { get => webhooks::list, post => webhooks::create },
    "/v1/webhooks/events" => { get => webhooks::events },
    "/v1/webhooks/delivery" => { get => webhooks::delivery_info },
    "/v1/webhooks/signatures" => { get => webhooks::signatures },
    "/v1/webhooks/retries" => { get => webhooks::retries },
    "/v1/webhooks/{id}" => { get => webhooks::get, patch => webhooks::patch, delete => webhooks::delete },
    "/v1/webhooks/{id}/rotate-secret" => { post => webhooks::rotate_secret },
    "/v1/webhooks/{id}/test" => { post => webhooks::test },
    "/v1/webhooks/{id}/deliveries" => { get => webhooks::deliveries },
    "/v1/webhooks/{id}/deliveries/{delivery_id}" => { get => webhooks::delivery },
    "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver" => { post => webhooks::redeliver },
}

/// Routes that answer without a key.
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

const DEBUG_PANIC_ROUTE: &str = "/v1/_debug/panic";

/// The route label of a request that matched no route (metrics and the access log).
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

/// The route template a request matched, as a label taken from the route table itself, so that
/// a label can only ever be one of these constants.
pub fn route_label(pattern: Option<&str>) -> &'static str {
    let Some(pattern) = pattern else {
        return UNMATCHED_ROUTE;
    };
    ROUTES
        .iter()
        .map(|(template, _)| *template)
        .chain([DEBUG_PANIC_ROUTE])
        .chain(ui::UI_ROUTES.iter().copied())
        .find(|template| *template == pattern)
        .unwrap_or(UNMATCHED_ROUTE)
}

pub fn routes(cfg: &mut web::ServiceConfig, debug: bool) {
    register(cfg);
    ui::routes(cfg);
    if debug {
        cfg.service(resource(DEBUG_PANIC_ROUTE, &["GET"]).route(web::get().to(debug_panic)));
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
            .wrap(from_fn(limits::per_client))
            .wrap(from_fn(middleware::envelope))
            .wrap(from_fn(ui::cors))
            // Outermost, so that everything below runs (and logs) inside the request's span.
            .wrap(tracing_actix_web::TracingLogger::<middleware::RequestSpan>::new())
            .configure(|c| routes(c, debug))
            .default_service(web::to(not_found_route))
    })
    .workers(config.http_workers)
    .client_request_timeout(Duration::from_secs(config.request_timeout))
    .client_disconnect_timeout(Duration::from_secs(5))
    .shutdown_timeout(config.shutdown_timeout)
    .listen(listener)?
    .run();
    Ok(server)
}
