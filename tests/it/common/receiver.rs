//! A webhook receiver for tests: a small HTTP/1.1 server on a loopback port that records every
//! request and answers each by a script (fail, be slow, drop the connection, redirect), then
//! by a default. It verifies nothing itself: the tests check signatures with their own HMAC.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Answer {
    Ok,
    Status(u16, &'static str),
    /// Waits, then answers 200.
    Slow(Duration),
    /// Reads the request and closes the connection without a word.
    Drop,
    Redirect(String),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub delivery_id: String,
    pub event: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// What this receiver answered.
    pub answered: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    seen: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::on(0)
    }

    /// A port nothing listens on yet: a receiver that is down until `on(port)` starts it.
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Receiver { port, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers for the next requests, in order; then the default (200).
    pub fn script(&self, answers: &[Answer]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().cloned());
    }

    pub fn answer_always(&self, a: Answer) {
        *self.shared.default.lock().unwrap() = Some(a);
    }

    /// Every request, duplicates included.
    pub fn seen(&self) -> Vec<Received> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests answered 2xx, once per delivery id (what a de-duplicating receiver keeps).
    pub fn accepted(&self) -> Vec<Received> {
        let mut out: Vec<Received> = Vec::new();
        for r in self.seen() {
            if r.answered.starts_with('2') && !out.iter().any(|o| o.delivery_id == r.delivery_id) {
                out.push(r);
            }
        }
        out
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut conn: TcpStream, s: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| -> String {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    let answer = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| s.default.lock().unwrap().clone())
        .unwrap_or(Answer::Ok);
    let (status, extra, text) = match &answer {
        Answer::Ok => (200, String::new(), "ok"),
        Answer::Status(code, text) => (*code, String::new(), *text),
        Answer::Slow(d) => {
            std::thread::sleep(*d);
            (200, String::new(), "ok, slowly")
        }
        Answer::Drop => (0, String::new(), ""),
        Answer::Redirect(to) => (307, format!("Location: {to}\r\n"), "moved"),
    };
    s.seen.lock().unwrap().push(Received {
        delivery_id: header("x-talonic-delivery-id"),
        event: header("x-talonic-event"),
        timestamp: header("x-talonic-timestamp"),
        signature: header("x-talonic-signature"),
        body,
        answered: if status == 0 {
            "dropped".into()
        } else {
            status.to_string()
        },
    });
    if status == 0 {
        let _ = conn.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    );
}
