//! NextEngine's stock callback (在庫連携): `GET <nextengine.updatestock_path>`, signed with
//! `.sig`, answered in NextEngine's EUC-JP XML. See [`crate::nextengine::stock_callback`].

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tracing::{info, warn};

use super::error::Body;
use super::router::{Answer, Call};
use super::with_db;
use crate::config::StockSink;
use crate::metrics;
use crate::metrics::labels::{Route, StockOutcome};
use crate::nextengine::stock_callback::{self, StockQuery};
use crate::store::inbound::{self as inbound_store, CallbackOutcome, SinkState};
use crate::store::{Store, StoreError};

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
    let log_row = |outcome: CallbackOutcome, processed: i32, reason: Option<String>| {
        let request_id = request_id.clone();
        let short = |v: &Option<String>| v.as_deref().map(|v| crate::einvoice::printable(v, 128));
        let (account, code, stock, ts) = (
            short(&q.store_account),
            short(&q.code),
            short(&q.stock),
            short(&q.ts),
        );
        move |db: &mut Store| -> Result<(), StoreError> {
            db.write(|tx| {
                inbound_store::log_callback(
                    tx,
                    &inbound_store::CallbackLog {
                        request_id: &request_id,
                        remote: &remote.to_string(),
                        store_account: account.as_deref(),
                        code: code.as_deref(),
                        stock: stock.as_deref(),
                        ts: ts.as_deref(),
                        outcome,
                        processed,
                        reason: reason.as_deref(),
                    },
                )
            })
        }
    };
    if q.is_connection_check() {
        info!("NextEngine connection check (接続を確認)");
        metrics::get().stock_update(StockOutcome::ConnectionCheck);
        // Unauthenticated too: stored within the same bound as refusals.
        if state.refusals.admit(std::time::Instant::now()).detailed {
            let _ = with_db(&state, log_row(CallbackOutcome::ConnectionCheck, 0, None)).await;
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
                // Cut short, not escaped: the log escapes field values itself, once.
                let short = |v: &Option<String>| {
                    crate::einvoice::cut(v.as_deref().unwrap_or_default(), 128).into_owned()
                };
                warn!(
                    store_account = %short(&q.store_account),
                    code = %short(&q.code),
                    "stock callback refused: {reason}"
                );
                let _ = with_db(&state, log_row(CallbackOutcome::Refused, -2, Some(reason))).await;
            }
            return xml_response(status, stock_callback::reply(&q, -2));
        }
    };
    let sink = match ne.stock_sink {
        StockSink::Record => SinkState::Recorded,
        StockSink::Forward => SinkState::Pending,
    };
    let (u, rid, q2) = (update.clone(), request_id.clone(), q.clone());
    let result = with_db(&state, move |db| {
        db.write(|tx| {
            let inserted = inbound_store::record_stock(
                tx,
                &inbound_store::NewStockUpdate {
                    store_account: &u.store_account,
                    code: &u.code,
                    stock: u.stock,
                    ts: &u.ts,
                    sig: &u.sig,
                    request_id: &rid,
                    sink,
                },
            )?;
            let (outcome, processed, reason) = if inserted {
                (CallbackOutcome::Accepted, 0, None)
            } else {
                (
                    CallbackOutcome::Replayed,
                    -2,
                    Some("this ts and signature were already used"),
                )
            };
            inbound_store::log_callback(
                tx,
                &inbound_store::CallbackLog {
                    request_id: &rid,
                    remote: &remote.to_string(),
                    store_account: q2.store_account.as_deref(),
                    code: q2.code.as_deref(),
                    stock: q2.stock.as_deref(),
                    ts: q2.ts.as_deref(),
                    outcome,
                    processed,
                    reason,
                },
            )?;
            Ok(inserted)
        })
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
