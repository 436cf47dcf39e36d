//! Log output: `tracing` events (and the `log` records of dependencies such as actix, through
//! `tracing-log`'s bridge) to stderr, filtered by `RUST_LOG`, as readable text or as one flat
//! JSON object per line.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// tracing-subscriber's readable lines: time, level, the request span, target, message.
    Text,
    /// One flat JSON object per line (see [`FlatJson`]).
    Json,
}

/// The filter `RUST_LOG` names, or `default` when it is unset or empty (as `env_logger` did:
/// the default applies only when nothing is asked for). Directives that do not parse are
/// skipped rather than refusing to start.
pub fn filter(default: &str) -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(s) if !s.trim().is_empty() => EnvFilter::builder().parse_lossy(s),
        _ => EnvFilter::new(default),
    }
}

static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's node on every line from now on (`node=` after the time in text, a
/// `node` key in JSON): set when several nodes share a database (`--node-id`).
pub fn set_node(name: &str) {
    let _ = NODE.set(name.to_string());
}

/// The time, then the node when one is named.
struct NodeTime;

impl tracing_subscriber::fmt::time::FormatTime for NodeTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        match NODE.get() {
            Some(n) => write!(w, " node={n}"),
            None => Ok(()),
        }
    }
}

/// The target of the request span (`http::middleware::RequestSpan`).
pub const REQUEST_SPAN_TARGET: &str = "quire::request";

/// Installs the process's log output on stderr; `default_filter` applies unless `RUST_LOG` is
/// set. Also installs the `log` bridge, so actix's own records keep appearing.
pub fn init(
    format: Format,
    default_filter: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use std::io::IsTerminal;
    use tracing_log::AsLog;
    let filter = filter(default_filter);
    // `log` records are formatted only at the levels some directive could let through.
    let most = filter
        .max_level_hint()
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    tracing_log::LogTracer::builder()
        .with_max_level(most.as_log())
        .init()?;
    // Colours only on a terminal, as env_logger did: redirected logs stay plain text.
    let ansi = std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr, ansi))?;
    Ok(())
}

/// The subscriber that writes log lines in `format` to `writer`, filtered by `filter`.
///
/// The request span is kept whatever the filter says: a span writes no line of its own, and a
/// filter such as `quire::engine=info` (or a span at a level the filter leaves out) would
/// otherwise disable it and take the request id off the lines logged inside it.
pub fn subscriber<W>(
    format: Format,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    let request_span = filter_fn(|m| m.is_span() && m.target() == REQUEST_SPAN_TARGET)
        .with_max_level_hint(LevelFilter::INFO);
    let filter = filter.or(request_span);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        // A line that cannot be written is dropped, as env_logger did: by default the layer
        // reports it with `eprintln!`, which panics when stderr itself is the closed pipe (a
        // supervisor that stopped reading must not take the service down).
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry();
    match format {
        Format::Text => Box::new(
            registry.with(
                layer
                    .with_ansi(ansi)
                    .with_timer(NodeTime)
                    .fmt_fields(TextFields)
                    .with_filter(filter),
            ),
        ),
        Format::Json => Box::new(
            registry.with(
                layer
                    .with_ansi(false)
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson)
                    .with_filter(filter),
            ),
        ),
    }
}

/// Text lines' fields: an event shows its message alone, a span (the request's) its fields as
/// `name=value`. Hand-written because the stock formatter appends every field to the message,
/// and the access line's message already is its documented text form (`{rid} {method} {route}
/// {status}[ {code}] {ms}ms {client} {bytes}`): its fields are for the JSON lines.
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut text = TextVisitor::default();
        fields.record(&mut text);
        match text.message {
            Some(message) => writer.write_str(&message),
            None => writer.write_str(&text.pairs),
        }
    }
}

#[derive(Default)]
struct TextVisitor {
    message: Option<String>,
    pairs: String,
}

impl Visit for TextVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else if !field.name().starts_with("log.") {
            let sep = if self.pairs.is_empty() { "" } else { " " };
            let _ = write!(self.pairs, "{sep}{}={value:?}", field.name());
        }
    }
}

/// One JSON object per line: `time` (RFC 3339, milliseconds), `level`, `target`, `message`, then
/// the fields of the enclosing spans (the request span's `request_id`) and the event's own fields
/// (the access line's `method`, `route`, `status`, ...), all at the top level.
///
/// Hand-written because the line's shape is documented and log pipelines are configured on it:
/// tracing-subscriber's stock JSON formatter nests the event's fields under `fields` and the spans
/// under `span`/`spans`, and writes `timestamp` with microseconds. Span fields are recorded with
/// the stock [`JsonFields`] (so each span's fields are already a JSON object) and merged here,
/// innermost last; an event's own field wins over a span's of the same name.
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record bridged from `log` names its own target and level here, not "log".
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut own = JsonVisitor(Map::new());
        event.record(&mut own);
        let mut line = Map::new();
        line.insert("time".into(), crate::domain::ids::now_rfc3339().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(n) = NODE.get() {
            line.insert("node".into(), n.as_str().into());
        }
        line.insert(
            "message".into(),
            own.0.shift_remove("message").unwrap_or_else(|| "".into()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                    line.extend(map);
                }
            }
        }
        line.extend(own.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values: integers and booleans as such, everything else as text.
struct JsonVisitor(Map<String, Value>);

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        // `tracing-log` describes a bridged record's origin in `log.*` fields; the line already
        // names its target, and file and line numbers were never part of it.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_show_the_request_span_and_the_message_alone() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(
            Format::Text,
            EnvFilter::new("info"),
            move || out.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, || {
            let span =
                tracing::info_span!(target: REQUEST_SPAN_TARGET, "request", request_id = "abc-1");
            let _in = span.enter();
            tracing::info!(target: "quire::access", status = 201u16, code = "", "abc-1 POST /v1/schemas 201 3ms 127.0.0.1 554");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.trim_end().ends_with(
                " INFO request{request_id=abc-1}: quire::access: abc-1 POST /v1/schemas 201 3ms 127.0.0.1 554"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_lines_are_flat_with_the_enclosing_spans_fields_and_the_events_own() {
        let buf = Buf::default();
        let out = buf.clone();
        // `warn` leaves out the info-level request span: it is kept all the same.
        let sub = subscriber(
            Format::Json,
            EnvFilter::new("warn,quire::access=info"),
            move || out.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: REQUEST_SPAN_TARGET, "request", request_id = "req_0123456789abcdef");
            let _in = span.enter();
            tracing::warn!(target: "quire::engine", "pipeline p started");
            tracing::info!(target: "quire::access", status = 400u16, code = "bad_request", ms = 3u64, "a line");
            tracing::info!(target: "quire::engine", "filtered out");
        });
        tracing::subscriber::with_default(
            subscriber(
                Format::Json,
                EnvFilter::new("info"),
                {
                    let out = buf.clone();
                    move || out.clone()
                },
                false,
            ),
            || tracing::warn!("outside any request"),
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let keys: Vec<&str> = lines[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["time", "level", "target", "message", "request_id"]);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["target"], "quire::engine");
        assert_eq!(lines[0]["message"], "pipeline p started");
        assert_eq!(lines[0]["request_id"], "req_0123456789abcdef");
        assert_eq!(lines[1]["request_id"], "req_0123456789abcdef");
        assert_eq!(lines[1]["status"], 400);
        assert_eq!(lines[1]["code"], "bad_request");
        assert_eq!(lines[1]["ms"], 3);
        let keys: Vec<&str> = lines[1]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "time",
                "level",
                "target",
                "message",
                "request_id",
                "status",
                "code",
                "ms"
            ]
        );
        assert!(lines[2].get("request_id").is_none(), "{}", lines[2]);
        assert_eq!(lines[2]["level"], "WARN");
        assert_eq!(lines[2]["target"], "quire::logging::tests");
    }

    /// Work that hops to actix's blocking pool through `http::block` logs inside the request's
    /// span. (Events on another thread go to the global subscriber, so this test installs one;
    /// no other test in this binary does.)
    #[test]
    fn blocking_work_logs_inside_the_callers_span() {
        use tracing::Instrument;
        let buf = Buf::default();
        let out = buf.clone();
        // The filter names the event's target only: the request span is kept anyway.
        let sub = subscriber(
            Format::Json,
            EnvFilter::new("quire::blocking_test=info"),
            move || out.clone(),
            false,
        );
        tracing::subscriber::set_global_default(sub).expect("the only global subscriber");
        actix_web::rt::System::new().block_on(
            async {
                crate::http::block(|| tracing::info!(target: "quire::blocking_test", "inside"))
                    .await
                    .unwrap();
            }
            .instrument(
                tracing::info_span!(target: REQUEST_SPAN_TARGET, "request", request_id = "req_b"),
            ),
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["message"], "inside", "{text}");
        assert_eq!(line["request_id"], "req_b", "{text}");
    }
}
