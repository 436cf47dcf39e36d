//! Calls to model servers, beside the executor. A worker that finds a document needs a model's
//! answer that is not kept yet hands the document here and moves on; the document waits in the
//! queue (`waiting_for`) while one of the model's own threads asks the server (at most
//! `concurrency` calls in flight per model, whatever the executor's worker count), keeps the
//! answer by content and sends the document back to the queue.
//!
//! Dependable: transient failures (429, 5xx, timeouts, broken connections) are asked again
//! after a growing, jittered pause, or the server's `Retry-After`; an answer that is not what
//! was asked (not JSON, the wrong shape, an unknown field, cut at `max_tokens`) is asked again
//! once with the reason, then ends the document's extraction in error; a server that refuses
//! structured output is asked in JSON mode from then on.

use super::client::{self, CallError};
use super::{Admit, ModelConfig, Registry};
use crate::domain::prompt::{self, Answer};
use crate::domain::schema::FieldDef;
use crate::metrics::Metrics;
use crate::store::models::Call;
use crate::store::{self, Db, StoreError};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How an `n_shot` gate's extra samples are asked: enough spread for an unsure model to differ.
const SAMPLE_TEMPERATURE: f64 = 0.7;

/// Transient failures asked again before the document's extraction fails.
const MAX_TRANSIENT_RETRIES: u32 = 5;

/// One document's request.
#[derive(Debug, Clone)]
pub struct Job {
    pub pd_seq: i64,
    pub generation: i64,
    /// The response cache's key.
    pub key: String,
    pub model: String,
    pub fields: Vec<FieldDef>,
    /// The document's text, per page.
    pub pages: Vec<String>,
    /// Answers asked for in all (at least 1): an `n_shot` gate's n. The extra ones are
    /// sampled (temperature 0.7) and compared with the first.
    pub samples: u32,
}

/// The response cache's key: the document's content, the model, the prompt's version and the
/// answer's schema (a new field list is a new question).
pub fn cache_key(
    document_sha256: &str,
    m: &ModelConfig,
    fields: &[FieldDef],
    samples: u32,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        document_sha256,
        &m.name,
        &m.model,
        &prompt::PROMPT_VERSION.to_string(),
        &prompt::answer_schema(fields).to_string(),
        &serde_json::to_string(fields).unwrap_or_default(),
        &samples.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// The models' threads (they end soon after the executor's stop flag is set; a call in flight
/// ends within its timeout) and their queues.
pub struct Dispatcher {
    queues: HashMap<String, Sender<Job>>,
}

struct Shared {
    registry: Arc<Registry>,
    db: Db,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    keep: Sender<Kept>,
}

impl Dispatcher {
    /// Starts `concurrency` threads per configured model.
    pub fn start(
        registry: Arc<Registry>,
        db: Db,
        metrics: Arc<Metrics>,
        wake: Sender<()>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, StoreError> {
        let (keep, kept) = unbounded::<Kept>();
        let keeper_db = db.clone();
        std::thread::Builder::new()
            .name("quire-model-keeper".into())
            .spawn(move || keeper(&kept, &keeper_db, &wake))
            .map_err(|e| StoreError::Refused(format!("cannot start the model keeper: {e}")))?;
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            db,
            metrics,
            stop,
            keep,
        });
        let mut queues = HashMap::new();
        for (m, _) in registry.all() {
            let (tx, rx) = unbounded::<Job>();
            queues.insert(m.name.clone(), tx);
            for n in 0..m.concurrency {
                let (m, rx, shared) = (m.clone(), rx.clone(), shared.clone());
                std::thread::Builder::new()
                    .name(format!("quire-model-{}-{n}", m.name))
                    .spawn(move || serve(&m, &rx, &shared))
                    .map_err(|e| {
                        StoreError::Refused(format!("cannot start a model thread: {e}"))
                    })?;
            }
        }
        Ok(Dispatcher { queues })
    }

    /// Hands a waiting document's request to its model's threads.
    pub fn submit(&self, job: Job) {
        match self.queues.get(&job.model) {
            Some(q) => {
                let _ = q.send(job);
            }
            None => tracing::warn!(
                "no model '{}' to ask for document {}",
                job.model,
                job.pd_seq
            ),
        }
    }
}

/// One model thread's means to call: an HTTP client on a runtime of its own.
struct Caller {
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

fn serve(m: &ModelConfig, rx: &Receiver<Job>, shared: &Shared) {
    let built = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
        .and_then(|http| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| Caller { http, rt })
                .map_err(|e| e.to_string())
        });
    let caller = match built {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("model '{}': cannot build an HTTP client: {e}", m.name);
            return;
        }
    };
    while !shared.stop.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(job) => run(&caller, m, job, shared),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(_) => return,
        }
    }
}

fn run(caller: &Caller, m: &ModelConfig, job: Job, shared: &Shared) {
    // A run cancelled while the document waited asks nothing.
    match shared
        .db
        .read(|c| store::models::still_waiting(c, job.pd_seq))
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(
                "model '{}': cannot check document {}: {e}",
                m.name,
                job.pd_seq
            );
            return;
        }
    }
    shared.registry.update(&m.name, |h| h.in_flight += 1);
    let mut calls = Vec::new();
    let mut parts = Vec::new();
    let mut failure = None;
    'chunks: for chunk in prompt::chunks(&job.pages) {
        let mut answer = match ask(caller, m, &job, &chunk, 0.0, &mut calls, shared) {
            Ok(a) => a,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if job.samples > 1 {
            let mut samples = Vec::new();
            for _ in 1..job.samples {
                match ask(
                    caller,
                    m,
                    &job,
                    &chunk,
                    SAMPLE_TEMPERATURE,
                    &mut calls,
                    shared,
                ) {
                    Ok(s) => samples.push(s),
                    Err(Failure::Failed(_)) => {}
                    Err(e) => {
                        failure = Some(e);
                        break 'chunks;
                    }
                }
            }
            answer.tally(&samples);
        }
        parts.push(answer);
    }
    shared.registry.update(&m.name, |h| h.in_flight -= 1);
    let result: Result<Answer, String> = match failure {
        None => Ok(prompt::merge(parts)),
        Some(Failure::Cancelled) => {
            // Nothing to apply; the calls made are still on record.
            if let Err(e) = shared.db.write(false, |tx| {
                store::models::record_calls(tx, job.pd_seq, &calls)
            }) {
                tracing::warn!("model '{}': cannot record calls: {e}", m.name);
            }
            return;
        }
        Some(Failure::Failed(e)) => Err(e),
    };
    // Kept by the keeper thread, so this thread asks the next question meanwhile.
    let _ = shared.keep.send(Kept {
        job,
        model: m.name.clone(),
        result,
        calls,
    });
}

/// What a model thread hands the keeper.
struct Kept {
    job: Job,
    model: String,
    result: Result<Answer, String>,
    calls: Vec<Call>,
}

/// Writes answers as they come, as many as are ready in one transaction, and wakes the
/// executor for their documents. A model thread never waits for the database's writer.
fn keeper(rx: &Receiver<Kept>, db: &Db, wake: &Sender<()>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(255));
        let kept = db.write(false, |tx| {
            for k in &batch {
                store::models::answered(
                    tx,
                    &k.job.key,
                    &k.model,
                    k.job.pd_seq,
                    k.job.generation,
                    k.result.as_ref().map_err(String::as_str),
                    &k.calls,
                )?;
            }
            Ok::<_, StoreError>(())
        });
        match kept {
            Ok(()) => {
                let _ = wake.try_send(());
            }
            // Their documents stay waiting until the next start, which asks again.
            Err(e) => tracing::warn!("cannot keep {} model answer(s): {e}", batch.len()),
        }
    }
}

/// Why a document got no answer.
enum Failure {
    /// Its run was cancelled (or the service stops) while it waited: nothing is kept.
    Cancelled,
    Failed(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Failed(s)
    }
}

/// One chunk's answer, asking again as the module's comment says. While the model's circuit is
/// open the document waits (saying so) without spending its retries.
fn ask(
    caller: &Caller,
    m: &ModelConfig,
    job: &Job,
    chunk: &str,
    temperature: f64,
    calls: &mut Vec<Call>,
    shared: &Shared,
) -> Result<Answer, Failure> {
    let fields = &job.fields;
    let schema = prompt::answer_schema(fields);
    let mut messages = prompt::messages(fields, chunk);
    let mut fed_back = false;
    // An answer with some values of the wrong type, kept in case asking again does no better.
    let mut partial: Option<Answer> = None;
    let mut transient = 0u32;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(Failure::Cancelled);
        }
        if let Admit::Wait(d) = shared.registry.admit(&m.name) {
            let why = format!(
                "model '{}' is unavailable ({}); asking again when it answers",
                m.name,
                shared
                    .registry
                    .health(&m.name)
                    .last_error
                    .unwrap_or_default()
            );
            let waiting = shared.db.write(false, |tx| {
                store::models::still_waits(tx, job.pd_seq, &why)?;
                store::models::still_waiting(tx, job.pd_seq)
            });
            if let Ok(false) = waiting {
                return Err(Failure::Cancelled);
            }
            pause(d.min(Duration::from_secs(1)), &shared.stop);
            continue;
        }
        let structured = shared.registry.health(&m.name).structured_output;
        let started = std::time::Instant::now();
        let result = match call_unless_cancelled(
            caller,
            m,
            &messages,
            structured.then_some(&schema),
            temperature,
            job,
            shared,
        ) {
            Some(r) => r,
            None => {
                shared
                    .metrics
                    .model_call(&m.name, "cancelled", 0, 0, started.elapsed());
                calls.push(Call {
                    model: m.name.clone(),
                    outcome: "cancelled".into(),
                    status: None,
                    tokens_in: 0,
                    tokens_out: 0,
                    ms: started.elapsed().as_millis() as u64,
                    cost: 0.0,
                    error: Some("the run was cancelled while the model was answering".into()),
                    created_at: String::new(),
                });
                return Err(Failure::Cancelled);
            }
        };
        let mut log = |outcome: &'static str,
                       status,
                       tokens_in,
                       tokens_out,
                       took: Duration,
                       error: Option<String>| {
            shared
                .metrics
                .model_call(&m.name, outcome, tokens_in, tokens_out, took);
            calls.push(Call {
                model: m.name.clone(),
                outcome: outcome.into(),
                status,
                tokens_in,
                tokens_out,
                ms: took.as_millis() as u64,
                cost: m.cost(tokens_in, tokens_out),
                error,
                created_at: String::new(),
            });
        };
        match result {
            Ok(done) => {
                let read = if done.truncated {
                    Err(format!(
                        "the answer was cut off at max_tokens ({})",
                        m.max_tokens
                    ))
                } else {
                    prompt::parse(&done.content, fields)
                };
                let outcome = match (&read, done.truncated) {
                    (Ok(_), _) => "ok",
                    (Err(_), true) => "truncated",
                    (Err(_), false) => "invalid_output",
                };
                log(
                    outcome,
                    Some(200),
                    done.tokens_in,
                    done.tokens_out,
                    done.took,
                    read.as_ref().err().cloned(),
                );
                shared.registry.up(&m.name);
                let now = crate::domain::ids::now_rfc3339();
                match read {
                    Ok(mut answer) => {
                        answer.token_confidence = done.token_confidence;
                        shared
                            .registry
                            .update(&m.name, |h| h.last_success_at = Some(now));
                        if answer.notes.is_empty() || fed_back {
                            return Ok(answer);
                        }
                        // Some values have the wrong type: asked once more, with what is wrong.
                        let wrong: Vec<String> = answer
                            .notes
                            .iter()
                            .map(|(f, n)| format!("{f}: {}", n.as_str().unwrap_or_default()))
                            .collect();
                        fed_back = true;
                        messages.push(
                            serde_json::json!({"role": "assistant", "content": done.content}),
                        );
                        messages.push(serde_json::json!({"role": "user", "content": format!(
                            "Some values have the wrong type ({}). Answer again with only the JSON object described, every field included.",
                            wrong.join("; ")
                        )}));
                        partial = Some(answer);
                    }
                    Err(why) if !fed_back => {
                        fed_back = true;
                        messages.push(
                            serde_json::json!({"role": "assistant", "content": done.content}),
                        );
                        messages.push(serde_json::json!({"role": "user", "content": format!(
                            "That answer cannot be used: {why}. Answer again with only the JSON object described, every field included."
                        )}));
                    }
                    Err(why) => {
                        return match partial {
                            Some(answer) => Ok(answer),
                            None => {
                                Err(format!("the model's answer was unusable twice: {why}").into())
                            }
                        }
                    }
                }
            }
            Err(e) => {
                log(
                    e.kind(),
                    e.status(),
                    0,
                    0,
                    Duration::ZERO,
                    Some(e.to_string()),
                );
                let now = crate::domain::ids::now_rfc3339();
                let message = e.to_string();
                shared.registry.update(&m.name, |h| {
                    h.last_error_at = Some(now);
                    h.last_error = Some(message);
                });
                let server_down = e.transient() && e.status() != Some(429);
                if !server_down {
                    shared.registry.up(&m.name);
                }
                match e {
                    // The server does not take a JSON Schema: JSON mode, checked here, instead.
                    CallError::Status { code: 400, .. } if structured => {
                        shared
                            .registry
                            .update(&m.name, |h| h.structured_output = false);
                    }
                    // Down: wait for the circuit (next turn of the loop), retries untouched.
                    _ if server_down && shared.registry.down(&m.name) => {}
                    e if e.transient() && transient < MAX_TRANSIENT_RETRIES => {
                        pause(backoff(transient, e.retry_after()), &shared.stop);
                        transient += 1;
                    }
                    e => return Err(e.to_string().into()),
                }
            }
        }
    }
}

/// One call, abandoned (its connection dropped) as soon as the document stops waiting for it (its
/// run was cancelled) or the service stops: `None` then.
fn call_unless_cancelled(
    caller: &Caller,
    m: &ModelConfig,
    messages: &[serde_json::Value],
    schema: Option<&serde_json::Value>,
    temperature: f64,
    job: &Job,
    shared: &Shared,
) -> Option<Result<client::Completion, CallError>> {
    caller.rt.block_on(async {
        let call = client::chat(&caller.http, m, messages, schema, temperature);
        tokio::pin!(call);
        loop {
            if let Ok(done) = tokio::time::timeout(Duration::from_millis(250), &mut call).await {
                return Some(done);
            }
            let waiting = shared
                .db
                .read(|c| store::models::still_waiting(c, job.pd_seq));
            if shared.stop.load(Ordering::SeqCst) || matches!(waiting, Ok(false)) {
                return None;
            }
        }
    })
}

/// The pause before asking again: the server's `Retry-After` (at most two minutes), else half
/// a second doubling per attempt up to 30 s, give or take a quarter.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(Duration::from_secs(120));
    }
    let base = (0.5 * 2f64.powi(attempt as i32)).min(30.0);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(base * jitter)
}

fn pause(d: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50).min(until - std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_jitter_and_honour_retry_after() {
        for attempt in 0..8 {
            let d = backoff(attempt, None).as_secs_f64();
            let base = (0.5 * 2f64.powi(attempt as i32)).min(30.0);
            assert!(d >= base * 0.75 && d <= base * 1.25, "{attempt}: {d}");
        }
        assert_eq!(
            backoff(3, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff(0, Some(Duration::from_secs(9999))),
            Duration::from_secs(120)
        );
    }
}
