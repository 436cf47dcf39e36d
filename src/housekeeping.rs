//! The housekeeper: applies each organization's retention setting at start, every hour, and
//! at once when a setting changes, on a thread of its own beside the executor.

use crate::store::Db;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(3600);

pub struct Housekeeper {
    wake: Sender<()>,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Housekeeper {
    pub fn start(db: Db) -> std::io::Result<Self> {
        let (wake, wake_rx) = bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = match db.read_only() {
            true => None,
            false => Some(
                std::thread::Builder::new()
                    .name("housekeeping".into())
                    .spawn(move || run(db, wake_rx, &stopping))?,
            ),
        };
        Ok(Housekeeper {
            wake,
            stop,
            thread: parking_lot::Mutex::new(thread),
        })
    }

    /// Asks for a pass now (a retention setting changed).
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Asks the thread to stop after the chunk in hand (a purge is a series of short
    /// transactions, so what is left is done on the next pass), without waiting.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Stops and waits for the thread.
    pub fn shutdown(&self) {
        self.stop();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(db: Db, wake: Receiver<()>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match crate::engine::retention::apply_settings(&db, stop) {
            Ok(done) => {
                for (org, r) in done.iter().filter(|(_, r)| r.versions + r.verdicts > 0) {
                    tracing::info!(
                        "retention: organization {org}: {} superseded version(s) and {} verdict(s) purged; {} → {} bytes",
                        r.versions,
                        r.verdicts,
                        r.bytes_before,
                        r.bytes_after
                    );
                }
            }
            Err(e) => tracing::warn!("retention pass failed (tried again within the hour): {e}"),
        }
        select! {
            recv(wake) -> r => if r.is_err() { return },
            default(EVERY) => {},
        }
    }
}
