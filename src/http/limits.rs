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

/// How a produced answer begins.
enum Start {
    /// The whole answer: it was done before it grew past `WHOLE_MAX`.
    Whole(Vec<u8>),
    /// It grew past `WHOLE_MAX`: the rest follows on the channel.
    Streaming,
}

/// Answers with what a blocking producer writes, rendered as it is read. An answer of up to
/// `WHOLE_MAX` is built first and sent whole, so a failure anywhere in it is a proper error
/// envelope and the producer's connection and snapshot are released at once. A larger one
/// streams in chunks while the client reads; it holds a heavy-read permit while it does (it keeps
/// a database connection and a read snapshot), taken then if the caller did not hold one (503
/// when none is free, still before the first byte). A failure after the first byte aborts the
/// connection rather than ending the answer as if it were complete.
pub async fn answer_streamed(
    heavy: Arc<HeavyReads>,
    permit: Option<HeavyPermit>,
    content_type: &'static str,
    produce: impl FnOnce(&mut ChunkSink) -> Result<(), ApiError> + Send + 'static,
) -> Result<actix_web::HttpResponse, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, ApiError>>(4);
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Result<Start, ApiError>>();
    // The producer's thread logs inside the request's span, like the handler that started it.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("quire-answer".into())
        .spawn(move || {
            let _in = span.enter();
            let mut sink = ChunkSink {
                tx,
                buf: Vec::new(),
                start: Some(start_tx),
                heavy,
                permit,
            };
            // A panic after the first byte would otherwise end the stream as if it were whole.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(&mut sink)))
                    .unwrap_or_else(|_| {
                        Err(ApiError::Internal("the answer's producer panicked".into()))
                    });
            sink.finish(outcome);
        })
        .map_err(|e| ApiError::Unavailable(format!("cannot start the answer: {e}")))?;
    let start = start_rx
        .await
        .map_err(|_| ApiError::Internal("the answer's producer stopped".into()))??;
    let mut answer = actix_web::HttpResponse::Ok();
    answer.content_type(content_type);
    Ok(match start {
        Start::Whole(bytes) => answer.body(bytes),
        Start::Streaming => {
            answer.streaming(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|item| (item.map_err(actix_web::Error::from), rx))
            }))
        }
    })
}

/// An answer up to this size is built whole before it is sent.
const WHOLE_MAX: usize = 1 << 20;
/// A streamed answer leaves in chunks of about this size.
const CHUNK: usize = 64 * 1024;
/// How long a streamed answer waits for a client that reads nothing before giving up.
const STALL: Duration = Duration::from_secs(120);

/// Where an answer's producer writes.
pub struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, ApiError>>,
    buf: Vec<u8>,
    /// Until the answer begins: where to say how.
    start: Option<tokio::sync::oneshot::Sender<Result<Start, ApiError>>>,
    heavy: Arc<HeavyReads>,
    permit: Option<HeavyPermit>,
}

impl ChunkSink {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        self.buf.extend_from_slice(bytes);
        let limit = if self.start.is_some() {
            WHOLE_MAX
        } else {
            CHUNK
        };
        if self.buf.len() >= limit {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ApiError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.start.is_some() {
            if self.permit.is_none() {
                // An error here leaves `start` in place: `finish` answers it as an envelope.
                self.permit = Some(self.heavy.try_enter()?);
            }
            if let Some(start) = self.start.take() {
                start
                    .send(Ok(Start::Streaming))
                    .map_err(|_| ApiError::Unavailable("the client went away".into()))?;
            }
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.send(Ok(chunk))
    }

    /// Hands an item to the response, waiting while the client reads, up to `STALL`: a client
    /// that stops reading would otherwise hold its permit, its thread and its read snapshot
    /// (which keeps the WAL from being checkpointed) for as long as it likes.
    fn send(&self, item: Result<Bytes, ApiError>) -> Result<(), ApiError> {
        let deadline = std::time::Instant::now() + STALL;
        let mut item = item;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Full(again)) => {
                    if std::time::Instant::now() > deadline {
                        return Err(ApiError::Unavailable(format!(
                            "the client read nothing for {} s",
                            STALL.as_secs()
                        )));
                    }
                    item = again;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ApiError::Unavailable("the client went away".into()))
                }
            }
        }
    }

    fn finish(mut self, outcome: Result<(), ApiError>) {
        let outcome = match self.start.take() {
            // Done before it grew large: the whole answer, or the error as an envelope.
            Some(start) => {
                let whole = outcome.map(|()| Start::Whole(std::mem::take(&mut self.buf)));
                let _ = start.send(whole);
                return;
            }
            None => outcome.and_then(|()| self.flush()),
        };
        if let Err(e) = outcome {
            tracing::warn!("a streamed answer ended early: {e}");
            // The client must not take a cut answer for a whole one: the error aborts it.
            let _ = self.send(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(
        produce: impl FnOnce(&mut ChunkSink) -> Result<(), ApiError> + Send + 'static,
    ) -> Result<(u16, Bytes), String> {
        actix_web::rt::System::new().block_on(async move {
            let answer = answer_streamed(HeavyReads::new(1), None, "text/plain", produce)
                .await
                .map_err(|e| format!("refused: {e}"))?;
            let status = answer.status().as_u16();
            let body = actix_web::body::to_bytes(answer.into_body())
                .await
                .map_err(|e| format!("cut: {e}"))?;
            Ok((status, body))
        })
    }

    #[test]
    fn a_small_answer_is_sent_whole_and_a_large_one_streams_complete() {
        let (status, small) = body_of(|s| s.write(b"small")).unwrap();
        assert_eq!((status, &small[..]), (200, &b"small"[..]));
        let (_, large) = body_of(|s| {
            for _ in 0..40 {
                s.write(&[b'x'; 64 * 1024])?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(large.len(), 40 * 64 * 1024);
    }

    #[test]
    fn a_failure_before_the_first_byte_is_an_error_and_after_it_cuts_the_answer() {
        let early = body_of(|s| {
            s.write(b"partial")?;
            Err(ApiError::bad("nope"))
        });
        assert!(matches!(early, Err(e) if e.starts_with("refused")));
        let late = body_of(|s| {
            s.write(&vec![b'x'; 2 * WHOLE_MAX])?;
            Err(ApiError::Internal("disk".into()))
        });
        assert!(
            matches!(late, Err(e) if e.starts_with("cut")),
            "a late failure must cut"
        );
    }

    #[test]
    fn a_producer_that_panics_after_the_first_byte_cuts_the_answer() {
        let late = body_of(|s| {
            s.write(&vec![b'x'; 2 * WHOLE_MAX])?;
            panic!("a bug in a producer");
        });
        assert!(
            matches!(late, Err(e) if e.starts_with("cut")),
            "a panic must not end the answer as if it were whole"
        );
    }
}
