//! The one way a message changes state, and the `transitions` it leaves.
//!
//! [`transition`] moves a message inside the caller's write transaction: the message row, its
//! transition row (from, to, when, evidence) and the `invoice.status.updated` event, together,
//! or none of them. It refuses a step the state machine does not allow
//! ([`MessageState::allows`]) and a message that is no longer in the state the caller saw.

use rusqlite::{params, Connection, Transaction};

use super::events;
use super::messages::{self, MessageRow};
use super::states::{Basis, MessageState, TransitionFrom};
use super::{now, Result, StoreError};
use crate::events::InvoiceStatusUpdated;

/// A message changing state, and what shows it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub to: MessageState,
    /// What shows the change (a path, a result file).
    pub evidence: &'a str,
    /// The platform's or Turnkey's code, when it gave one.
    pub mof_code: Option<&'a str>,
    /// What the change means, when there is more to say than the state.
    pub message: Option<&'a str>,
    pub basis: Basis,
}

impl<'a> Change<'a> {
    /// A change named by `evidence`, with no code or message.
    pub fn to(to: MessageState, evidence: &'a str) -> Change<'a> {
        Change {
            to,
            evidence,
            mof_code: None,
            message: None,
            basis: Basis::Named,
        }
    }
}

/// Moves message `id` from `from` as `change` says, inside `tx`: its state, code and
/// message (a new state has no overdue event raised yet, and is a guess only when
/// `change.basis` is one), one transition row, and its `invoice.status.updated` event.
/// Returns the message as it was before.
pub fn transition(
    tx: &Transaction,
    id: i64,
    from: MessageState,
    change: &Change,
) -> Result<MessageRow> {
    let m = messages::by_id(tx, id)?.ok_or(StoreError::NoMessage(id))?;
    if m.state != from {
        return Err(StoreError::Stale {
            id,
            expected: from,
            found: m.state,
        });
    }
    if !from.allows(change.to, m.guessed, change.basis) {
        return Err(StoreError::NotAllowed {
            id,
            from,
            to: change.to,
        });
    }
    let at = now();
    tx.execute(
        "UPDATE messages SET state = ?1, updated_at = ?2, mof_code = ?3, status_message = ?4,
             overdue_raised = 0, guessed = ?5
         WHERE id = ?6",
        params![
            change.to,
            at,
            change.mof_code,
            change.message,
            change.basis == Basis::Guess && change.to.is_final(),
            id
        ],
    )?;
    tx.execute(
        "INSERT INTO transitions (message_id, from_state, to_state, at, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            TransitionFrom::from(from),
            change.to,
            at,
            change.evidence
        ],
    )?;
    events::add(
        tx,
        &InvoiceStatusUpdated {
            tenant_id: m.tenant.clone(),
            invoice_no: m.number.clone(),
            message_type: m.message_type.clone(),
            status: change.to,
            mof_code: change.mof_code.map(str::to_string),
            message: change.message.map(str::to_string),
            evidence: change.evidence.to_string(),
            xml_path: m.xml_path.clone(),
            import_id: m.job_id.clone(),
        },
    )?;
    Ok(m)
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TransitionRow {
    pub at: String,
    pub from: Option<TransitionFrom>,
    pub to: MessageState,
    pub evidence: Option<String>,
}

pub(crate) const OF_MESSAGE: &str =
    "SELECT at, from_state, to_state, evidence FROM transitions WHERE message_id = ?1 ORDER BY id";

pub(crate) const QUEUED_BETWEEN: &str =
    "SELECT count(*) FROM transitions t JOIN messages m ON m.id = t.message_id
     WHERE t.to_state = ?4 AND t.at >= ?1 AND t.at < ?2 AND (?3 IS NULL OR m.message_type = ?3)";

/// A message's transitions, oldest first.
pub fn transitions_of(conn: &Connection, id: i64) -> Result<Vec<TransitionRow>> {
    let mut stmt = conn.prepare_cached(OF_MESSAGE)?;
    let rows = stmt.query_map([id], |r| {
        Ok(TransitionRow {
            at: r.get(0)?,
            from: r.get(1)?,
            to: r.get(2)?,
            evidence: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many messages (of one type, or all) were queued between `start` and `end` (RFC 3339).
pub fn queued_between(conn: &Connection, start: &str, end: &str, ty: Option<&str>) -> Result<i64> {
    Ok(conn.query_row(
        QUEUED_BETWEEN,
        params![start, end, ty, MessageState::Queued],
        |r| r.get(0),
    )?)
}
