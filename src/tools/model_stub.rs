//! An in-process stub of an OpenAI-compatible chat-completions server: plain HTTP/1.1 over
//! `std::net`, one thread per connection, answers decided by a handler. It stands in for a
//! model server in the tests and in `quire bench --model-stub`; the service never uses it (the
//! service's own client is what talks to it).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest accepted request line or header line, most headers, largest body.
const MAX_LINE: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One chat-completions request as the handler sees it.
#[derive(Debug, Clone)]
pub struct StubCall {
    /// 1-based count of this chat call.
    pub n: usize,
    pub body: Value,
    /// Every message's content, joined with `\n` (text parts of array contents included).
    pub prompt: String,
}

/// The answer to one request; the server sleeps `delay` before sending it.
#[derive(Debug, Clone)]
pub struct StubReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl StubReply {
    /// 200 with a `chat.completion` whose single choice says `content` and stopped normally.
    pub fn json_content(content: &str) -> StubReply {
        Self::completion(content, "stop", None)
    }

    /// As [`StubReply::json_content`], plus per-token logprobs (~4-character pieces), all `logprob`.
    pub fn with_logprobs(content: &str, logprob: f64) -> StubReply {
        let chars: Vec<char> = content.chars().collect();
        let pieces: Vec<Value> = chars
            .chunks(4)
            .map(|c| json!({"token": c.iter().collect::<String>(), "logprob": logprob}))
            .collect();
        Self::completion(content, "stop", Some(json!({ "content": pieces })))
    }

    /// The first half of `content`, with `finish_reason: "length"`.
    pub fn truncated(content: &str) -> StubReply {
        let half: String = content.chars().take(content.chars().count() / 2).collect();
        Self::completion(&half, "length", None)
    }

    /// `code` with an OpenAI-style error body, and `Retry-After: secs` when given.
    pub fn status(code: u16, retry_after: Option<u64>) -> StubReply {
        let mut reply = Self::error(code, &format!("stub error {code}: {}", reason(code)));
        if let Some(secs) = retry_after {
            reply.headers.push(("Retry-After".into(), secs.to_string()));
        }
        reply
    }

    /// The same reply, sent only after `delay`.
    pub fn after(mut self, delay: Duration) -> StubReply {
        self.delay = delay;
        self
    }

    fn json(status: u16, body: Value) -> StubReply {
        let body = body.to_string();
        StubReply {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }

    fn error(code: u16, message: &str) -> StubReply {
        let kind = match code {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        Self::json(code, json!({"error": {"message": message, "type": kind}}))
    }

    fn completion(content: &str, finish: &str, logprobs: Option<Value>) -> StubReply {
        static ID: AtomicUsize = AtomicUsize::new(0);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let completion_tokens = content.len().div_ceil(4);
        let mut choice = json!({
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
        });
        if let Some(lp) = logprobs {
            choice["logprobs"] = lp;
        }
        Self::json(
            200,
            json!({
                "id": format!("chatcmpl-stub-{}", ID.fetch_add(1, SeqCst) + 1),
                "object": "chat.completion",
                "created": created,
                "model": "stub",
                "choices": [choice],
                "usage": {
                    "prompt_tokens": 100,
                    "completion_tokens": completion_tokens,
                    "total_tokens": 100 + completion_tokens,
                },
            }),
        )
    }
}

type Handler = dyn Fn(&StubCall) -> StubReply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Value>>,
    stop: AtomicBool,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<Value>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stub; dropping it stops accepting connections and lets idle ones close.
pub struct ModelStub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ModelStub {
    /// Starts a stub on an ephemeral port of 127.0.0.1 (panics when it cannot: for tests).
    pub fn start(handler: impl Fn(&StubCall) -> StubReply + Send + Sync + 'static) -> ModelStub {
        Self::try_start(handler).expect("start the model stub")
    }

    pub fn try_start(
        handler: impl Fn(&StubCall) -> StubReply + Send + Sync + 'static,
    ) -> std::io::Result<ModelStub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let shared = Arc::clone(&accepting);
                    thread::spawn(move || serve(stream, &shared));
                }
            }
        });
        Ok(ModelStub {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// How many `POST /v1/chat/completions` with a JSON body arrived so far.
    pub fn calls(&self) -> usize {
        self.shared.requests().len()
    }

    /// The JSON bodies of those calls, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests().clone()
    }
}

impl Drop for ModelStub {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        // One connection unblocks `accept`, which then sees the flag.
        if TcpStream::connect(self.addr).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    keep_alive: bool,
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Some(req) = read_request(&mut reader, &shared.stop) {
        let reply = respond(&req, shared);
        let end = Instant::now() + reply.delay;
        while !shared.stop.load(SeqCst) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
        // A client gone during the delay makes this fail: just close.
        if write_reply(&mut writer, &reply, req.keep_alive).is_err() || !req.keep_alive {
            return;
        }
    }
}

/// One line ending in `\n`, at most `MAX_LINE` bytes; `None` at EOF, on errors or overlong lines.
fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut s = String::new();
    r.by_ref().take(MAX_LINE).read_line(&mut s).ok()?;
    s.ends_with('\n').then_some(s)
}

/// `None` closes the connection: EOF, stop requested while idle, or a malformed request.
fn read_request(r: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Request> {
    // Wait for a request's first byte, looking at the stop flag now and then.
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    loop {
        match r.fill_buf() {
            Ok([]) => return None,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if stop.load(SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request_line = line(r)?;
    let mut parts = request_line.split_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut keep_alive = version == "HTTP/1.1";
    let mut len = 0usize;
    for count in 0.. {
        let header = line(r)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if count >= MAX_HEADERS {
            return None;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().ok().filter(|&n| n <= MAX_BODY)?,
            "transfer-encoding" => return None,
            "connection" if value.eq_ignore_ascii_case("close") => keep_alive = false,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        body,
        keep_alive,
    })
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

fn respond(req: &Request, shared: &Shared) -> StubReply {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/models") => StubReply::json(
            200,
            json!({"object": "list", "data": [{"id": "stub", "object": "model"}]}),
        ),
        ("POST", "/v1/chat/completions") => {
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return StubReply::error(400, "the request body is not JSON");
            };
            let n = {
                let mut requests = shared.requests();
                requests.push(body.clone());
                requests.len()
            };
            let prompt = body["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| text_of(&m["content"]))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            let call = StubCall { n, body, prompt };
            catch_unwind(AssertUnwindSafe(|| (shared.handler)(&call)))
                .unwrap_or_else(|_| StubReply::error(500, "the stub handler panicked"))
        }
        (method, path) => StubReply::error(404, &format!("no route for {method} {path}")),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_reply(w: &mut TcpStream, reply: &StubReply, keep_alive: bool) -> std::io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // One write: a head and a body sent apart would wait on the client's delayed ACK.
    let mut answer = head.into_bytes();
    answer.extend_from_slice(reply.body.as_bytes());
    w.write_all(&answer)?;
    w.flush()
}
