//! Service configuration: flags of `quire serve`, each also a `QUIRE_*` environment variable.

use clap::Args;
use serde::Serialize;

/// A size such as `10MiB`, `512KB` or `1048576` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|e| format!("'{s}': {e}"));
    }
    let b: bytesize::ByteSize = t
        .parse()
        .map_err(|e| format!("'{s}' is not a size such as 10MiB: {e}"))?;
    usize::try_from(b.as_u64()).map_err(|_| format!("'{s}' is too large"))
}

/// A duration such as `30s`, `2m` or `1h30m`; a bare number is seconds. Answers whole seconds.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|e| format!("'{s}': {e}"));
    }
    humantime::parse_duration(t)
        .map(|d| d.as_secs())
        .map_err(|e| format!("'{s}' is not a duration such as 30s: {e}"))
}

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}': a node id is 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// A lease in seconds, at least one.
fn parse_lease(s: &str) -> Result<u64, String> {
    match parse_secs(s)? {
        0 => Err(format!("'{s}': a lease is at least 1s")),
        n => Ok(n),
    }
}

fn parse_schedule_text(s: &str) -> Result<String, String> {
    crate::webhooks::parse_schedule(s).map(|_| s.trim().to_string())
}

fn parse_duration_text(s: &str) -> Result<String, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration such as 30s: {e}"))?;
    if d.is_zero() {
        return Err(format!("'{s}' must be above zero"));
    }
    Ok(s.trim().to_string())
}

/// A duration the flag's parser already accepted.
fn duration(s: &str, fallback: std::time::Duration) -> std::time::Duration {
    humantime::parse_duration(s).unwrap_or(fallback)
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct ServeArgs {
    /// A TOML file with any of these settings as keys (`max-body = "10MiB"`); flags and
    /// QUIRE_* variables override it, and an unknown key is refused.
    #[arg(long, env = "QUIRE_CONFIG")]
    #[serde(skip)]
    pub config: Option<std::path::PathBuf>,
    /// Interface to listen on.
    #[arg(long, env = "QUIRE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the start-up log line says which).
    #[arg(long, env = "QUIRE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Executor worker threads (default: the number of cores).
    #[arg(long, env = "QUIRE_WORKERS")]
    pub workers: Option<usize>,
    /// Default requests per minute per API key; 0 disables rate limiting.
    #[arg(long, env = "QUIRE_RATE_LIMIT", default_value_t = 6000)]
    pub rate_limit: u32,
    /// Requests per minute per organization, shared by all its keys, on top of each key's own
    /// limit; 0 (the default) turns it off.
    #[arg(long, env = "QUIRE_ORG_RATE_LIMIT", default_value_t = 0)]
    pub org_rate_limit: u32,
    /// Largest request body (documents excepted), e.g. 10MiB.
    #[arg(long, env = "QUIRE_MAX_BODY", default_value = "10MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Largest decoded document on POST /v1/documents, e.g. 50MiB.
    #[arg(long, env = "QUIRE_MAX_UPLOAD", default_value = "50MiB", value_parser = parse_size)]
    pub max_upload: usize,
    /// Most documents in one pipeline.
    #[arg(long, env = "QUIRE_MAX_PIPELINE_DOCUMENTS", default_value_t = 100_000)]
    pub max_pipeline_documents: usize,
    /// How long SIGTERM/SIGINT waits for running steps, e.g. 10s.
    #[arg(long, env = "QUIRE_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = parse_secs)]
    pub shutdown_timeout: u64,
    /// Time a client has to send its request head, e.g. 10s; slower clients get 408.
    #[arg(long, env = "QUIRE_REQUEST_TIMEOUT", default_value = "10", value_parser = parse_secs)]
    pub request_timeout: u64,
    /// Print one JSON line `{"url", "api_key"}` on stdout once ready, and nothing else there.
    #[arg(long, env = "QUIRE_READY_JSON")]
    #[serde(skip)]
    pub ready_json: bool,
    /// Expose diagnostic routes (GET /v1/_debug/panic) used by the black-box tests.
    #[arg(long, env = "QUIRE_DEBUG_ROUTES", hide = true)]
    pub debug_routes: bool,
    /// Require `Authorization: Bearer TOKEN` on GET /metrics (open when unset).
    #[arg(long, env = "QUIRE_METRICS_TOKEN")]
    #[serde(serialize_with = "masked")]
    pub metrics_token: Option<String>,
    /// Start even when another `quire serve` holds this database's lock file.
    #[arg(long, env = "QUIRE_ALLOW_SHARED")]
    pub allow_shared: bool,
    /// This node's name among several `quire serve` processes on one PostgreSQL database
    /// (letters, digits, `.`, `_`, `-`); each running node needs its own.
    #[arg(long, env = "QUIRE_NODE_ID", default_value = "default", value_parser = parse_node_id)]
    pub node_id: String,
    /// How long a node's claims outlive its last heartbeat, e.g. 30s: after it, other nodes
    /// take back the work of a node that stopped answering.
    #[arg(long, env = "QUIRE_LEASE", default_value = "30", value_parser = parse_lease)]
    pub lease: u64,
    /// Time a client has to send a whole request body once its head arrived, e.g. 30s (else 400).
    #[arg(long, env = "QUIRE_BODY_TIMEOUT", default_value = "30", value_parser = parse_secs)]
    pub body_timeout: u64,
    /// Requests one client address may have in progress at once (beyond: 503, retryable).
    #[arg(long, env = "QUIRE_MAX_CLIENT_REQUESTS", default_value_t = 256)]
    pub max_client_requests: usize,
    /// Heavy reads (results with cells or provenance, exports, document text) at once (beyond: 503).
    #[arg(long, env = "QUIRE_MAX_HEAVY_READS", default_value_t = 4)]
    pub max_heavy_reads: usize,
    /// Largest value a rule, the extractor or a transfer may produce, e.g. 1MiB (else a note).
    #[arg(long, env = "QUIRE_MAX_VALUE_BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub max_value_bytes: usize,
    /// Largest total of new values one document may write in one run, e.g. 16MiB (else `error`).
    #[arg(long, env = "QUIRE_MAX_DOCUMENT_OUTPUT_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_document_output_bytes: usize,
    /// Time reading one PDF, DOCX or image into pages may take (its parser runs in a child
    /// process that is killed then), e.g. 2m.
    #[arg(long, env = "QUIRE_INTAKE_TIMEOUT", default_value = "120", value_parser = parse_secs)]
    pub intake_timeout: u64,
    /// Memory (address space) the document reader's child process may use, e.g. 2GiB.
    #[arg(long, env = "QUIRE_INTAKE_MEMORY", default_value = "2GiB", value_parser = parse_size)]
    pub intake_memory: usize,
    /// Most pages of a PDF or DOCX (beyond: the upload is refused).
    #[arg(long, env = "QUIRE_MAX_DOCUMENT_PAGES", default_value_t = 500)]
    pub max_document_pages: usize,
    /// Largest image (or scanned page) OCR reads, in pixels.
    #[arg(long, env = "QUIRE_MAX_IMAGE_PIXELS", default_value_t = 100_000_000)]
    pub max_image_pixels: u64,
    /// Tesseract languages for OCR, e.g. eng+deu (those installed are used).
    #[arg(long, env = "QUIRE_OCR_LANGUAGES", default_value = "eng+deu")]
    pub ocr_languages: String,
    /// The Tesseract command for OCR (a name on PATH or a path).
    #[arg(long, env = "QUIRE_TESSERACT", default_value = "tesseract")]
    pub tesseract: String,
    /// A model server a rail may extract with, as NAME=URL[,key=value…] (keys: model,
    /// api_key_env, timeout, concurrency, max_tokens, price_in, price_out); repeat for more
    /// (in QUIRE_MODEL and the config file, separate them with ';').
    #[arg(long = "model", env = "QUIRE_MODEL", value_delimiter = ';', value_parser = crate::models::ModelConfig::parse)]
    #[serde(serialize_with = "model_flags", skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<crate::models::ModelConfig>,
    /// A browser origin (scheme://host[:port]) whose pages may call the API (CORS); repeat for
    /// more (in QUIRE_CORS_ORIGIN, separate them with ','). None by default: the built-in UI is
    /// served from the API's own origin and needs none.
    #[arg(long = "cors-origin", env = "QUIRE_CORS_ORIGIN", value_delimiter = ',', value_parser = parse_origin)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cors_origin: Vec<String>,
    /// Let webhooks reach loopback, link-local and private addresses (refused by default, so a
    /// webhook cannot be pointed at this host or its network).
    #[arg(long, env = "QUIRE_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// Pauses before each retry of a failed webhook delivery; after the last the delivery has
    /// failed. Each is jittered by up to ±10%.
    #[arg(long, env = "QUIRE_WEBHOOKS_RETRY_SCHEDULE", default_value = "1m,5m,30m,4h", value_parser = parse_schedule_text)]
    pub webhooks_retry_schedule: String,
    /// How long one webhook attempt may take, e.g. 30s.
    #[arg(long, env = "QUIRE_WEBHOOKS_TIMEOUT", default_value = "30s", value_parser = parse_duration_text)]
    pub webhooks_timeout: String,
    /// An endpoint whose every attempt failed for this long is turned off, with the reason.
    #[arg(long, env = "QUIRE_WEBHOOKS_DISABLE_AFTER", default_value = "24h", value_parser = parse_duration_text)]
    pub webhooks_disable_after: String,
    /// How long webhook events and their delivery history are kept.
    #[arg(long, env = "QUIRE_WEBHOOKS_RETENTION", default_value = "30d", value_parser = parse_duration_text)]
    pub webhooks_retention: String,
    /// Webhook attempts in flight to one endpoint at once.
    #[arg(long, env = "QUIRE_WEBHOOKS_CONCURRENCY", default_value_t = 4)]
    pub webhooks_concurrency: usize,
    /// Abort the process when a worker picks up a document containing this text (crash tests).
    #[arg(long, env = "QUIRE_FAULT_ABORT_ON", hide = true)]
    pub fault_abort_on: Option<String>,
    /// With --fault-abort-on: abort without recording why first.
    #[arg(long, env = "QUIRE_FAULT_ABORT_UNRECORDED", hide = true)]
    pub fault_abort_unrecorded: bool,
    /// With --fault-abort-on: abort through an allocation that fails (the allocation journal
    /// records it); wins over --fault-abort-unrecorded.
    #[arg(long, env = "QUIRE_FAULT_ABORT_BY_ALLOCATION", hide = true)]
    pub fault_abort_by_allocation: bool,
    /// Cap the database size in pages on every connection (fault-injection in tests).
    #[arg(long, env = "QUIRE_MAX_DB_PAGES", hide = true)]
    pub max_db_pages: Option<u64>,
}

/// The models as one `;`-separated string of their flags, as the file and QUIRE_MODEL take it.
fn model_flags<S: serde::Serializer>(
    v: &[crate::models::ModelConfig],
    s: S,
) -> Result<S::Ok, S::Error> {
    let flags: Vec<String> = v.iter().map(|m| m.flag()).collect();
    s.serialize_str(&flags.join(";"))
}

fn masked<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_none(),
    }
}

/// Reads a `--config` TOML file into the `QUIRE_*` variables clap reads, for every key not set
/// in the environment already: so a flag beats a variable, which beats the file, which beats the
/// default. Keys are the long flag names (`max-body` or `max_body`) of `serve`, plus `db`.
pub fn load_file(path: &std::path::Path) -> Result<(), String> {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    let cmd = Probe::command();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let env = if long == "db" {
            Some("QUIRE_DB".to_string())
        } else if long == "log-format" {
            Some("QUIRE_LOG_FORMAT".to_string())
        } else {
            cmd.get_arguments()
                .filter(|a| a.get_long() == Some(long.as_str()) && long != "config")
                .find_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        };
        let Some(env) = env else {
            return Err(format!(
                "{}: unknown key '{key}' (keys are the long flags of `quire serve`, db and log-format)",
                path.display()
            ));
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // `model = ["a=http://…", "b=http://…"]`: one flag each.
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(";"),
            other => {
                return Err(format!(
                    "{}: '{key}' must be a string, a number or a boolean, not {}",
                    path.display(),
                    other.type_str()
                ))
            }
        };
        if std::env::var_os(&env).is_none() {
            // SAFETY: called from `main` before any thread is started.
            unsafe { std::env::set_var(&env, value) };
        }
    }
    Ok(())
}

/// Everything `Application::build` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: String,
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub http_workers: usize,
    pub rate_limit: u32,
    /// Per organization, on top of the per-key limit; 0 = off.
    pub org_rate_limit: u32,
    pub max_body: usize,
    pub max_upload: usize,
    pub max_pipeline_documents: usize,
    pub shutdown_timeout: u64,
    pub request_timeout: u64,
    pub bootstrap_key: Option<String>,
    pub debug_routes: bool,
    pub max_db_pages: Option<u64>,
    pub metrics_token: Option<String>,
    pub limits: crate::engine::executor::Limits,
    pub body_timeout: u64,
    pub max_client_requests: usize,
    pub max_heavy_reads: usize,
    pub allow_shared: bool,
    pub node_id: String,
    /// Seconds.
    pub lease: u64,
    /// How binary documents are read into pages.
    pub reader: crate::intake::child::Reader,
    /// Model servers a rail may extract with.
    pub models: Vec<crate::models::ModelConfig>,
    /// Browser origins allowed to call the API (CORS); empty: none.
    pub cors_origins: Vec<String>,
    pub webhooks: crate::webhooks::Settings,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Config {
    pub fn from_args(db: String, a: &ServeArgs) -> Self {
        Config {
            db,
            host: a.host.clone(),
            port: a.port,
            workers: a.workers.unwrap_or_else(cores).max(1),
            http_workers: cores().max(2),
            rate_limit: a.rate_limit,
            org_rate_limit: a.org_rate_limit,
            max_body: a.max_body,
            max_upload: a.max_upload,
            max_pipeline_documents: a.max_pipeline_documents,
            shutdown_timeout: a.shutdown_timeout,
            request_timeout: a.request_timeout.max(1),
            bootstrap_key: std::env::var("QUIRE_BOOTSTRAP_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            debug_routes: a.debug_routes,
            max_db_pages: a.max_db_pages,
            metrics_token: a.metrics_token.clone().filter(|t| !t.is_empty()),
            allow_shared: a.allow_shared,
            node_id: a.node_id.clone(),
            lease: a.lease,
            body_timeout: a.body_timeout.max(1),
            max_client_requests: a.max_client_requests.max(1),
            max_heavy_reads: a.max_heavy_reads.max(1),
            models: a.model.clone(),
            cors_origins: a.cors_origin.clone(),
            webhooks: {
                let d = crate::webhooks::Settings::default();
                crate::webhooks::Settings {
                    allow_private: a.webhooks_allow_private,
                    schedule: crate::webhooks::parse_schedule(&a.webhooks_retry_schedule)
                        .unwrap_or(d.schedule),
                    timeout: duration(&a.webhooks_timeout, d.timeout),
                    disable_after: duration(&a.webhooks_disable_after, d.disable_after),
                    retention: duration(&a.webhooks_retention, d.retention),
                    per_endpoint: a.webhooks_concurrency.max(1),
                    max_in_flight: d.max_in_flight,
                }
            },
            reader: crate::intake::child::Reader {
                exe: None,
                timeout: std::time::Duration::from_secs(a.intake_timeout.max(1)),
                memory: (a.intake_memory as u64).max(64 * 1024 * 1024),
                limits: crate::intake::Limits {
                    max_pages: a.max_document_pages.max(1),
                    max_pixels: a.max_image_pixels.max(1),
                    ocr_languages: a.ocr_languages.clone(),
                    tesseract: a.tesseract.clone(),
                    ..Default::default()
                },
            },
            limits: crate::engine::executor::Limits {
                budget: crate::engine::runner::Budget {
                    value: a.max_value_bytes.max(1024),
                    document: a.max_document_output_bytes.max(1024),
                },
                abort_on: a.fault_abort_on.clone().filter(|m| !m.is_empty()),
                abort_how: if a.fault_abort_by_allocation {
                    crate::engine::executor::AbortHow::Allocation
                } else if a.fault_abort_unrecorded {
                    crate::engine::executor::AbortHow::Unrecorded
                } else {
                    crate::engine::executor::AbortHow::Recorded
                },
            },
        }
    }

    /// A disposable configuration: temporary database, ephemeral port, given bootstrap key.
    pub fn ephemeral(bootstrap_key: Option<String>) -> Self {
        Config {
            db: ":memory:".into(),
            host: "127.0.0.1".into(),
            port: 0,
            workers: 2,
            http_workers: 2,
            rate_limit: 6000,
            org_rate_limit: 0,
            max_body: 10 * 1024 * 1024,
            max_upload: 50 * 1024 * 1024,
            max_pipeline_documents: 100_000,
            shutdown_timeout: 10,
            request_timeout: 10,
            bootstrap_key,
            debug_routes: false,
            max_db_pages: None,
            metrics_token: None,
            limits: Default::default(),
            allow_shared: false,
            node_id: "default".into(),
            lease: 30,
            body_timeout: 30,
            max_client_requests: 256,
            max_heavy_reads: 4,
            reader: Default::default(),
            models: Vec::new(),
            cors_origins: Vec::new(),
            webhooks: Default::default(),
        }
    }
}

/// A CORS origin as browsers send it: `http://` or `https://`, a host, an optional port, and
/// nothing after it (no path, no trailing slash).
fn parse_origin(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("'{s}' is not an origin: it must start with http:// or https://"))?;
    let ok = !rest.is_empty()
        && rest.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | ':' | '[' | ']')
        });
    // Browsers send origins in lower case and without the scheme's default port: an origin
    // written otherwise would never match.
    let default_port = (s.starts_with("https://") && rest.ends_with(":443"))
        || (s.starts_with("http://") && rest.ends_with(":80"));
    if ok && !default_port {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not an origin as browsers send it: scheme://host[:port] in lower case, no default port, no path"
        ))
    }
}

#[cfg(test)]
mod origin_tests {
    use super::parse_origin;

    #[test]
    fn origins_are_taken_only_as_browsers_send_them() {
        for ok in [
            "https://review.example.com",
            "http://localhost:5173",
            "http://[::1]:8080",
        ] {
            assert_eq!(parse_origin(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "review.example.com",
            "https://review.example.com/",
            "https://Review.example.com",
            "https://review.example.com:443",
            "http://review.example.com:80",
            "https://",
            "ftp://x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
