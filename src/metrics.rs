//! Prometheus metrics, kept in process and rendered as text at `GET /metrics`.
//!
//! Labels are closed sets (route templates, methods, statuses, phase types, decision actions):
//! no organization, pipeline, document or key ever becomes a label, so the series count stays
//! bounded and a scrape leaks nothing about tenants. Labels are `&'static str` so that nothing a
//! client sent (a custom method, an unknown path) can be stored as one: a request without a key
//! must not be able to grow this process's memory.

use crate::domain::rail::PhaseType;
use crate::store::pipelines::Gauges;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds of request latency, from a cached read to a large rerun.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds in seconds of one phase for one document: most take microseconds.
const PHASE_BUCKETS: [f64; 14] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.005,
    0.025,
    0.1,
    1.0,
];

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with(&BUCKETS)
    }
}

impl Histogram {
    fn with(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.sum += s;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct RouteStats {
    /// (method, status, count); a route sees only a handful of pairs.
    answers: Vec<(&'static str, u16, u64)>,
    /// Latency by (method, status class).
    latency: Vec<(&'static str, &'static str, Histogram)>,
}

/// `2xx` … `5xx`: a closed set, unlike the status itself.
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The methods that get a label of their own; any other method string a client sends is `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// The label for a request method: one of [`METHODS`] or `OTHER`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

#[derive(Default)]
pub struct Metrics {
    /// Per route template: answers by (method, status), and latency.
    routes: Mutex<BTreeMap<&'static str, RouteStats>>,
    phases: Mutex<BTreeMap<&'static str, Histogram>>,
    versions: AtomicU64,
    verdicts: AtomicU64,
    documents_finished: AtomicU64,
    reruns: AtomicU64,
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicU64,
    commit_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Per model: calls by outcome, tokens in and out, and call latency.
    model_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    model_tokens: Mutex<BTreeMap<(String, &'static str), u64>>,
    model_latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Called for every request: one lock, and no allocation once the route and its
    /// (method, status) pair have been seen. `route` is a template of the route table (or the
    /// one value for unmatched requests), never a path.
    pub fn request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        let mut routes = self.routes.lock();
        let stats = routes.entry(route).or_default();
        match stats
            .answers
            .iter_mut()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some(a) => a.2 += 1,
            None => stats.answers.push((method, status, 1)),
        }
        let class = status_class(status);
        match stats
            .latency
            .iter_mut()
            .find(|(m, c, _)| *m == method && *c == class)
        {
            Some(l) => l.2.observe(took),
            None => {
                let mut h = Histogram::default();
                h.observe(took);
                stats.latency.push((method, class, h));
            }
        }
    }

    pub fn phase(&self, kind: PhaseType, took: Duration) {
        self.phases
            .lock()
            .entry(kind.as_str())
            .or_insert_with(|| Histogram::with(&PHASE_BUCKETS))
            .observe(took);
    }

    /// What one writer commit made durable.
    pub fn committed(&self, documents_finished: u64, versions: u64, verdicts: u64) {
        self.documents_finished
            .fetch_add(documents_finished, Ordering::Relaxed);
        self.versions.fetch_add(versions, Ordering::Relaxed);
        self.verdicts.fetch_add(verdicts, Ordering::Relaxed);
    }

    /// A writer commit that rolled back: `storage` (full, read-only), `busy`, or `other`.
    pub fn commit_failed(&self, reason: &'static str) {
        *self.commit_failures.lock().entry(reason).or_default() += 1;
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    /// One HTTP call to a model server and how it ended.
    pub fn model_call(
        &self,
        model: &str,
        outcome: &'static str,
        tokens_in: u64,
        tokens_out: u64,
        took: Duration,
    ) {
        *self
            .model_calls
            .lock()
            .entry((model.to_string(), outcome))
            .or_default() += 1;
        let mut tokens = self.model_tokens.lock();
        *tokens.entry((model.to_string(), "in")).or_default() += tokens_in;
        *tokens.entry((model.to_string(), "out")).or_default() += tokens_out;
        drop(tokens);
        self.model_latency
            .lock()
            .entry(model.to_string())
            .or_default()
            .observe(took);
    }

    pub fn rerun(&self) {
        self.reruns.fetch_add(1, Ordering::Relaxed);
    }

    pub fn decision(&self, action: &'static str) {
        *self.decisions.lock().entry(action).or_default() += 1;
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        out.push_str("# HELP quire_http_requests_total HTTP requests answered, by route template, method and status.\n# TYPE quire_http_requests_total counter\n");
        let routes = self.routes.lock();
        for (route, stats) in routes.iter() {
            let mut answers = stats.answers.clone();
            answers.sort();
            for (method, status, n) in answers {
                let _ = writeln!(
                    out,
                    "quire_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP quire_http_request_duration_seconds Time to answer, by route template, method and status class.\n# TYPE quire_http_request_duration_seconds histogram\n");
        for (route, stats) in routes.iter() {
            let mut latency: Vec<_> = stats.latency.iter().collect();
            latency.sort_by_key(|(m, c, _)| (*m, *c));
            for (method, class, h) in latency {
                h.render(
                    &mut out,
                    "quire_http_request_duration_seconds",
                    &format!(
                        "route=\"{}\",method=\"{method}\",status_class=\"{class}\"",
                        escape(route)
                    ),
                );
            }
        }
        drop(routes);
        out.push_str("# HELP quire_phase_duration_seconds Computation time of one phase for one document, by phase type.\n# TYPE quire_phase_duration_seconds histogram\n");
        for (kind, h) in self.phases.lock().iter() {
            h.render(
                &mut out,
                "quire_phase_duration_seconds",
                &format!("phase=\"{kind}\""),
            );
        }
        out.push_str(
            "# HELP quire_documents Pipeline documents by status.\n# TYPE quire_documents gauge\n",
        );
        for (status, n) in &gauges.documents {
            let _ = writeln!(out, "quire_documents{{status=\"{}\"}} {n}", escape(status));
        }
        let queued = gauges
            .documents
            .iter()
            .filter(|(s, _)| s == "queued")
            .map(|(_, n)| n)
            .sum::<i64>();
        let _ = writeln!(out, "# HELP quire_executor_queue_depth Documents waiting to be claimed.\n# TYPE quire_executor_queue_depth gauge\nquire_executor_queue_depth {queued}");
        let _ = writeln!(out, "# HELP quire_executor_in_flight Documents claimed by the executor and not yet committed.\n# TYPE quire_executor_in_flight gauge\nquire_executor_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP quire_review_queue_fields Fields waiting for a reviewer.\n# TYPE quire_review_queue_fields gauge\nquire_review_queue_fields {}", gauges.review_queue);
        out.push_str("# HELP quire_webhook_deliveries Webhook deliveries kept (within retention), by status.\n# TYPE quire_webhook_deliveries gauge\n");
        for status in ["pending", "delivered", "failed"] {
            let n: i64 = gauges
                .webhook_deliveries
                .iter()
                .filter(|(s, _)| s == status)
                .map(|(_, n)| n)
                .sum();
            let _ = writeln!(out, "quire_webhook_deliveries{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP quire_build_info The running build.\n# TYPE quire_build_info gauge\nquire_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        render_process(&mut out);
        counter(
            &mut out,
            "quire_documents_finished_total",
            "Document runs committed by the executor.",
            self.documents_finished.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quire_cell_versions_written_total",
            "Cell versions written by the executor.",
            self.versions.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quire_verdicts_written_total",
            "Gate verdicts written by the executor.",
            self.verdicts.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "quire_reruns_total",
            "Reruns accepted (dry runs excluded).",
            self.reruns.load(Ordering::Relaxed),
        );
        out.push_str("# HELP quire_model_calls_total Calls to model servers, by model and outcome.\n# TYPE quire_model_calls_total counter\n");
        for ((model, outcome), n) in self.model_calls.lock().iter() {
            let _ = writeln!(
                out,
                "quire_model_calls_total{{model=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(model)
            );
        }
        out.push_str("# HELP quire_model_tokens_total Tokens sent to (in) and received from (out) model servers.\n# TYPE quire_model_tokens_total counter\n");
        for ((model, dir), n) in self.model_tokens.lock().iter() {
            let _ = writeln!(
                out,
                "quire_model_tokens_total{{model=\"{}\",direction=\"{dir}\"}} {n}",
                escape(model)
            );
        }
        out.push_str("# HELP quire_model_call_duration_seconds Time of one call to a model server.\n# TYPE quire_model_call_duration_seconds histogram\n");
        for (model, h) in self.model_latency.lock().iter() {
            h.render(
                &mut out,
                "quire_model_call_duration_seconds",
                &format!("model=\"{}\"", escape(model)),
            );
        }
        out.push_str("# HELP quire_executor_commit_failures_total Executor commits rolled back, by reason; their results are kept or requeued.\n# TYPE quire_executor_commit_failures_total counter\n");
        for (reason, n) in self.commit_failures.lock().iter() {
            let _ = writeln!(
                out,
                "quire_executor_commit_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP quire_review_decisions_total Reviewer decisions recorded, by action.\n# TYPE quire_review_decisions_total counter\n");
        for (action, n) in self.decisions.lock().iter() {
            let _ = writeln!(
                out,
                "quire_review_decisions_total{{action=\"{}\"}} {n}",
                escape(action)
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process metrics every Prometheus client exports, read from `/proc/self` (nothing is
/// written where `/proc` is missing).
fn render_process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime: fields 14, 15 of stat (index 11, 12 after the name); starttime 22; rss 24.
    let cpu = (num(11) + num(12)) / ticks;
    let rss = num(21) * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    let start = boot + num(19) / ticks;
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total CPU time of the process.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
    );
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
    );
    let _ = writeln!(
        out,
        "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {fds}"
    );
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time, in seconds since the epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}"
    );
}

/// This node among the nodes sharing the database. The other gauges about stored data (runs,
/// documents, deliveries) read the shared database and so say the same on every node; the
/// counters are this process's own.
pub fn render_node(out: &mut String, node: &crate::node::Node, live_nodes: i64) {
    let _ = writeln!(
        out,
        "# HELP quire_node_info The id this node claims work under.\n# TYPE quire_node_info gauge\nquire_node_info{{node=\"{}\",name=\"{}\"}} 1",
        escape(&node.id()),
        escape(&node.name)
    );
    let _ = writeln!(
        out,
        "# HELP quire_node_lease_remaining_seconds How long this node's claims outlive it without another heartbeat.\n# TYPE quire_node_lease_remaining_seconds gauge\nquire_node_lease_remaining_seconds {:.3}",
        node.lease_left().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP quire_nodes_live Nodes registered on the database with a lease not run out.\n# TYPE quire_nodes_live gauge\nquire_nodes_live {live_nodes}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_render() {
        let m = Metrics::default();
        m.request("/v1/x/{id}", "GET", 200, Duration::from_millis(2));
        m.request("/v1/x/{id}", "GET", 200, Duration::from_millis(700));
        m.decision("approve");
        m.committed(3, 84, 60);
        let text = m.render(&Gauges {
            documents: vec![("queued".into(), 5), ("completed".into(), 2)],
            review_queue: 1,
            webhook_deliveries: vec![("failed".into(), 4)],
        });
        assert!(text.contains("quire_webhook_deliveries{status=\"failed\"} 4"));
        assert!(text.contains("quire_webhook_deliveries{status=\"pending\"} 0"));
        assert!(text.contains(
            "quire_http_requests_total{route=\"/v1/x/{id}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "quire_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",method=\"GET\",status_class=\"2xx\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains(
            "quire_http_request_duration_seconds_bucket{route=\"/v1/x/{id}\",method=\"GET\",status_class=\"2xx\",le=\"1\"} 2"
        ));
        assert!(text.contains("quire_executor_queue_depth 5"));
        assert!(text.contains("quire_cell_versions_written_total 84"));
        assert!(text.contains("quire_review_decisions_total{action=\"approve\"} 1"));
    }

    #[test]
    fn phase_buckets_tell_microseconds_apart() {
        let m = Metrics::default();
        m.phase(PhaseType::Extraction, Duration::from_micros(3));
        m.phase(PhaseType::Extraction, Duration::from_micros(40));
        let text = m.render(&Gauges::default());
        assert!(
            text.contains(
                "quire_phase_duration_seconds_bucket{phase=\"extraction\",le=\"0.0000025\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "quire_phase_duration_seconds_bucket{phase=\"extraction\",le=\"0.000005\"} 1"
        ));
        assert!(text.contains(
            "quire_phase_duration_seconds_bucket{phase=\"extraction\",le=\"0.00005\"} 2"
        ));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("patch"), "OTHER");
        assert_eq!(method_label(&"X".repeat(15_000)), "OTHER");
    }
}
