//! `/metrics` against the real daemon: the webhook delivery latency histogram is exported
//! under the name it is recorded with, in seconds, with buckets past the 2 s of the alert;
//! the outbox gauge counts the events still waiting to be delivered, not every event written.

use crate::common::*;

const ADMIN: &str = "metrics-test-admin-token";

fn sandbox(schedule: &str, timeout_ms: u64) -> Sandbox {
    let tail = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN}\"\n\
         [webhooks]\nallow_private_networks = true\nretry_schedule_ms = {schedule}\ntimeout_ms = {timeout_ms}\npoll_ms = 20\n"
    );
    let mut sb = Sandbox::with_sections("", &tail);
    sb.start();
    sb
}

/// The value of the sample `series` (its name and labels exactly as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn scrape(sb: &Sandbox) -> String {
    let r = http_get(sb.http_addr(), "/metrics", &[]);
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn a_three_second_delivery_is_exported_in_the_latency_histogram_above_two_seconds() {
    let rx = Receiver::start(200);
    rx.delay_ms.store(3000, std::sync::atomic::Ordering::SeqCst);
    let sb = sandbox("[0, 60000]", 10_000);
    register_webhook(
        sb.http_addr(),
        ADMIN,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("LT", 1, 1).as_bytes());
    let count = "webhook_delivery_latency_seconds_count";
    wait_for(30, "the slow delivery recorded", || {
        sample(&scrape(&sb), count) == Some(1.0)
    });
    let text = scrape(&sb);
    let bucket = |le: &str| {
        sample(
            &text,
            &format!("webhook_delivery_latency_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("2"), Some(0.0), "{text}");
    assert_eq!(bucket("5"), Some(1.0), "{text}");
    let sum = sample(&text, "webhook_delivery_latency_seconds_sum").unwrap();
    assert!((3.0..5.0).contains(&sum), "{text}");
    assert_eq!(
        sample(
            &text,
            "webhook_delivery_attempts_total{outcome=\"success\"}"
        ),
        Some(1.0),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn the_outbox_gauge_counts_an_event_while_its_delivery_is_pending_and_zero_once_delivered() {
    let rx = Receiver::start(500);
    // Retries every 300 ms for about ten seconds: pending, not dead, while the test looks.
    let schedule = format!("[0{}]", ", 300".repeat(30));
    let sb = sandbox(&schedule, 2000);
    register_webhook(
        sb.http_addr(),
        ADMIN,
        &format!("http://{}/hook", rx.addr),
        &["upload.completed"],
        None,
    );
    sb.drop_file("b.csv", batch_csv("OB", 1, 2).as_bytes());
    wait_for(20, "a failed attempt", || !rx.received().is_empty());
    // The batch's other events (its invoices queued) go to no endpoint: fanned out, done.
    wait_for(20, "one event waiting", || {
        let text = scrape(&sb);
        sample(&text, "turnbridge_events_outbox") == Some(1.0)
            && sample(&text, "webhook_deliveries{state=\"pending\"}") == Some(1.0)
    });
    promtool_check(&scrape(&sb));

    rx.set_status(200);
    wait_for(20, "the delivery done and the outbox empty", || {
        let text = scrape(&sb);
        sample(&text, "webhook_deliveries{state=\"succeeded\"}") == Some(1.0)
            && sample(&text, "turnbridge_events_outbox") == Some(0.0)
    });
    let text = scrape(&sb);
    assert_eq!(
        sample(&text, "webhook_deliveries{state=\"pending\"}"),
        None,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "webhook_delivery_attempts_total{outcome=\"failure\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
}
