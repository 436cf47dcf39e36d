//! This process as one node of several sharing a database: its name, its current id (fresh at
//! every registration), and the heartbeat that keeps its lease.

use crate::store::{self, Db};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The name of a node started without `--node-id`.
pub const DEFAULT: &str = "default";

pub struct Node {
    pub name: String,
    pub lease: Duration,
    /// Whether this process holds its name's lock (`quire serve` without `--allow-shared`):
    /// then any other incarnation of the name is gone, and its work is taken back at once.
    pub exclusive: bool,
    id: RwLock<String>,
    born: Instant,
    /// When the lease was last renewed, in ms after `born` (0: never).
    renewed_ms: AtomicU64,
    /// Set by the heartbeat when it finds the node no longer registered; the writer then
    /// registers again before it claims anything.
    reaped: AtomicBool,
    retired: AtomicBool,
}

impl Node {
    pub fn new(name: &str, lease: Duration, exclusive: bool) -> Arc<Node> {
        Arc::new(Node {
            name: name.to_string(),
            lease,
            exclusive,
            id: RwLock::new(String::new()),
            born: Instant::now(),
            renewed_ms: AtomicU64::new(0),
            reaped: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        })
    }

    /// The id claims are made under (empty before the first registration).
    pub fn id(&self) -> String {
        self.id.read().clone()
    }

    pub fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Records a registration (the first, or again after being reaped).
    pub fn registered(&self, id: String) {
        *self.id.write() = id;
        self.reaped.store(false, Ordering::SeqCst);
        self.renewed();
    }

    fn renewed(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.renewed_ms.store(ms.max(1), Ordering::SeqCst);
    }

    /// Whether the others may have taken this node's work back (it was reaped, or its lease
    /// was not renewed in time).
    pub fn lapsed(&self) -> bool {
        self.reaped.load(Ordering::SeqCst) || self.lease_left() == Duration::ZERO
    }

    /// How long the lease lasts without another renewal.
    pub fn lease_left(&self) -> Duration {
        let at = self.renewed_ms.load(Ordering::SeqCst);
        if at == 0 {
            return Duration::ZERO;
        }
        let since = self
            .born
            .elapsed()
            .saturating_sub(Duration::from_millis(at));
        self.lease.saturating_sub(since)
    }

    /// Where this node keeps its own files about `db` (the allocation journal): two nodes on
    /// one host must not share them.
    pub fn state_path(&self, db: &Db) -> std::path::PathBuf {
        let base = db.state_path();
        if self.name == DEFAULT || !db.is_postgres() {
            return base;
        }
        let mut p = base.into_os_string();
        p.push(format!("-{}", self.name));
        p.into()
    }

    /// The heartbeat's thread is told to end (after the node deregistered).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Renews the lease every third of it, on a connection of its own and outside the writers'
    /// lock, so a long write transaction never lets the lease run out.
    pub fn start_heartbeat(self: &Arc<Self>, db: Db) -> std::io::Result<JoinHandle<()>> {
        let node = self.clone();
        std::thread::Builder::new()
            .name("quire-heartbeat".into())
            .spawn(move || node.beat(db))
    }

    fn beat(&self, db: Db) {
        let every = (self.lease / 3).max(Duration::from_millis(50));
        let mut conn = None;
        let mut next = Instant::now() + every;
        while !self.retired.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50).min(every));
                continue;
            }
            next = Instant::now() + every;
            let id = self.id();
            if id.is_empty() {
                continue;
            }
            let beat = db
                .kept(&mut conn)
                .and_then(|c| store::nodes::heartbeat(c, &id));
            match beat {
                Ok(true) => self.renewed(),
                Ok(false) if self.id() == id => {
                    if !self.reaped.swap(true, Ordering::SeqCst) {
                        tracing::error!(
                            "node {id} was reaped by another node (its lease ran out): its work was taken back; registering again"
                        );
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("node {id}: cannot renew the lease: {e}"),
            }
        }
    }
}
