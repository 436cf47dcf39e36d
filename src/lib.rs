//! Quire: a self-hosted document structuring pipeline.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod admin;
pub mod alloc_journal;
pub mod answers;
pub mod config;
pub mod domain;
pub mod engine;
pub mod housekeeping;
pub mod http;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod node;
pub mod store;
pub mod testing;
pub mod tools;
pub mod webhooks;

use actix_web::dev::Server;
use actix_web::web;
use config::Config;
use http::AppState;
use std::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Admin(#[from] admin::AdminError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Config(String),
}

/// One `quire serve` per database file: an advisory lock on `<db>.lock`, holding the pid of the
/// process that has it. SQLite itself would let two services share the file, and two executors
/// claiming the same queue is not a supported setup. (A PostgreSQL schema is locked in the
/// database instead, once it is open: `Db::lock_for_serve`.)
fn lock_database(db: &str, allow_shared: bool) -> Result<Option<std::fs::File>, StartError> {
    use std::io::{Read, Seek, Write};
    if db == ":memory:" || allow_shared || store::is_postgres_url(db) {
        return Ok(None);
    }
    let path = format!("{db}.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StartError::InUse(format!("cannot open the lock file {path}: {e}")))?;
    match f.try_lock() {
        Ok(()) => {
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = write!(f, "{}", std::process::id());
            let _ = f.flush();
            Ok(Some(f))
        }
        Err(_) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            Err(StartError::InUse(format!(
                "the database {db} is in use by another quire serve (pid {}); stop it, or pass --allow-shared to start anyway",
                holder.trim()
            )))
        }
    }
}

/// A built, listening service. `build` must run inside an actix system.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    /// The key created on the first start of an empty database, to be shown once.
    pub first_key: Option<String>,
    /// The database file's lock, held while the service runs (a PostgreSQL schema's is a
    /// session the `Db` holds: `OpenOptions::serve_lock`).
    _lock: Option<std::fs::File>,
}

impl Application {
    pub fn build(config: Config) -> Result<Self, StartError> {
        let lock = lock_database(&config.db, config.allow_shared)?;
        let db = store::Db::open(
            &config.db,
            store::OpenOptions {
                max_connections: 8,
                max_db_pages: config.max_db_pages,
                serve_lock: (!config.allow_shared).then(|| config.node_id.clone()),
            },
        )?;
        let first_key = admin::ensure_bootstrap(&db, config.bootstrap_key.as_deref())?;
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr).map_err(|e| StartError::Bind(addr.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Bind(addr.clone(), e))?
            .port();
        let metrics = std::sync::Arc::new(metrics::Metrics::default());
        let models =
            std::sync::Arc::new(models::Registry::new(&config.models).map_err(StartError::Config)?);
        if config.node_id != node::DEFAULT {
            logging::set_node(&config.node_id);
        }
        let node = node::Node::new(
            &config.node_id,
            std::time::Duration::from_secs(config.lease),
            !config.allow_shared,
        );
        let executor = std::sync::Arc::new(engine::executor::Executor::start(
            db.clone(),
            metrics.clone(),
            config.workers,
            std::time::Duration::from_secs(config.shutdown_timeout),
            config.limits.clone(),
            models.clone(),
            node.clone(),
        )?);
        let webhooks = std::sync::Arc::new(webhooks::Dispatcher::start(
            db.clone(),
            config.webhooks.clone(),
            node.clone(),
        )?);
        let housekeeper = std::sync::Arc::new(
            housekeeping::Housekeeper::start(db.clone())
                .map_err(|e| StartError::Config(format!("cannot start housekeeping: {e}")))?,
        );
        let state = web::Data::new(AppState::new(
            db,
            config.clone(),
            executor,
            metrics,
            models,
            webhooks,
            housekeeper,
        )?);
        let server = http::server(state.clone(), listener, &config)
            .map_err(|e| StartError::Bind(addr, e))?;
        state.mark_ready();
        tracing::info!(
            "quire listening on http://{}:{port} (database {})",
            config.host,
            state.db.shown()
        );
        Ok(Application {
            port,
            server,
            state,
            first_key,
            _lock: lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGTERM/SIGINT or a handle), then stops the executor:
    /// no new claims, running steps finish and commit, the rest returns to the queue.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let executor = self.state.executor.clone();
        let webhooks = self.state.webhooks.clone();
        let housekeeper = self.state.housekeeper.clone();
        let _ = actix_web::rt::task::spawn_blocking(move || {
            // Everyone is told first, so no one's stop waits for another's work.
            housekeeper.stop();
            webhooks.shutdown();
            executor.shutdown();
            housekeeper.shutdown();
        })
        .await;
        result
    }
}
