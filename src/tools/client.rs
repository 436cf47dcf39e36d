//! A small blocking client of Quire's own API, for the commands that drive a running service
//! (`quire bench`, `quire demo`).

use serde_json::Value;
use std::time::Duration;

pub struct Client {
    pub base: String,
    pub key: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, key: &str) -> Self {
        Client {
            base: base.into(),
            key: key.into(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .build(),
        }
    }
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.key));
        let res = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        answer(res, method, path)
    }
    /// POST of an already rendered JSON body (the pipeline of N ids, without an N-sized tree).
    pub fn post_raw(&self, path: &str, body: &str) -> Result<Value, String> {
        let res = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.key))
            .set("Content-Type", "application/json")
            .send_string(body);
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
    res: Result<ureq::Response, ureq::Error>,
    method: &str,
    path: &str,
) -> Result<Value, String> {
    match res {
        Ok(r) => r
            .into_json::<Value>()
            .map_err(|e| format!("{method} {path}: {e}")),
        Err(ureq::Error::Status(code, r)) => Err(format!(
            "{method} {path}: {code} {}",
            r.into_string().unwrap_or_default()
        )),
        Err(e) => Err(format!("{method} {path}: {e}")),
    }
}

/// The `id` of an answer.
pub fn id(v: &Value) -> Result<String, String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no id in {v}"))
}
