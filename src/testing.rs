//! `TestServer`: a real, disposable Quire for test suites — its own temporary database, an
//! ephemeral port, a read+write key — running on a background thread until dropped.

use crate::config::Config;
use crate::domain::keys::generate_key;
use crate::Application;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

pub struct TestServer {
    pub url: String,
    pub api_key: String,
    /// What `--db` names: a SQLite file, or a PostgreSQL URL (`testing_postgres()`).
    pub db_path: PathBuf,
    handle: actix_web::dev::ServerHandle,
    state: actix_web::web::Data<crate::http::AppState>,
    thread: Option<JoinHandle<()>>,
    /// Last: the database goes after the server that uses it.
    _store: TestDb,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts with a configuration adjusted by `tune` (database path, key and port are set first).
    pub fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let store = TestDb::fresh();
        let key = generate_key("test");
        let mut config = Config::ephemeral(Some(key.clone()));
        config.db = store.db.clone();
        config.reader.exe = quire_binary();
        tune(&mut config);
        // A tuned configuration may point at an existing database and its key.
        let db_path = PathBuf::from(&config.db);
        let key = config.bootstrap_key.clone().unwrap_or(key);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                match Application::build(config) {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.port(), app.server_handle(), app.state())));
                        if let Err(e) = app.run_until_stopped().await {
                            tracing::error!("test server stopped with an error: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (port, handle, state) = match rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died during start-up"),
        };
        TestServer {
            url: format!("http://127.0.0.1:{port}"),
            api_key: key,
            db_path,
            handle,
            state,
            thread: Some(thread),
            _store: store,
        }
    }

    /// Holds queued documents in `queued` (claimed ones finish) until `resume_executor`, so a
    /// test can act on a run that is certainly not finished.
    pub fn pause_executor(&self) {
        self.state.executor.pause();
    }

    pub fn resume_executor(&self) {
        self.state.executor.resume();
    }

    /// The running service's state, for fault injection (`state().db.set_max_pages(…)`).
    pub fn state(&self) -> &crate::http::AppState {
        &self.state
    }

    /// Blocks until the service stops by itself (SIGINT or SIGTERM, which actix handles).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn db_arg(&self) -> String {
        self.db_path.to_string_lossy().into_owned()
    }

    /// A connection of the test's own to the service's database, SQLite or PostgreSQL, for
    /// looking inside (or breaking) what the service stored.
    pub fn store_connection(&self) -> crate::store::Connection {
        connect(&self.db_arg()).expect("a connection to the test server's database")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let stopper = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(false));
        });
        let _ = stopper.join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fresh database for one test, on the store `QUIRE_TEST_STORE` names: a SQLite file in a
/// temporary directory (unset, or `sqlite`), or a schema of its own in the PostgreSQL of
/// `QUIRE_TEST_POSTGRES_URL` (`postgres`), dropped with it. The same tests run on either.
pub struct TestDb {
    /// What `--db` takes: the file's path, or a URL whose `search_path` is the schema.
    pub db: String,
    place: TestPlace,
}

enum TestPlace {
    File { _dir: tempfile::TempDir },
    Postgres { server: String, schema: String },
}

/// Whether `QUIRE_TEST_STORE` asks for PostgreSQL.
pub fn testing_postgres() -> bool {
    match std::env::var("QUIRE_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("QUIRE_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

impl TestDb {
    pub fn fresh() -> Self {
        if !testing_postgres() {
            let dir = tempfile::tempdir().expect("temporary directory");
            let db = dir.path().join("quire.db").to_string_lossy().into_owned();
            return TestDb {
                db,
                place: TestPlace::File { _dir: dir },
            };
        }
        Self::fresh_postgres()
    }

    /// A schema of its own on the server of `QUIRE_TEST_POSTGRES_URL`, whatever
    /// `QUIRE_TEST_STORE` says.
    pub fn fresh_postgres() -> Self {
        let server = std::env::var("QUIRE_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("QUIRE_TEST_STORE=postgres needs QUIRE_TEST_POSTGRES_URL");
        let schema = format!("quire_test_{:016x}", rand::random::<u64>());
        crate::store::pg_schema(&server, &schema, true)
            .expect("a schema of its own in QUIRE_TEST_POSTGRES_URL");
        TestDb {
            db: crate::store::url_with_schema(&server, &schema),
            place: TestPlace::Postgres { server, schema },
        }
    }

    /// The SQLite file, for tests that look inside it; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.place {
            TestPlace::File { .. } => Some(PathBuf::from(&self.db)),
            TestPlace::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestPlace::Postgres { server, schema } = &self.place {
            let journal =
                crate::alloc_journal::journal_path(&crate::store::state_path_of(&self.db));
            let _ = std::fs::remove_file(journal);
            if let Err(e) = crate::store::pg_schema(server, schema, false) {
                eprintln!("warning: the test schema {schema} was not dropped: {e}");
            }
        }
    }
}

/// A connection of a test's own to the database `db` names (what `--db` takes), SQLite or
/// PostgreSQL.
pub fn connect(db: &str) -> Result<crate::store::Connection, crate::store::StoreError> {
    Ok(if crate::store::is_postgres_url(db) {
        crate::store::Connection::connect_pg(db)?
    } else {
        crate::store::Connection::open(db)?
    })
}

/// The `quire` binary beside a test executable (`target/<profile>/quire` for
/// `target/<profile>/deps/<test>`): an in-process test server reads documents through it, as the
/// binary reads them through itself.
pub fn quire_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}
