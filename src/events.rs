//! The events turnbridge raises: their names (the catalogue, each with what it announces) and
//! one payload type per event. An event is written to the outbox (`events`) in the same
//! transaction as the change it announces ([`crate::store::events::add`]); webhooks deliver it
//! as `{"delivery_id", "event", "timestamp", "tenant_id", …its payload's fields}`.
//!
//! Every field of a payload is always present, `null` when it has no value, so one event's
//! payloads all have one shape whoever raised them.
//!
//! Webhook endpoints subscribe to names from the catalogue, to a family (`invoice.*`: the names
//! under a dotted prefix), or to everything (`*`); [`check_subscription`] refuses anything else.

use serde::Serialize;

use crate::store::manual::ManualAction;
use crate::store::states::{text_enum, MessageState};

text_enum! {
    /// The name of an event.
    pub enum EventName {
        UploadCompleted = "upload.completed",
        InvoiceStatusUpdated = "invoice.status.updated",
        InvoiceFeedbackOverdue = "invoice.feedback.overdue",
        InvoiceManualCancelled = "invoice.manual.cancelled",
        InvoiceManualIssued = "invoice.manual.issued",
        TurnkeyDailySummary = "turnkey.feedback.daily-summary",
        NextengineUploadCompleted = "nextengine.upload.completed",
        NextengineAccountConnected = "nextengine.account.connected",
        NextengineAuthRequired = "nextengine.auth.required",
        NextengineAuthExpiring = "nextengine.auth.expiring",
    }
}

impl EventName {
    /// What the event announces, in one line.
    pub const fn description(self) -> &'static str {
        match self {
            EventName::UploadCompleted => {
                "an e-invoice file was processed (completed, partial) or refused whole (rejected, duplicate), with its counts"
            }
            EventName::InvoiceStatusUpdated => {
                "a message changed state: QUEUED, PICKED_UP, ACKED or ERROR, with the platform's code and text"
            }
            EventName::InvoiceFeedbackOverdue => {
                "a message has waited longer than turnkey.overdue_minutes for its next step"
            }
            EventName::InvoiceManualCancelled => {
                "an operator's command (turnbridge invoice cancel, void, or resend of a cancel) put a cancel or void on its way: recorded, to be queued"
            }
            EventName::InvoiceManualIssued => {
                "an operator's command (turnbridge invoice reissue, or resend of an invoice or allowance) put an issue on its way: recorded, to be queued"
            }
            EventName::TurnkeyDailySummary => {
                "a SummaryResult or DailySummary compared with what turnbridge queued, and any mismatch"
            }
            EventName::NextengineUploadCompleted => {
                "a NextEngine goods or stock file finished uploading (done, failed, unknown) or was refused"
            }
            EventName::NextengineAccountConnected => "a NextEngine account was connected",
            EventName::NextengineAuthRequired => {
                "a NextEngine account needs a new login (its tokens were refused or expired)"
            }
            EventName::NextengineAuthExpiring => {
                "a NextEngine account's refresh token ends within a day: log in again"
            }
        }
    }
}

/// Every event, with what it announces.
pub const CATALOGUE: &[EventName] = EventName::ALL;

/// An event's payload.
pub trait Event: Serialize {
    const NAME: EventName;
    /// The tenant it is about, if any (webhooks send it as `tenant_id`).
    fn tenant(&self) -> Option<&str>;
}

/// Whether `pattern` is something a webhook endpoint can subscribe to: `*`, an event's name,
/// or a family `prefix.*` with at least one event under `prefix.`.
pub fn check_subscription(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => CATALOGUE
            .iter()
            .any(|e| e.as_str().starts_with(prefix) && e.as_str()[prefix.len()..].starts_with('.')),
        None => pattern.parse::<EventName>().is_ok(),
    }
}

/// Every family a subscription can name (`invoice.*`, `invoice.status.*`, …), sorted.
pub fn families() -> Vec<String> {
    let mut out: Vec<String> = CATALOGUE
        .iter()
        .flat_map(|e| {
            let name = e.as_str();
            name.match_indices('.')
                .map(move |(i, _)| format!("{}.*", &name[..i]))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What a subscription may name, for the message refusing one that names nothing.
pub fn valid_subscriptions() -> String {
    let names: Vec<&str> = CATALOGUE.iter().map(|e| e.as_str()).collect();
    format!(
        "event names: {}; families: {}; or \"*\" for all",
        names.join(", "),
        families().join(", ")
    )
}

fn upper<S: serde::Serializer>(state: &MessageState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.status())
}

text_enum! {
    /// How an e-invoice file ended, as `upload.completed` says.
    pub enum UploadStatus {
        /// Every message recorded was queued; rejected rows were reported.
        Completed = "completed",
        /// Set aside after an error, the messages recorded before it queued.
        Partial = "partial",
        /// Refused as a whole.
        Rejected = "rejected",
        /// The same bytes as a file processed before.
        Duplicate = "duplicate",
    }
}

/// `upload.completed`.
#[derive(Debug, Clone, Serialize)]
pub struct UploadCompleted {
    pub import_id: String,
    pub file: String,
    pub status: UploadStatus,
    pub tenant_id: String,
    pub success_count: usize,
    pub error_count: usize,
    /// Why the file was refused or set aside.
    pub reason: Option<String>,
    /// The job that processed the same bytes before (`duplicate`).
    pub duplicate_of: Option<String>,
}

impl Event for UploadCompleted {
    const NAME: EventName = EventName::UploadCompleted;
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
}

/// `invoice.status.updated`, raised by every change of a message's state
/// ([`crate::store::messages::transition`]).
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceStatusUpdated {
    pub tenant_id: String,
    pub invoice_no: String,
    pub message_type: String,
    /// The new state, upper case (`QUEUED`, `PICKED_UP`, `ACKED`, `ERROR`).
    #[serde(serialize_with = "upper")]
    pub status: MessageState,
    /// The platform's or Turnkey's code, when it gave one.
    pub mof_code: Option<String>,
    /// What the change means, when there is more to say than the state.
    pub message: Option<String>,
    /// What shows the change: the XML's path in the pickup folder, a Turnkey file, a result.
    pub evidence: String,
    /// The message's XML in the pickup folder, once it was put there.
    pub xml_path: Option<String>,
    /// The job (file) the message came from.
    pub import_id: String,
}

impl Event for InvoiceStatusUpdated {
    const NAME: EventName = EventName::InvoiceStatusUpdated;
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
}

/// `invoice.feedback.overdue`.
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceFeedbackOverdue {
    pub tenant_id: String,
    pub invoice_no: String,
    pub message_type: String,
    /// The state it waits in, upper case.
    #[serde(serialize_with = "upper")]
    pub status: MessageState,
    /// When it reached that state.
    pub since: String,
    pub overdue_minutes: u64,
}

impl Event for InvoiceFeedbackOverdue {
    const NAME: EventName = EventName::InvoiceFeedbackOverdue;
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
}

/// What an operator's command put on its way (`turnbridge invoice cancel|void|reissue|resend`),
/// the payload of `invoice.manual.cancelled` and `invoice.manual.issued`. Raised in the
/// transaction that records the message; its `invoice.status.updated` (QUEUED, …) follow.
#[derive(Debug, Clone, Serialize)]
pub struct ManualMessage {
    pub tenant_id: String,
    /// The document number: the invoice's, or the allowance's.
    pub invoice_no: String,
    pub seller_ban: String,
    /// The message recorded (`F0501`, `F0701`, `F0401`, …).
    pub message_type: String,
    /// What the operator asked for: `cancel`, `void`, `reissue`, `resend`.
    pub action: ManualAction,
    /// The reason given (a cancel's or void's), if any.
    pub reason: Option<String>,
    /// The message's generation: 1 for a first message, 2 or more when sent again.
    pub generation: u32,
    /// Who asked (the user running the command).
    pub requested_by: String,
    pub request_id: i64,
    /// The job that took the request's file.
    pub import_id: String,
    /// The XML file name the message is written under.
    pub xml_name: String,
}

/// `invoice.manual.cancelled`: a cancel (F0501) or void (F0701), or a G0501, written by an
/// operator's command.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct InvoiceManualCancelled(pub ManualMessage);

impl Event for InvoiceManualCancelled {
    const NAME: EventName = EventName::InvoiceManualCancelled;
    fn tenant(&self) -> Option<&str> {
        Some(&self.0.tenant_id)
    }
}

/// `invoice.manual.issued`: an invoice issued again (F0401 after its void), or an invoice or
/// allowance sent again after an error, by an operator's command.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct InvoiceManualIssued(pub ManualMessage);

impl Event for InvoiceManualIssued {
    const NAME: EventName = EventName::InvoiceManualIssued;
    fn tenant(&self) -> Option<&str> {
        Some(&self.0.tenant_id)
    }
}

/// `turnkey.feedback.daily-summary`: one SummaryResult message (one upload) or one
/// DailySummary, against what turnbridge knows.
#[derive(Debug, Clone, Serialize)]
pub struct DailySummary {
    #[serde(skip)]
    pub tenant: String,
    /// The day it covers (`YYYYMMDD`), when it says.
    pub date: Option<String>,
    /// The SummaryResult message's `Info/Id` (none for a DailySummary).
    pub summary_id: Option<String>,
    pub message_type: Option<String>,
    /// What turnbridge expected: the listed invoices it knows, or what it queued that day.
    pub expected: i64,
    pub total: u64,
    pub ack_count: u64,
    pub error_count: u64,
    /// What does not agree, `; `-separated.
    pub mismatch: Option<String>,
    /// The result file.
    pub evidence: String,
}

impl Event for DailySummary {
    const NAME: EventName = EventName::TurnkeyDailySummary;
    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant)
    }
}

/// `nextengine.upload.completed`.
#[derive(Debug, Clone, Serialize)]
pub struct NextengineUploadCompleted {
    pub import_id: String,
    /// The spool file (none when it was refused before it was read).
    pub file: Option<String>,
    /// `goods` or `stock`.
    pub kind: Option<crate::store::ne_jobs::NeJobKind>,
    /// The job's final state (`done`, `failed`, `unknown`, `rejected`).
    pub status: crate::store::ne_jobs::NeJobState,
    pub que_id: Option<String>,
    /// NextEngine's word on the upload, or why the file was refused.
    pub result: String,
    pub rejected_rows: Option<i64>,
}

impl Event for NextengineUploadCompleted {
    const NAME: EventName = EventName::NextengineUploadCompleted;
    fn tenant(&self) -> Option<&str> {
        None
    }
}

/// `nextengine.account.connected`.
#[derive(Debug, Clone, Serialize)]
pub struct NextengineAccountConnected {
    pub account_id: String,
}

impl Event for NextengineAccountConnected {
    const NAME: EventName = EventName::NextengineAccountConnected;
    fn tenant(&self) -> Option<&str> {
        None
    }
}

/// `nextengine.auth.required`.
#[derive(Debug, Clone, Serialize)]
pub struct NextengineAuthRequired {
    pub account_id: String,
    /// Why: NextEngine refused the tokens, or they expired.
    pub reason: String,
}

impl Event for NextengineAuthRequired {
    const NAME: EventName = EventName::NextengineAuthRequired;
    fn tenant(&self) -> Option<&str> {
        None
    }
}

/// `nextengine.auth.expiring`.
#[derive(Debug, Clone, Serialize)]
pub struct NextengineAuthExpiring {
    pub account_id: String,
}

impl Event for NextengineAuthExpiring {
    const NAME: EventName = EventName::NextengineAuthExpiring;
    fn tenant(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_name_an_event_a_family_or_everything() {
        for ok in [
            "*",
            "upload.completed",
            "invoice.*",
            "invoice.status.*",
            "turnkey.*",
            "turnkey.feedback.*",
            "nextengine.auth.*",
        ] {
            assert!(check_subscription(ok), "{ok}");
        }
        for bad in [
            "no.such.event",
            "invoice",
            "invoice.",
            "invoice.stat.*",
            "invoices.*",
            "upload.completed.*",
            ".*",
            "",
            "UPLOAD.COMPLETED",
        ] {
            assert!(!check_subscription(bad), "{bad}");
        }
        let valid = valid_subscriptions();
        for e in CATALOGUE {
            assert!(valid.contains(e.as_str()), "{valid}");
            assert!(!e.description().is_empty());
        }
        assert!(valid.contains("invoice.*") && valid.contains("nextengine.auth.*"));
    }

    #[test]
    fn every_field_of_a_payload_is_there_null_when_it_has_no_value() {
        let e = InvoiceStatusUpdated {
            tenant_id: "t".into(),
            invoice_no: "AB00000001".into(),
            message_type: "F0401".into(),
            status: MessageState::Queued,
            mof_code: None,
            message: None,
            evidence: "/in/x.xml".into(),
            xml_path: Some("/in/x.xml".into()),
            import_id: "j".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "QUEUED");
        assert!(v["mof_code"].is_null() && v["message"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 9, "{v}");
    }
}
