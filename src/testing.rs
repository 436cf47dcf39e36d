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
    pub db_path: PathBuf,
    handle: actix_web::dev::ServerHandle,
    state: actix_web::web::Data<crate::http::AppState>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts with a configuration adjusted by `tune` (database path, key and port are set first).
    pub fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db_path = dir.path().join("quire.db");
        let key = generate_key("test");
        let mut config = Config::ephemeral(Some(key.clone()));
        config.db = db_path.to_string_lossy().into_owned();
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
            _dir: dir,
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

/// The `quire` binary beside a test executable (`target/<profile>/quire` for
/// `target/<profile>/deps/<test>`): an in-process test server reads documents through it, as the
/// binary reads them through itself.
pub fn quire_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}
