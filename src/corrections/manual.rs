//! Operators' commands on an invoice: cancel (F0501) or void (F0701) it from what the store
//! knows, issue it again after a void (`reissue`), or send a message refused by the platform
//! again (`resend`).
//!
//! A command writes its message as a JSON batch into the e-invoice spool
//! (`manual-<request>-<action>-<number>.json`), so the message takes the same way as a dropped
//! file: the daemon reads and checks it, records it (as the next generation where there was
//! one before), stages and publishes it, raises its events, and archives the file. Before the
//! file is written the command runs the same checks against the store ([`place`]), so what
//! the daemon would refuse is refused at once, with the same reason. The request is recorded
//! ([`crate::store::manual`]) with the file's name and MD5: only the job that takes exactly
//! that file raises `invoice.manual.cancelled` (cancel, void, and a resent G0501) or
//! `invoice.manual.issued` (reissue, and a resent F0401 or G0401).
//!
//! A **re-issue** is the last issue of a voided invoice (F0401, the same number and content)
//! issued again, as its next generation; to issue it with other content, drop the corrected
//! F0401 instead (also allowed after the void). A **resend** is the latest generation of a
//! message that ended in `error`, the same document again (after a fix on Turnkey's side):
//! both are read back from the file the message came from, kept in the archive.
//!
//! [`place`] and [`outcome`] are what the admin API calls too.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{Timelike, Utc};
use md5::{Digest, Md5};
use rusqlite::Connection;
use thiserror::Error;

use super::admit::{admit, Admit};
use crate::config::Config;
use crate::durable;
use crate::einvoice::archive::hex;
use crate::einvoice::deadline::taiwan_time;
use crate::einvoice::model::{CancelInvoice, VoidInvoice};
use crate::einvoice::sequence::{Admission, Again};
use crate::einvoice::timing::TimeRules;
use crate::einvoice::types::{Ban, BuyerId, InvoiceNumber, MigDate, MigTime};
use crate::einvoice::{self, write, Accepted, Message, MessageType};
use crate::store::manual::{self as requests, ManualAction, NewRequest, Request};
use crate::store::messages::{self, MessageRow};
use crate::store::{jobs, JobState, MessageState, Store, StoreError};

#[derive(Debug, Error)]
pub enum ManualError {
    /// What the operator asked for cannot be done; says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// An operator's command.
#[derive(Debug, Clone)]
pub struct Order {
    pub action: ManualAction,
    /// The invoice number (the allowance number, for a resent G0401 or G0501).
    pub number: String,
    /// The message to resend (resend only; F0401 when not given).
    pub message_type: Option<MessageType>,
    /// The seller, when several have sent this number.
    pub seller: Option<String>,
    /// Why (a cancel's or void's reason: 1 to 20 characters, written into the message).
    pub reason: Option<String>,
    /// Who asks (recorded and announced).
    pub requested_by: String,
}

/// A request placed: its file is in the spool.
#[derive(Debug, Clone)]
pub struct Placed {
    pub request: Request,
    pub path: PathBuf,
    /// The generation the message will be recorded as.
    pub generation: u32,
    /// For a resend or re-issue: whether the XML is byte for byte the one sent before (it
    /// differs only when turnbridge renders that message differently since).
    pub same_xml: Option<bool>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its file waits in the spool, or is being processed.
    Waiting,
    /// Its message was recorded (and, once its state is past `validated`, queued).
    Recorded(Box<MessageRow>),
    /// The daemon refused it: why.
    Refused(String),
}

/// Checks `order` against the store exactly as the daemon will check its message, records the
/// request and writes its file into the spool. Nothing is written when it is refused.
pub fn place(store: &mut Store, config: &Config, order: &Order) -> Result<Placed, ManualError> {
    let target_type = match order.action {
        ManualAction::Resend => order.message_type.unwrap_or(MessageType::F0401),
        ManualAction::Cancel | ManualAction::Void | ManualAction::Reissue => MessageType::F0401,
    };
    let latest = latest(
        store.conn(),
        target_type,
        &order.number,
        order.seller.as_deref(),
    )?;
    let (message, tenant, before) = match order.action {
        ManualAction::Cancel | ManualAction::Void => {
            let reason = order.reason.clone().unwrap_or_default();
            let m = take_back(store.conn(), config, &latest, order.action, reason)?;
            (m, latest.tenant.clone(), None)
        }
        ManualAction::Reissue | ManualAction::Resend => {
            let m = stored_message(store.conn(), config, &latest)?;
            (m, latest.tenant.clone(), Some(&latest))
        }
    };

    // The daemon's checks, on the very bytes it will read.
    let bytes = write::to_json(&message, &tenant);
    let accepted = check(config, &bytes)?;
    let generation = match admit(store.conn(), "", &accepted)? {
        Admit::Refused(p) => {
            return Err(ManualError::Refused(format!(
                "{} {}: {} {}",
                accepted.message.message_type(),
                order.number,
                p.field,
                p.reason
            )))
        }
        // No job is named "": never the case, but never a panic either.
        Admit::Recorded => {
            return Err(ManualError::Refused(format!(
                "{} {} is already recorded",
                accepted.message.message_type(),
                order.number
            )))
        }
        Admit::Record(admission) => fits(order, &latest, admission)?,
    };
    let same_xml = before.map(|b| b.xml_md5.as_deref() == Some(&hex(&Md5::digest(&accepted.xml))));

    // Recorded first: a file in the spool always has its request.
    let md5 = hex(&Md5::digest(&bytes));
    let ty = accepted.message.message_type();
    let new = NewRequest {
        action: order.action,
        message_type: ty.as_str(),
        seller_ban: accepted.message.seller().as_str(),
        number: accepted.message.number(),
        reason: order.reason.as_deref(),
        requested_by: &order.requested_by,
        md5: &md5,
    };
    let tx = store.transaction()?;
    let id = requests::insert(&tx, &new, |id| {
        format!(
            "manual-{id}-{}-{}.json",
            order.action,
            accepted.message.number()
        )
    })?;
    tx.commit().map_err(StoreError::from)?;
    let request = requests::by_id(store.conn(), id)?.expect("the request just recorded");
    let path = config.einvoice_spool().join(&request.file_name);
    if let Err(e) = drop_into_spool(&path, &bytes) {
        let tx = store.transaction()?;
        requests::remove(&tx, id)?;
        tx.commit().map_err(StoreError::from)?;
        return Err(ManualError::Io {
            action: "write",
            path,
            source: e,
        });
    }
    Ok(Placed {
        request,
        path,
        generation,
        same_xml,
    })
}

/// The latest generation of a type and number, of the one seller that sent it (or `seller`).
fn latest(
    conn: &Connection,
    ty: MessageType,
    number: &str,
    seller: Option<&str>,
) -> Result<MessageRow, ManualError> {
    let mut rows = messages::by_type_and_number(conn, ty.as_str(), number)?;
    if let Some(s) = seller {
        rows.retain(|m| m.seller_ban == s);
    }
    let mut sellers: Vec<&str> = rows.iter().map(|m| m.seller_ban.as_str()).collect();
    sellers.sort();
    sellers.dedup();
    match sellers.as_slice() {
        [] => Err(ManualError::Refused(format!(
            "turnbridge has sent no {ty} {number}{}: only what it sent can be {}",
            seller
                .map(|s| format!(" of seller {s}"))
                .unwrap_or_default(),
            if ty == MessageType::F0401 {
                "cancelled, voided or issued again from the store (for others, drop the F0501 or F0701 into the spool)"
            } else {
                "sent again"
            }
        ))),
        [_] => Ok(rows
            .into_iter()
            .max_by_key(|m| m.generation)
            .expect("a row per seller")),
        many => Err(ManualError::Refused(format!(
            "{ty} {number} was sent for sellers {}: name one with --seller",
            many.join(", ")
        ))),
    }
}

/// Whether the admission is what the action is for.
fn fits(order: &Order, latest: &MessageRow, admission: Admission) -> Result<u32, ManualError> {
    let n = &order.number;
    let wrong = |what: String| Err(ManualError::Refused(what));
    match (order.action, admission) {
        (ManualAction::Reissue, Admission::Again { why: Again::AfterVoid, generation }) => {
            Ok(generation)
        }
        (ManualAction::Reissue, _) => wrong(format!(
            "invoice {n} is not voided ({} is {}): only a voided invoice is issued again; to send an invoice the platform refused again, use `turnbridge invoice resend {n}`",
            latest.xml_name, latest.state
        )),
        (ManualAction::Resend, Admission::Again { why: Again::AfterError, generation }) => {
            Ok(generation)
        }
        (ManualAction::Resend, _) => wrong(format!(
            "{} {n} generation {} is {}, not error: only a message the platform refused is sent again{}",
            latest.message_type,
            latest.generation,
            latest.state,
            if latest.message_type == MessageType::F0401.as_str() {
                format!("; to issue a voided invoice again, use `turnbridge invoice reissue {n}`")
            } else {
                String::new()
            }
        )),
        (ManualAction::Cancel | ManualAction::Void, a) => Ok(a.generation()),
    }
}

/// The F0501 or F0701 of an invoice, from its latest issue, dated now (Taiwan time).
fn take_back(
    conn: &Connection,
    config: &Config,
    issue: &MessageRow,
    action: ManualAction,
    reason: String,
) -> Result<Message, ManualError> {
    let bad = |what: String| ManualError::Refused(format!("invoice {}: {what}", issue.number));
    let buyer = match &issue.buyer_id {
        Some(b) => b.clone(),
        // Recorded before the store kept buyers: read it from the invoice's own file.
        None => stored_message(conn, config, issue)?.buyer_id().to_string(),
    };
    let now = taiwan_time(Utc::now());
    let number = InvoiceNumber::parse(&issue.number).map_err(bad)?;
    let invoice_date = MigDate(
        chrono::NaiveDate::parse_from_str(&issue.document_date, "%Y-%m-%d")
            .map_err(|e| bad(e.to_string()))?,
    );
    let buyer_id = BuyerId::parse(&buyer).map_err(bad)?;
    let seller_id = Ban::parse(&issue.seller_ban).map_err(bad)?;
    let (date, time) = (
        MigDate(now.date()),
        MigTime(now.time().with_nanosecond(0).unwrap_or_default()),
    );
    Ok(match action {
        ManualAction::Cancel => Message::Cancel(CancelInvoice {
            number,
            invoice_date,
            buyer_id,
            seller_id,
            cancel_date: date,
            cancel_time: time,
            reason,
            return_tax_document_number: None,
            remark: None,
            reserved1: None,
            reserved2: None,
        }),
        _ => Message::Void(VoidInvoice {
            number,
            invoice_date,
            buyer_id,
            seller_id,
            void_date: date,
            void_time: time,
            reason,
            remark: None,
            reserved1: None,
            reserved2: None,
        }),
    })
}

/// A recorded message, read again from the file it came from (kept in the archive), as it
/// was then.
pub fn stored_message(
    conn: &Connection,
    config: &Config,
    row: &MessageRow,
) -> Result<Message, ManualError> {
    let gone = |why: String| {
        ManualError::Refused(format!(
            "{} {} generation {} came from {} (job {}), which {why}: drop the document into the spool again instead",
            row.message_type, row.number, row.generation, row.source_file, row.job_id
        ))
    };
    let job = jobs::job(conn, &row.job_id)?.ok_or_else(|| gone("is no longer recorded".into()))?;
    let path = job
        .final_path
        .clone()
        .ok_or_else(|| gone("was never archived".into()))?;
    let bytes = crate::limited::open(Path::new(&path))
        .and_then(|(f, meta)| crate::limited::read_open(&f, &meta, config.einvoice.max_file_bytes))
        .map_err(|e| gone(format!("cannot be read from the archive ({e})")))?;
    // As it was read then: no clock, no period rule (the message sent again is checked anew).
    let opts = einvoice::ReadOptions {
        time: TimeRules {
            now: None,
            refuse_late_cancels: false,
            ..TimeRules::default()
        },
        ..config.read_options()
    };
    let verdict = einvoice::check_batch(&job.source_name, &bytes, &opts)
        .map_err(|e| gone(format!("no longer reads ({e})")))?;
    verdict
        .accepted
        .into_iter()
        .map(|a| a.message)
        .find(|m| {
            m.message_type().as_str() == row.message_type
                && m.seller().as_str() == row.seller_ban
                && m.number() == row.number
        })
        .ok_or_else(|| gone("no longer holds it as a valid message".into()))
}

/// The daemon's read and check of a request's bytes: its one message, or why not.
fn check(config: &Config, bytes: &[u8]) -> Result<Accepted, ManualError> {
    let mut verdict = einvoice::check_batch("manual.json", bytes, &config.read_options())
        .map_err(|e| ManualError::Refused(e.to_string()))?;
    if let Some(r) = verdict.rejected.first() {
        let problems: Vec<String> = r
            .problems
            .iter()
            .map(|p| format!("{} {:?}: {}", p.field, p.value, p.reason))
            .collect();
        return Err(ManualError::Refused(problems.join("; ")));
    }
    Ok(verdict.accepted.remove(0))
}

/// Writes a request's file into the spool the careful way: a hidden temp file, synced, then
/// renamed (taken at once). Run as root, the file is given to the spool folder's owner, the
/// service user, who must read it.
fn drop_into_spool(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    durable::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let placed = durable::write_synced(&tmp, bytes)
        .and_then(|()| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                let owner = std::fs::metadata(dir)?;
                std::os::unix::fs::chown(&tmp, Some(owner.uid()), Some(owner.gid()))?;
            }
            Ok(())
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed?;
    durable::fsync_dir(dir)
}

/// What became of request `id`.
pub fn outcome(conn: &Connection, id: i64) -> Result<Outcome, StoreError> {
    let Some(r) = requests::by_id(conn, id)? else {
        return Ok(Outcome::Refused(format!("request {id} is not recorded")));
    };
    if let Some(m) = r.message_id {
        if let Some(row) = messages::by_id(conn, m)? {
            return Ok(Outcome::Recorded(Box::new(row)));
        }
    }
    if let Some(reason) = r.refusal {
        return Ok(Outcome::Refused(reason));
    }
    // A file refused whole (unreadable, the same bytes as another) never reaches the record.
    let refused = jobs::of_content(conn, &r.md5)?.into_iter().find(|j| {
        j.source_name == r.file_name && matches!(j.state, JobState::Rejected | JobState::Duplicate)
    });
    Ok(match refused {
        Some(j) => Outcome::Refused(
            j.reason
                .unwrap_or_else(|| format!("job {} refused the file", j.id)),
        ),
        None => Outcome::Waiting,
    })
}

/// Whether a recorded message has gone past being recorded (queued, or further).
pub fn is_on_its_way(row: &MessageRow) -> bool {
    row.state != MessageState::Validated
}

/// The user running this command, for the record: the one `sudo` was run by, else the login.
pub fn current_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}
