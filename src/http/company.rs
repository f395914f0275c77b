//! The company system's webhook: `POST /api/sync/company/webhook` with `X-Webhook-Secret`
//! (compared in constant time, before the body is read). Validation is
//! [`crate::webhook::inbound`]'s; an accepted `inventory.updated` may be handed on to
//! NextEngine's stock spool.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::error::{json_response, ApiError, ErrorCode};
use super::router::{Answer, Call};
use super::{request, with_db, AppState};
use crate::config::Config;
use crate::metrics;
use crate::metrics::labels::{CompanyEventType, CompanyOutcome, Route};
use crate::store::inbound::{self as inbound_store};
use crate::store::{self, audit};
use crate::webhook::inbound;

/// `POST /api/sync/company/webhook`: a company-system push, authenticated by its secret
/// before the body is read, stored once per type, key and content.
pub async fn receive(c: Call) -> Answer {
    let Call {
        state,
        cfg,
        req,
        request_id,
        ..
    } = c;
    let secret = cfg.company_webhook.secret.expose().to_string();
    if secret.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotConfigured,
            "set company_webhook.secret to receive company webhooks",
        ));
    }
    let given = req
        .headers()
        .get("x-webhook-secret")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !inbound::secret_matches(&secret, &given) {
        metrics::get().signature_failure(Route::CompanyWebhook);
        metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::Unauthorized);
        let admit = state.webhook_refusals.admit(std::time::Instant::now());
        admit.log_suppressed(
            "company webhooks were refused for their secret (counted in turnbridge_company_webhooks_total)",
        );
        if admit.detailed {
            warn!("company webhook refused: missing or wrong X-Webhook-Secret");
        }
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing or wrong X-Webhook-Secret",
        ));
    }
    let body = match request::body(req, cfg.http.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::TooLarge);
            return Err(e);
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::Malformed);
            return Err(ApiError::new(ErrorCode::MalformedJson, e.to_string()));
        }
    };
    let accepted = match inbound::validate(&value) {
        Ok(a) => a,
        Err(inv) => {
            let ty = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            metrics::get().company_webhook(CompanyEventType::of(&ty), CompanyOutcome::Invalid);
            warn!(event_type = %ty, field = %inv.field, "company webhook refused: {}", inv.reason);
            let (rid, detail) = (
                request_id.clone(),
                json!({"type": ty, "field": inv.field, "reason": inv.reason}).to_string(),
            );
            let _ = with_db(&state, move |db| {
                db.write(|tx| {
                    audit::add(
                        tx,
                        &audit::Entry {
                            action: audit::Action::WebhookRejected,
                            subject: Some(&ty),
                            detail: Some(&detail),
                            request_id: Some(&rid),
                            at: store::Timestamp::now(),
                        },
                    )
                })
            })
            .await;
            let code = match inv.code {
                "unknown_event_type" => ErrorCode::UnknownEventType,
                _ => ErrorCode::InvalidPayload,
            };
            return Err(ApiError::new(code, inv.reason).with_field(inv.field));
        }
    };
    let (a, rid) = (accepted.clone(), request_id.clone());
    let stored = with_db(&state, move |db| {
        db.write(|tx| {
            let (inserted, id) = inbound_store::store_company_event(
                tx,
                &inbound_store::NewCompanyEvent {
                    event_type: &a.event_type,
                    business_key: &a.key,
                    content_md5: &a.content_md5,
                    payload: &a.payload.to_string(),
                    request_id: &rid,
                    received_at: store::Timestamp::now(),
                },
            )?;
            let action = if inserted {
                audit::Action::WebhookReceived
            } else {
                audit::Action::WebhookDuplicate
            };
            audit::add(
                tx,
                &audit::Entry {
                    action,
                    subject: Some(&format!("{} {}", a.event_type, a.key)),
                    detail: Some(&json!({"event_id": id}).to_string()),
                    request_id: Some(&rid),
                    at: store::Timestamp::now(),
                },
            )?;
            Ok((inserted, id))
        })
    })
    .await;
    if let (Ok((true, _)), true, "inventory.updated") = (
        &stored,
        cfg.company_webhook.push_inventory_to_nextengine,
        accepted.event_type.as_str(),
    ) {
        push_inventory(&state, &cfg, &accepted.payload, &request_id).await;
    }
    match stored {
        Ok((new, id)) => {
            let outcome = if new {
                CompanyOutcome::Stored
            } else {
                CompanyOutcome::Duplicate
            };
            metrics::get().company_webhook(CompanyEventType::of(&accepted.event_type), outcome);
            let outcome = outcome.as_str();
            info!(event_type = %accepted.event_type, key = %accepted.key, "company webhook {outcome}");
            Ok(json_response(
                StatusCode::OK,
                json!({"status": outcome, "id": id, "request_id": request_id}),
            ))
        }
        Err(e) => {
            warn!("company webhook could not be stored: {e}");
            Err(ApiError::new(
                ErrorCode::StoreFailed,
                "the event could not be stored; send it again",
            ))
        }
    }
}

/// Hands an `inventory.updated` level to the NextEngine stock spool, unless NextEngine itself
/// reported that very level for the code last (then pushing it would only echo it back).
async fn push_inventory(state: &Arc<AppState>, cfg: &Config, payload: &Value, request_id: &str) {
    let inv = &payload["inventory"];
    let code = match &inv["productId"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    let Some(level) = inv["quantity"]
        .as_f64()
        .filter(|q| q.fract() == 0.0 && *q >= 0.0)
        .map(|q| q as i64)
    else {
        warn!(code = %code, "inventory level is not a whole number of 0 or more; not pushed to NextEngine");
        return;
    };
    let c = code.clone();
    let last_from_ne: Option<Option<i64>> =
        with_db(state, move |db| inbound_store::last_stock(db, &c))
            .await
            .unwrap_or(None);
    if last_from_ne == Some(Some(level)) {
        info!(code = %code, level, "inventory level is the one NextEngine sent; not echoed back");
        return;
    }
    let dir = cfg.paths.spool.join("nextengine/stock");
    let file = dir.join(format!("company-{request_id}.csv"));
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(["syohin_code", "stock"]);
    let _ = w.write_record([code.as_str(), &level.to_string()]);
    let bytes = w.into_inner().unwrap_or_default();
    let written = crate::durable::create_dir_all(&dir)
        .and_then(|_| crate::durable::write_atomic(&file, &bytes));
    match written {
        Ok(()) => info!(code = %code, level, "inventory level queued for NextEngine"),
        Err(e) => warn!(code = %code, "inventory level could not be queued for NextEngine: {e}"),
    }
}
