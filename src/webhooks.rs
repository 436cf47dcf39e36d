//! Delivers the webhook outbox, beside the executor. One dispatcher thread leases due
//! deliveries, hands them to a few sender threads (at most `per_endpoint` in flight to one
//! endpoint, so a slow receiver holds up only itself) and records the outcomes in batches, so
//! delivery adds few write transactions however many events there are.
//!
//! At least once: a delivery is marked delivered only after its receiver's 2xx was recorded;
//! a process that dies meanwhile sends it again, under the same delivery id, after its restart.
//! A receiver that de-duplicates by `X-Talonic-Delivery-Id` sees each event exactly once.
//!
//! Never to a private address (unless allowed): names are resolved through a resolver that
//! refuses loopback, link-local and private answers, so a name that points inside, or is
//! re-pointed there after the webhook was saved, fails the attempt; redirects are not followed.

use crate::domain::ids::{format_time, now_ms};
use crate::domain::webhooks::{self as rules, forbidden_ip};
use crate::node::Node;
use crate::store::webhooks::{Attempt, Due};
use crate::store::{self, Db, StoreError};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How webhooks are delivered (`quire serve --webhooks-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Loopback, link-local and private addresses may be reached (tests, closed networks).
    pub allow_private: bool,
    /// The pauses after the 1st, 2nd, … failed attempt; when spent, the delivery has failed.
    pub schedule: Vec<Duration>,
    pub timeout: Duration,
    /// An endpoint whose every attempt failed for this long is turned off.
    pub disable_after: Duration,
    /// Events (and their deliveries) older than this are purged.
    pub retention: Duration,
    pub per_endpoint: usize,
    /// Attempts in flight (or waiting for their endpoint's slot) in all.
    pub max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private: false,
            schedule: [60, 300, 1800, 14_400]
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            timeout: Duration::from_secs(30),
            disable_after: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            per_endpoint: 4,
            max_in_flight: 64,
        }
    }
}

/// A comma-separated list of durations (`1m,5m,30m,4h`).
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    let list = s
        .split(',')
        .map(|p| humantime::parse_duration(p.trim()).map_err(|e| format!("'{p}': {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() || list.iter().any(Duration::is_zero) {
        return Err("a schedule is one or more durations above zero".into());
    }
    Ok(list)
}

/// How often the dispatcher looks for due work when nothing woke it.
const POLL: Duration = Duration::from_millis(200);
/// How often old events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// The most of a failed answer's body kept in the history.
const KEEP_BODY: usize = 2048;

pub struct Dispatcher {
    stop: Arc<AtomicBool>,
    wake: Sender<()>,
    /// The dispatcher's thread.
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Dispatcher {
    /// Purges old events and starts delivering, leasing deliveries as `node` (the executor's
    /// start took back the leases of earlier processes).
    pub fn start(db: Db, settings: Settings, node: Arc<Node>) -> Result<Self, StoreError> {
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        if db.read_only() {
            return Ok(Dispatcher {
                stop,
                wake: wake_tx,
                thread: Default::default(),
            });
        }
        // A blocking client cannot be built on an async runtime's thread (the server starts
        // inside one): build it on a thread of its own.
        let for_client = settings.clone();
        let client = std::thread::spawn(move || client(&for_client))
            .join()
            .map_err(|_| StoreError::Refused("webhook client: building it panicked".into()))?
            .map_err(|e| StoreError::Refused(format!("webhook client: {e}")))?;
        let (done_tx, done_rx) = unbounded::<Attempt>();
        let loop_state = Loop {
            db,
            node,
            settings: Arc::new(settings),
            client,
            done_tx,
            done: done_rx,
            wake: wake_rx,
            stop: stop.clone(),
            in_flight: HashMap::new(),
            waiting: HashMap::new(),
            unrecorded: Vec::new(),
            last_purge: None,
        };
        let t = std::thread::Builder::new()
            .name("quire-webhooks".into())
            .spawn(move || loop_state.run())
            .map_err(|e| StoreError::Refused(format!("webhook dispatcher thread: {e}")))?;
        Ok(Dispatcher {
            stop,
            wake: wake_tx,
            thread: parking_lot::Mutex::new(Some(t)),
        })
    }

    /// Something is due now (a test or a redelivery).
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Stops taking work without waiting for a slow receiver: an attempt still in flight is
    /// not recorded, and the next start sends it again under the same delivery id.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

struct Loop {
    db: Db,
    node: Arc<Node>,
    settings: Arc<Settings>,
    client: reqwest::blocking::Client,
    done_tx: Sender<Attempt>,
    done: Receiver<Attempt>,
    wake: Receiver<()>,
    stop: Arc<AtomicBool>,
    /// Attempts being sent, per endpoint.
    in_flight: HashMap<i64, usize>,
    /// Leased deliveries waiting for a free slot at their endpoint, per endpoint.
    waiting: HashMap<i64, std::collections::VecDeque<Due>>,
    /// Outcomes whose recording failed, recorded with the next ones (their leases hold).
    unrecorded: Vec<Attempt>,
    last_purge: Option<Instant>,
}

impl Loop {
    fn run(mut self) {
        loop {
            if let Err(e) = self.step() {
                tracing::warn!("webhook dispatcher: {e}");
            }
            if self.stop.load(Ordering::SeqCst) {
                // Attempts still in flight keep their leases: the next start sends them again.
                break;
            }
            let pause = self.pause();
            select! {
                recv(self.done) -> a => {
                    if let Ok(a) = a {
                        let mut batch = vec![a];
                        batch.extend(self.done.try_iter());
                        self.record(batch);
                    }
                }
                recv(self.wake) -> _ => {}
                default(pause) => {}
            }
        }
    }

    /// Attempts that may be in flight or waiting for a slot, in all.
    fn room(&self) -> usize {
        let held: usize = self.waiting.values().map(|q| q.len()).sum();
        let sending: usize = self.in_flight.values().sum();
        self.settings.max_in_flight.saturating_sub(held + sending)
    }

    /// Endpoints that can take no more now: at their limit, or with deliveries waiting.
    fn busy(&self) -> Vec<i64> {
        self.in_flight
            .iter()
            .filter(|(_, n)| **n >= self.settings.per_endpoint)
            .map(|(w, _)| *w)
            .chain(self.waiting.keys().copied())
            .collect()
    }

    /// Until the next delivery this loop could claim is due (at least 5 ms, at most `POLL`);
    /// with no room, until an attempt ends (which wakes the loop) or `POLL`.
    fn pause(&self) -> Duration {
        if self.room() == 0 || !self.unrecorded.is_empty() {
            return POLL;
        }
        let busy = self.busy();
        match self.db.read(|c| store::webhooks::next_due(c, &busy)) {
            Ok(Some(at)) => {
                Duration::from_millis((at - now_ms()).clamp(5, POLL.as_millis() as i64) as u64)
            }
            _ => POLL,
        }
    }

    fn step(&mut self) -> Result<(), StoreError> {
        if self.last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            self.last_purge = Some(Instant::now());
            let before = now_ms() - self.settings.retention.as_millis() as i64;
            let n = self
                .db
                .write(false, |tx| store::webhooks::purge(tx, before))?;
            if n > 0 {
                tracing::info!("purged {n} webhook event(s) past their retention");
            }
        }
        if !self.unrecorded.is_empty() {
            self.record(Vec::new());
        }
        let room = self.room();
        if room > 0 && !self.stop.load(Ordering::SeqCst) {
            let busy = self.busy();
            let now = now_ms();
            // Read first: a claim is a write transaction, taken only when there is work.
            let due_now = self
                .db
                .read(|c| store::webhooks::next_due(c, &busy))?
                .is_some_and(|at| at <= now);
            if due_now {
                let node = self.node.id();
                let due = self.db.write(false, |tx| {
                    store::webhooks::claim(tx, &node, now, room, &busy)
                })?;
                for d in due {
                    self.waiting.entry(d.webhook_seq).or_default().push_back(d);
                }
            }
        }
        self.send_waiting();
        Ok(())
    }

    /// Starts an attempt for each waiting delivery whose endpoint has a free slot, each on a
    /// thread of its own (a slow receiver holds only its own slots).
    fn send_waiting(&mut self) {
        let limit = self.settings.per_endpoint.max(1);
        for (hook, queue) in self.waiting.iter_mut() {
            let n = self.in_flight.entry(*hook).or_default();
            while *n < limit {
                let Some(d) = queue.pop_front() else { break };
                let (client, settings, done) = (
                    self.client.clone(),
                    self.settings.clone(),
                    self.done_tx.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name("quire-webhook-send".into())
                    .spawn(move || {
                        let _ = done.send(attempt(&client, &settings, &d));
                    });
                match spawned {
                    Ok(_) => *n += 1,
                    Err(e) => {
                        // Its lease holds: the next start sends it. Nothing more this round.
                        tracing::warn!("webhook attempt not started: {e}");
                        break;
                    }
                }
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        self.in_flight.retain(|_, n| *n > 0);
    }

    fn record(&mut self, batch: Vec<Attempt>) {
        for a in &batch {
            if let Some(n) = self.in_flight.get_mut(&a.webhook_seq) {
                *n = n.saturating_sub(1);
            }
        }
        let mut all = std::mem::take(&mut self.unrecorded);
        all.extend(batch);
        let disable_after = self.settings.disable_after.as_millis() as i64;
        let node = self.node.id();
        let r = self.db.write(false, |tx| {
            let mut turned_off = Vec::new();
            for a in &all {
                if let Some(why) = store::webhooks::record(tx, &node, a, disable_after)? {
                    turned_off.push((a.webhook_seq, why));
                }
            }
            Ok::<_, StoreError>(turned_off)
        });
        match r {
            Ok(off) => {
                for (hook, why) in off {
                    tracing::warn!("webhook {hook} turned off: {why}");
                }
            }
            Err(e) => {
                tracing::error!("{} webhook outcome(s) not recorded yet: {e}", all.len());
                self.unrecorded = all;
            }
        }
        self.send_waiting();
    }
}

/// Resolves names like the system does, then refuses the answer when any address is one a
/// webhook may not reach.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::task::spawn_blocking(move || {
                (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| (host.clone(), a.collect::<Vec<_>>()))
            })
            .await??;
            let (host, addrs) = found;
            if let Some((ip, why)) = addrs
                .iter()
                .find_map(|a| forbidden_ip(a.ip()).map(|w| (a.ip(), w)))
            {
                return Err(format!(
                    "{host} resolves to a {why} address ({ip}); a server started with --webhooks-allow-private may reach it"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn client(s: &Settings) -> reqwest::Result<reqwest::blocking::Client> {
    let b = reqwest::blocking::Client::builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect where the address guard cannot see.
        .no_proxy()
        .user_agent(concat!("Quire-Webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(s.per_endpoint);
    if s.allow_private {
        b.build()
    } else {
        b.dns_resolver(Arc::new(GuardedResolver)).build()
    }
}

/// One POST of a delivery, and how it went.
fn attempt(client: &reqwest::blocking::Client, s: &Settings, d: &Due) -> Attempt {
    let started = Instant::now();
    let at = chrono::Utc::now();
    let timestamp = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = rules::payload(&d.event, &d.id, &timestamp, &d.event_id, &d.data);
    let mut secrets = vec![d.secret.as_str()];
    if let (Some(old), Some(until)) = (&d.previous_secret, &d.previous_secret_until) {
        if until.as_str() > format_time(at).as_str() {
            secrets.push(old);
        }
    }
    let outcome = match rules::check_url(&d.url, s.allow_private) {
        Err(why) => Err((None, why, None)),
        Ok(url) => client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Talonic-Event", &d.event)
            .header("X-Talonic-Delivery-Id", &d.id)
            .header("X-Talonic-Timestamp", &timestamp)
            .header(
                "X-Talonic-Signature",
                rules::signature_header(&secrets, &body),
            )
            .body(body)
            .send()
            .map_err(|e| (None, describe(&e), None))
            .and_then(|r| {
                let code = r.status();
                if code.is_success() {
                    Ok(code.as_u16())
                } else {
                    let location = r
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    // Only the start is kept, and only the start is read.
                    let mut head = Vec::with_capacity(KEEP_BODY);
                    let _ = r.take(KEEP_BODY as u64).read_to_end(&mut head);
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let why = match location {
                        Some(to) if code.is_redirection() => format!(
                            "HTTP {code}: redirect to {to} not followed (webhooks never follow redirects)"
                        ),
                        _ => format!("HTTP {code}"),
                    };
                    Err((Some(code.as_u16()), why, Some(text)))
                }
            }),
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    let at_ms = at.timestamp_millis();
    match outcome {
        Ok(code) => Attempt {
            delivery_seq: d.seq,
            webhook_seq: d.webhook_seq,
            at_ms,
            response_code: Some(i64::from(code)),
            latency_ms,
            error: None,
            response_body: None,
            retry_at_ms: None,
        },
        Err((code, why, body)) => {
            let failed = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
            let retry = rules::retry_delay(&s.schedule, failed, rand::random::<f64>());
            Attempt {
                delivery_seq: d.seq,
                webhook_seq: d.webhook_seq,
                at_ms,
                response_code: code.map(i64::from),
                latency_ms,
                error: Some(why),
                response_body: body,
                retry_at_ms: retry.map(|p| now_ms() + p.as_millis() as i64),
            }
        }
    }
}

/// A transport failure in a few words, with its cause (the guard's refusal included).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// Where a webhook's host name resolves now, checked like every attempt checks it. A name that
/// does not resolve (yet) is accepted: each attempt resolves it again.
pub fn check_destination(url: &reqwest::Url) -> Result<(), String> {
    let Some(host) = url.host_str() else {
        return Err("url has no host".into());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(addrs) = (host, url.port_or_known_default().unwrap_or(80)).to_socket_addrs() else {
        return Ok(());
    };
    for a in addrs {
        if let Some(why) = forbidden_ip(a.ip()) {
            return Err(format!(
                "url's host {host} resolves to a {why} address ({}); a server started with --webhooks-allow-private may",
                a.ip()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_resolves_inside_is_refused_and_schedules_parse() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let e = check_destination(&url("http://localhost:9/")).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(check_destination(&url("http://192.0.2.7/")).is_ok());
        assert_eq!(
            parse_schedule("1m, 5m,30m,4h").unwrap(),
            [60, 300, 1800, 14_400].map(Duration::from_secs).to_vec()
        );
        assert!(parse_schedule("1m,0s").is_err() && parse_schedule("soon").is_err());
    }

    /// At attempt time, not only when the webhook was saved: a name that resolves inside (as a
    /// name re-pointed after saving would) and a literal inside address are refused without a
    /// connection, and the attempt fails with why.
    #[test]
    fn an_attempt_never_connects_inside() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings = Settings {
            timeout: Duration::from_secs(2),
            ..Settings::default()
        };
        let c = client(&settings).unwrap();
        for (url, says) in [
            (
                format!("http://localhost:{port}/in"),
                "resolves to a loopback address",
            ),
            (format!("http://127.0.0.1:{port}/in"), "loopback"),
        ] {
            let due = Due {
                seq: 1,
                id: "dlv_x".into(),
                attempts: 0,
                event_id: "evt_x".into(),
                event: "webhook.test".into(),
                data: serde_json::json!({}),
                webhook_seq: 1,
                url: url.clone(),
                secret: "whsec_x".into(),
                previous_secret: None,
                previous_secret_until: None,
            };
            let a = attempt(&c, &settings, &due);
            let why = a.error.unwrap_or_default();
            assert!(why.contains(says), "{url}: {why}");
            assert!(
                a.retry_at_ms.is_some(),
                "a refused attempt is retried like any failure"
            );
        }
        assert!(
            listener.accept().is_err(),
            "nothing connected to the inside address"
        );
    }
}
