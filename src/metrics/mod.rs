//! turnbridge's metrics, exposed in the Prometheus text format (version 0.0.4) at `/metrics`.
//!
//! Every metric is a typed handle in [`Metrics`], registered once under its name with the
//! `prometheus-client` crate, so the name a call site records into is the name exported.
//! Counters and histograms live in the process ([`get`]); gauges that describe the store and
//! the listeners are answered at scrape time ([`Live`]), so they are never stale. Label values
//! are closed sets or the store's own columns ([`labels`]): cardinality is bounded by the code.

pub mod labels;

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rusqlite::Connection;

use crate::listener::Close;
use crate::store::feedback::FeedbackKind;
use crate::store::gauges::{self, DeliveryCount};
use crate::store::{messages, MessageState, StoreError};
use labels::*;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Buckets (seconds) of HTTP request durations, up to the default request timeout (10 s).
const REQUEST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets (seconds) of webhook delivery latency: one at the 2 s of the P95 alert, and on past
/// the default timeout (15 s) to a minute.
const DELIVERY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The counters and histograms any module records into.
pub struct Metrics {
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub http_connections_closed: Family<CloseLabels, Counter>,
    pub signature_failures: Family<RouteLabels, Counter>,
    pub stock_updates: Family<StockLabels, Counter>,
    pub company_webhooks: Family<CompanyLabels, Counter>,
    pub spool_files: Family<SpoolLabels, Counter>,
    pub feedback_files: Family<FeedbackLabels, Counter>,
    pub nextengine_calls: Family<NeCallLabels, Counter>,
    pub webhook_attempts: Family<AttemptLabels, Counter>,
    pub webhook_dlq: Counter,
    pub webhook_delivery_latency: Histogram,
}

impl Metrics {
    /// New handles, each registered in `registry` under its name (counters get `_total`
    /// added when exported).
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(request_histogram),
            http_connections_closed: Family::default(),
            signature_failures: Family::default(),
            stock_updates: Family::default(),
            company_webhooks: Family::default(),
            spool_files: Family::default(),
            feedback_files: Family::default(),
            nextengine_calls: Family::default(),
            webhook_attempts: Family::default(),
            webhook_dlq: Counter::default(),
            webhook_delivery_latency: Histogram::new(DELIVERY_BUCKETS),
        };
        let r = registry;
        r.register(
            "turnbridge_http_requests",
            "HTTP requests answered, by route and status code",
            m.http_requests.clone(),
        );
        r.register(
            "turnbridge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            m.http_request_duration.clone(),
        );
        r.register(
            "turnbridge_http_connections_closed",
            "Connections the listener closed or refused, by reason (header_timeout, idle_timeout, write_timeout, max_age, evicted, peer_cap, full)",
            m.http_connections_closed.clone(),
        );
        r.register(
            "turnbridge_signature_failures",
            "Requests refused for a missing or wrong signature or secret, by route",
            m.signature_failures.clone(),
        );
        r.register(
            "turnbridge_stock_updates",
            "NextEngine stock callbacks, by outcome",
            m.stock_updates.clone(),
        );
        r.register(
            "turnbridge_company_webhooks",
            "Company-system webhook pushes, by event type and outcome",
            m.company_webhooks.clone(),
        );
        r.register(
            "turnbridge_spool_files",
            "Spool files processed, by kind and outcome",
            m.spool_files.clone(),
        );
        r.register(
            "turnbridge_feedback_files",
            "Files read from Turnkey's folders, by kind",
            m.feedback_files.clone(),
        );
        r.register(
            "turnbridge_nextengine_calls",
            "NextEngine API calls, by path and result",
            m.nextengine_calls.clone(),
        );
        r.register(
            "webhook_delivery_attempts",
            "Outbound webhook attempts, by outcome (success, failure, error, gone)",
            m.webhook_attempts.clone(),
        );
        r.register(
            "webhook_dlq",
            "Outbound webhook deliveries that failed for good and went to the dead-letter queue",
            m.webhook_dlq.clone(),
        );
        r.register(
            "webhook_delivery_latency_seconds",
            "Time from sending a webhook to its answer (or its failure), in seconds",
            m.webhook_delivery_latency.clone(),
        );
        m
    }

    /// An answered HTTP request and how long it took.
    pub fn http_request(&self, route: Route, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.http_request_duration
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// A connection the listener closed or refused.
    pub fn connection_closed(&self, reason: Close) {
        self.http_connections_closed
            .get_or_create(&CloseLabels { reason })
            .inc();
    }

    /// A request refused for its signature or secret.
    pub fn signature_failure(&self, route: Route) {
        self.signature_failures
            .get_or_create(&RouteLabels { route })
            .inc();
    }

    /// Requests on `route` refused for their signature or secret since start.
    pub fn signature_failures_on(&self, route: Route) -> u64 {
        self.signature_failures
            .get(&RouteLabels { route })
            .map_or(0, |c| c.get())
    }

    /// A NextEngine stock callback.
    pub fn stock_update(&self, outcome: StockOutcome) {
        self.stock_updates
            .get_or_create(&StockLabels { outcome })
            .inc();
    }

    /// A company-system webhook push.
    pub fn company_webhook(&self, r#type: CompanyEventType, outcome: CompanyOutcome) {
        self.company_webhooks
            .get_or_create(&CompanyLabels { r#type, outcome })
            .inc();
    }

    /// A spool file processed.
    pub fn spool_file(&self, kind: SpoolKind, outcome: SpoolOutcome) {
        self.spool_files
            .get_or_create(&SpoolLabels { kind, outcome })
            .inc();
    }

    /// A file read from Turnkey's folders, of the kind its record names.
    pub fn feedback_file(&self, kind: FeedbackKind) {
        self.feedback_files
            .get_or_create(&FeedbackLabels { kind })
            .inc();
    }

    /// A NextEngine API call to `path` (one the code names).
    pub fn nextengine_call(&self, path: &'static str, result: NeResult) {
        self.nextengine_calls
            .get_or_create(&NeCallLabels { path, result })
            .inc();
    }

    /// An outbound webhook attempt and how long its answer (or failure) took.
    pub fn webhook_attempt(&self, outcome: AttemptOutcome, took: Duration) {
        self.webhook_attempts
            .get_or_create(&AttemptLabels { outcome })
            .inc();
        self.webhook_delivery_latency.observe(took.as_secs_f64());
    }

    /// A delivery that failed for good and went to the dead-letter queue.
    pub fn dead_letter(&self) {
        self.webhook_dlq.inc();
    }
}

struct Global {
    metrics: Metrics,
    registry: Registry,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        Global { metrics, registry }
    })
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &global().metrics
}

/// What the store holds, read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreGauges {
    /// Messages by type and state, and how many.
    pub messages: Vec<(String, MessageState, i64)>,
    pub deliveries: Vec<DeliveryCount>,
    /// Events not yet delivered ([`gauges::outbox_waiting`]).
    pub outbox: u64,
    /// Share of webhook attempts in the last five minutes that succeeded.
    pub success_rate: f64,
}

impl StoreGauges {
    /// Reads them on `conn` (blocking: call it off the async threads).
    pub fn read(conn: &Connection) -> Result<StoreGauges, StoreError> {
        Ok(StoreGauges {
            messages: messages::count_by_type_and_state(conn)?,
            deliveries: gauges::deliveries_by_state(conn)?,
            outbox: gauges::outbox_waiting(conn)?,
            success_rate: crate::webhook::deliver::success_rate(conn)?,
        })
    }
}

/// The gauges answered at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// What the store holds; `None` when it could not be read, and its gauges are left out
    /// rather than shown as zero.
    pub store: Option<StoreGauges>,
    /// Connections each listener holds.
    pub connections: Vec<(Listener, usize)>,
}

impl Live {
    /// A registry of this scrape's gauges, each registered here once under its name.
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let connections = Family::<ListenerLabels, Gauge>::default();
        for (listener, n) in &self.connections {
            connections
                .get_or_create(&ListenerLabels {
                    listener: *listener,
                })
                .set(*n as i64);
        }
        r.register(
            "turnbridge_http_connections",
            "Connections the listener holds, by listener (main, monitor)",
            connections,
        );
        let Some(store) = &self.store else {
            return r;
        };
        let messages = Family::<MessageLabels, Gauge>::default();
        for (message_type, state, n) in &store.messages {
            let labels = MessageLabels {
                message_type: message_type.clone(),
                state: *state,
            };
            messages.get_or_create(&labels).set(*n);
        }
        r.register(
            "turnbridge_messages",
            "E-invoice messages in the store, by message type and state",
            messages,
        );
        let outbox = Gauge::<i64>::default();
        outbox.set(store.outbox as i64);
        r.register(
            "turnbridge_events_outbox",
            "Events in the outbox not yet delivered: not yet fanned out to the subscribed endpoints, or with a delivery still pending (dead letters are in webhook_deliveries{state=\"dead\"})",
            outbox,
        );
        let rate = Gauge::<f64, AtomicU64>::default();
        rate.set(store.success_rate);
        r.register(
            "webhook_delivery_success_rate",
            "Share of webhook attempts in the last five minutes that succeeded",
            rate,
        );
        let deliveries = Family::<DeliveryLabels, Gauge>::default();
        for d in &store.deliveries {
            deliveries
                .get_or_create(&DeliveryLabels {
                    state: d.state.clone(),
                })
                .set(d.count as i64);
        }
        r.register(
            "webhook_deliveries",
            "Outbound webhook deliveries in the store, by state",
            deliveries,
        );
        r
    }
}

/// Every metric in `registry` and `live`, in the Prometheus text format.
fn encode(registry: &Registry, live: &Live) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_text::encode(&mut out, registry).expect("text into a String");
    prometheus_text::encode(&mut out, &live.registry()).expect("text into a String");
    out
}

/// Every metric turnbridge exports, with `live`'s gauges, in the Prometheus text format.
pub fn render(live: &Live) -> String {
    encode(&global().registry, live)
}

#[cfg(test)]
mod tests;
