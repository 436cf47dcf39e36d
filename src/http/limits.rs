//! Bounds on what one client can hold: concurrent requests per address, the time a request
//! body may take to arrive, and how many heavy reads run at once.

use super::error::ApiError;
use super::AppState;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage;
use futures_util::Stream;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Requests in progress per client address.
#[derive(Default)]
pub struct ClientSlots {
    active: Mutex<HashMap<IpAddr, usize>>,
}

/// One request's place among its address's requests; freed when dropped.
pub struct Slot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    pub fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut m = self.active.lock();
        let n = m.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.slots.active.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A request body that must have arrived in full by a deadline: a client sending one byte a
/// second would otherwise hold its connection, and a worker's attention, forever.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<actix_web::rt::time::Sleep>>,
    secs: u64,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    self.expired = true;
                    let msg = format!("the request body did not arrive within {} s", self.secs);
                    return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        msg,
                    )))));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

/// Holds each request to its address's share and its body to the body deadline.
pub async fn per_client(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let slot = match req.peer_addr().map(|a| a.ip()) {
        Some(ip) => match state.clients.enter(ip, state.config.max_client_requests) {
            Some(slot) => Some(slot),
            None => {
                let refusal = ApiError::Unavailable(format!(
                    "This address already has {} requests in progress; retry shortly",
                    state.config.max_client_requests
                ));
                return Err(refusal.into());
            }
        },
        None => None,
    };
    let secs = state.config.body_timeout;
    let inner = req.take_payload();
    let deadline = Deadline {
        inner,
        sleep: Box::pin(actix_web::rt::time::sleep(Duration::from_secs(secs))),
        secs,
        expired: false,
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(deadline),
    });
    let res = next.call(req).await.map(|r| r.map_into_boxed_body());
    drop(slot);
    res
}

/// Heavy reads (results with cells or provenance, exports, document text) running at once.
pub struct HeavyReads {
    running: AtomicUsize,
    cap: usize,
}

/// A heavy read's permit; it travels with a streamed answer until the last byte is written.
pub struct HeavyPermit(Arc<HeavyReads>);

impl HeavyReads {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(HeavyReads {
            running: AtomicUsize::new(0),
            cap: cap.max(1),
        })
    }

    /// A permit, or 503 (retryable, `Retry-After`) when `cap` heavy reads are running.
    pub fn try_enter(self: &Arc<Self>) -> Result<HeavyPermit, ApiError> {
        let taken = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.cap).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(HeavyPermit(self.clone())),
            Err(_) => Err(ApiError::Unavailable(format!(
                "{} heavy reads (results with cells or provenance, exports, document text) are running; retry shortly",
                self.cap
            ))),
        }
    }
}

impl Drop for HeavyPermit {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Streams what a blocking producer writes, chunk by chunk, so an answer of any size is never
/// held whole in memory. The producer runs on its own thread and gets a bounded sender: it
/// waits while the client reads. Errors before the first chunk are the caller's to check first;
/// an error while streaming ends the answer early (logged).
pub fn stream_blocking(
    permit: Option<HeavyPermit>,
    produce: impl FnOnce(&mut ChunkSink) -> Result<(), ApiError> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    std::thread::spawn(move || {
        let _permit = permit;
        let mut sink = ChunkSink {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let outcome = produce(&mut sink).and_then(|_| sink.flush());
        if let Err(e) = outcome {
            log::warn!("a streamed answer ended early: {e}");
        }
    });
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

const CHUNK: usize = 64 * 1024;
/// How long a streamed answer waits for a client that reads nothing before giving up.
const STALL: Duration = Duration::from_secs(120);

/// Where a streamed answer's producer writes; bytes leave in chunks of about 64 KiB.
pub struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkSink {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ApiError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        // A client that stops reading would otherwise hold its permit, its thread and its read
        // snapshot (which keeps the WAL from being checkpointed) for as long as it likes.
        let deadline = std::time::Instant::now() + STALL;
        loop {
            match self.tx.try_send(chunk) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Full(c)) => {
                    if std::time::Instant::now() > deadline {
                        return Err(ApiError::Unavailable(format!(
                            "the client read nothing for {} s",
                            STALL.as_secs()
                        )));
                    }
                    chunk = c;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ApiError::Unavailable("the client went away".into()))
                }
            }
        }
    }
}
