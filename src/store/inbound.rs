//! What arrives from outside: NextEngine's stock callbacks (`stock_updates`, each accepted
//! level once, and `inventory_logs`, every request) and the company system's pushes
//! (`company_events`, each stored once).

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::states::text_enum;
use super::{write_locked, Readable, Result, Timestamp};

text_enum! {
    /// What becomes of an accepted stock level (`nextengine.stock_sink`).
    pub enum SinkState {
        /// Kept here, nothing more.
        Recorded = "recorded",
        /// To be forwarded.
        Pending = "pending",
    }
}

text_enum! {
    /// How a stock callback request ended.
    pub enum CallbackOutcome {
        /// A new level, stored.
        Accepted = "accepted",
        /// Its `ts` and signature were used before.
        Replayed = "replayed",
        /// Refused (signature, shop, parameters, time window).
        Refused = "refused",
        /// NextEngine's connection check (no parameters).
        ConnectionCheck = "connection_check",
    }
}

/// One stock callback request, as logged (values from outside, already cut short).
#[derive(Debug, Clone)]
pub struct CallbackLog<'a> {
    pub request_id: &'a str,
    pub remote: &'a str,
    pub store_account: Option<&'a str>,
    pub code: Option<&'a str>,
    pub stock: Option<&'a str>,
    pub ts: Option<&'a str>,
    pub outcome: CallbackOutcome,
    /// What NextEngine was answered (0 processed, -2 refused).
    pub processed: i32,
    pub reason: Option<&'a str>,
}

/// An accepted stock level.
#[derive(Debug, Clone)]
pub struct NewStockUpdate<'a> {
    pub store_account: &'a str,
    pub code: &'a str,
    /// `None`: sent empty (made-to-order, unlimited).
    pub stock: Option<i64>,
    pub ts: &'a str,
    pub sig: &'a str,
    pub request_id: &'a str,
    pub sink: SinkState,
}

/// A stored stock level, as the monitoring routes list it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StockUpdate {
    pub id: i64,
    pub store_account: String,
    pub code: String,
    pub stock: Option<i64>,
    pub ts: String,
    pub request_id: String,
    pub received_at: Timestamp,
    pub sink_state: SinkState,
}

/// A logged callback request, as the monitoring routes list it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Callback {
    pub id: i64,
    pub request_id: String,
    pub received_at: Timestamp,
    pub remote: Option<String>,
    pub store_account: Option<String>,
    pub code: Option<String>,
    pub stock: Option<String>,
    pub ts: Option<String>,
    pub outcome: CallbackOutcome,
    pub processed: i64,
    pub reason: Option<String>,
}

/// Totals of the stock callbacks on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockCounts {
    /// Levels stored.
    pub accepted: i64,
    /// Requests refused or replayed.
    pub refused: i64,
    /// Requests logged.
    pub requests: i64,
    /// Levels waiting to be forwarded.
    pub pending_forward: i64,
}

/// A company push to store.
#[derive(Debug, Clone)]
pub struct NewCompanyEvent<'a> {
    pub event_type: &'a str,
    pub business_key: &'a str,
    pub content_md5: &'a str,
    /// The push's JSON text.
    pub payload: &'a str,
    pub request_id: &'a str,
    pub received_at: Timestamp,
}

/// The company pushes stored of one type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompanyEventsOfType {
    pub event_type: String,
    pub stored: i64,
    pub last_received: Timestamp,
}

/// Logs a stock callback request.
pub fn log_callback(tx: &Transaction, c: &CallbackLog) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT INTO inventory_logs (request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![c.request_id, Timestamp::now(), c.remote, c.store_account, c.code, c.stock, c.ts, c.outcome, c.processed, c.reason],
    )?;
    Ok(())
}

/// Stores a stock level unless its shop, `ts` and signature were stored before; whether it
/// was new.
pub fn record_stock(tx: &Transaction, u: &NewStockUpdate) -> Result<bool> {
    write_locked(tx)?;
    Ok(tx.execute(
        "INSERT OR IGNORE INTO stock_updates (store_account, code, stock, ts, sig, request_id, received_at, sink_state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![u.store_account, u.code, u.stock, u.ts, u.sig, u.request_id, Timestamp::now(), u.sink],
    )? == 1)
}

/// The level NextEngine sent last for a goods code: `None` when it sent none,
/// `Some(None)` when it sent an empty one.
pub fn last_stock(db: &impl Readable, code: &str) -> Result<Option<Option<i64>>> {
    let conn = db.connection();
    Ok(conn
        .query_row(LAST_STOCK, [code], |r| r.get(0))
        .optional()?)
}

pub(crate) const LAST_STOCK: &str =
    "SELECT stock FROM stock_updates WHERE code = ?1 ORDER BY id DESC LIMIT 1";

/// The newest stored levels, newest first, at most `limit`.
pub fn recent_stock_updates(db: &impl Readable, limit: i64) -> Result<Vec<StockUpdate>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT id, store_account, code, stock, ts, request_id, received_at, sink_state
         FROM stock_updates ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(StockUpdate {
            id: r.get(0)?,
            store_account: r.get(1)?,
            code: r.get(2)?,
            stock: r.get(3)?,
            ts: r.get(4)?,
            request_id: r.get(5)?,
            received_at: r.get(6)?,
            sink_state: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest logged requests, newest first, at most `limit`.
pub fn recent_callbacks(db: &impl Readable, limit: i64) -> Result<Vec<Callback>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT id, request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason
         FROM inventory_logs ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(Callback {
            id: r.get(0)?,
            request_id: r.get(1)?,
            received_at: r.get(2)?,
            remote: r.get(3)?,
            store_account: r.get(4)?,
            code: r.get(5)?,
            stock: r.get(6)?,
            ts: r.get(7)?,
            outcome: r.get(8)?,
            processed: r.get(9)?,
            reason: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Totals of the stock callbacks on record.
pub fn stock_counts(db: &impl Readable) -> Result<StockCounts> {
    let conn = db.connection();
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<i64> {
        Ok(conn.query_row(sql, p, |r| r.get(0))?)
    };
    Ok(StockCounts {
        accepted: count("SELECT count(*) FROM stock_updates", &[])?,
        refused: count(
            REFUSED,
            &[&CallbackOutcome::Refused, &CallbackOutcome::Replayed],
        )?,
        requests: count("SELECT count(*) FROM inventory_logs", &[])?,
        pending_forward: count(PENDING_FORWARD, &[&SinkState::Pending])?,
    })
}

pub(crate) const REFUSED: &str = "SELECT count(*) FROM inventory_logs WHERE outcome IN (?1, ?2)";
pub(crate) const PENDING_FORWARD: &str = "SELECT count(*) FROM stock_updates WHERE sink_state = ?1";

/// Stores a company push unless the same type, key and content was stored before; whether
/// it was new, and the stored push's id either way.
pub fn store_company_event(tx: &Transaction, e: &NewCompanyEvent) -> Result<(bool, i64)> {
    write_locked(tx)?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO company_events (event_type, business_key, content_md5, payload, request_id, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.event_type, e.business_key, e.content_md5, e.payload, e.request_id, e.received_at],
    )?;
    let id = tx.query_row(
        COMPANY_EVENT_ID,
        params![e.event_type, e.business_key, e.content_md5],
        |r| r.get(0),
    )?;
    Ok((inserted == 1, id))
}

pub(crate) const COMPANY_EVENT_ID: &str =
    "SELECT id FROM company_events WHERE event_type = ?1 AND business_key = ?2 AND content_md5 = ?3";

/// The pushes stored, per type, at most `limit` types.
pub fn company_events_by_type(db: &impl Readable, limit: i64) -> Result<Vec<CompanyEventsOfType>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT event_type, count(*), max(received_at) FROM company_events
         GROUP BY event_type ORDER BY event_type LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(CompanyEventsOfType {
            event_type: r.get(0)?,
            stored: r.get(1)?,
            last_received: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The business keys of the pushes stored, oldest first, at most `limit`.
pub fn company_event_keys(db: &impl Readable, limit: i64) -> Result<Vec<String>> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT business_key FROM company_events ORDER BY id LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_level_and_a_push_are_stored_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let update = NewStockUpdate {
            store_account: "shop",
            code: "sku-1",
            stock: None,
            ts: "2026-12-04 10:00:00",
            sig: "abc",
            request_id: "r1",
            sink: SinkState::Pending,
        };
        let log = |outcome| CallbackLog {
            request_id: "r1",
            remote: "127.0.0.1:1",
            store_account: Some("shop"),
            code: Some("sku-1"),
            stock: Some(""),
            ts: Some("2026-12-04 10:00:00"),
            outcome,
            processed: 0,
            reason: None,
        };
        assert!(store.write(|tx| record_stock(tx, &update)).unwrap());
        assert!(
            !store.write(|tx| record_stock(tx, &update)).unwrap(),
            "a replay"
        );
        for outcome in [CallbackOutcome::Accepted, CallbackOutcome::Replayed] {
            store.write(|tx| log_callback(tx, &log(outcome))).unwrap();
        }
        assert_eq!(last_stock(store.conn(), "sku-1").unwrap(), Some(None));
        assert_eq!(last_stock(store.conn(), "sku-2").unwrap(), None);
        assert_eq!(
            stock_counts(store.conn()).unwrap(),
            StockCounts {
                accepted: 1,
                refused: 1,
                requests: 2,
                pending_forward: 1
            }
        );
        let listed = recent_callbacks(store.conn(), 10).unwrap();
        assert_eq!(listed[0].outcome, CallbackOutcome::Replayed, "newest first");
        assert_eq!(
            recent_stock_updates(store.conn(), 10).unwrap()[0].sink_state,
            SinkState::Pending
        );
        let push = NewCompanyEvent {
            event_type: "order.created",
            business_key: "A-1",
            content_md5: "m",
            payload: "{}",
            request_id: "r2",
            received_at: Timestamp::now(),
        };
        let (new, id) = store.write(|tx| store_company_event(tx, &push)).unwrap();
        assert!(new);
        assert_eq!(
            store.write(|tx| store_company_event(tx, &push)).unwrap(),
            (false, id)
        );
        let by_type = company_events_by_type(store.conn(), 10).unwrap();
        assert_eq!(
            (by_type[0].event_type.as_str(), by_type[0].stored),
            ("order.created", 1)
        );
        assert_eq!(company_event_keys(store.conn(), 10).unwrap(), ["A-1"]);
    }
}
