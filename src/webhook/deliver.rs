//! The delivery worker: fans new events out, sends every due attempt, records it, and
//! schedules the next one or moves the delivery to the dead-letter queue.
//!
//! Schedules live in the store (`deliveries.next_attempt_at`), so a restart neither forgets
//! nor repeats an attempt before it is due. 2xx is success; anything else (a redirect is not
//! followed), a timeout or a refused connection is a failure with its status and error
//! recorded. 410 Gone disables the endpoint. 429 and 503 with `Retry-After` wait that long,
//! within [the scheduled delay, twice it]. At most `max_in_flight` attempts run at once, and
//! at most `max_in_flight_per_endpoint` to one endpoint, so a slow receiver holds back only
//! its own deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn, Instrument};

use crate::config::Webhooks;
use crate::metrics::{self, labels::AttemptOutcome};
use crate::store::deliveries::{self, DeliveryState, Due, Outcome, Trigger};
use crate::store::{self, endpoints, Store, StoreError, Timestamp};
use crate::webhook::outbound;
use crate::webhook::policy::{self, PolicyResolver};

/// What came back from one attempt.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    response: Option<String>,
    retry_after: Option<Duration>,
    elapsed: Duration,
}

pub struct Deliverer {
    db: store::Shared,
    config: Arc<Mutex<Webhooks>>,
    client: reqwest::Client,
    /// `webhooks.allow_private_networks`, shared with the client's resolver.
    allow_private: Arc<AtomicBool>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    per_endpoint: Arc<Mutex<HashMap<String, usize>>>,
    slots: Arc<Semaphore>,
    /// Rung when an attempt finishes, so a freed slot is refilled at once, not at the next
    /// poll.
    freed: Arc<tokio::sync::Notify>,
}

fn at_ms_from_now(ms: u64) -> Timestamp {
    Timestamp::now().plus(chrono::Duration::milliseconds(ms as i64))
}

/// Why an endpoint that answered 410 is off, and its other deliveries dead.
const GONE: &str = "the receiver answered 410 Gone";
const GONE_DEAD: &str = "endpoint disabled: 410 Gone";

impl Deliverer {
    pub fn new(store: Store, config: Webhooks) -> Deliverer {
        let allow_private = Arc::new(AtomicBool::new(config.allow_private_networks));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the target itself, past the address policy.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                allow_private: allow_private.clone(),
            }))
            .user_agent(concat!("turnbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        Deliverer {
            allow_private,
            db: store::Shared::new(store),
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            config: Arc::new(Mutex::new(config)),
            client,
            in_flight: Arc::default(),
            per_endpoint: Arc::default(),
            freed: Arc::default(),
        }
    }

    /// Applies a reloaded `[webhooks]` section (the in-flight cap applies after a restart).
    pub fn reload(&self, config: Webhooks) {
        self.allow_private
            .store(config.allow_private_networks, Ordering::Relaxed);
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn cfg(&self) -> Webhooks {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.run(f).await
    }

    /// Runs until `shutdown` turns true, then waits for attempts in flight (bounded by the
    /// request timeout).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Dead letters outlive a restart, and so does the problem they are.
        let dead = self
            .with_db(|db| deliveries::dead_by_endpoint(db))
            .await
            .unwrap_or_default();
        for (endpoint, n) in dead {
            crate::health::set(
                &format!("webhooks {endpoint}"),
                format!("{n} delivery(ies) in the dead-letter queue (turnbridge dlq list)"),
            );
        }
        loop {
            let cfg = self.cfg();
            if let Err(e) = self.with_db(|db| outbound::fan_out(db, 500)).await {
                error!("webhook fan-out failed: {e}");
            }
            if let Err(e) = self.dispatch_due(&cfg).await {
                error!("webhook dispatch failed: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(cfg.poll_ms)) => {}
                _ = self.freed.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        let total = self.cfg().max_in_flight as u32;
        let _ = tokio::time::timeout(
            Duration::from_millis(self.cfg().timeout_ms + 1000),
            self.slots.acquire_many(total),
        )
        .await;
    }

    async fn dispatch_due(self: &Arc<Self>, cfg: &Webhooks) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let limit = (cfg.max_in_flight * 2) as i64;
        // Each endpoint contributes at most its own cap, so one endpoint's backlog never
        // fills the window and holds back the others.
        let per_endpoint = cfg.max_in_flight_per_endpoint as i64;
        // Deliveries in flight are left out here, on the store's thread: an attempt records
        // its outcome there before it leaves `in_flight`, so a delivery is never seen both
        // still pending and no longer in flight (which would send it twice).
        let in_flight = self.in_flight.clone();
        let due: Vec<Due> = self
            .with_db(move |db| {
                let mut due = Vec::new();
                for endpoint in endpoints::enabled(db)? {
                    let rows = deliveries::due_of(db, &endpoint, now, per_endpoint)?;
                    let busy = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    due.extend(rows.into_iter().filter(|d| !busy.contains(&d.id)));
                }
                due.sort_by_key(|d| (d.next_attempt_at, d.created_at));
                due.truncate(limit as usize);
                Ok(due)
            })
            .await?;
        for d in due {
            if self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&d.id)
            {
                continue;
            }
            {
                let mut per = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
                let n = per.entry(d.endpoint_id.clone()).or_default();
                if *n >= cfg.max_in_flight_per_endpoint {
                    continue;
                }
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                *n += 1;
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(d.id.clone());
                let me = self.clone();
                let cfg = cfg.clone();
                let span = tracing::info_span!("delivery", delivery_id = %d.id, event = %d.event, endpoint = %d.endpoint_id);
                tokio::spawn(
                    async move {
                        me.attempt(d.clone(), &cfg).await;
                        me.in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&d.id);
                        let mut per = me.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(n) = per.get_mut(&d.endpoint_id) {
                            *n = n.saturating_sub(1);
                        }
                        drop(permit);
                        me.freed.notify_one();
                    }
                    .instrument(span),
                );
            }
        }
        Ok(())
    }

    async fn send(&self, d: &Due, timeout: Duration) -> Answer {
        let ts = Utc::now().timestamp();
        let body = d.payload.as_bytes();
        let secret = d.signing.secret.expose();
        let mut standard = outbound::sign_standard(secret, &d.id, ts, body);
        if let Some(old) = d.signing.old_at(Timestamp::now()) {
            standard.push(' ');
            standard.push_str(&outbound::sign_standard(old.expose(), &d.id, ts, body));
        }
        let started = Instant::now();
        // A name is checked by the resolver; an address written in the URL here.
        if let Some(why) = policy::check_url(&d.url, self.allow_private.load(Ordering::Relaxed)) {
            return Answer {
                status: None,
                error: Some(format!("refused by the webhook address policy: {why}")),
                response: None,
                retry_after: None,
                elapsed: started.elapsed(),
            };
        }
        let result = self
            .client
            .post(&d.url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("x-turnbridge-event", &d.event)
            .header("x-turnbridge-delivery-id", &d.id)
            .header("x-turnbridge-timestamp", ts.to_string())
            .header(
                "x-turnbridge-signature",
                outbound::sign_turnbridge(secret, body),
            )
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", standard)
            .body(d.payload.clone())
            .send()
            .await;
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Keep the first 2 KiB of the answer; never read more than that.
                let mut resp = resp;
                let mut kept = Vec::new();
                while kept.len() < 2048 {
                    match resp.chunk().await {
                        Ok(Some(c)) => kept.extend_from_slice(&c[..c.len().min(2048 - kept.len())]),
                        _ => break,
                    }
                }
                Answer {
                    status: Some(status),
                    error: None,
                    response: Some(String::from_utf8_lossy(&kept).into_owned()),
                    retry_after,
                    elapsed: started.elapsed(),
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                // The URL may carry a token: keep it out of the error text.
                let e = e.without_url();
                Answer {
                    status: None,
                    error: Some(format!("{kind}: {e}")),
                    response: None,
                    retry_after: None,
                    elapsed: started.elapsed(),
                }
            }
        }
    }

    async fn attempt(&self, d: Due, cfg: &Webhooks) {
        let answer = self.send(&d, Duration::from_millis(cfg.timeout_ms)).await;
        let ms = answer.elapsed.as_millis() as u64;
        let success = answer.status.is_some_and(|s| (200..300).contains(&s));
        let gone = answer.status == Some(410);
        let attempts = d.attempts + 1;
        let schedule = cfg.retry_schedule_ms.clone();
        let dead = !success && (gone || attempts as usize >= schedule.len());
        let next = if success || dead {
            None
        } else {
            let base = schedule[attempts as usize];
            let throttled = matches!(answer.status, Some(429) | Some(503));
            let delay = match (throttled, answer.retry_after) {
                (true, Some(ra)) => {
                    (ra.as_millis() as u64).clamp(base, base.saturating_mul(2).max(base))
                }
                _ => base,
            };
            Some(at_ms_from_now(delay))
        };
        let outcome = if success {
            AttemptOutcome::Success
        } else if gone {
            AttemptOutcome::Gone
        } else if answer.status.is_none() {
            AttemptOutcome::Error
        } else {
            AttemptOutcome::Failure
        };
        metrics::get().webhook_attempt(outcome, answer.elapsed);
        let state = if success {
            DeliveryState::Succeeded
        } else if dead {
            DeliveryState::Dead
        } else {
            DeliveryState::Pending
        };
        let trigger = if d.attempts == 0 && d.recorded_attempts > 0 {
            Trigger::Manual
        } else {
            Trigger::Scheduled
        };
        let started_at = Timestamp::now().plus(-chrono::Duration::milliseconds(ms as i64));
        let (id, endpoint_id, status, error, response) = (
            d.id.clone(),
            d.endpoint_id.clone(),
            answer.status,
            answer.error.clone(),
            answer.response.clone(),
        );
        let recorded = self
            .with_db(move |db| {
                db.write(|tx| {
                    deliveries::record_attempt(
                        tx,
                        &Outcome {
                            delivery_id: &id,
                            attempt: attempts,
                            trigger,
                            started_at,
                            duration_ms: ms as i64,
                            status,
                            error: error.as_deref(),
                            response: response.as_deref(),
                            state,
                            next_attempt_at: next,
                        },
                    )?;
                    if gone {
                        endpoints::disable(tx, &endpoint_id, GONE)?;
                        // Its other deliveries would wait forever: they go to the DLQ too, to
                        // be resent once the endpoint is enabled again.
                        deliveries::kill_pending_of(tx, &endpoint_id, GONE_DEAD)?;
                    }
                    Ok(())
                })
            })
            .await;
        let component = format!("webhooks {}", d.endpoint_id);
        if let Err(e) = recorded {
            error!("attempt {attempts} could not be recorded (it will be made again): {e}");
            crate::health::set(&component, format!("attempts cannot be recorded: {e}"));
            // Do not resend on every poll while the store is failing.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        let failure = answer
            .error
            .clone()
            .or_else(|| answer.status.map(|s| format!("HTTP {s}")))
            .unwrap_or_default();
        // The host only: a webhook URL may carry a token, and problems are shown unauthenticated.
        let host = reqwest::Url::parse(&d.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "the receiver".into());
        match state {
            // Over once nothing for the endpoint is left in the dead-letter queue (a later
            // failure sets it again).
            DeliveryState::Succeeded if crate::health::is_set(&component) => {
                let endpoint = d.endpoint_id.clone();
                let dead = self
                    .with_db(move |db| deliveries::dead_of(db, &endpoint))
                    .await
                    .unwrap_or(1);
                if dead == 0 {
                    crate::health::clear(&component);
                }
            }
            DeliveryState::Succeeded | DeliveryState::Cancelled => {}
            DeliveryState::Dead => crate::health::set(
                &component,
                format!(
                    "{host} failed ({failure}); delivery {} is in the dead-letter queue (turnbridge dlq list)",
                    d.id
                ),
            ),
            DeliveryState::Pending => {
                crate::health::set(&component, format!("{host} failed ({failure}); retrying"))
            }
        }
        match state {
            DeliveryState::Succeeded | DeliveryState::Cancelled => {
                info!(attempt = attempts, status = ?answer.status, elapsed_ms = ms, "delivered")
            }
            DeliveryState::Dead => {
                metrics::get().dead_letter();
                error!(
                    attempt = attempts,
                    status = ?answer.status,
                    error = answer.error.as_deref(),
                    "delivery failed for good and is in the dead-letter queue; resend it with `turnbridge dlq resend {}`",
                    d.id
                );
                if gone {
                    warn!(endpoint = %d.endpoint_id, "endpoint disabled: the receiver answered 410 Gone");
                }
            }
            DeliveryState::Pending => {
                let next = next.map(|t| t.to_string());
                warn!(attempt = attempts, status = ?answer.status, error = answer.error.as_deref(), next = next.as_deref(), "delivery attempt failed; will retry")
            }
        }
    }
}

/// The share of attempts in the last five minutes that succeeded (1 when there were none).
pub fn success_rate(conn: &rusqlite::Connection) -> Result<f64, StoreError> {
    let since = Timestamp::from_utc(Utc::now() - chrono::Duration::minutes(5));
    let (all, ok) = deliveries::attempts_since(conn, since)?;
    Ok(if all == 0 {
        1.0
    } else {
        ok as f64 / all as f64
    })
}
