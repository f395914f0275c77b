//! The audit trail (`audit`): company webhooks received, refused as duplicates or invalid,
//! and dead deliveries an operator resent. Pruned after `retention.audit_days`.

use rusqlite::{params, Transaction};

use super::states::text_enum;
use super::{write_locked, Readable, Result, Timestamp};

text_enum! {
    /// What an audit row records.
    pub enum Action {
        /// A company webhook stored for the first time.
        WebhookReceived = "WEBHOOK_RECEIVED",
        /// A company webhook already stored (same type, key and content).
        WebhookDuplicate = "WEBHOOK_DUPLICATE",
        /// A company webhook refused for its content.
        WebhookRejected = "WEBHOOK_REJECTED",
        /// A dead delivery put back in the queue.
        DeliveryResent = "DELIVERY_RESENT",
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub action: Action,
    pub subject: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub at: Timestamp,
}

/// Adds an audit row.
pub fn add(tx: &Transaction, e: &Entry) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT INTO audit (action, subject, detail, request_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.action, e.subject, e.detail, e.request_id, e.at],
    )?;
    Ok(())
}

/// How many rows record `action`.
pub fn count(db: &impl Readable, action: Action) -> Result<i64> {
    let conn = db.connection();
    Ok(conn.query_row(COUNT, [action], |r| r.get(0))?)
}

/// The time of the newest row whose action is one of `actions`.
pub fn last_of(db: &impl Readable, actions: &[Action]) -> Result<Option<Timestamp>> {
    let conn = db.connection();
    let mut last = None;
    for a in actions {
        let at: Option<Timestamp> = conn.query_row(LAST, [a], |r| r.get(0))?;
        last = last.max(at);
    }
    Ok(last)
}

/// The subjects of the rows recording `action`, oldest first, at most `limit`.
pub fn subjects(db: &impl Readable, action: Action, limit: i64) -> Result<Vec<Option<String>>> {
    let conn = db.connection();
    let mut stmt =
        conn.prepare("SELECT subject FROM audit WHERE action = ?1 ORDER BY at, id LIMIT ?2")?;
    let rows = stmt.query_map(params![action, limit], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const COUNT: &str = "SELECT count(*) FROM audit WHERE action = ?1";
pub(crate) const LAST: &str = "SELECT max(at) FROM audit WHERE action = ?1";
