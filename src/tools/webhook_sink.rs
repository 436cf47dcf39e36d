//! A webhook receiver for `quire bench --webhook-sink`: plain HTTP/1.1 over `std::net`, one
//! thread per connection, every request answered `204` and counted by delivery id. It stands in
//! for a team's receiver so the benchmark can measure the executor with deliveries going on;
//! the service never uses it (its own dispatcher is what talks to it).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct WebhookSink {
    pub url: String,
    stop: Arc<AtomicBool>,
    port: u16,
    ids: Arc<Mutex<HashSet<String>>>,
}

impl WebhookSink {
    pub fn start() -> std::io::Result<WebhookSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let ids: Arc<Mutex<HashSet<String>>> = Default::default();
        let (s, seen) = (stop.clone(), ids.clone());
        std::thread::Builder::new()
            .name("bench-webhook-sink".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let seen = seen.clone();
                        std::thread::spawn(move || serve(conn, &seen));
                    }
                }
            })?;
        Ok(WebhookSink {
            url: format!("http://127.0.0.1:{port}/bench"),
            stop,
            port,
            ids,
        })
    }

    /// Distinct deliveries received.
    pub fn received(&self) -> usize {
        self.ids.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers requests on one connection until the client closes it.
fn serve(mut conn: TcpStream, seen: &Mutex<HashSet<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let len: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if let Some(id) = header("x-talonic-delivery-id:") {
            if let Ok(mut s) = seen.lock() {
                s.insert(id);
            }
        }
        buf.drain(..head_end + len);
        if conn
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
