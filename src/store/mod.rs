//! SQLite storage: the pool and its pragmas, migrations, and one module per aggregate.
//! All SQL of the service lives below this module.

pub mod allocator;
pub mod bench;
pub mod conn;
pub mod data_products;
pub mod documents;
pub mod gates;
pub mod idempotency;
pub mod intern;
pub mod keys;
pub mod migrate;
pub mod models;
pub mod nodes;
pub mod orgs;
#[cfg(test)]
mod pg_tests;
pub mod pipelines;
#[cfg(test)]
mod plans;
pub mod policies;
pub mod queue;
pub mod rate_buckets;
pub mod reruns;
pub mod retention;
pub mod review;
pub mod schemas;
pub mod settings;
pub mod sql;
pub mod states;
pub mod webhooks;

/// The connection and transaction types the layers above pass back into the store: they hold
/// one, never use it themselves (`tests/it/layering.rs` keeps SQL below `src/store`).
pub use conn::blocking_section;
pub use conn::{Connection, Transaction};
use conn::{DbError, DbResult, Manager, OptionalExtension, Row};
use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// "QUIR" as a big-endian integer, written to the database header.
pub const APPLICATION_ID: i64 = 0x5155_4952;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database is busy")]
    Busy,
    #[error("database is full")]
    Full,
    #[error("database is read-only")]
    ReadOnly,
    #[error("database error: {0}")]
    Db(DbError),
    #[error("pool error: {0}")]
    Pool(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
}

/// A stored value that does not decode: which table, column and row, and why. Never read as a
/// default (a gate with no mechanisms, field states back at phase 0): the request or the
/// document step fails with this, and the log names the place.
#[derive(Debug, thiserror::Error)]
#[error("corrupt value in {table}.{column} (row {row}): {cause}")]
pub struct Corrupt {
    pub table: &'static str,
    pub column: String,
    pub row: String,
    pub cause: String,
}

impl Corrupt {
    /// A stored value that does not decode, as the error a read answers.
    pub fn error(
        table: &'static str,
        column: &str,
        row: impl ToString,
        cause: impl Into<String>,
    ) -> StoreError {
        StoreError::Corrupt(Corrupt {
            table,
            column: column.into(),
            row: row.to_string(),
            cause: cause.into(),
        })
    }
}

/// An optional value as the text of a JSON column (NULL when absent).
pub(crate) fn json_text<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref().and_then(|x| serde_json::to_string(x).ok())
}

/// A fresh database in a temporary directory, for the store's own tests (the directory goes
/// with the first value).
#[cfg(test)]
pub(crate) fn scratch_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Db::open(
        dir.path().join("q.db").to_str().expect("a UTF-8 path"),
        OpenOptions::default(),
    )
    .expect("a fresh database");
    (dir, db)
}

/// A keyset list's comparison, order and starting position: newest first (`<`, `DESC`, from the
/// largest sequence) or oldest first.
pub fn keyset(ascending: bool) -> (&'static str, &'static str, i64) {
    if ascending {
        (">", "ASC", i64::MIN)
    } else {
        ("<", "DESC", i64::MAX)
    }
}

/// Reads column `idx` of a row as JSON. The row is named by the query's first column (its key:
/// every query of a JSON column selects the row's id or seq first).
pub fn json<T: serde::de::DeserializeOwned>(
    r: &Row,
    idx: usize,
    table: &'static str,
) -> DbResult<T> {
    json_opt(r, idx, table)?.ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(idx, column_name(r, idx), rusqlite::types::Type::Null)
            .into()
    })
}

/// `json` for a nullable column: NULL is `None`, a value that does not decode is `Corrupt`.
/// The text is parsed where SQLite holds it, without a copy.
pub fn json_opt<T: serde::de::DeserializeOwned>(
    r: &Row,
    idx: usize,
    table: &'static str,
) -> DbResult<Option<T>> {
    match r.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        rusqlite::types::ValueRef::Text(t) => decode(r, idx, table, t).map(Some),
        other => {
            Err(
                rusqlite::Error::InvalidColumnType(idx, column_name(r, idx), other.data_type())
                    .into(),
            )
        }
    }
}

fn column_name(r: &Row, idx: usize) -> String {
    r.column_name(idx)
        .map(str::to_string)
        .unwrap_or_else(|_| idx.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(
    r: &Row,
    idx: usize,
    table: &'static str,
    text: &[u8],
) -> DbResult<T> {
    serde_json::from_slice(text).map_err(|e| {
        let column = column_name(r, idx);
        let row = match r.get_ref(0) {
            Ok(rusqlite::types::ValueRef::Integer(i)) => i.to_string(),
            Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            _ => "?".into(),
        };
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            Box::new(Corrupt {
                table,
                column,
                row,
                cause: e.to_string(),
            }),
        )
        .into()
    })
}

impl StoreError {
    /// Storage faults that a retry later can get past (503 to clients, requeue for the executor).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Busy | StoreError::Full | StoreError::ReadOnly | StoreError::Pool(_)
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let e = match e {
            rusqlite::Error::FromSqlConversionFailure(i, t, cause) => {
                match cause.downcast::<Corrupt>() {
                    Ok(c) => return StoreError::Corrupt(*c),
                    Err(cause) => rusqlite::Error::FromSqlConversionFailure(i, t, cause),
                }
            }
            other => other,
        };
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => return StoreError::Busy,
                ErrorCode::DiskFull => return StoreError::Full,
                ErrorCode::ReadOnly => return StoreError::ReadOnly,
                ErrorCode::SystemIoFailure => return StoreError::Full,
                _ => {}
            }
        }
        StoreError::Db(DbError::Sqlite(e))
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        if let Some(code) = e.sqlstate() {
            match code {
                // serialization_failure, deadlock_detected, lock_not_available (lock_timeout)
                "40001" | "40P01" | "55P03" => return StoreError::Busy,
                "53100" => return StoreError::Full,
                "25006" => return StoreError::ReadOnly,
                // connection_exception and its kinds: the server is not reachable
                c if c.starts_with("08") => return StoreError::Pool(e.to_string()),
                _ => {}
            }
        }
        match e {
            DbError::Sqlite(e) => e.into(),
            DbError::Pg(e) if e.is_closed() => StoreError::Pool(e.to_string()),
            other => StoreError::Db(other),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Pool(e.to_string())
    }
}

pub type Conn = PooledConnection<Manager>;

/// Where the database lives: a SQLite file (`:memory:` is a file in a private temporary
/// directory that is removed when the `Db` is dropped: WAL needs a real file), or a PostgreSQL
/// database named by a `postgres://` URL.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    place: Place,
    /// The database as logs and errors name it (a URL without its password).
    shown: std::sync::Arc<str>,
    /// The page cap applied before every write (`--max-db-pages`); 0 when never configured.
    page_limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Opened on a file without write permission: reads are served, writes refused.
    read_only: bool,
    /// Writers of this process queue here, in order, instead of polling SQLite's busy handler
    /// (which sleeps in growing steps and made writes under load wait ~100 ms for a lock
    /// that was free after a few).
    write_gate: std::sync::Arc<parking_lot::Mutex<()>>,
    /// The session holding PostgreSQL's serve lock for as long as any clone of this lives.
    _serve_lock: Option<std::sync::Arc<parking_lot::Mutex<Connection>>>,
}

#[derive(Clone)]
enum Place {
    File {
        path: PathBuf,
        _tmp: Option<std::sync::Arc<tempfile::TempDir>>,
    },
    Postgres(Box<postgres::Config>),
}

/// Takes, on `c`, the session lock one `quire serve` node named `node` holds on a PostgreSQL
/// schema for its life (`Refused`, naming the holder's server process, when another has it).
fn take_serve_lock(c: Connection, shown: &str, node: &str) -> Result<Connection, StoreError> {
    let got: bool = c.query_row(
        &format!(
            "SELECT pg_try_advisory_lock({}, hashtext(current_schema() || '/' || ?1))",
            conn::PG_SERVE_LOCK
        ),
        [node],
        |r| r.get(0),
    )?;
    if got {
        return Ok(c);
    }
    // A two-key advisory lock is (classid, objid) with objsubid 2, in this database.
    let holder: Option<i64> = c
        .query_row(
            &format!(
                "SELECT pid::bigint FROM pg_locks
                 WHERE locktype = 'advisory' AND classid = {} AND objid = hashtext(current_schema() || '/' || ?1)::oid
                   AND objsubid = 2 AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 LIMIT 1",
                conn::PG_SERVE_LOCK
            ),
            [node],
            |r| r.get(0),
        )
        .optional()?;
    let holder = holder.map_or_else(String::new, |p| format!(" (server process {p})"));
    Err(StoreError::Refused(format!(
        "the database {shown} is in use by another quire serve with node id '{node}'{holder}; stop it, or give this one another --node-id to run several nodes"
    )))
}

/// Whether the PostgreSQL schema at `url` holds a Quire database (its migrations' ledger), read
/// without changing anything: operator commands must not create one by a mistyped URL.
pub fn pg_has_quire(url: &str) -> Result<bool, StoreError> {
    let c = Connection::connect_pg(url)
        .map_err(|e| StoreError::Refused(format!("cannot open {}: {e}", shown_db(url))))?;
    Ok(c.query_row(
        "SELECT to_regclass('schema_migrations') IS NOT NULL",
        [],
        |r| r.get(0),
    )?)
}

/// What the connection's PostgreSQL schema occupies: its tables with their indexes and TOAST.
pub fn schema_bytes(c: &Connection) -> Result<u64, StoreError> {
    let bytes: i64 = c.query_row(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
        [],
        |r| r.get(0),
    )?;
    Ok(bytes.max(0) as u64)
}

/// `url` with `schema` first in the connection's search_path: Quire's tables live there.
pub fn url_with_schema(url: &str, schema: &str) -> String {
    let glue = if url.contains('?') { '&' } else { '?' };
    format!("{url}{glue}options=-c%20search_path%3D{schema}")
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `Db::state_path` of the database `db` names, without opening it.
pub fn state_path_of(db: &str) -> PathBuf {
    if is_postgres_url(db) {
        pg_state_path(&shown_db(db))
    } else {
        PathBuf::from(db)
    }
}

/// For PostgreSQL, in systemd's `StateDirectory=` when the service has one (`packaging/`), or
/// else the temporary directory.
fn pg_state_path(shown: &str) -> PathBuf {
    let digest = crate::domain::canonical::sha256_hex(shown.as_bytes());
    let dir = std::env::var_os("STATE_DIRECTORY")
        .and_then(|d| std::env::split_paths(&d).next())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("quire-{}", &digest[..16]))
}

/// `db` as logs and messages may show it: a PostgreSQL URL rebuilt from what the client reads
/// in it (user, hosts, ports, database, options), so no password, wherever the URL carried it,
/// is shown; anything else as it is.
pub fn shown_db(db: &str) -> String {
    if !is_postgres_url(db) {
        return db.to_string();
    }
    let Ok(c) = db.parse::<postgres::Config>() else {
        return "postgres://(a URL the client cannot read)".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
    let mut out = format!(
        "postgres://{}@{}:{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        ports.join(","),
        c.get_dbname().unwrap_or("")
    );
    if let Some(options) = c.get_options() {
        out.push_str(&format!("?options={options}"));
    }
    out
}

/// Page cache per pooled connection, in KiB; the executor's own connections get more.
const POOL_CACHE_KIB: i64 = 2048;
const DEDICATED_CACHE_KIB: i64 = 2048;

/// SQLite's own ceiling for `max_page_count`: what "no cap" means once a cap was set.
const NO_PAGE_CAP: u64 = 4_294_967_294;

fn apply_pragmas(
    c: &rusqlite::Connection,
    max_pages: u64,
    cache_kib: i64,
    read_only: bool,
) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_millis(5000))?;
    if !read_only {
        // Checkpoints run on their own thread (`checkpointer`), not inside whichever commit
        // crosses the threshold: they were a fifth of the executor writer's time.
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA journal_size_limit=67108864;
             PRAGMA wal_autocheckpoint=0;",
        )?;
    }
    c.execute_batch(
        "PRAGMA synchronous=NORMAL;
         PRAGMA foreign_keys=ON;",
    )?;
    c.pragma_update(None, "cache_size", -cache_kib)?;
    if max_pages != 0 {
        c.pragma_update(None, "max_page_count", max_pages as i64)?;
    }
    Ok(())
}

fn open_flags(read_only: bool) -> OpenFlags {
    if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::default()
    }
}

/// A file whose permissions forbid writing. Checked by mode rather than by trying, because a
/// privileged user could write anyway, and the operator's intent is what the mode says.
fn is_read_only_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.permissions().readonly())
        .unwrap_or(false)
}

pub use migrate::latest_version;

/// Refuses files that are not Quire databases, or come from a newer Quire, without touching them.
fn check_existing(path: &Path) -> Result<(), StoreError> {
    if !path.exists()
        || std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(false)
    {
        return Ok(());
    }
    let shown = path.display();
    let c = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Refused(format!("cannot open {shown}: {e}")))?;
    let not_db =
        |e: rusqlite::Error| StoreError::Refused(format!("{shown} is not a Quire database ({e})"));
    let app_id: i64 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(not_db)?;
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_db)?;
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(not_db)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(StoreError::Refused(format!(
            "{shown} is not a Quire database (application_id {app_id:#x})"
        )));
    }
    if version == 0 && tables > 0 {
        return Err(StoreError::Refused(format!(
            "{shown} is not a Quire database: it has tables but no Quire schema version; refusing to touch it"
        )));
    }
    // A damaged page anywhere would surface later as errors mid-request; find it now instead.
    let check: String = c
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| {
            StoreError::Refused(format!(
                "{shown} is damaged: {e}; restore it from a backup (quire backup)"
            ))
        })?;
    if check != "ok" {
        return Err(StoreError::Refused(format!(
            "{shown} is damaged ({check}); refusing to start on it — restore it from a backup (quire backup)"
        )));
    }
    if version > latest_version() {
        return Err(StoreError::Refused(format!(
            "{shown} was written by a newer Quire (schema version {version}, this binary knows {}); refusing to touch it",
            latest_version()
        )));
    }
    Ok(())
}

pub struct OpenOptions {
    pub max_connections: u32,
    pub max_db_pages: Option<u64>,
    /// Hold the database for one `quire serve` node of this name on PostgreSQL, taken before
    /// anything is migrated (a SQLite file is held through `<db>.lock`, taken before it is
    /// opened).
    pub serve_lock: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 16,
            max_db_pages: None,
            serve_lock: None,
        }
    }
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path` (`:memory:` for a temporary
    /// one, a `postgres://` URL for PostgreSQL).
    pub fn open(path: &str, opts: OpenOptions) -> Result<Db, StoreError> {
        if is_postgres_url(path) {
            return Self::open_pg(path, opts);
        }
        let (path, tmp) = if path == ":memory:" {
            let dir = tempfile::Builder::new()
                .prefix("quire-")
                .tempdir()
                .map_err(|e| {
                    StoreError::Refused(format!("cannot create a temporary directory: {e}"))
                })?;
            (dir.path().join("quire.db"), Some(std::sync::Arc::new(dir)))
        } else {
            (PathBuf::from(path), None)
        };
        check_existing(&path)?;
        let read_only = is_read_only_file(&path);
        let page_limit = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            opts.max_db_pages.unwrap_or(0),
        ));
        let limit = page_limit.clone();
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(open_flags(read_only))
            .with_init(move |c| {
                apply_pragmas(
                    c,
                    limit.load(std::sync::atomic::Ordering::SeqCst),
                    POOL_CACHE_KIB,
                    read_only,
                )
            });
        let pool = Pool::builder()
            .max_size(opts.max_connections)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(Manager::sqlite(manager))
            .map_err(|e| StoreError::Refused(format!("cannot open {}: {e}", path.display())))?;
        let db = Db {
            pool,
            shown: path.display().to_string().into(),
            place: Place::File { path, _tmp: tmp },
            page_limit,
            read_only,
            write_gate: Default::default(),
            _serve_lock: None,
        };
        db.migrate()?;
        if read_only {
            tracing::warn!(
                "{} is read-only: serving reads, refusing writes with 503",
                db.shown
            );
        }
        Ok(db)
    }

    /// Connects to the PostgreSQL database at `url` and migrates its schema (the first of the
    /// connection's `search_path`, `public` by default).
    fn open_pg(url: &str, opts: OpenOptions) -> Result<Db, StoreError> {
        let shown = shown_db(url);
        let refused =
            |e: &dyn std::fmt::Display| StoreError::Refused(format!("cannot open {shown}: {e}"));
        if opts.max_db_pages.is_some() {
            return Err(StoreError::Refused(format!(
                "{shown} is PostgreSQL: --max-db-pages caps a SQLite file; limit the database's size in PostgreSQL instead"
            )));
        }
        let config: postgres::Config = url.parse().map_err(|e| refused(&e))?;
        // Connected once first so that a wrong host or password says why at once, instead of
        // after the pool's timeout; and a second serve is refused before it migrates anything
        // under the first.
        let first = Connection::connect_pg_config(&config).map_err(|e| refused(&e))?;
        let serve_lock = match &opts.serve_lock {
            Some(node) => Some(std::sync::Arc::new(parking_lot::Mutex::new(
                take_serve_lock(first, &shown, node)?,
            ))),
            None => None,
        };
        let pool = Pool::builder()
            .max_size(opts.max_connections)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(Manager::pg_config(config.clone()))
            .map_err(|e| refused(&e))?;
        let db = Db {
            pool,
            shown: shown.into(),
            place: Place::Postgres(Box::new(config)),
            page_limit: Default::default(),
            read_only: false,
            write_gate: Default::default(),
            _serve_lock: serve_lock,
        };
        let mut c = db.conn()?;
        migrate::migrate_pg(&mut c, &db.shown)?;
        Ok(db)
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.place, Place::Postgres(_))
    }

    /// The database as logs and messages name it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Held for the whole of a write transaction by every writer of this process.
    pub fn write_gate(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.write_gate.lock()
    }

    /// Changes the page cap on every connection from the next write on (`None` lifts it).
    /// Fault-injection for tests: a cap below the current size fills the database at once.
    pub fn set_max_pages(&self, pages: Option<u64>) {
        let v = match pages {
            Some(p) => p.max(1),
            None if self.page_limit.load(std::sync::atomic::Ordering::SeqCst) == 0 => 0,
            None => NO_PAGE_CAP,
        };
        self.page_limit
            .store(v, std::sync::atomic::Ordering::SeqCst);
    }

    /// Applies the current page cap to a connection about to write; nothing when none was set.
    pub fn cap_pages(&self, c: &Connection) -> Result<(), StoreError> {
        let v = self.page_limit.load(std::sync::atomic::Ordering::SeqCst);
        if v != 0 && !self.is_postgres() {
            c.sqlite()?
                .pragma_update(None, "max_page_count", v as i64)?;
        }
        Ok(())
    }

    /// Whether writes can go on: false when read-only, within 64 pages of the page cap, or when
    /// the file system has less than 4 MiB free; on PostgreSQL, false on a standby or a
    /// read-only session.
    pub fn writable(&self) -> Result<bool, StoreError> {
        if self.read_only {
            return Ok(false);
        }
        let c = self.conn()?;
        let path = match &self.place {
            Place::File { path, .. } => path,
            Place::Postgres(_) => {
                // The serve lock lives as long as its session: one the server ended (a restart,
                // `idle_session_timeout`) no longer keeps a second serve out.
                if let Some(lock) = &self._serve_lock {
                    if let Err(e) = lock.lock().execute_batch("SELECT 1") {
                        tracing::error!(
                            "the session holding {}'s serve lock is gone: {e}",
                            self.shown
                        );
                        return Ok(false);
                    }
                }
                return Ok(c.query_row(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                    [],
                    |r| r.get(0),
                )?);
            }
        };
        self.cap_pages(&c)?;
        let max: i64 = c.query_row("PRAGMA max_page_count", [], |r| r.get(0))?;
        let count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        if max - count + free < 64 {
            return Ok(false);
        }
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Ok(fs4::available_space(dir).map_or(true, |b| b >= 4 << 20))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let Place::File { _tmp, .. } = &self.place else {
            return Ok(());
        };
        let mut c = self.conn()?;
        let current: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let shown = self.shown.to_string();
        // Checked before anything is written, the backup included: a refused file is untouched.
        migrate::verify(&c, current, false, &shown)?;
        if self.read_only {
            if current < latest_version() {
                return Err(StoreError::Refused(format!(
                    "{shown} is read-only and needs schema migration {} first; make it writable once",
                    latest_version()
                )));
            }
            return Ok(());
        }
        let pending = current < latest_version();
        if pending && current > 0 && _tmp.is_none() {
            // An upgrade: keep the database as the older version left it, next to it.
            let dest = PathBuf::from(format!("{shown}.bak-{current}"));
            if !dest.exists() {
                let mut out = rusqlite::Connection::open(&dest)?;
                rusqlite::backup::Backup::new(c.sqlite()?, &mut out)?.run_to_completion(
                    256,
                    Duration::from_millis(5),
                    None,
                )?;
                tracing::info!(
                    "backed up {shown} to {} before migrating it from schema version {current} to {}",
                    dest.display(),
                    latest_version()
                );
            }
        }
        if current == 0 {
            // Only possible before the first table: lets a purge give space back to the file
            // system (`PRAGMA incremental_vacuum`) instead of only to later writes. The file
            // already has its header (WAL mode), so the VACUUM of an empty database applies it.
            c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
        }
        let tx = c.begin_immediate()?;
        migrate::verify(&tx, current, true, &shown)?;
        migrate::apply_after(&tx, current)?;
        if pending {
            tx.sqlite()?
                .pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Where this process keeps its own files about the database (the allocation journal):
    /// beside the SQLite file, or, for PostgreSQL, in systemd's state directory or the
    /// temporary directory under a name drawn from the database's URL, so a restart on the same
    /// host finds what it left.
    pub fn state_path(&self) -> PathBuf {
        match &self.place {
            Place::File { path, .. } => path.clone(),
            Place::Postgres(_) => pg_state_path(&self.shown),
        }
    }

    /// What the database occupies: the SQLite file and its WAL, or the PostgreSQL schema's
    /// tables with their indexes and TOAST.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        match &self.place {
            Place::File { path, .. } => {
                let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                Ok(size(path) + size(&wal))
            }
            Place::Postgres(_) => schema_bytes(&*self.conn()?),
        }
    }

    pub fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.pool.get()?)
    }

    /// A read on a pooled connection.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let c = self.conn()?;
        f(&c)
    }

    /// Reads inside one deferred transaction: every statement sees the same snapshot, however
    /// long the reader takes (a streamed export reads page after page).
    pub fn read_snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let c = self.conn()?;
        let tx = c.unchecked_transaction().map_err(StoreError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }

    /// A short `BEGIN IMMEDIATE` transaction. `durable` commits with `synchronous=FULL`, for
    /// transactions that acknowledge a client's write.
    pub fn write<T, E: From<StoreError>>(
        &self,
        durable: bool,
        f: impl FnOnce(&Transaction) -> Result<T, E>,
    ) -> Result<T, E> {
        let _turn = self.write_gate();
        let mut c = self.conn()?;
        self.cap_pages(&c)?;
        // PostgreSQL commits durably whatever is asked (`synchronous_commit` stays on).
        let durable = durable && !self.is_postgres();
        if durable {
            c.sqlite()
                .map_err(StoreError::from)?
                .pragma_update(None, "synchronous", "FULL")
                .map_err(StoreError::from)?;
        }
        let result = (|| {
            let tx = c.begin_immediate().map_err(StoreError::from)?;
            let out = f(&tx)?;
            tx.commit().map_err(StoreError::from)?;
            Ok(out)
        })();
        if durable {
            if let Ok(s) = c.sqlite() {
                let _ = s.pragma_update(None, "synchronous", "NORMAL");
            }
        }
        result
    }

    /// Opens `c`, a connection of `dedicated`'s, again if the server closed it; whether it did.
    pub fn renew(&self, c: &mut Connection) -> Result<bool, StoreError> {
        if !c.is_broken() {
            return Ok(false);
        }
        tracing::warn!(
            "{}: a connection was closed by the server; opening it again",
            self.shown
        );
        *c = self.dedicated()?;
        Ok(true)
    }

    /// The dedicated connection kept in `slot`: opened when there is none, opened again when
    /// the server closed it.
    pub fn kept<'a>(&self, slot: &'a mut Option<Connection>) -> Result<&'a Connection, StoreError> {
        match slot {
            Some(c) => {
                self.renew(c)?;
                Ok(c)
            }
            None => Ok(slot.insert(self.dedicated()?)),
        }
    }

    /// A plain connection outside the pool, for long-lived single users (key cache, writer).
    pub fn dedicated(&self) -> Result<Connection, StoreError> {
        let path = match &self.place {
            Place::File { path, .. } => path,
            Place::Postgres(config) => return Ok(Connection::connect_pg_config(config)?),
        };
        let c = rusqlite::Connection::open_with_flags(path, open_flags(self.read_only))?;
        apply_pragmas(
            &c,
            self.page_limit.load(std::sync::atomic::Ordering::SeqCst),
            DEDICATED_CACHE_KIB,
            self.read_only,
        )?;
        c.set_prepared_statement_cache_capacity(128);
        Ok(Connection::from_sqlite(c))
    }
}

/// WAL frames past which the checkpointer briefly holds writers back so the log can start over.
const WAL_RESET_FRAMES: i64 = 8192;

/// Copies the WAL into the database on its own thread, beside the writers instead of inside
/// their commits. Most of the copying runs while writers keep appending; when the log has grown
/// past `WAL_RESET_FRAMES`, one short pass under the write gate copies the rest so the next
/// commit starts the log from its beginning; when writes stop, the log is truncated.
pub fn checkpointer(db: Db, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    if db.is_postgres() {
        return;
    }
    let conn = match db.dedicated() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("the checkpointer cannot open the database: {e}");
            return;
        }
    };
    let pass = |mode: &str| -> Option<(i64, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .ok()
    };
    let mut last_log = 0;
    let mut truncated = true;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let Some((log, _)) = pass("PASSIVE") else {
            continue;
        };
        if log >= WAL_RESET_FRAMES {
            let _turn = db.write_gate();
            let _ = pass("PASSIVE");
        }
        if log > 0 && log == last_log && !truncated {
            // Nothing was written since the last look: shrink the file while idle.
            let _turn = db.write_gate();
            truncated = pass("TRUNCATE").is_some();
        } else if log != last_log {
            truncated = false;
        }
        last_log = log;
    }
}

/// Creates (`create`) or drops, with everything in it, the schema `name` of the PostgreSQL
/// server at `url`: the disposable databases of test suites (`testing::TestDb`).
pub fn pg_schema(url: &str, name: &str, create: bool) -> Result<(), StoreError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Refused(format!(
            "{name:?} is not a plain schema name"
        )));
    }
    let c = Connection::connect_pg(url)?;
    let sql = if create {
        format!("CREATE SCHEMA {name}")
    } else {
        format!("DROP SCHEMA {name} CASCADE")
    };
    c.execute_batch(&sql)?;
    Ok(())
}

/// Reads an optional row: `Ok(None)` when no row matched.
macro_rules! stored_as_name {
    ($($t:ty),+) => {$(
        impl rusqlite::types::FromSql for $t {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("unknown status {s:?}").into())
                })
            }
        }

        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }
    )+};
}

stored_as_name!(
    crate::domain::status::DocStatus,
    crate::domain::status::RunStatus
);

/// A savepoint inside a transaction, rolled back unless committed: one item of a batch fails
/// alone. Works on a shared `&Connection` (rusqlite's own `savepoint` needs `&mut`). Savepoints
/// of one name nest: each `ROLLBACK TO`/`RELEASE` ends the innermost of that name.
pub struct Savepoint<'a> {
    conn: &'a Connection,
    done: bool,
}

impl<'a> Savepoint<'a> {
    pub fn begin(conn: &'a Connection) -> Result<Self, StoreError> {
        conn.execute_batch("SAVEPOINT item")?;
        Ok(Savepoint { conn, done: false })
    }

    pub fn commit(mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("RELEASE item")?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK TO item; RELEASE item");
        }
    }
}

/// A write transaction on a connection of one's own (the executor's writer), under the
/// process's write gate like every other writer.
pub fn begin_immediate(c: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(c.begin_immediate()?)
}

/// Copies what it can of the WAL into the database without waiting for readers.
pub fn checkpoint_passive(c: &Connection) -> Result<(), StoreError> {
    if c.dialect() == sql::Dialect::Postgres {
        return Ok(());
    }
    c.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")?;
    Ok(())
}

/// Folds the whole WAL back into the database file (at a clean stop).
pub fn checkpoint_truncate(c: &Connection) -> Result<(), StoreError> {
    if c.dialect() == sql::Dialect::Postgres {
        return Ok(());
    }
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

/// A counter that changes whenever another connection commits (SQLite's `data_version`). On
/// PostgreSQL, a hash of the current snapshot: a commit anywhere in the cluster changes it (it
/// leaves the in-progress list, or the next transaction id moved), and equal snapshots see the
/// same rows; other databases' commits only cost a cache a miss.
pub fn data_version(c: &Connection) -> Result<i64, StoreError> {
    match c.dialect() {
        sql::Dialect::Sqlite => Ok(c.query_row("PRAGMA data_version", [], |r| r.get(0))?),
        sql::Dialect::Postgres => Ok(c.query_row(
            "SELECT hashtextextended(pg_current_snapshot()::text, 0)",
            [],
            |r| r.get(0),
        )?),
    }
}

pub fn optional<T>(r: DbResult<T>) -> Result<Option<T>, StoreError> {
    Ok(conn::OptionalExtension::optional(r)?)
}

/// Copies the live database at `db` to `dest` with SQLite's online backup API: a consistent
/// snapshot while the service keeps running. `dest` must not exist.
pub fn backup(db: &Db, dest: &Path) -> Result<(), StoreError> {
    if db.is_postgres() {
        return Err(StoreError::Refused(format!(
            "{} is PostgreSQL: back it up with PostgreSQL's own tools, e.g. `pg_dump --format=custom --file={} '<the same URL>'` (quire backup copies SQLite files)",
            db.shown,
            dest.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Refused(format!(
            "{} exists; choose a new file",
            dest.display()
        )));
    }
    let src = db.dedicated()?;
    let mut out = rusqlite::Connection::open(dest)?;
    {
        let b = rusqlite::backup::Backup::new(src.sqlite()?, &mut out)?;
        b.run_to_completion(256, Duration::from_millis(5), None)?;
    }
    out.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}

/// A read-only watcher of `data_version`: it changes whenever another connection commits, so
/// caches of derived answers can tell when they may be stale.
pub struct ChangeWatch {
    db: Db,
    conn: parking_lot::Mutex<Connection>,
    /// Reads begun so far.
    begun: std::sync::atomic::AtomicU64,
    /// The newest finished read: its number and the version it saw.
    seen: parking_lot::Mutex<(u64, i64)>,
}

impl ChangeWatch {
    pub fn new(db: &Db) -> Result<Self, StoreError> {
        Ok(ChangeWatch {
            db: db.clone(),
            conn: parking_lot::Mutex::new(db.dedicated()?),
            begun: Default::default(),
            seen: parking_lot::Mutex::new((0, 0)),
        })
    }

    /// The version as of some moment after this call began. Callers that queue behind one
    /// read share the next, which began after all of them arrived and so sees every commit
    /// made before any of them asked: on PostgreSQL a read is a round trip, and every request
    /// asks (the key cache, the progress cache).
    pub fn version(&self) -> Result<i64, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let arrived = self.begun.load(SeqCst);
        let mut conn = self.conn.lock();
        let (number, version) = *self.seen.lock();
        if number > arrived {
            return Ok(version);
        }
        let number = self.begun.fetch_add(1, SeqCst) + 1;
        self.db.renew(&mut conn)?;
        let version = data_version(&conn)?;
        *self.seen.lock() = (number, version);
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_value_that_does_not_decode_is_an_error_naming_its_place_not_a_default() {
        let db = Db::open(":memory:", OpenOptions::default()).unwrap();
        let c = db.conn().unwrap();
        c.execute_batch(
            "INSERT INTO organizations(id, name, created_at) VALUES ('o', 'o', 'now');
             INSERT INTO schemas(id, short_id, org_id, name, definition, fields, rail, created_at, updated_at)
             VALUES ('s', 'SCH-1', 'o', 's', '{}', '[]', '[{\"type\": \"sch', 'now', 'now');",
        )
        .unwrap();
        match schemas::get(&c, "o", "s", false) {
            Err(StoreError::Corrupt(e)) => {
                assert_eq!((e.table, e.column.as_str()), ("schemas", "rail"));
                assert!(
                    e.to_string()
                        .starts_with("corrupt value in schemas.rail (row "),
                    "{e}"
                );
            }
            other => panic!("a truncated rail must not read as a default: {other:?}"),
        }
    }

    #[test]
    fn foreign_and_newer_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"this is not sqlite at all, not even close........").unwrap();
        let before = std::fs::read(&junk).unwrap();
        assert!(Db::open(junk.to_str().unwrap(), OpenOptions::default()).is_err());
        assert_eq!(std::fs::read(&junk).unwrap(), before);

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let err = Db::open(foreign.to_str().unwrap(), OpenOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a Quire database"), "{err}");

        let newer = dir.path().join("newer.db");
        let db = Db::open(newer.to_str().unwrap(), OpenOptions::default()).unwrap();
        db.conn()
            .unwrap()
            .sqlite()
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        drop(db);
        let err = Db::open(newer.to_str().unwrap(), OpenOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("newer Quire"), "{err}");
    }

    #[test]
    fn a_postgres_url_is_shown_without_its_password_and_keeps_its_state_apart() {
        assert!(is_postgres_url("postgres://u@h/db") && is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("quire.db") && !is_postgres_url("postgres.db"));
        for (url, secret) in [
            (
                "postgres://quire:s3cret@db.example:5432/q?sslmode=disable",
                "s3cret",
            ),
            (
                "postgresql://quire@db/q?password=s3cret&sslmode=disable",
                "s3cret",
            ),
            ("postgres://u:pa/ss@h/db", "pa/ss"),
            ("postgres://u:p%40ss@h/db", "p@ss"),
        ] {
            let shown = shown_db(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(!shown.contains(&secret.replace('@', "%40")), "{shown}");
        }
        assert_eq!(
            shown_db("postgres://quire:s3cret@db.example:5432/q?sslmode=disable"),
            "postgres://quire@db.example:5432/q"
        );
        assert_eq!(
            shown_db("postgresql://db/q?options=-c%20search_path%3Dx"),
            "postgres://@db:5432/q?options=-c search_path=x"
        );
        assert_eq!(shown_db("quire.db"), "quire.db");
        let a = state_path_of("postgres://u:one@h/a");
        assert_eq!(
            a,
            state_path_of("postgres://u:two@h/a"),
            "the password is not part of it"
        );
        assert_ne!(a, state_path_of("postgres://u@h/b"));
        assert_eq!(state_path_of("x/quire.db"), PathBuf::from("x/quire.db"));
    }

    /// Every call that begins after a commit sees a version other than one read before it,
    /// however many threads ask at once and share reads.
    pub(crate) fn a_change_watch_sees_every_commit_made_before_it_was_asked(db: &Db) {
        let watch = std::sync::Arc::new(ChangeWatch::new(db).unwrap());
        for round in 0..20 {
            let before = watch.version().unwrap();
            db.write(false, |tx| orgs::create(tx, &format!("watch-{round}")))
                .unwrap();
            let seen: Vec<i64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| watch.version().unwrap()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(
                seen.iter().all(|v| *v != before),
                "round {round}: {before} then {seen:?}"
            );
        }
    }

    #[test]
    fn a_change_watch_on_sqlite_sees_every_commit() {
        let (_dir, db) = scratch_db();
        a_change_watch_sees_every_commit_made_before_it_was_asked(&db);
    }

    #[test]
    fn memory_database_is_a_real_file_removed_on_drop() {
        let db = Db::open(":memory:", OpenOptions::default()).unwrap();
        let p = db.state_path();
        assert!(p.exists());
        let mode: String = db
            .conn()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(db);
        assert!(!p.exists());
    }
}
