//! Benchmark: delivering a backlog of `EVENTS` (default 100,000) events to a local receiver.
//!
//! The events are written to a temporary store, one endpoint subscribes to all of them, and
//! the real delivery worker fans them out, signs and sends each, and records every attempt
//! (SQLite, `synchronous=FULL`). Prints deliveries per second and the process's peak RSS.
//! The baseline, in the same run: the same number of HMAC-signed POSTs of the same bodies,
//! the same number in flight, from a bare reqwest client that records nothing.
//!
//! `cargo bench --bench webhooks` (env: `EVENTS`; `PER_ENDPOINT`, default 16 in flight).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use turnbridge::config::Webhooks;
use turnbridge::events::InvoiceStatusUpdated;
use turnbridge::store::deliveries::{self, Filter};
use turnbridge::store::{self, MessageState, Store, Timestamp};
use turnbridge::webhook::{deliver::Deliverer, outbound};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let per_endpoint: usize = std::env::var("PER_ENDPOINT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let received = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = received.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        count.fetch_add(1, Ordering::Relaxed);
                        async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let mut store = Store::open(&db).unwrap();
        outbound::add_endpoint(&mut store, &format!("http://{addr}/hook"), &["*".to_string()], None, None, true)
            .unwrap()
            .unwrap();
        let tx = store.transaction().unwrap();
        for i in 0..events {
            let event = InvoiceStatusUpdated {
                tenant_id: "bench".into(),
                invoice_no: format!("BM{i:08}"),
                message_type: "F0401".into(),
                status: MessageState::Acked,
                mof_code: None,
                message: Some("acknowledged".into()),
                evidence: "bench".into(),
                xml_path: None,
                import_id: "bench".into(),
            };
            store::events::add(&tx, &event).unwrap();
        }
        tx.commit().unwrap();

        let config = Webhooks {
            max_in_flight: 64,
            max_in_flight_per_endpoint: per_endpoint,
            poll_ms: 20,
            allow_private_networks: true,
            ..Webhooks::default()
        };
        let deliverer = Arc::new(Deliverer::new(Store::open(&db).unwrap(), config));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(deliverer.run(rx));
        let check = Store::open(&db).unwrap();
        loop {
            let done: u64 = store::gauges::deliveries_by_state(check.conn())
                .unwrap()
                .into_iter()
                .find(|d| d.state == deliveries::DeliveryState::Succeeded.as_str())
                .map_or(0, |d| d.count);
            if done as usize >= events {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(true);
        let _ = task.await;
        let since_ever = Timestamp::from_utc(chrono::DateTime::UNIX_EPOCH);
        let (attempts, _) = deliveries::attempts_since(&check, since_ever).unwrap();
        let rss = peak_rss_mib();
        println!(
            "{events} events delivered in {:.2} s = {:.0} deliveries/s ({per_endpoint} in flight to the endpoint; {attempts} attempts recorded, {} requests received); peak RSS {rss:.1} MiB",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64(),
            received.load(Ordering::Relaxed),
        );
        let base = baseline(&check, &format!("http://{addr}/hook"), per_endpoint).await;
        println!(
            "baseline: {events} signed POSTs from a bare client in {:.2} s = {:.0} requests/s ({:.1}x the deliverer)",
            base.as_secs_f64(),
            events as f64 / base.as_secs_f64(),
            elapsed.as_secs_f64() / base.as_secs_f64()
        );
    });
}

/// Sends every stored delivery body once, signed, `in_flight` at a time, recording nothing.
async fn baseline(store: &Store, url: &str, in_flight: usize) -> Duration {
    use hmac::{Hmac, KeyInit, Mac};
    let bodies: Vec<String> = deliveries::list(store, &Filter::default(), i64::MAX)
        .unwrap()
        .into_iter()
        .map(|d| d.payload.to_string())
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (bodies, next, client, url) = (
            bodies.clone(),
            next.clone(),
            client.clone(),
            url.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_baseline").unwrap();
                mac.update(body.as_bytes());
                let sig: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-turnbridge-signature", format!("sha256={sig}"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}
