//! A small blocking client of Quire's own API, for the commands that drive a running service
//! (`quire bench`, `quire demo`).

use serde_json::Value;
use std::time::Duration;

/// Blocking `reqwest`, the HTTP client of the tests too. It runs its own small runtime, so it
/// is called from plain threads, never from inside the service's actix runtime.
pub struct Client {
    pub base: String,
    pub key: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: &str, key: &str) -> Self {
        Client {
            base: base.into(),
            key: key.into(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_else(|_| reqwest::blocking::Client::new()),
        }
    }
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        answer(req.send(), method, path)
    }
    /// POST of an already rendered JSON body (the pipeline of N ids, without an N-sized tree).
    pub fn post_raw(&self, path: &str, body: &str) -> Result<Value, String> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send();
        answer(res, "POST", path)
    }
    pub fn get(&self, path: &str) -> Result<Value, String> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call("POST", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call("PATCH", path, Some(body))
    }
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call("PUT", path, Some(body))
    }
}

/// The JSON of a 2xx answer; anything else as an error naming the request.
fn answer(
    res: Result<reqwest::blocking::Response, reqwest::Error>,
    method: &str,
    path: &str,
) -> Result<Value, String> {
    let r = res.map_err(|e| format!("{method} {path}: {e}"))?;
    let status = r.status();
    if !status.is_success() {
        return Err(format!(
            "{method} {path}: {} {}",
            status.as_u16(),
            r.text().unwrap_or_default()
        ));
    }
    r.json::<Value>()
        .map_err(|e| format!("{method} {path}: {e}"))
}

/// The `id` of an answer.
pub fn id(v: &Value) -> Result<String, String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no id in {v}"))
}
