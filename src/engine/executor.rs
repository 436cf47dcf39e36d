//! The executor: worker threads compute documents, one writer thread commits their steps in
//! group transactions (a SAVEPOINT per document) and claims the next documents.

use super::runner::{self, DocCtx, PhaseConfig, RunResult, RunSpec};
use crate::domain::ids::now_rfc3339;
use crate::domain::prompt::Answer;
use crate::domain::state::{document_status, with_fields, States, Status};
use crate::domain::status::DocStatus;
use crate::metrics::Metrics;
use crate::models::dispatch::{self, Dispatcher, Job};
use crate::models::Registry;
use crate::node::Node;
use crate::store;
use crate::store::queue::{Claim, Final};
use crate::store::{Connection, Db, StoreError};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_BATCH: usize = 256;
/// Below this many results the writer waits (up to the window) for more before committing.
const MIN_BATCH: usize = 32;
const BATCH_WINDOW: Duration = Duration::from_millis(25);

/// A run with what the writer binds already serialized, so the one writer thread does as
/// little as possible.
struct Ran {
    run: RunResult,
    /// The stored field states the run started from, as read.
    before_raw: String,
    after_json: String,
    rows: Vec<store::queue::StepRows>,
}

enum Outcome {
    Ran(Box<Ran>),
    /// Nothing to commit: storage trouble while loading, or a panic in computation.
    Requeue(String),
    /// The claim was taken back before the work began (a cancel, a rerun, another node's
    /// reaping): nothing to commit or requeue.
    Dropped,
    /// The run needs a model's answer that is not kept yet: the document waits in the queue
    /// while the dispatcher asks.
    Wait(Box<Job>),
}

struct WorkResult {
    claim: Claim,
    outcome: Outcome,
}

type SpecCache = Mutex<HashMap<(String, i64), Arc<RunSpec>>>;

/// What the executor's workers are held to.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub budget: runner::Budget,
    /// Fault injection for the crash tests: a worker that picks up a document containing this
    /// text aborts the process, as an allocation failure or a fault in a C library would.
    pub abort_on: Option<String>,
    pub abort_how: AbortHow,
}

/// How a fault-injected worker takes the process down.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum AbortHow {
    /// It records why first (an abort the process can see coming).
    #[default]
    Recorded,
    /// It records nothing (as a fault in a C library would): only two consecutive unclean
    /// exits reveal the document.
    Unrecorded,
    /// By an allocation that fails, as a runaway allocation would: the allocation journal
    /// (`alloc_journal`) is what records it.
    Allocation,
}

pub struct Executor {
    node: Arc<Node>,
    wake_tx: Sender<()>,
    /// Wakes the other nodes (PostgreSQL): `notifier` sends what this carries.
    tell_others: Option<Sender<()>>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutdown_timeout: Duration,
}

impl Executor {
    /// Recovers interrupted work, then starts the writer and `workers` worker threads.
    pub fn start(
        db: Db,
        metrics: Arc<Metrics>,
        workers: usize,
        shutdown_timeout: Duration,
        limits: Limits,
        registry: Arc<Registry>,
        node: Arc<Node>,
    ) -> Result<Self, StoreError> {
        if db.read_only() {
            return Ok(Self::idle(shutdown_timeout, node));
        }
        let journal = node.state_path(&db);
        let failed_allocations = crate::alloc_journal::read(&journal);
        let (id, gone, (r, hooks)) = db.write(false, |tx| {
            for e in &failed_allocations {
                let cause = format!("an allocation of {} bytes failed", e.bytes);
                store::queue::record_abort_of_claim(tx, e.seq, &e.token, &cause)?;
            }
            let id = store::nodes::register(tx, &node.name, node.lease_ms())?;
            // Holding the name's lock, any earlier incarnation of it is gone: its work is
            // taken back now rather than when its lease runs out.
            let gone = store::nodes::reap(tx, &id, node.exclusive)?;
            Ok::<_, StoreError>((id, gone, take_back(tx, true)?))
        })?;
        tracing::info!("registered as node {id}");
        node.registered(id);
        report_taken_back(&gone, &r, hooks);
        if let Err(e) = crate::alloc_journal::open(&journal) {
            tracing::warn!("no allocation journal (a failed allocation will need two unclean exits to quarantine its document): {e}");
        }
        let limits = Arc::new(limits);
        let (wake_tx, wake_rx) = bounded::<()>(1);
        // Enough claimed work that workers never wait for the writer's commit.
        let capacity = 1024;
        let (work_tx, work_rx) = bounded::<Claim>(capacity);
        // Bounded: when the writer is behind, workers wait instead of piling up results.
        let (result_tx, result_rx) = bounded::<WorkResult>(MAX_BATCH);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let cache: Arc<SpecCache> = Arc::new(Mutex::new(HashMap::new()));
        let models = Arc::new(Dispatcher::start(
            registry.clone(),
            db.clone(),
            metrics.clone(),
            wake_tx.clone(),
            stop.clone(),
        )?);
        let mut handles = Vec::new();
        for n in 0..workers.max(1) {
            let (db, rx, tx, cache, metrics, limits, registry) = (
                db.clone(),
                work_rx.clone(),
                result_tx.clone(),
                cache.clone(),
                metrics.clone(),
                limits.clone(),
                registry.clone(),
            );
            handles.push(spawn(
                format!("quire-worker-{n}"),
                EXECUTOR_NICENESS,
                move || worker(db, rx, tx, cache, metrics, limits, registry),
            )?);
        }
        drop(result_tx);
        let conn = db.dedicated()?;
        store::queue::writer_pragmas(&conn)?;
        let writer_db = db.clone();
        let stop2 = stop.clone();
        let paused2 = paused.clone();
        // Committed results are freed on their own thread: freeing what workers allocated was a
        // tenth of the writer's time, and the writer is the executor's bottleneck.
        let (reclaim_tx, reclaim_rx) = bounded::<Vec<WorkResult>>(8);
        handles.push(spawn(
            "quire-reclaim".into(),
            EXECUTOR_NICENESS,
            move || {
                for garbage in reclaim_rx {
                    drop(garbage)
                }
            },
        )?);
        let (cdb, cstop) = (db.clone(), stop.clone());
        handles.push(spawn(
            "quire-checkpoint".into(),
            EXECUTOR_NICENESS,
            move || crate::store::checkpointer(cdb, cstop),
        )?);
        handles.push(
            node.start_heartbeat(db.clone())
                .map_err(|e| StoreError::Refused(format!("cannot start the heartbeat: {e}")))?,
        );
        let models2 = models.clone();
        let this_node = node.clone();
        let writer = spawn("quire-writer".into(), WRITER_NICENESS, move || {
            Writer {
                db: writer_db,
                conn,
                reclaim_tx,
                work_tx,
                result_rx,
                wake_rx,
                stop: stop2,
                paused: paused2,
                metrics,
                in_flight: HashSet::new(),
                capacity,
                shutdown_timeout,
                models: models2,
                interner: Default::default(),
                last_reap: Instant::now(),
                reregistered: None,
                node,
            }
            .run()
        })?;
        let _ = wake_tx.try_send(());
        let tell_others = match db.is_postgres() {
            true => {
                let (tx, rx) = bounded::<()>(1);
                let (ldb, lwake, lstop) = (db.clone(), wake_tx.clone(), stop.clone());
                handles.push(spawn("quire-listen".into(), 0, move || {
                    listen(ldb, lwake, lstop)
                })?);
                let (ndb, nstop) = (db.clone(), stop.clone());
                handles.push(spawn("quire-notify".into(), 0, move || {
                    notifier(ndb, rx, nstop)
                })?);
                Some(tx)
            }
            false => None,
        };
        Ok(Executor {
            node: this_node,
            tell_others,
            wake_tx,
            stop,
            paused,
            writer: Mutex::new(Some(writer)),
            workers: Mutex::new(handles),
            shutdown_timeout,
        })
    }

    /// An executor that never runs anything: the database is read-only.
    fn idle(shutdown_timeout: Duration, node: Arc<Node>) -> Self {
        let (wake_tx, _) = bounded::<()>(1);
        Executor {
            node,
            tell_others: None,
            wake_tx,
            stop: Arc::new(AtomicBool::new(true)),
            paused: Arc::new(AtomicBool::new(true)),
            writer: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            shutdown_timeout,
        }
    }

    /// This process as a node of the database.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Tells the writer, and the other nodes' writers, there may be queued work.
    pub fn wake(&self) {
        let _ = self.wake_tx.try_send(());
        if let Some(t) = &self.tell_others {
            let _ = t.try_send(());
        }
    }

    /// Stops claiming new documents until `resume`; claimed ones still finish. Test suites use
    /// it to hold a run in `queued` while they race requests against it.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.wake();
    }

    /// Stops claiming, lets running steps finish (bounded by the shutdown timeout), commits them,
    /// and returns what is left to the queue.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        // Called by the server's stop and again on drop: only the first call has work to do.
        let Some(w) = self.writer.lock().take() else {
            return;
        };
        let started = Instant::now();
        let _ = w.join();
        // Also when the writer panicked: the heartbeat must not keep a lease nobody serves.
        self.node.retire();
        for h in self.workers.lock().drain(..) {
            let _ = h.join();
        }
        let took = started.elapsed();
        if took >= self.shutdown_timeout {
            tracing::warn!(
                "executor stopped after the {}s shutdown limit: steps still running were left to the next start",
                self.shutdown_timeout.as_secs()
            );
        } else {
            tracing::info!(
                "executor stopped cleanly in {:.1}s: running steps finished and committed",
                took.as_secs_f64()
            );
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Wakes this node's writer when another node says there is queued work (PostgreSQL's
/// `LISTEN`). Polling stays the fallback: a notification lost while the connection was down
/// costs at most the idle wait, and each reconnection wakes the writer once.
fn listen(db: Db, wake: Sender<()>, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::SeqCst) {
        let conn = match db.dedicated().and_then(|c| {
            store::nodes::listen(&c)?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot listen for other nodes' wake-ups ({e}); polling meanwhile");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let _ = wake.try_send(());
        while !stop.load(Ordering::SeqCst) {
            match conn.wait_notifications(Duration::from_millis(500)) {
                Ok(0) if conn.is_broken() => break,
                Ok(0) => {}
                Ok(_) => {
                    let _ = wake.try_send(());
                }
                Err(e) => {
                    tracing::warn!(
                        "lost the connection for other nodes' wake-ups ({e}); connecting again"
                    );
                    break;
                }
            }
        }
    }
}

/// Tells the other nodes there is queued work, once per burst of wake-ups, from a thread of
/// its own: a request's commit never waits for it.
fn notifier(db: Db, rx: Receiver<()>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Connection> = None;
    // Asked once: the schema, and so its channel, never changes.
    let mut channel: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        if rx.recv_timeout(Duration::from_millis(200)).is_err() {
            continue;
        }
        let sent = db.kept(&mut conn).and_then(|c| {
            let name = match channel.take() {
                Some(name) => name,
                None => store::nodes::channel(c)?,
            };
            let sent = store::nodes::notify(c, &name, "queue");
            channel = Some(name);
            sent
        });
        if let Err(e) = sent {
            tracing::warn!(
                "cannot wake the other nodes ({e}); they find the work when they next poll"
            );
            conn = None;
        }
    }
}

/// How much the executor's threads defer to the rest of the process for the CPU (a nice
/// increment): a request answered while a run executes waits for a core less often, and a run
/// still gets every cycle that requests leave free.
const EXECUTOR_NICENESS: i32 = 5;

/// The writer defers to requests too, but less than the workers. At equal weights the three
/// executor threads get two thirds of a core each on a 2-core machine, and the writer (which
/// needs about 45% of the executor's CPU) sets the pace; heavier than either worker, it gets a
/// core of its own. Measured in four bench pairs: +3–12% documents/s.
const WRITER_NICENESS: i32 = 2;

/// A named thread of the executor at a nice increment; failing to start one refuses the start.
fn spawn(
    name: String,
    niceness: i32,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            defer_to_requests(niceness);
            f()
        })
        .map_err(|e| StoreError::Refused(format!("cannot start thread {name}: {e}")))
}

/// Lowers the calling thread's CPU priority. On Linux a nice value belongs to the thread, not
/// the process (setpriority(2), NOTES), so the HTTP workers keep theirs.
fn defer_to_requests(niceness: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: nice(2) only changes the calling thread's scheduling priority.
    unsafe {
        libc::nice(niceness);
    }
}

fn process(
    c: &Connection,
    cache: &SpecCache,
    metrics: &Metrics,
    limits: &Limits,
    registry: &Registry,
    claim: &Claim,
) -> Outcome {
    let _working = crate::alloc_journal::working_on(claim.seq, &claim.token);
    let key = (claim.pipeline_id.clone(), claim.generation);
    let cached = cache.lock().get(&key).cloned();
    let spec = match cached {
        Some(s) => s,
        None => match super::spec::load_run_spec(c, &claim.pipeline_id, claim.generation) {
            Ok(s) => {
                let s = Arc::new(s);
                let mut m = cache.lock();
                if m.len() > 256 {
                    m.clear();
                }
                m.insert(key, s.clone());
                s
            }
            Err(e) => return Outcome::Requeue(format!("cannot load the run: {e}")),
        },
    };
    // One read transaction: one snapshot, and one round of WAL locking for the three reads.
    let loaded = c
        .unchecked_transaction()
        .map_err(StoreError::from)
        .and_then(|tx| {
            let l = store::queue::load(&tx, claim.seq, &claim.token)?;
            tx.commit()?;
            Ok(l)
        });
    let load = match loaded {
        Ok(Some(l)) => l,
        Ok(None) => return Outcome::Dropped,
        Err(e) => return Outcome::Requeue(format!("cannot load the document: {e}")),
    };
    if let Some(marker) = &limits.abort_on {
        if load
            .content
            .windows(marker.len().max(1))
            .any(|w| w == marker.as_bytes())
        {
            tracing::error!("fault injection: aborting on document {}", claim.seq);
            match limits.abort_how {
                AbortHow::Recorded => {
                    let _ = store::queue::record_abort_of_claim(
                        c,
                        claim.seq,
                        &claim.token,
                        "the worker aborted the process",
                    );
                    std::process::abort();
                }
                AbortHow::Unrecorded => std::process::abort(),
                AbortHow::Allocation => {
                    // More than any machine has: the allocator answers null and Rust aborts.
                    let v: Vec<u8> = Vec::with_capacity(1 << 62);
                    std::hint::black_box(v);
                }
            }
        }
    }
    let model_answer = match model_answer(c, registry, &spec, claim, &load) {
        Ok(Needed::No) => None,
        Ok(Needed::Kept(answer)) => Some(*answer),
        Ok(Needed::Ask(job)) => return Outcome::Wait(job),
        Err(e) => return Outcome::Requeue(format!("cannot read the model's answer: {e}")),
    };
    let before_raw = load.field_states.clone();
    let mut ctx = DocCtx {
        model_answer,
        content: load.content,
        mime: load.mime,
        pages: load.pages,
        language: load.language,
        unreadable: load.unreadable,
        metadata: load.metadata,
        cells: load.cells,
        restarts: load.restarts,
        states: with_fields(load.states, &spec.order),
        generation: claim.generation,
        pass: claim.pass,
        cursor: claim.cursor,
        decisions: load.decisions,
        now: now_rfc3339(),
        budget: limits.budget,
    };
    match catch_unwind(AssertUnwindSafe(|| runner::run(&spec, &mut ctx))) {
        Ok(mut run) => {
            for s in &run.steps {
                metrics.phase(s.kind, s.elapsed);
            }
            let rows = run
                .steps
                .drain(..)
                .map(store::queue::StepRows::of)
                .collect();
            let after_json = store::states::encode(&run.states_after);
            Outcome::Ran(Box::new(Ran {
                run,
                before_raw,
                after_json,
                rows,
            }))
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::Requeue(format!("computation panicked: {what}"))
        }
    }
}

/// Whether a run needs a model's answer before it starts.
enum Needed {
    No,
    Kept(Box<Result<Answer, String>>),
    Ask(Box<Job>),
}

/// A run that will pass a model extraction phase needs that model's answer for the document:
/// kept by content (a rerun from extraction with an unchanged prompt asks nothing), or to be
/// asked. A run that starts after extraction (a rerun from resolution or validation) needs
/// none, so it makes no call.
fn model_answer(
    c: &Connection,
    registry: &Registry,
    spec: &RunSpec,
    claim: &Claim,
    load: &store::queue::DocLoad,
) -> Result<Needed, StoreError> {
    let Some((index, name)) = spec.phases.iter().find_map(|p| match &p.config {
        PhaseConfig::Extraction { model: Some(m) } => Some((p.index, m)),
        _ => None,
    }) else {
        return Ok(Needed::No);
    };
    if load.unreadable.is_some() {
        return Ok(Needed::No);
    }
    // An `n_shot` gate's samples are taken at extraction and only read at validation.
    let samples = spec
        .phases
        .iter()
        .filter_map(|p| match &p.config {
            PhaseConfig::Validation { gate, .. } => gate
                .mechanisms
                .iter()
                .filter_map(|m| match m {
                    crate::domain::gate::Mechanism::NShot(n) => Some(*n),
                    _ => None,
                })
                .max(),
            _ => None,
        })
        .max()
        .unwrap_or(1);
    let after_extraction = claim.cursor > index;
    if after_extraction && samples <= 1 {
        return Ok(Needed::No);
    }
    let Some(m) = registry.get(name) else {
        return Ok(Needed::Kept(Box::new(Err(format!(
            "model '{name}' is not configured on this server any more"
        )))));
    };
    let key = dispatch::cache_key(&load.sha256, &m, &spec.fields, samples);
    if after_extraction {
        // Validation reads what extraction kept; it never asks.
        return Ok(
            match store::models::cached(c, &key, claim.seq, claim.generation, false)? {
                Some(Ok(answer)) => Needed::Kept(Box::new(Ok(answer))),
                _ => Needed::No,
            },
        );
    }
    let fresh =
        claim.generation > 1 && store::reruns::refreshes(c, &claim.pipeline_id, claim.generation)?;
    if let Some(kept) = store::models::cached(c, &key, claim.seq, claim.generation, fresh)? {
        return Ok(Needed::Kept(Box::new(kept)));
    }
    let pages = if load.pages.is_empty() {
        vec![String::from_utf8_lossy(&load.content).into_owned()]
    } else {
        load.pages.iter().map(|p| p.text.clone()).collect()
    };
    Ok(Needed::Ask(Box::new(Job {
        pd_seq: claim.seq,
        generation: claim.generation,
        key,
        model: name.clone(),
        fields: spec.fields.clone(),
        pages,
        samples,
    })))
}

fn worker(
    db: Db,
    rx: Receiver<Claim>,
    tx: Sender<WorkResult>,
    cache: Arc<SpecCache>,
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
    registry: Arc<Registry>,
) {
    let mut conn = match db.dedicated() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("worker cannot open the database: {e}");
            return;
        }
    };
    while let Ok(claim) = rx.recv() {
        // A connection the server closed fails this claim (it is retried) and is opened again.
        if let Err(e) = db.renew(&mut conn) {
            tracing::warn!("worker cannot open the database again: {e}");
        }
        let outcome = process(&conn, &cache, &metrics, &limits, &registry, &claim);
        if tx.send(WorkResult { claim, outcome }).is_err() {
            break;
        }
    }
}

struct Writer {
    db: Db,
    conn: Connection,
    reclaim_tx: Sender<Vec<WorkResult>>,
    work_tx: Sender<Claim>,
    result_rx: Receiver<WorkResult>,
    wake_rx: Receiver<()>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    in_flight: HashSet<i64>,
    capacity: usize,
    shutdown_timeout: Duration,
    models: Arc<Dispatcher>,
    /// Ids of the texts verdicts repeat, so most verdicts cost no lookup.
    interner: store::intern::Interner,
    node: Arc<Node>,
    /// When this node last looked for nodes whose lease ran out.
    last_reap: Instant,
    /// The id registered in the transaction being committed, after this node was reaped.
    reregistered: Option<String>,
}

impl Writer {
    fn run(mut self) {
        let mut backoff = Duration::ZERO;
        let mut stopping_since: Option<Instant> = None;
        // Results whose commit failed for want of storage: kept and committed again once
        // storage returns, rather than sent round the queue (which would need a write too).
        let mut carried: Vec<WorkResult> = Vec::new();
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.in_flight.is_empty() || since.elapsed() > self.shutdown_timeout {
                    break;
                }
            }
            let mut batch = std::mem::take(&mut carried);
            let wait = if self.in_flight.is_empty() {
                Duration::from_millis(500)
            } else {
                BATCH_WINDOW
            };
            select! {
                recv(self.result_rx) -> r => if let Ok(r) = r { batch.push(r) },
                recv(self.wake_rx) -> _ => {},
                default(wait) => {},
            }
            let deadline = Instant::now() + BATCH_WINDOW;
            // Take what is ready; wait (up to the window) only while the batch is small. Workers
            // keep computing the claimed backlog meanwhile, so commits and computation overlap.
            while batch.len() < MAX_BATCH && batch.len() < self.in_flight.len() {
                match self.result_rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) if batch.len() >= MIN_BATCH => break,
                    Err(_) => match self.result_rx.recv_deadline(deadline) {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    },
                }
            }
            if !backoff.is_zero() {
                std::thread::sleep(backoff);
            }
            let claim_more = !stopping && !self.paused.load(Ordering::SeqCst);
            match self.commit(&mut batch, claim_more) {
                Ok(claims) => {
                    backoff = Duration::ZERO;
                    for c in claims {
                        self.in_flight.insert(c.seq);
                        if self.work_tx.send(c).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    // Busy is expected while a large API transaction (a rerun of 100,000
                    // documents) holds the write lock; anything else is worth a warning.
                    self.metrics.commit_failed(match &e {
                        StoreError::Busy => "busy",
                        e if e.is_unavailable() => "storage",
                        _ => "other",
                    });
                    match &e {
                        StoreError::Busy => {
                            tracing::info!("executor commit waited past the busy timeout; retrying")
                        }
                        e if e.is_unavailable() => tracing::warn!(
                            "executor cannot commit ({e}); {} result(s) kept until storage returns",
                            batch.len()
                        ),
                        e => tracing::warn!(
                            "executor commit failed ({e}); documents go back to the queue"
                        ),
                    }
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                    if e.is_unavailable() {
                        carried = batch;
                    } else {
                        // The results are lost with the rolled-back transaction: send them
                        // round again.
                        for r in batch {
                            self.in_flight.remove(&r.claim.seq);
                            let _ = store::queue::requeue(&self.conn, &r.claim);
                        }
                    }
                }
            }
        }
        // Whatever did not finish goes back to the queue, and the node leaves, so no one waits
        // out its lease for the rest of what it held (its webhook leases).
        let id = self.node.id();
        let left = store::begin_immediate(&mut self.conn).and_then(|tx| {
            let n = store::queue::return_unfinished(&tx, &id)?;
            store::nodes::deregister(&tx, &id)?;
            tx.commit()?;
            Ok(n)
        });
        self.node.retire();
        match left {
            Ok(n) if n > 0 => tracing::info!("returned {n} unfinished document(s) to the queue"),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not return unfinished documents to the queue: {e}"),
        }
        let _ = store::checkpoint_truncate(&self.conn);
    }

    /// One transaction: apply the results, then claim more work.
    fn commit(
        &mut self,
        batch: &mut Vec<WorkResult>,
        claim_more: bool,
    ) -> Result<Vec<Claim>, StoreError> {
        let done = match self.commit_with(batch, claim_more, false) {
            Ok(None) => {
                self.interner.rolled_back();
                tracing::warn!(
                    "a result failed inside a group commit; committing the batch again one document at a time"
                );
                self.commit_with(batch, claim_more, true)
                    .map(Option::unwrap_or_default)
            }
            other => other.map(Option::unwrap_or_default),
        };
        if done.is_err() {
            self.interner.rolled_back();
        }
        done
    }

    /// One group transaction. Without `isolate`, the batch commits as a whole and any failing
    /// result answers `None` (the transaction rolls back, nothing is lost: the batch is still
    /// here); with it, each document gets a SAVEPOINT so a failing one is requeued alone.
    /// Savepoints cost a statement journal per document, so they are only paid when needed.
    fn commit_with(
        &mut self,
        batch: &mut Vec<WorkResult>,
        claim_more: bool,
        isolate: bool,
    ) -> Result<Option<Vec<Claim>>, StoreError> {
        let free = self
            .capacity
            .saturating_sub(self.in_flight.len() - batch.len().min(self.in_flight.len()));
        if batch.is_empty() && (!claim_more || free == 0) {
            return Ok(Some(Vec::new()));
        }
        let _turn = self.db.write_gate();
        if self.db.renew(&mut self.conn)? {
            store::queue::writer_pragmas(&self.conn)?;
        }
        self.db.cap_pages(&self.conn)?;
        let tx = store::begin_immediate(&mut self.conn)?;
        let now = now_rfc3339();
        let mut touched: HashSet<String> = HashSet::new();
        let mut id = self.node.id();
        // A node the others reaped lost every claim it held: what it still computes is fenced
        // off by the claim tokens. It registers again, under a new id, before claiming.
        let mut may_claim = claim_more;
        // Asked only before claiming: a commit of a reaped node's results is fenced already.
        if claim_more && !store::nodes::registered(&tx, &id)? {
            let fresh = store::nodes::register(&tx, &self.node.name, self.node.lease_ms())?;
            tracing::warn!("node {id} was reaped by another node; registered again as {fresh}");
            self.reregistered = Some(fresh.clone());
            id = fresh;
            may_claim = false;
        }
        let reaping = self.last_reap.elapsed() >= self.node.lease / 2;
        let taken_back = if reaping {
            let gone = store::nodes::reap(&tx, &id, false)?;
            let (r, hooks) = take_back(&tx, false)?;
            Some((gone, r, hooks))
        } else {
            None
        };
        let mut orgs: HashMap<String, String> = HashMap::new();
        // Versions written per (run, generation), for the open rerun's outcome.
        let mut versions: HashMap<(String, i64), u64> = HashMap::new();
        for r in batch.iter() {
            let sp = if isolate {
                Some(store::Savepoint::begin(&tx)?)
            } else {
                None
            };
            match apply_result(&tx, r, &now, &mut orgs, &mut self.interner) {
                Ok((settle, cells)) => {
                    if let Some(sp) = sp {
                        sp.commit()?;
                    }
                    if settle {
                        touched.insert(r.claim.pipeline_id.clone());
                    }
                    if cells > 0 {
                        *versions
                            .entry((r.claim.pipeline_id.clone(), r.claim.generation))
                            .or_default() += cells;
                    }
                }
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => match sp {
                    None => return Ok(None),
                    Some(sp) => {
                        tracing::error!("result for document {} rolled back: {e}", r.claim.seq);
                        drop(sp);
                        self.interner.rolled_back();
                        store::queue::requeue(&tx, &r.claim)?;
                    }
                },
            }
        }
        let mut claims = Vec::new();
        // Read again under the write gate: a pause that returned before another writer's
        // transaction began must keep this commit from claiming what that transaction queued.
        if may_claim && !self.paused.load(Ordering::SeqCst) {
            let free = self
                .capacity
                .saturating_sub(self.in_flight.len().saturating_sub(batch.len()));
            if free > 0 {
                let others = self.in_flight.len() > batch.len();
                let (c, gave_up) = store::queue::claim(&tx, &id, free, &self.in_flight, others)?;
                claims = c;
                for (seq, p) in gave_up {
                    super::events::document_failed(&tx, seq)?;
                    touched.insert(p);
                }
            }
        }
        for ((p, generation), n) in &versions {
            crate::store::reruns::add_versions(&tx, p, *generation, *n)?;
        }
        let mut settled = Vec::new();
        for p in &touched {
            if let Some(status) = super::events::settle(&tx, p)? {
                settled.push((p, status));
            }
        }
        tx.commit()?;
        self.interner.committed();
        if let Some(fresh) = self.reregistered.take() {
            // What it claimed before is someone else's now, or queued again. Those claims stay
            // in flight here until their workers hand them back (dropped, or fenced at commit),
            // so none of them is claimed twice meanwhile.
            self.node.registered(fresh);
        }
        if let Some((gone, r, hooks)) = taken_back {
            self.last_reap = Instant::now();
            report_taken_back(&gone, &r, hooks);
        }
        for (p, status) in settled {
            tracing::info!("pipeline {p} settled: {status}");
        }
        let (mut finished, mut versions, mut verdicts) = (0, 0, 0);
        for r in batch.iter() {
            self.in_flight.remove(&r.claim.seq);
            // Asked only now that the document is recorded as waiting: an answer that came
            // back sooner would find it still claimed.
            if let Outcome::Wait(job) = &r.outcome {
                self.models.submit((**job).clone());
            }
            if let Outcome::Ran(ran) = &r.outcome {
                finished += 1;
                for s in &ran.rows {
                    let (c, v) = s.counts();
                    versions += c as u64;
                    verdicts += v as u64;
                }
            }
        }
        self.metrics.committed(finished, versions, verdicts);
        self.metrics
            .set_in_flight(self.in_flight.len() + claims.len());
        let garbage = std::mem::take(batch);
        if let Err(e) = self.reclaim_tx.try_send(garbage) {
            // The reclaimer is behind (or gone): free here rather than wait.
            drop(e.into_inner());
        }
        Ok(Some(claims))
    }
}

/// What becomes of a document after its run: the phase that failed for the whole document, or
/// back to the queue at the earliest field still in play before the end (released meanwhile by
/// a resolve), or its terminal status; with the cursor to store.
fn decide<'a>(
    error: Option<&'a (usize, String)>,
    merged: &'a States,
    phase_count: usize,
) -> (Final<'a>, usize) {
    let fin = match error {
        Some((phase, message)) => Final::Error(*phase, message),
        None => match merged
            .values()
            .filter(|s| s.status == Status::Progressing && s.next < phase_count)
            .map(|s| s.next)
            .min()
        {
            Some(cursor) => Final::Continue(cursor),
            None => Final::Terminal(document_status(merged).unwrap_or(DocStatus::Complete)),
        },
    };
    let cursor = match &fin {
        Final::Error(phase, _) => *phase,
        Final::Continue(next) => *next,
        Final::Terminal(_) => phase_count,
    };
    (fin, cursor)
}

/// Applies one document's result; true when the document left the active set.
/// Takes back, in the writers' transaction, what nodes that are gone held: their documents in
/// flight (queued again or quarantined, `queue::recover_orphans`) and their webhook leases.
fn take_back(
    tx: &Connection,
    at_start: bool,
) -> Result<(store::queue::Recovered, usize), StoreError> {
    let r = store::queue::recover_orphans(tx, at_start)?;
    for (seq, _) in &r.quarantined {
        super::events::document_failed(tx, *seq)?;
    }
    for p in &r.pipelines {
        super::events::settle(tx, p)?;
    }
    let hooks = store::webhooks::release_orphan_leases(tx)?;
    Ok((r, hooks))
}

fn report_taken_back(gone: &[String], r: &store::queue::Recovered, hooks: usize) {
    for id in gone {
        tracing::warn!("node {id} is gone (its lease ran out, or it was this node's last start): taking back its work");
    }
    if r.requeued > 0 {
        tracing::info!(
            "recovered {} interrupted document(s) into the queue",
            r.requeued
        );
    }
    for (seq, why) in &r.quarantined {
        tracing::warn!("document {seq} quarantined: {why}");
    }
    if hooks > 0 {
        tracing::info!(
            "{hooks} webhook delivery(ies) interrupted by a node's exit will be sent again"
        );
    }
}

fn apply_result(
    c: &Connection,
    r: &WorkResult,
    now: &str,
    orgs: &mut HashMap<String, String>,
    interner: &mut store::intern::Interner,
) -> Result<(bool, u64), StoreError> {
    let claim = &r.claim;
    let ran = match &r.outcome {
        Outcome::Requeue(why) => {
            tracing::warn!("document {} goes back to the queue: {why}", claim.seq);
            store::queue::requeue(c, claim)?;
            return Ok((false, 0));
        }
        Outcome::Dropped => return Ok((false, 0)),
        Outcome::Wait(job) => {
            store::models::wait(
                c,
                claim.seq,
                &claim.token,
                &format!("waiting for model '{}'", job.model),
            )?;
            return Ok((false, 0));
        }
        Outcome::Ran(ran) => ran,
    };
    let run = &ran.run;
    let cells: u64 = ran.rows.iter().map(|r| r.counts().0 as u64).sum();
    let org = match orgs.get(&claim.pipeline_id) {
        Some(o) => o.clone(),
        None => {
            let o = store::queue::org_of(c, &claim.pipeline_id)?;
            orgs.insert(claim.pipeline_id.clone(), o.clone());
            o
        }
    };
    // With no phase left to run (a field released after the last gate), the run only finished.
    let phase_count = ran
        .rows
        .last()
        .map(|r| r.phase_index + 1)
        .unwrap_or(claim.cursor);
    // Usually nobody touched the document meanwhile: the update expects the states the worker
    // read and writes the worker's encoding as it is.
    let (fin, cursor) = decide(run.error.as_ref(), &run.states_after, phase_count);
    let leaves = !matches!(fin, Final::Continue(_));
    let failed = matches!(fin, Final::Error(..));
    if store::queue::commit_document(
        c,
        claim,
        cursor,
        &ran.after_json,
        fin,
        now,
        Some(&ran.before_raw),
    )? {
        for rows in &ran.rows {
            store::queue::insert_step_rows(c, claim, rows, interner, now)?;
        }
        super::events::sync_held(
            c,
            claim.seq,
            &claim.pipeline_id,
            &org,
            &run.states_before,
            &run.states_after,
        )?;
        if failed {
            super::events::document_failed(c, claim.seq)?;
        }
        return Ok((leaves, cells));
    }
    // Either the fence no longer holds, or a field changed meanwhile (a resolve during
    // processing): such fields keep their new state.
    let (stored, current) = store::queue::current_states(c, claim.seq)?;
    if stored == ran.before_raw {
        return Ok((false, 0));
    }
    let fields: Vec<String> = run.states_before.keys().cloned().collect();
    let current: States = with_fields(current, &fields);
    let merged = store::queue::merge(&current, &run.states_before, &run.states_after);
    let (fin, cursor) = decide(run.error.as_ref(), &merged, phase_count);
    let leaves = !matches!(fin, Final::Continue(_));
    let failed = matches!(fin, Final::Error(..));
    if !store::queue::commit_document(
        c,
        claim,
        cursor,
        &store::states::encode(&merged),
        fin,
        now,
        None,
    )? {
        return Ok((false, 0));
    }
    for rows in &ran.rows {
        store::queue::insert_step_rows(c, claim, rows, interner, now)?;
    }
    super::events::sync_held(c, claim.seq, &claim.pipeline_id, &org, &current, &merged)?;
    if failed {
        super::events::document_failed(c, claim.seq)?;
    }
    Ok((leaves, cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::state::states_at as states;

    #[test]
    fn a_field_released_during_the_run_sends_the_document_back_from_its_phase() {
        let s = states(&[
            ("net", Status::Completed, 0),
            ("tax", Status::Progressing, 3),
            ("total", Status::Progressing, 2),
        ]);
        let (fin, cursor) = decide(None, &s, 5);
        assert!(matches!(fin, Final::Continue(2)));
        assert_eq!(cursor, 2);
    }

    #[test]
    fn a_run_ends_terminal_by_its_fields_or_error_at_the_failed_phase() {
        let done = states(&[
            ("net", Status::Completed, 0),
            ("tax", Status::Progressing, 5),
        ]);
        let (fin, cursor) = decide(None, &done, 5);
        assert!(
            matches!(fin, Final::Terminal(DocStatus::Complete)),
            "past the end is done"
        );
        assert_eq!(cursor, 5);
        let held = states(&[("net", Status::Blocked, 0)]);
        assert!(matches!(
            decide(None, &held, 5).0,
            Final::Terminal(DocStatus::Partial)
        ));
        let failed = (1, "unreadable".to_string());
        let (fin, cursor) = decide(Some(&failed), &done, 5);
        assert!(matches!(fin, Final::Error(1, "unreadable")));
        assert_eq!(cursor, 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_executor_thread_runs_below_the_threads_that_answer_requests() {
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let (tx, rx) = crossbeam_channel::bounded(1);
        for niceness in [EXECUTOR_NICENESS, WRITER_NICENESS] {
            let tx = tx.clone();
            spawn("quire-test-nice".into(), niceness, move || {
                let _ = tx.send(nice());
            })
            .expect("thread")
            .join()
            .expect("joined");
            let inside = rx.recv().expect("its nice value");
            assert_eq!(inside, (before + niceness).min(19));
        }
        assert_eq!(nice(), before, "the spawning thread keeps its priority");
    }
}
