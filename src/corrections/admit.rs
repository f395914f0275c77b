//! Whether a checked message may be recorded, after what the store knows: the store's side of
//! [`crate::einvoice::sequence`] (which holds the rules).

use std::str::FromStr;

use chrono::NaiveDate;
use rusqlite::{Connection, Transaction};
use rust_decimal::Decimal;

use crate::einvoice::sequence::{self, Admission, Facts, Known, Original};
use crate::einvoice::{Accepted, Message, MessageType, Problem};
use crate::events::{InvoiceManualCancelled, InvoiceManualIssued, ManualMessage};
use crate::store::manual::Request;
use crate::store::messages::{self, MessageRow};
use crate::store::{events, Result};

/// What to do with a checked message.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// This job recorded it before (a run resumed after a stop): finish that one.
    Recorded,
    /// Record it, as the first message or a later generation.
    Record(Admission),
    /// Refuse it: the problem for the report.
    Refused(Problem),
}

/// Whether job `job_id` may record `a`, read in the caller's transaction (or, for a check
/// before a file is written, on any connection).
pub fn admit(conn: &Connection, job_id: &str, a: &Accepted) -> Result<Admit> {
    let m = &a.message;
    let facts = facts(conn, m)?;
    if facts.same.last().is_some_and(|k| k.job_id == job_id) {
        return Ok(Admit::Recorded);
    }
    Ok(match sequence::decide(m, &facts) {
        Ok(admission) => Admit::Record(admission),
        Err(r) => Admit::Refused(Problem {
            rule: r.rule,
            row: r.row.unwrap_or(a.row),
            field: r.field.into(),
            value: r.value,
            reason: r.reason,
        }),
    })
}

/// What the store knows that bears on `m` (see [`Facts`]).
pub fn facts(conn: &Connection, m: &Message) -> Result<Facts> {
    let ty = m.message_type();
    let (seller, number) = (m.seller().as_str(), m.number());
    let all = |rows: Vec<MessageRow>| rows.iter().map(known).collect::<Vec<_>>();
    let mut f = Facts {
        same: all(messages::generations(conn, ty.as_str(), seller, number)?),
        ..Facts::default()
    };
    match m {
        Message::Invoice(_) => f.invoice = all(messages::about_invoice(conn, seller, number)?),
        Message::Cancel(_) | Message::Void(_) => {
            f.invoice = all(messages::about_invoice(conn, seller, number)?);
            f.allowances = amounts(messages::standing_allowances(conn, seller, number)?);
        }
        Message::Allowance(al) => {
            for it in &al.items {
                let invoice = it.original_invoice_number.as_str();
                if f.originals.contains_key(invoice) {
                    continue;
                }
                let original = Original {
                    docs: all(messages::about_invoice(conn, seller, invoice)?),
                    allowed: amounts(messages::standing_allowances(conn, seller, invoice)?),
                };
                f.originals.insert(invoice.to_string(), original);
            }
        }
        Message::CancelAllowance(_) => {
            f.allowance = all(messages::generations(
                conn,
                MessageType::G0401.as_str(),
                seller,
                number,
            )?)
        }
    }
    Ok(f)
}

/// A stored message as the sequence rules see it.
fn known(m: &MessageRow) -> Known {
    Known {
        id: m.id,
        // Stored types were parsed before they were stored.
        message_type: m.message_type.parse().unwrap_or(MessageType::F0401),
        number: m.number.clone(),
        generation: m.generation,
        state: m.state,
        document_date: NaiveDate::parse_from_str(&m.document_date, "%Y-%m-%d").unwrap_or_default(),
        amount: m.amount.as_deref().and_then(|a| Decimal::from_str(a).ok()),
        job_id: m.job_id.clone(),
        xml_name: m.xml_name.clone(),
    }
}

fn amounts(lines: Vec<(String, String)>) -> Vec<(String, Decimal)> {
    lines
        .into_iter()
        .filter_map(|(n, a)| Some((n, Decimal::from_str(&a).ok()?)))
        .collect()
}

/// Raises the event of a message recorded for an operator's request, in the transaction that
/// records it: `invoice.manual.issued` for what issues a document (F0401, G0401),
/// `invoice.manual.cancelled` for what takes one back (F0501, F0701, G0501).
pub fn announce(tx: &Transaction, request: &Request, row: &MessageRow) -> Result<()> {
    let payload = ManualMessage {
        tenant_id: row.tenant.clone(),
        invoice_no: row.number.clone(),
        seller_ban: row.seller_ban.clone(),
        message_type: row.message_type.clone(),
        action: request.action,
        reason: request.reason.clone(),
        generation: row.generation,
        requested_by: request.requested_by.clone(),
        request_id: request.id,
        import_id: row.job_id.clone(),
        xml_name: row.xml_name.clone(),
    };
    match row.message_type.parse() {
        Ok(MessageType::F0401 | MessageType::G0401) => {
            events::add(tx, &InvoiceManualIssued(payload))
        }
        _ => events::add(tx, &InvoiceManualCancelled(payload)),
    }
}
