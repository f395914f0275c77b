use super::*;
use crate::store::JobState;

/// Handles in a registry of their own (the process-wide one is shared by every test).
fn fresh() -> (Metrics, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    (metrics, registry)
}

/// The value of the sample line `series` (name and labels as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn a_three_second_delivery_lands_above_the_two_second_bucket_of_the_exported_histogram() {
    let (m, registry) = fresh();
    m.webhook_attempt(AttemptOutcome::Success, Duration::from_secs(3));
    m.webhook_attempt(AttemptOutcome::Success, Duration::from_millis(40));
    let text = encode(&registry, &Live::default());
    assert!(
        text.contains("# TYPE webhook_delivery_latency_seconds histogram\n"),
        "{text}"
    );
    let bucket = |le: &str| {
        sample(
            &text,
            &format!("webhook_delivery_latency_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("0.05"), Some(1.0), "{text}");
    assert_eq!(bucket("2"), Some(1.0), "{text}");
    assert_eq!(bucket("5"), Some(2.0), "{text}");
    assert_eq!(bucket("+Inf"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "webhook_delivery_latency_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "webhook_delivery_attempts_total{outcome=\"success\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // Nothing of the old millisecond histogram is left.
    assert!(!text.contains("latency_ms"), "{text}");
}

#[test]
fn counters_are_exported_with_total_and_typed_labels() {
    let (m, registry) = fresh();
    m.stock_update(StockOutcome::ConnectionCheck);
    m.stock_update(StockOutcome::ConnectionCheck);
    m.company_webhook(
        CompanyEventType::of("order.created"),
        CompanyOutcome::Stored,
    );
    m.company_webhook(CompanyEventType::of("no.such"), CompanyOutcome::Invalid);
    m.signature_failure(Route::CompanyWebhook);
    m.connection_closed(Close::PeerCap);
    m.spool_file(SpoolKind::Einvoice, SpoolOutcome::Job(JobState::Duplicate));
    m.spool_file(SpoolKind::Einvoice, SpoolOutcome::Retry);
    m.feedback_file(FeedbackKind::Summary);
    m.nextengine_call("/api_v1_login_user/info", NeResult::of_answer("redirect"));
    m.dead_letter();
    m.http_request(Route::Healthz, 200, Duration::from_millis(3));
    let text = encode(&registry, &Live::default());
    for (series, want) in [
        (
            "turnbridge_stock_updates_total{outcome=\"connection_check\"}",
            2.0,
        ),
        (
            "turnbridge_company_webhooks_total{type=\"order.created\",outcome=\"stored\"}",
            1.0,
        ),
        (
            "turnbridge_company_webhooks_total{type=\"unknown\",outcome=\"invalid\"}",
            1.0,
        ),
        (
            "turnbridge_signature_failures_total{route=\"company_webhook\"}",
            1.0,
        ),
        (
            "turnbridge_http_connections_closed_total{reason=\"peer_cap\"}",
            1.0,
        ),
        (
            "turnbridge_spool_files_total{kind=\"einvoice\",outcome=\"duplicate\"}",
            1.0,
        ),
        (
            "turnbridge_spool_files_total{kind=\"einvoice\",outcome=\"retry\"}",
            1.0,
        ),
        ("turnbridge_feedback_files_total{kind=\"summary\"}", 1.0),
        (
            "turnbridge_nextengine_calls_total{path=\"/api_v1_login_user/info\",result=\"redirect\"}",
            1.0,
        ),
        ("webhook_dlq_total", 1.0),
        (
            "turnbridge_http_requests_total{route=\"healthz\",status=\"200\"}",
            1.0,
        ),
        (
            "turnbridge_http_request_duration_seconds_bucket{route=\"healthz\",le=\"0.001\"}",
            0.0,
        ),
        (
            "turnbridge_http_request_duration_seconds_bucket{route=\"healthz\",le=\"0.005\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
    assert!(text.contains("# TYPE turnbridge_stock_updates_total counter\n"));
    assert_eq!(m.signature_failures_on(Route::CompanyWebhook), 1);
    assert_eq!(m.signature_failures_on(Route::Updatestock), 0);
}

#[test]
fn a_label_read_from_the_store_is_escaped() {
    let (_m, registry) = fresh();
    let live = Live {
        store: Some(StoreGauges {
            messages: vec![("odd\"type\\".into(), MessageState::Error, 1)],
            deliveries: vec![],
            outbox: 0,
            success_rate: 1.0,
        }),
        connections: vec![],
    };
    let text = encode(&registry, &live);
    assert_eq!(
        sample(
            &text,
            "turnbridge_messages{message_type=\"odd\\\"type\\\\\",state=\"error\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn store_gauges_are_answered_from_the_scrape_and_left_out_when_unread() {
    let (_m, registry) = fresh();
    let live = Live {
        store: Some(StoreGauges {
            messages: vec![("F0401".into(), MessageState::Queued, 4)],
            deliveries: vec![DeliveryCount {
                state: "pending".into(),
                count: 2,
            }],
            outbox: 1,
            success_rate: 0.5,
        }),
        connections: vec![(Listener::Main, 3), (Listener::Monitor, 0)],
    };
    let text = encode(&registry, &live);
    for (series, want) in [
        (
            "turnbridge_messages{message_type=\"F0401\",state=\"queued\"}",
            4.0,
        ),
        ("webhook_deliveries{state=\"pending\"}", 2.0),
        ("turnbridge_events_outbox", 1.0),
        ("webhook_delivery_success_rate", 0.5),
        ("turnbridge_http_connections{listener=\"main\"}", 3.0),
        ("turnbridge_http_connections{listener=\"monitor\"}", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }

    let unread = Live {
        store: None,
        ..live
    };
    let text = encode(&registry, &unread);
    assert!(!text.contains("turnbridge_events_outbox"), "{text}");
    assert!(!text.contains("turnbridge_messages"), "{text}");
    assert_eq!(
        sample(&text, "turnbridge_http_connections{listener=\"main\"}"),
        Some(3.0)
    );
}

#[test]
fn every_closed_label_value_is_snake_case() {
    let values: Vec<&str> = Route::ALL
        .iter()
        .map(|v| v.as_str())
        .chain(Listener::ALL.iter().map(|v| v.as_str()))
        .chain(StockOutcome::ALL.iter().map(|v| v.as_str()))
        .chain(CompanyOutcome::ALL.iter().map(|v| v.as_str()))
        .chain(SpoolKind::ALL.iter().map(|v| v.as_str()))
        .chain(NeResult::ALL.iter().map(|v| v.as_str()))
        .chain(AttemptOutcome::ALL.iter().map(|v| v.as_str()))
        .collect();
    for v in values {
        assert!(
            !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{v}"
        );
    }
}
