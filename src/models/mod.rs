//! Model servers as extractors: their configuration (`--model`), their health, the calls to an
//! OpenAI-compatible chat-completions API (`client`), and the dispatcher that makes those calls
//! beside the executor's workers (`dispatch`), so a worker never waits on the network.

pub mod client;
pub mod dispatch;

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One configured model endpoint (shown by `GET /v1/models` and the effective configuration;
/// an API key never is, only the variable that holds it).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelConfig {
    /// What a rail names it by.
    pub name: String,
    /// The API's base URL, up to `/v1` (`http://127.0.0.1:11434/v1`).
    pub url: String,
    /// The model id sent to the server (default: the name).
    pub model: String,
    /// The environment variable holding the API key (sent as a bearer token), if any.
    pub api_key_env: Option<String>,
    #[serde(rename = "timeout_s", serialize_with = "seconds")]
    #[schema(value_type = f64)]
    pub timeout: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub max_tokens: u32,
    /// Price per 1,000 tokens in and out, for the cost estimate.
    pub price_in: f64,
    pub price_out: f64,
    /// How long the circuit stays open after the server failed three times in a row, the
    /// first time (it doubles while the server stays down, up to ten minutes).
    #[serde(rename = "breaker_s", serialize_with = "seconds")]
    #[schema(value_type = f64)]
    pub breaker: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ModelConfig {
    /// `NAME=URL[,key=value…]`, keys `model`, `api_key_env`, `timeout` (seconds),
    /// `concurrency`, `max_tokens`, `price_in`, `price_out` (per 1,000 tokens).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("--model '{spec}': expected NAME=URL[,key=value…]"))?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(format!(
                "--model '{spec}': the name must be 1 to 64 letters, digits, '-', '_', '.' or ':'"
            ));
        }
        let mut parts = rest.split(',');
        let url = parts.next().unwrap_or("").trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--model '{name}': the URL must start with http:// or https:// (got '{url}')"
            ));
        }
        let mut m = ModelConfig {
            name: name.to_string(),
            url: url.to_string(),
            model: name.to_string(),
            api_key_env: None,
            timeout: Duration::from_secs(120),
            concurrency: 4,
            max_tokens: 2048,
            price_in: 0.0,
            price_out: 0.0,
            breaker: Duration::from_secs(30),
        };
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--model '{name}': '{p}' is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            let num = |what: &str| -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        format!("--model '{name}': {what} must be a number ≥ 0, not '{v}'")
                    })
            };
            match k {
                "model" => m.model = v.to_string(),
                "api_key_env" => m.api_key_env = Some(v.to_string()),
                "timeout" => m.timeout = Duration::from_secs_f64(num("timeout")?.clamp(1.0, 3600.0)),
                "concurrency" => m.concurrency = (num("concurrency")? as usize).clamp(1, 256),
                "max_tokens" => m.max_tokens = (num("max_tokens")? as u32).clamp(16, 1_000_000),
                "price_in" => m.price_in = num("price_in")?,
                "price_out" => m.price_out = num("price_out")?,
                "breaker" => m.breaker = Duration::from_secs_f64(num("breaker")?.clamp(0.1, 600.0)),
                other => {
                    return Err(format!(
                        "--model '{name}': unknown key '{other}' (model, api_key_env, timeout, concurrency, max_tokens, price_in, price_out, breaker)"
                    ))
                }
            }
        }
        Ok(m)
    }

    /// The `--model` flag that gives this configuration.
    pub fn flag(&self) -> String {
        let mut f = format!(
            "{}={},model={},timeout={},concurrency={},max_tokens={},price_in={},price_out={},breaker={}",
            self.name,
            self.url,
            self.model,
            self.timeout.as_secs_f64(),
            self.concurrency,
            self.max_tokens,
            self.price_in,
            self.price_out,
            self.breaker.as_secs_f64()
        );
        if let Some(k) = &self.api_key_env {
            f.push_str(&format!(",api_key_env={k}"));
        }
        f
    }

    /// The estimated cost of a call, in the prices' currency.
    pub fn cost(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.price_in + tokens_out as f64 * self.price_out) / 1000.0
    }
}

/// What is known of a model's health. (Named apart from `/healthz`'s answer in the OpenAPI
/// document, whose components are keyed by name.)
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = ModelHealth)]
pub struct Health {
    pub last_success_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Whether the server took `response_format: json_schema` (else JSON mode is used).
    pub structured_output: bool,
    /// While the server is taken for down: no document asks it before this time, except one
    /// probe (see `Registry::admit`).
    pub circuit_open_until: Option<String>,
}

/// Server failures in a row (5xx, timeouts, no connection) that open the circuit.
const TRIP_AFTER: u32 = 3;
/// The longest the circuit stays open before the next probe.
const MAX_OPEN: Duration = Duration::from_secs(600);

/// A model's circuit breaker: after `TRIP_AFTER` server failures in a row the circuit opens for
/// the model's `breaker` period; when it ends, one call probes. Success closes it; failure
/// opens it again for twice as long (at most ten minutes).
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    period: Duration,
    probing: bool,
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    Go,
    /// Not before this long (the circuit is open, or another call probes).
    Wait(Duration),
}

/// The configured models and their health.
#[derive(Default)]
pub struct Registry {
    models: BTreeMap<String, Arc<ModelConfig>>,
    health: parking_lot::Mutex<BTreeMap<String, Health>>,
    breakers: parking_lot::Mutex<BTreeMap<String, Breaker>>,
}

impl Registry {
    pub fn new(models: &[ModelConfig]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for m in models {
            if map.insert(m.name.clone(), Arc::new(m.clone())).is_some() {
                return Err(format!("--model '{}' is given twice", m.name));
            }
        }
        let health = map
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    Health {
                        structured_output: true,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Ok(Registry {
            models: map,
            health: parking_lot::Mutex::new(health),
            breakers: Default::default(),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<ModelConfig>> {
        self.models.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    pub fn all(&self) -> Vec<(Arc<ModelConfig>, Health)> {
        let health = self.health.lock();
        self.models
            .iter()
            .map(|(k, m)| (m.clone(), health.get(k).cloned().unwrap_or_default()))
            .collect()
    }

    pub fn health(&self, name: &str) -> Health {
        self.health.lock().get(name).cloned().unwrap_or_default()
    }

    pub fn update(&self, name: &str, f: impl FnOnce(&mut Health)) {
        if let Some(h) = self.health.lock().get_mut(name) {
            f(h)
        }
    }

    /// Whether a call to `name` may go now; the first caller after an open period is the probe.
    pub fn admit(&self, name: &str) -> Admit {
        let mut all = self.breakers.lock();
        let b = all.entry(name.to_string()).or_default();
        match b.open_until {
            None => Admit::Go,
            Some(t) if Instant::now() < t => Admit::Wait(t - Instant::now()),
            Some(_) if b.probing => Admit::Wait(Duration::from_millis(250)),
            Some(_) => {
                b.probing = true;
                Admit::Go
            }
        }
    }

    /// A call answered: the server is up.
    pub fn up(&self, name: &str) {
        let mut all = self.breakers.lock();
        if let Some(b) = all.get_mut(name) {
            *b = Breaker::default();
        }
        drop(all);
        self.update(name, |h| h.circuit_open_until = None);
    }

    /// A server failure; true when the circuit is open now (the caller waits instead of
    /// counting a retry).
    pub fn down(&self, name: &str) -> bool {
        let first = self
            .get(name)
            .map(|m| m.breaker)
            .unwrap_or(Duration::from_secs(30));
        let mut all = self.breakers.lock();
        let b = all.entry(name.to_string()).or_default();
        b.failures += 1;
        let open_for = if b.probing {
            Some((b.period * 2).min(MAX_OPEN))
        } else if b.open_until.is_none() && b.failures >= TRIP_AFTER {
            Some(first)
        } else {
            None
        };
        if let Some(d) = open_for {
            b.period = d;
            b.probing = false;
            b.open_until = Some(Instant::now() + d);
            let until = chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
            drop(all);
            self.update(name, |h| {
                h.circuit_open_until =
                    Some(until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            });
            return true;
        }
        b.open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_flag_names_its_url_and_options() {
        let m = ModelConfig::parse(
            "local-qwen=http://127.0.0.1:11434/v1/,model=qwen2.5:7b,api_key_env=KEY,timeout=30,concurrency=8,max_tokens=1024,price_in=0.5,price_out=1.5",
        )
        .unwrap();
        assert_eq!(m.url, "http://127.0.0.1:11434/v1");
        assert_eq!(
            (m.model.as_str(), m.concurrency, m.max_tokens),
            ("qwen2.5:7b", 8, 1024)
        );
        assert_eq!(m.timeout, Duration::from_secs(30));
        assert!((m.cost(2000, 1000) - 2.5).abs() < 1e-9);
        assert_eq!(ModelConfig::parse("m=http://x").unwrap().model, "m");
        assert_eq!(
            ModelConfig::parse(&m.flag()).unwrap(),
            m,
            "a flag reads back"
        );
        for bad in [
            "nourl",
            "m=ftp://x",
            "m=http://x,colour=red",
            "m=http://x,timeout=-1",
            "=http://x",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
        let twice = [
            ModelConfig::parse("a=http://x").unwrap(),
            ModelConfig::parse("a=http://y").unwrap(),
        ];
        assert!(Registry::new(&twice).is_err());
    }
}
