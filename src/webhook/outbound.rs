//! Outbound webhooks: the endpoint registry, signing, fan-out of the events outbox into
//! deliveries, and the dead-letter queue.
//!
//! Each delivery is a POST of a fixed JSON body (`delivery_id`, `event`, `timestamp`,
//! `tenant_id` and the event's fields) carrying two signature schemes:
//! - `X-Turnbridge-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, keyed with the whole
//!   secret string as shown to the user, with `X-Turnbridge-Event`, `-Delivery-Id`,
//!   `-Timestamp`;
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, keyed with the
//!   base64-decoded bytes after `whsec_` (or the raw secret bytes if it has no such prefix),
//!   so the timestamp is covered and any Standard Webhooks library verifies it.
//!
//! The delivery id is the same on every attempt (receivers deduplicate on it); the timestamp
//! is that of the attempt. Delivery is at least once.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::Secret;
use crate::store::{deliveries, endpoints, outbox, Store, StoreError, Timestamp};

type HmacSha256 = Hmac<Sha256>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A new random secret: 32 bytes, shown as `whsec_<base64>`.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("whsec_{}", B64.encode(key))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// `sha256=<hex>` over the raw body, keyed with the secret string itself.
pub fn sign_turnbridge(secret: &str, body: &[u8]) -> String {
    let d = mac(secret.as_bytes(), &[body]);
    format!(
        "sha256={}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The Standard Webhooks key: the bytes behind `whsec_`, or the secret's own bytes.
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64>` over `id.timestamp.body`.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let d = mac(
        &standard_key(secret),
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", B64.encode(d))
}

/// Which deliveries a listing or a resend is about.
pub use crate::store::deliveries::Filter;
/// A registered endpoint, as listings show it (never its secret).
pub use crate::store::endpoints::Endpoint;

/// Why a registration is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn check_url(url: &str, allow_private: bool) -> Result<(), Invalid> {
    match super::policy::check_url(url, allow_private) {
        None => Ok(()),
        Some(reason) => Err(Invalid {
            field: "url",
            reason,
        }),
    }
}

/// Each subscription names an event of the catalogue, a family of them (`invoice.*`) or all
/// (`*`); the refusal lists what may be named.
fn check_events(events: &[String]) -> Result<(), Invalid> {
    let unknown: Vec<&String> = events
        .iter()
        .filter(|e| !crate::events::check_subscription(e))
        .collect();
    if events.is_empty() || !unknown.is_empty() {
        let what = match unknown.first() {
            Some(e) => format!(
                "{} is not an event or a family of events",
                crate::einvoice::printable(e, 100)
            ),
            None => "must not be empty".to_string(),
        };
        Err(Invalid {
            field: "events",
            reason: format!("{what}; valid are {}", crate::events::valid_subscriptions()),
        })
    } else {
        Ok(())
    }
}

fn check_secret(secret: &str) -> Result<(), Invalid> {
    if secret.len() < 24 {
        return Err(Invalid {
            field: "secret",
            reason: "must be at least 24 characters (leave it out to get a random one)".into(),
        });
    }
    Ok(())
}

/// Registers an endpoint; returns it and its secret (shown once).
/// `allow_private` is `webhooks.allow_private_networks`.
pub fn add_endpoint(
    store: &mut Store,
    url: &str,
    events: &[String],
    secret: Option<&str>,
    description: Option<&str>,
    allow_private: bool,
) -> Result<Result<(Endpoint, String), Invalid>, StoreError> {
    if let Err(e) = check_url(url, allow_private).and_then(|_| check_events(events)) {
        return Ok(Err(e));
    }
    let secret = match secret {
        Some(s) => {
            if let Err(e) = check_secret(s) {
                return Ok(Err(e));
            }
            s.to_string()
        }
        None => new_secret(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let kept = Secret::new(secret.clone());
    let ep = store.write(|tx| {
        endpoints::insert(
            tx,
            &endpoints::NewEndpoint {
                id: &id,
                url,
                events,
                secret: &kept,
                description,
            },
        )
    })?;
    Ok(Ok((ep, secret)))
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct Update {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// Replace the secret with a new random one; the old one keeps signing for the overlap.
    pub rotate_secret: bool,
}

/// An updated endpoint and, if its secret was rotated, the new secret (shown once).
pub type Updated = (Endpoint, Option<String>);

/// Applies an update. Returns the endpoint and, if rotated, its new secret; `None` if unknown.
pub fn update_endpoint(
    store: &mut Store,
    id: &str,
    u: &Update,
    overlap_hours: u64,
    allow_private: bool,
) -> Result<Result<Option<Updated>, Invalid>, StoreError> {
    if let Some(url) = &u.url {
        if let Err(e) = check_url(url, allow_private) {
            return Ok(Err(e));
        }
    }
    if let Some(ev) = &u.events {
        if let Err(e) = check_events(ev) {
            return Ok(Err(e));
        }
    }
    let fresh = u.rotate_secret.then(|| Secret::new(new_secret()));
    let until = Timestamp::now().plus(chrono::Duration::hours(overlap_hours as i64));
    let changes = endpoints::Changes {
        url: u.url.as_deref(),
        events: u.events.as_deref(),
        description: u.description.as_deref(),
        enabled: u.enabled,
        rotate_to: fresh.as_ref().map(|s| (s, until)),
    };
    let ep = store.write(|tx| endpoints::update(tx, id, &changes))?;
    Ok(Ok(ep.map(|ep| (ep, fresh.map(|s| s.expose().to_string())))))
}

/// Removes an endpoint, its secrets with it (the row is deleted, and the store zeroes
/// deleted content); its pending deliveries are cancelled. Returns whether it existed.
pub fn remove_endpoint(store: &mut Store, id: &str) -> Result<bool, StoreError> {
    let existed = store.write(|tx| {
        let existed = endpoints::delete(tx, id)?;
        deliveries::cancel_pending_of(tx, id)?;
        Ok(existed)
    })?;
    if existed {
        endpoints::checkpoint(store);
    }
    Ok(existed)
}

/// Removes from the store every rotated-out secret whose overlap ended by `now`. Returns how
/// many were removed.
pub fn forget_rotated_secrets(store: &mut Store, now: Timestamp) -> Result<usize, StoreError> {
    // Checked first, so the common case takes no write lock.
    if !endpoints::rotated_out_due(store, now)? {
        return Ok(0);
    }
    let n = store.write(|tx| endpoints::forget_rotated_out(tx, now))?;
    endpoints::checkpoint(store);
    Ok(n)
}

fn subscribed(events: &[String], event: &str) -> bool {
    events.iter().any(|e| {
        e == "*"
            || e == event
            || e.strip_suffix(".*")
                .is_some_and(|prefix| event.starts_with(&format!("{prefix}.")))
    })
}

/// The exact body a delivery sends: its id, the event's name, time and tenant, then the
/// event's own fields (never replacing those four).
fn delivery_body(delivery_id: &str, e: &outbox::Event) -> String {
    let mut body = serde_json::Map::new();
    body.insert("delivery_id".into(), json!(delivery_id));
    body.insert("event".into(), json!(e.event));
    body.insert("timestamp".into(), json!(e.created_at));
    body.insert("tenant_id".into(), json!(e.tenant));
    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&e.payload) {
        for (k, v) in fields {
            body.entry(k).or_insert(v);
        }
    }
    Value::Object(body).to_string()
}

/// Turns new outbox events into one pending delivery per subscribed, enabled endpoint, in one
/// transaction per batch of at most `batch` events. Returns how many deliveries were created.
pub fn fan_out(store: &mut Store, batch: usize) -> Result<usize, StoreError> {
    // Checked first, so a quiet poll takes no write lock.
    if !outbox::any_waiting(store)? {
        return Ok(0);
    }
    store.write(|tx| {
        let events = outbox::waiting(tx, batch)?;
        let endpoints = endpoints::subscriptions(tx)?;
        let mut created = 0;
        for e in &events {
            for (endpoint_id, subs) in &endpoints {
                if !subscribed(subs, &e.event) {
                    continue;
                }
                let delivery_id = uuid::Uuid::new_v4().to_string();
                let body = delivery_body(&delivery_id, e);
                let new = deliveries::NewDelivery {
                    id: &delivery_id,
                    event_id: e.id,
                    endpoint_id,
                    event: &e.event,
                    tenant: e.tenant.as_deref(),
                    payload: &body,
                };
                if deliveries::insert_pending(tx, &new)? {
                    created += 1;
                }
            }
            outbox::mark_fanned(tx, e.id)?;
        }
        Ok(created)
    })
}

/// Dead deliveries a resend takes at most at once.
pub const RESEND_MAX: i64 = 100_000;

/// Puts dead deliveries back in the queue, due now, with a fresh schedule and the same
/// delivery id. Returns the ids resent.
pub fn resend(store: &mut Store, f: &Filter) -> Result<Vec<String>, StoreError> {
    store.write(|tx| deliveries::resend(tx, f, RESEND_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_vector() {
        // From the Standard Webhooks reference library's own test.
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign_standard(secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn github_style_vector() {
        assert_eq!(
            sign_turnbridge("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn subscriptions() {
        let subs = vec!["invoice.*".to_string(), "upload.completed".to_string()];
        assert!(subscribed(&subs, "invoice.status.updated"));
        assert!(subscribed(&subs, "upload.completed"));
        assert!(!subscribed(&subs, "turnkey.feedback.daily-summary"));
        assert!(subscribed(&["*".to_string()], "anything"));
        assert!(new_secret().starts_with("whsec_") && standard_key(&new_secret()).len() == 32);
    }
}
