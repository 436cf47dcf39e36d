//! One chat-completions request to an OpenAI-compatible server, and what came back.

use super::ModelConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A completion's content and what it cost.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// exp(mean log-probability) of the completion's tokens, where the server gave them.
    pub token_confidence: Option<f64>,
    /// The server stopped at `max_tokens`: the content is cut.
    pub truncated: bool,
    pub took: Duration,
}

/// Why a request gave no completion.
#[derive(Debug, Clone)]
pub enum CallError {
    Status {
        code: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    Timeout,
    Transport(String),
    /// A 2xx answer that is not a chat completion.
    Malformed(String),
}

impl CallError {
    /// Worth asking again after a while: rate limits, server errors, timeouts, broken
    /// connections.
    pub fn transient(&self) -> bool {
        match self {
            CallError::Status { code, .. } => *code == 429 || *code == 408 || *code >= 500,
            CallError::Timeout | CallError::Transport(_) => true,
            CallError::Malformed(_) => false,
        }
    }

    /// The outcome a call log and the metrics name it by.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Status { code: 429, .. } => "rate_limited",
            CallError::Status { code, .. } if *code >= 500 => "server_error",
            CallError::Status { .. } => "client_error",
            CallError::Timeout => "timeout",
            CallError::Transport(_) => "transport",
            CallError::Malformed(_) => "invalid_output",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status { code, message, .. } => write!(f, "HTTP {code}: {message}"),
            CallError::Timeout => write!(f, "no answer within the timeout"),
            CallError::Transport(e) => write!(f, "cannot reach the server: {e}"),
            CallError::Malformed(e) => write!(f, "not a chat completion: {e}"),
        }
    }
}

/// Asks for a completion. With `schema`, structured output (`response_format: json_schema`);
/// without, JSON mode (`json_object`). Dropping the future drops the connection: that is how a
/// call in flight is cancelled.
pub async fn chat(
    http: &reqwest::Client,
    m: &ModelConfig,
    messages: &[Value],
    schema: Option<&Value>,
    temperature: f64,
) -> Result<Completion, CallError> {
    let response_format = match schema {
        Some(s) => {
            json!({"type": "json_schema", "json_schema": {"name": "extraction", "schema": s, "strict": true}})
        }
        None => json!({"type": "json_object"}),
    };
    let body = json!({
        "model": m.model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": m.max_tokens,
        "logprobs": true,
        "response_format": response_format,
    });
    let mut req = http
        .post(format!("{}/chat/completions", m.url))
        .timeout(m.timeout)
        .json(&body);
    if let Some(var) = &m.api_key_env {
        if let Ok(key) = std::env::var(var) {
            req = req.bearer_auth(key);
        }
    }
    let started = Instant::now();
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            CallError::Timeout
        } else {
            CallError::Transport(e.without_url().to_string())
        }
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    let text = resp.text().await.map_err(|e| {
        if e.is_timeout() {
            CallError::Timeout
        } else {
            CallError::Transport(e.without_url().to_string())
        }
    })?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(300).collect());
        return Err(CallError::Status {
            code: status,
            retry_after,
            message,
        });
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| CallError::Malformed(format!("{e}")))?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .ok_or_else(|| CallError::Malformed("no choices[0].message.content".into()))?
        .to_string();
    let logprobs: Vec<f64> = choice["logprobs"]["content"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["logprob"].as_f64()).collect())
        .unwrap_or_default();
    let token_confidence = (!logprobs.is_empty()).then(|| {
        (logprobs.iter().sum::<f64>() / logprobs.len() as f64)
            .exp()
            .clamp(0.0, 1.0)
    });
    Ok(Completion {
        content,
        tokens_in: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        tokens_out: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        token_confidence,
        truncated: choice["finish_reason"] == "length",
        took: started.elapsed(),
    })
}
