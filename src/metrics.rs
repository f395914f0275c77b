//! Counters, gauges and one latency histogram, exposed in the Prometheus text format
//! (version 0.0.4) at `/metrics`.
//!
//! Counters live in one process-wide registry that any module can bump; gauges that describe
//! the store (messages by type and state) are read from SQLite at scrape time, so they are
//! never stale. Label values are low-cardinality by construction (routes, states, outcomes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// Every metric turnbridge exports: name, type, help.
const METRICS: &[(&str, &str, &str)] = &[
    (
        "turnbridge_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status code.",
    ),
    (
        "turnbridge_http_request_duration_seconds",
        "histogram",
        "Time to answer an HTTP request, by route.",
    ),
    (
        "turnbridge_http_connections",
        "gauge",
        "Connections the listener holds, by listener (main, monitor).",
    ),
    (
        "turnbridge_http_connections_closed_total",
        "counter",
        "Connections the listener closed or refused, by reason (header_timeout, idle_timeout, write_timeout, max_age, evicted, peer_cap, full).",
    ),
    (
        "turnbridge_signature_failures_total",
        "counter",
        "Requests refused for a missing or wrong signature or secret, by route.",
    ),
    (
        "turnbridge_stock_updates_total",
        "counter",
        "NextEngine stock callbacks, by outcome.",
    ),
    (
        "turnbridge_company_webhooks_total",
        "counter",
        "Company-system webhook pushes, by event type and outcome.",
    ),
    (
        "turnbridge_spool_files_total",
        "counter",
        "Spool files processed, by kind and outcome.",
    ),
    (
        "turnbridge_feedback_files_total",
        "counter",
        "Files read from Turnkey's folders, by kind.",
    ),
    (
        "turnbridge_messages",
        "gauge",
        "E-invoice messages in the store, by message type and state.",
    ),
    ("turnbridge_events_outbox", "gauge", "Events in the outbox."),
    (
        "turnbridge_nextengine_calls_total",
        "counter",
        "NextEngine API calls, by path and result.",
    ),
    (
        "webhook_delivery_attempts_total",
        "counter",
        "Outbound webhook attempts, by outcome (success, failure, error, gone).",
    ),
    (
        "webhook_dlq_total",
        "counter",
        "Outbound webhook deliveries that failed for good and went to the dead-letter queue.",
    ),
    (
        "webhook_delivery_latency_ms",
        "histogram",
        "Time from sending a webhook to its answer, in milliseconds.",
    ),
    (
        "webhook_delivery_success_rate",
        "gauge",
        "Share of webhook attempts in the last five minutes that succeeded.",
    ),
    (
        "webhook_deliveries",
        "gauge",
        "Outbound webhook deliveries in the store, by state.",
    ),
];

const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
const BUCKETS_MS: [f64; 9] = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0, 15000.0];

/// Seconds buckets, or millisecond buckets for a metric named `..._ms`.
fn buckets(name: &str) -> &'static [f64; 9] {
    if name.ends_with("_ms") {
        &BUCKETS_MS
    } else {
        &BUCKETS
    }
}

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The process-wide registry.
#[derive(Default)]
pub struct Registry(Mutex<Inner>);

pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Adds one to a counter.
pub fn inc(name: &'static str, l: &[(&str, &str)]) {
    let mut inner = global().0.lock().unwrap_or_else(|e| e.into_inner());
    *inner.counters.entry((name, labels(l))).or_default() += 1;
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, l: &[(&str, &str)], seconds: f64) {
    let mut inner = global().0.lock().unwrap_or_else(|e| e.into_inner());
    let h = inner.histograms.entry((name, labels(l))).or_default();
    for (i, b) in buckets(name).iter().enumerate() {
        if seconds <= *b {
            h.counts[i] += 1;
        }
    }
    h.sum += seconds;
    h.count += 1;
}

/// The current value of a counter (for tests and status).
pub fn counter(name: &str, l: &[(&str, &str)]) -> u64 {
    let inner = global().0.lock().unwrap_or_else(|e| e.into_inner());
    let want = labels(l);
    inner
        .counters
        .iter()
        .filter(|((n, ls), _)| *n == name && *ls == want)
        .map(|(_, v)| *v)
        .sum()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(ls: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = ls
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A gauge value computed at scrape time.
pub struct Gauge {
    pub name: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Renders every metric in the Prometheus text format.
pub fn render(gauges: &[Gauge]) -> String {
    let inner = global().0.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        match *kind {
            "counter" => {
                for ((n, ls), v) in &inner.counters {
                    if n == name {
                        let _ = writeln!(out, "{name}{} {v}", label_text(ls, None));
                    }
                }
            }
            "histogram" => {
                for ((n, ls), h) in &inner.histograms {
                    if n != name {
                        continue;
                    }
                    for (i, b) in buckets(name).iter().enumerate() {
                        let le = b.to_string();
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            label_text(ls, Some(("le", &le))),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        label_text(ls, Some(("le", "+Inf"))),
                        h.count
                    );
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(ls, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", label_text(ls, None), h.count);
                }
            }
            _ => {
                for g in gauges.iter().filter(|g| g.name == *name) {
                    let _ = writeln!(out, "{name}{} {}", label_text(&g.labels, None), g.value);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render() {
        inc("turnbridge_stock_updates_total", &[("outcome", "test\"q")]);
        observe(
            "turnbridge_http_request_duration_seconds",
            &[("route", "t")],
            0.003,
        );
        let text = render(&[Gauge {
            name: "turnbridge_events_outbox",
            labels: vec![],
            value: 3.0,
        }]);
        assert!(text.contains("turnbridge_stock_updates_total{outcome=\"test\\\"q\"} 1"));
        assert!(text.contains(
            "turnbridge_http_request_duration_seconds_bucket{route=\"t\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "turnbridge_http_request_duration_seconds_bucket{route=\"t\",le=\"0.001\"} 0"
        ));
        assert!(text.contains("turnbridge_events_outbox 3"));
    }
}
