//! What operators and monitoring read: `/healthz` and `/metrics` (open; on
//! `http.monitor_listen` when set), and the read-only status routes behind the admin token
//! (`/api/inventory/status`, `/api/inventory/updates`, `/api/inventory/logs`,
//! `/api/webhook/status`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::json_response;
use super::router::{Answer, Call};
use super::{request, with_db, AppState, Role};
use crate::metrics::labels::{Listener, Route};
use crate::metrics::{self, Live, StoreGauges};
use crate::store::inbound::{self as inbound_store};
use crate::store::{audit, Store, StoreError};
use crate::webhook::inbound;

/// `GET /healthz`: alive means 200; trouble the daemon is retrying is reported, not a
/// failure. Without the admin token only the status: the details name endpoints, hosts and
/// paths.
pub async fn healthz(c: Call) -> Answer {
    let problems = crate::health::problems();
    let status = if problems.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    let body = if request::admin_token_given(&c.cfg, &c.req) {
        json!({"status": status, "problems": problems})
    } else {
        json!({"status": status})
    };
    Ok(json_response(StatusCode::OK, body))
}

/// `?limit=N` of a listing.
#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<i64>,
}

/// The rows a listing returns: 50 when no limit is given, kept within 1 to 1000.
pub(super) fn listing_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, 1000)
}

/// A read of the store as a JSON answer.
async fn read_json(
    state: &Arc<AppState>,
    f: impl FnOnce(&Store) -> Result<Value, StoreError> + Send + 'static,
) -> Answer {
    let v = with_db(state, move |db| f(db)).await?;
    Ok(json_response(StatusCode::OK, v))
}

/// `GET /api/inventory/updates?limit=N`: the newest accepted stock levels.
pub async fn inventory_updates(c: Call) -> Answer {
    let limit = listing_limit(request::query::<LimitQuery>(&c.req)?.limit);
    read_json(&c.state, move |c| {
        Ok(json!({"updates": inbound_store::recent_stock_updates(c, limit)?}))
    })
    .await
}

/// `GET /api/inventory/logs?limit=N`: the newest stock callbacks, refused ones included.
pub async fn inventory_logs(c: Call) -> Answer {
    let limit = listing_limit(request::query::<LimitQuery>(&c.req)?.limit);
    read_json(&c.state, move |c| {
        Ok(json!({"logs": inbound_store::recent_callbacks(c, limit)?}))
    })
    .await
}

/// `GET /api/inventory/status`: the stock callback's configuration and counts.
pub async fn inventory_status(c: Call) -> Answer {
    let shops: Vec<String> = c
        .cfg
        .nextengine
        .shops
        .iter()
        .map(|s| s.store_account.clone())
        .collect();
    let updatestock_path = c.cfg.nextengine.updatestock_path.clone();
    read_json(&c.state, move |c| {
        let counts = inbound_store::stock_counts(c)?;
        let last = inbound_store::recent_stock_updates(c, 1)?.into_iter().next().map(|u| {
            json!({"store_account": u.store_account, "code": u.code, "stock": u.stock, "ts": u.ts, "received_at": u.received_at})
        });
        Ok(json!({
            "updatestock_path": updatestock_path,
            "shops": shops,
            "accepted": counts.accepted,
            "refused": counts.refused,
            "requests": counts.requests,
            "pending_forward": counts.pending_forward,
            "signature_failures_since_start": metrics::get().signature_failures_on(Route::Updatestock),
            "last_update": last,
        }))
    })
    .await
}

/// `GET /api/webhook/status`: company pushes stored per type, refusals, last activity.
pub async fn webhook_status(c: Call) -> Answer {
    read_json(&c.state, |c| {
        use audit::Action;
        let by_type = inbound_store::company_events_by_type(c, 100)?;
        let rejected = audit::count(c, Action::WebhookRejected)?;
        let last = audit::last_of(
            c,
            &[Action::WebhookReceived, Action::WebhookDuplicate, Action::WebhookRejected],
        )?;
        Ok(json!({"event_types": inbound::EVENT_TYPES, "stored": by_type, "rejected": rejected, "last_activity": last}))
    })
    .await
}

/// `GET /metrics`: Prometheus text; gauges read from the store at each scrape.
pub async fn metrics(c: Call) -> Answer {
    let state = &c.state;
    let store = match with_db(state, |db| StoreGauges::read(db.conn())).await {
        Ok(g) => Some(g),
        Err(e) => {
            warn!("/metrics left out the store's gauges: {e}");
            None
        }
    };
    let mut connections = vec![(Listener::Main, state.table(Role::Main).len())];
    if !state.config().http.monitor_listen.is_empty() {
        connections.push((Listener::Monitor, state.table(Role::Monitor).len()));
    }
    let live = Live { store, connections };
    let mut r = Response::new(Full::new(Bytes::from(metrics::render(&live))));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(r)
}
