//! NextEngine's stock callback (在庫連携): `GET <nextengine.updatestock_path>`, signed with
//! `.sig`, answered in NextEngine's EUC-JP XML. See [`crate::nextengine::stock_callback`].

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use rusqlite::params;
use tracing::{info, warn};

use super::error::Body;
use super::router::{Answer, Call};
use super::with_db;
use crate::config::StockSink;
use crate::metrics;
use crate::metrics::labels::{Route, StockOutcome};
use crate::nextengine::stock_callback::{self, StockQuery};
use crate::store::{self, Store, StoreError};

pub(super) fn xml_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=EUC-JP"),
    );
    r
}

/// `GET <nextengine.updatestock_path>`: NextEngine's stock callback. Always answers
/// NextEngine's XML, whatever happens.
pub async fn updatestock(c: Call) -> Answer {
    Ok(answer(c).await)
}

async fn answer(c: Call) -> Response<Body> {
    let Call {
        state,
        cfg,
        req,
        remote,
        request_id,
        ..
    } = c;
    let q = StockQuery::parse(req.uri().query().unwrap_or(""));
    // Refusals come from anyone: what they sent is logged escaped and cut short.
    let log_row = |outcome: &'static str, processed: i32, reason: Option<String>| {
        let request_id = request_id.clone();
        let short = |v: &Option<String>| v.as_deref().map(|v| crate::einvoice::printable(v, 128));
        let (account, code, stock, ts) = (
            short(&q.store_account),
            short(&q.code),
            short(&q.stock),
            short(&q.ts),
        );
        move |db: &mut Store| -> Result<(), StoreError> {
            db.conn().execute(
                "INSERT INTO inventory_logs (request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![request_id, store::now(), remote.to_string(), account, code, stock, ts, outcome, processed, reason],
            )?;
            Ok(())
        }
    };
    if q.is_connection_check() {
        info!("NextEngine connection check (接続を確認)");
        metrics::get().stock_update(StockOutcome::ConnectionCheck);
        // Unauthenticated too: stored within the same bound as refusals.
        if state.refusals.admit(std::time::Instant::now()).detailed {
            let _ = with_db(&state, log_row("connection_check", 0, None)).await;
        }
        return xml_response(StatusCode::OK, stock_callback::reply(&q, 0));
    }
    let ne = &cfg.nextengine;
    let verdict = stock_callback::verify(
        &q,
        ne,
        chrono::Utc::now(),
        ne.offset(),
        chrono::Duration::seconds(ne.ts_max_age_secs as i64),
        chrono::Duration::seconds(ne.ts_max_ahead_secs as i64),
    );
    let update = match verdict {
        Ok(u) => u,
        Err(refusal) => {
            let reason = refusal.reason();
            let status = if refusal.is_signature() {
                metrics::get().signature_failure(Route::Updatestock);
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            metrics::get().stock_update(StockOutcome::Refused);
            let admit = state.refusals.admit(std::time::Instant::now());
            admit.log_suppressed(
                "stock callbacks were refused (counted in turnbridge_stock_updates_total, not stored)",
            );
            if admit.detailed {
                let short = |v: &Option<String>| {
                    v.as_deref()
                        .map(|v| crate::einvoice::printable(v, 128))
                        .unwrap_or_default()
                };
                warn!(
                    store_account = %short(&q.store_account),
                    code = %short(&q.code),
                    "stock callback refused: {reason}"
                );
                let _ = with_db(&state, log_row("refused", -2, Some(reason))).await;
            }
            return xml_response(status, stock_callback::reply(&q, -2));
        }
    };
    let sink = match ne.stock_sink {
        StockSink::Record => "recorded",
        StockSink::Forward => "pending",
    };
    let (u, rid, q2) = (update.clone(), request_id.clone(), q.clone());
    let result = with_db(&state, move |db| {
        let tx = db.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO stock_updates (store_account, code, stock, ts, sig, request_id, received_at, sink_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![u.store_account, u.code, u.stock, u.ts, u.sig, rid, store::now(), sink],
        )?;
        let (outcome, processed, reason) = if inserted == 1 {
            ("accepted", 0, None)
        } else {
            ("replayed", -2, Some("this ts and signature were already used".to_string()))
        };
        tx.execute(
            "INSERT INTO inventory_logs (request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![rid, store::now(), remote.to_string(), q2.store_account, q2.code, q2.stock, q2.ts, outcome, processed, reason],
        )?;
        tx.commit()?;
        Ok(inserted == 1)
    })
    .await;
    match result {
        Ok(true) => {
            metrics::get().stock_update(StockOutcome::Accepted);
            info!(store_account = %update.store_account, code = %update.code, stock = ?update.stock, ts = %update.ts, "stock level accepted");
            xml_response(StatusCode::OK, stock_callback::reply(&q, 0))
        }
        Ok(false) => {
            metrics::get().stock_update(StockOutcome::Replayed);
            warn!(store_account = %update.store_account, code = %update.code, ts = %update.ts, "stock callback refused: replayed");
            xml_response(StatusCode::CONFLICT, stock_callback::reply(&q, -2))
        }
        Err(e) => {
            metrics::get().stock_update(StockOutcome::Error);
            warn!("stock callback could not be recorded: {e}");
            xml_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                stock_callback::reply(&q, -3),
            )
        }
    }
}
