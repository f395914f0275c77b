//! The order of an invoice's documents: what may follow what, and when a message may go to
//! the platform again as a new *generation* of itself.
//!
//! What the MIG allows (research notes mig41.md §1.2–§1.5, and the official samples, which pair
//! F0501 and F0701 with an F0401 of the same number and G0501 with a G0401):
//!
//! - F0501 (作廢, cancel) takes back an issued invoice within its period (§1.2); a cancelled
//!   number stays cancelled. Past the period's filing deadline an allowance is the way
//!   ([`super::deadline::check_cancel`]).
//! - F0701 (註銷, void) takes back an issued invoice so that the *same number* can be issued
//!   again: "HO allows issuing F0401 again with the same number after F0701 (re-issue after
//!   void). RT scenario B15 註銷後重開 also does this" (§1.3).
//! - G0401 (折讓, allowance) takes back part of an issued invoice, never more than its untaxed
//!   total together with the other allowances that stand (§4, "allowance totals ≤ the original
//!   invoice"); G0501 cancels an allowance (§1.5), after which it no longer counts.
//! - A cancel or void of an invoice that still has allowances standing is refused: the
//!   allowances are cancelled (G0501) first, so that no allowance refers to an invoice that no
//!   longer stands.
//!
//! A document the store does not know (issued before turnbridge, or by another system) is
//! taken on trust: the platform judges it. A message refused by the platform (`error`) never
//! took effect: it stands for nothing, and may be sent again, corrected or as it was, as the
//! next generation. A message accepted (`acked`) or still on its way is never replaced.
//!
//! Everything here is pure: the caller gathers what the store knows ([`Facts`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::model::{Message, PlatformRule};
use super::types::MessageType;
use crate::store::MessageState;

/// A message the store holds, as these rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    /// The store's id: the order messages were recorded in.
    pub id: i64,
    pub message_type: MessageType,
    pub number: String,
    pub generation: u32,
    pub state: MessageState,
    /// The date of the document it is about (the invoice's, the allowance's).
    pub document_date: NaiveDate,
    /// The untaxed total of an invoice or allowance.
    pub amount: Option<Decimal>,
    pub job_id: String,
    pub xml_name: String,
}

impl Known {
    /// Not refused by the platform: accepted, or still on its way.
    pub fn stands(&self) -> bool {
        self.state != MessageState::Error
    }

    /// How a reason names it: `F0401 generation 1 (acked; job J, F0401_…xml)`.
    pub fn named(&self) -> String {
        format!(
            "{} generation {} ({}; job {}, {})",
            self.message_type, self.generation, self.state, self.job_id, self.xml_name
        )
    }
}

/// Where an invoice stands, from its issues, cancels and voids in the order recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing<'a> {
    /// The store holds no message about it.
    Unknown,
    /// Every issue of it was refused: it was never issued.
    Refused(&'a Known),
    /// Issued (accepted, or on its way): the F0401 that stands.
    Issued(&'a Known),
    /// Cancelled (F0501) after its last issue.
    Cancelled(&'a Known),
    /// Voided (F0701) after its last issue: its number may be issued again.
    Voided(&'a Known),
}

/// Where an invoice stands, from its F0401, F0501 and F0701 messages in the order recorded.
pub fn standing(docs: &[Known]) -> Standing<'_> {
    let mut s = Standing::Unknown;
    for d in docs.iter().filter(|d| d.stands()) {
        s = match d.message_type {
            MessageType::F0401 => Standing::Issued(d),
            MessageType::F0501 => Standing::Cancelled(d),
            MessageType::F0701 => Standing::Voided(d),
            MessageType::G0401 | MessageType::G0501 => s,
        };
    }
    match (
        s,
        docs.iter().rfind(|d| d.message_type == MessageType::F0401),
    ) {
        (Standing::Unknown, Some(refused)) => Standing::Refused(refused),
        _ => s,
    }
}

/// What the store knows that bears on one message. The caller fills what the message's type
/// needs; the rest stays empty.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Every generation of the message's own type, seller and number, first to latest.
    pub same: Vec<Known>,
    /// F0401, F0501, F0701: the invoice's issues, cancels and voids, in the order recorded.
    pub invoice: Vec<Known>,
    /// F0501, F0701: the allowances on the invoice that stand, as (number, untaxed amount) per
    /// line.
    pub allowances: Vec<(String, Decimal)>,
    /// G0401: for each original invoice, its issues, cancels and voids, and the lines of its
    /// allowances that stand.
    pub originals: BTreeMap<String, Original>,
    /// G0501: the generations of the allowance it cancels (G0401).
    pub allowance: Vec<Known>,
}

/// An allowance's original invoice, as the store knows it.
#[derive(Debug, Clone, Default)]
pub struct Original {
    pub docs: Vec<Known>,
    /// (allowance number, untaxed amount) of each line of the allowances that stand.
    pub allowed: Vec<(String, Decimal)>,
}

/// Why a message may go to the platform again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// Its latest generation was refused (`error`): this one corrects or repeats it.
    AfterError,
    /// An invoice issued again after its void (F0701).
    AfterVoid,
    /// A cancel or void of an invoice issued again since the last one.
    AfterReissue,
}

/// What may be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The first message of its type, seller and number.
    First,
    /// Generation `generation` (2 or more) of a message sent before.
    Again { generation: u32, why: Again },
}

impl Admission {
    pub fn generation(self) -> u32 {
        match self {
            Admission::First => 1,
            Admission::Again { generation, .. } => generation,
        }
    }
}

/// Why a message is refused: a field of its row (or of one of its lines), its value, a reason
/// that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The line's row, when the problem is with one line (an allowance's original invoice).
    pub row: Option<usize>,
    /// The field's key (`CancelInvoiceNumber`, `InvoiceDate`, `OriginalInvoiceNumber`).
    pub field: &'static str,
    pub value: String,
    pub reason: String,
    pub rule: Option<PlatformRule>,
}

impl Refusal {
    fn new(field: &'static str, value: impl Into<String>, reason: String) -> Refusal {
        Refusal {
            row: None,
            field,
            value: value.into(),
            reason,
            rule: Some(PlatformRule::Sequence),
        }
    }
}

/// Whether `message` may be recorded after what the store knows, and as which generation.
///
/// For an invoice's own documents the order comes first (a number cancelled since is refused
/// for that, not for its issue still on its way); for allowances, whether it was sent before.
pub fn decide(message: &Message, facts: &Facts) -> Result<Admission, Refusal> {
    match message {
        Message::Invoice(_) | Message::Cancel(_) | Message::Void(_) => {
            follows(message, facts)?;
            generation(message, facts)
        }
        Message::Allowance(_) | Message::CancelAllowance(_) => {
            let admission = generation(message, facts)?;
            follows(message, facts)?;
            Ok(admission)
        }
    }
}

/// Which generation a message is, or why it cannot be sent again.
fn generation(message: &Message, facts: &Facts) -> Result<Admission, Refusal> {
    let Some(last) = facts.same.last() else {
        return Ok(Admission::First);
    };
    let ty = message.message_type();
    let (n, seller) = (message.number(), message.seller().as_str());
    let again = |why| {
        Ok(Admission::Again {
            generation: last.generation + 1,
            why,
        })
    };
    let refuse = |reason: String| {
        Err(Refusal {
            rule: None,
            ..Refusal::new(ty.number_field(), n, reason)
        })
    };
    let sent = format!(
        "{ty} {n} of seller {seller} was already sent by job {} as {}",
        last.job_id, last.xml_name
    );
    if !last.state.is_final() {
        return refuse(format!(
            "{sent} and is still on its way to the platform (generation {}, {}); it is not sent again before its verdict. If that is an error, drop the corrected document again or run `turnbridge invoice resend {n}`",
            last.generation, last.state
        ));
    }
    if last.state == MessageState::Error {
        return again(Again::AfterError);
    }
    let standing = standing(&facts.invoice);
    match (ty, standing) {
        (MessageType::F0401, Standing::Voided(_)) => return again(Again::AfterVoid),
        (MessageType::F0501 | MessageType::F0701, Standing::Issued(issue))
            if issue.id > last.id =>
        {
            return again(Again::AfterReissue)
        }
        _ => {}
    }
    let what_to_do = match ty {
        MessageType::F0401 => format!(
            "an accepted invoice is never replaced: to change it, void it (F0701, `turnbridge invoice void {n} --reason …`) and issue it again, cancel it (F0501) and issue a new number, or issue an allowance (G0401)"
        ),
        MessageType::F0501 => {
            "a cancelled invoice stays cancelled: issue a new invoice with a new number".into()
        }
        MessageType::F0701 => format!(
            "issue it again (F0401 with the same number, or `turnbridge invoice reissue {n}`) before voiding it again"
        ),
        MessageType::G0401 => {
            "an accepted allowance is never replaced: cancel it (G0501) and issue a new allowance with a new number".into()
        }
        MessageType::G0501 => "the allowance stays cancelled".into(),
    };
    refuse(format!(
        "{sent} and accepted by the platform (generation {}, acked); {what_to_do}",
        last.generation
    ))
}

/// Whether a message may follow the documents before it.
fn follows(message: &Message, facts: &Facts) -> Result<(), Refusal> {
    let n = message.number();
    match message {
        Message::Invoice(_) => match standing(&facts.invoice) {
            Standing::Cancelled(c) => Err(Refusal::new(
                "InvoiceNumber",
                n,
                format!(
                    "invoice {n} was cancelled ({}); a cancelled number is never issued again: issue the invoice with a new number (only a void, F0701, lets the same number be issued again)",
                    c.named()
                ),
            )),
            // Issued: sent before, which [`generation`] answers.
            Standing::Unknown | Standing::Refused(_) | Standing::Issued(_) | Standing::Voided(_) => {
                Ok(())
            }
        },
        Message::Cancel(m) => takes_back(n, "cancel", m.invoice_date.0, facts),
        Message::Void(m) => takes_back(n, "void", m.invoice_date.0, facts),
        Message::Allowance(al) => {
            let mut this: BTreeMap<&str, (Decimal, usize)> = BTreeMap::new();
            for it in &al.items {
                let e = this
                    .entry(it.original_invoice_number.as_str())
                    .or_insert((Decimal::ZERO, it.row));
                e.0 = e.0.checked_add(it.amount).unwrap_or(Decimal::MAX);
            }
            for (invoice, (amount, row)) in this {
                let Some(original) = facts.originals.get(invoice) else {
                    continue;
                };
                allowance_on(invoice, amount, row, original, &al.number)?;
            }
            Ok(())
        }
        Message::CancelAllowance(m) => {
            let standing = facts.allowance.iter().rfind(|a| a.stands());
            match (standing, facts.allowance.last()) {
                (Some(a), _) if a.document_date != m.allowance_date.0 => Err(Refusal::new(
                    "AllowanceDate",
                    m.allowance_date.to_string(),
                    format!(
                        "is not the date of allowance {n} ({}, {})",
                        a.document_date.format("%Y%m%d"),
                        a.named()
                    ),
                )),
                (None, Some(refused)) => Err(Refusal::new(
                    "CancelAllowanceNumber",
                    n,
                    format!(
                        "allowance {n} was refused by the platform ({}) and never took effect: there is nothing to cancel",
                        refused.named()
                    ),
                )),
                _ => Ok(()),
            }
        }
    }
}

/// A cancel or void (`what`) of invoice `n` dated `invoice_date` in the message.
fn takes_back(n: &str, what: &str, invoice_date: NaiveDate, facts: &Facts) -> Result<(), Refusal> {
    let field = if what == "cancel" {
        "CancelInvoiceNumber"
    } else {
        "VoidInvoiceNumber"
    };
    match standing(&facts.invoice) {
        Standing::Unknown => Ok(()),
        Standing::Refused(r) => Err(Refusal::new(
            field,
            n,
            format!(
                "invoice {n} was refused by the platform ({}) and never issued: there is nothing to {what}; correct the invoice and drop it again",
                r.named()
            ),
        )),
        Standing::Cancelled(c) => Err(Refusal::new(
            field,
            n,
            format!(
                "invoice {n} was already cancelled ({}): a cancelled invoice cannot be {}",
                c.named(),
                if what == "cancel" { "cancelled again" } else { "voided" }
            ),
        )),
        Standing::Voided(v) => Err(Refusal::new(
            field,
            n,
            format!(
                "invoice {n} was voided ({}): issue it again (F0401 with the same number) before you {what} it",
                v.named()
            ),
        )),
        Standing::Issued(i) => {
            if i.document_date != invoice_date {
                return Err(Refusal::new(
                    "InvoiceDate",
                    invoice_date.format("%Y%m%d").to_string(),
                    format!(
                        "is not the date of invoice {n} ({}, {})",
                        i.document_date.format("%Y%m%d"),
                        i.named()
                    ),
                ));
            }
            let mut open: Vec<&str> = facts.allowances.iter().map(|(a, _)| a.as_str()).collect();
            open.dedup();
            if !open.is_empty() {
                return Err(Refusal::new(
                    field,
                    n,
                    format!(
                        "invoice {n} has allowances that still stand ({}): cancel them (G0501) before you {what} the invoice",
                        open.join(", ")
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// An allowance `number` taking back `amount` of invoice `invoice` (its first line on `row`).
fn allowance_on(
    invoice: &str,
    amount: Decimal,
    row: usize,
    original: &Original,
    number: &str,
) -> Result<(), Refusal> {
    let issue = match standing(&original.docs) {
        Standing::Unknown => return Ok(()),
        Standing::Issued(i) => i,
        Standing::Refused(d) | Standing::Cancelled(d) | Standing::Voided(d) => {
            let how = match d.message_type {
                MessageType::F0501 => "was cancelled",
                MessageType::F0701 => "was voided",
                _ => "was refused by the platform and never issued",
            };
            return Err(Refusal {
                row: Some(row),
                ..Refusal::new(
                    "OriginalInvoiceNumber",
                    invoice,
                    format!(
                        "invoice {invoice} {how} ({}): an allowance ({number}) takes back part of an invoice that stands",
                        d.named()
                    ),
                )
            });
        }
    };
    let Some(total) = issue.amount else {
        return Ok(());
    };
    let before = original.allowed.iter().fold(Decimal::ZERO, |s, (_, d)| {
        s.checked_add(*d).unwrap_or(Decimal::MAX)
    });
    let after = before.checked_add(amount).unwrap_or(Decimal::MAX);
    if after > total {
        return Err(Refusal {
            rule: Some(PlatformRule::AllowanceWithinInvoice),
            ..Refusal::new(
                "TotalAmount",
                amount.normalize().to_string(),
                format!(
                    "allowances on invoice {invoice} would reach {}, above its untaxed total {} (allowances cancelled by a G0501, refused ones and cancelled or voided issues do not count)",
                    after.normalize(),
                    total.normalize()
                ),
            )
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
