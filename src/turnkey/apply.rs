//! What one parsed result file says, applied to the messages it names inside the caller's
//! transaction: each claim goes through [`conclude`], so a claim that cannot be believed (see
//! [`crate::turnkey::plausible`]) changes nothing and is noted in [`Applied::doubts`]; the
//! caller then rolls the whole file back and sets it aside.

use rusqlite::Transaction;
use tracing::warn;

use crate::config::{Config, Layout};
use crate::einvoice::{printable, MessageType};
use crate::events::DailySummary;
use crate::store::feedback::{self as records, FeedbackKind, Summary};
use crate::store::messages::{self, MessageRow};
use crate::store::{self, Basis, MessageState};
use crate::turnkey::feedback::{advance, Applied, FeedbackError};
use crate::turnkey::plausible;
use crate::turnkey::results::{self, InvoiceRef, ResultFile};

/// Moves a message as a result says when that is believable; otherwise notes why it is not
/// and changes nothing.
#[allow(clippy::too_many_arguments)]
pub(super) fn conclude(
    tx: &Transaction,
    t: &MessageRow,
    to: MessageState,
    evidence: &str,
    mof_code: Option<&str>,
    message: &str,
    basis: Basis,
    applied: &mut Applied,
) -> Result<(), FeedbackError> {
    match plausible::doubt(t, to, basis) {
        Some(why) => applied.doubts.push(why),
        None => applied.changed += advance(tx, t, to, evidence, mof_code, message, basis)? as usize,
    }
    Ok(())
}

/// Finds the message a file name (with or without `.xml`) is about.
fn by_file_name(tx: &Transaction, id: &str) -> Result<Option<MessageRow>, FeedbackError> {
    let name = if id.ends_with(".xml") {
        id.to_string()
    } else {
        format!("{id}.xml")
    };
    Ok(messages::by_xml_name(tx, &name)?)
}

/// Finds the message a SummaryResult invoice reference is about. Invoices and allowances match
/// on number and date; cancels and voids carry the report date, so they match on number only.
/// Of a message sent more than once, the latest generation is the one a result is about (an
/// earlier one ended before the next was sent: in error, or voided and issued again).
fn by_reference(
    tx: &Transaction,
    ty: MessageType,
    r: &InvoiceRef,
    seller: Option<&str>,
) -> Result<Option<MessageRow>, FeedbackError> {
    let mut candidates = messages::by_type_and_number(tx, ty.as_str(), &r.number)?;
    if matches!(ty, MessageType::F0401 | MessageType::G0401) {
        if let Some(d) = &r.date {
            let want = d.replace('-', "");
            candidates.retain(|m| m.document_date.replace('-', "") == want);
        }
    }
    let latest: std::collections::BTreeMap<&str, u32> =
        candidates.iter().fold(Default::default(), |mut acc, m| {
            let g = acc.entry(m.seller_ban.as_str()).or_insert(0);
            *g = (*g).max(m.generation);
            acc
        });
    let latest: Vec<(String, u32)> = latest
        .into_iter()
        .map(|(s, g)| (s.to_string(), g))
        .collect();
    candidates.retain(|m| latest.contains(&(m.seller_ban.clone(), m.generation)));
    if candidates.len() > 1 {
        if let Some(s) = seller {
            candidates.retain(|m| m.seller_ban == s);
        }
    }
    Ok(if candidates.len() == 1 {
        candidates.pop()
    } else {
        None
    })
}

/// The message a ProcessResult names through an invoice number in its parameters.
fn by_parameters(
    tx: &Transaction,
    p: &results::ProcessResult,
) -> Result<Option<MessageRow>, FeedbackError> {
    let types: Vec<MessageType> = match p
        .message_type
        .as_deref()
        .and_then(|t| MessageType::parse_with_legacy(t).ok())
    {
        Some((t, _)) => vec![t],
        None => MessageType::ALL.to_vec(),
    };
    for number in p.results.iter().flat_map(|i| i.parameters.iter()) {
        if crate::einvoice::InvoiceNumber::parse(number).is_err() {
            continue;
        }
        for ty in &types {
            let r = InvoiceRef {
                number: number.clone(),
                date: None,
            };
            if let Some(found) = by_reference(tx, *ty, &r, None)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// How many messages (of one type, or all) turnbridge queued for Turnkey on a local day
/// (`YYYYMMDD`); transitions are stored in UTC, so the day's bounds are converted.
fn queued_on(tx: &Transaction, ty: Option<&str>, day: &str) -> Result<i64, FeedbackError> {
    use chrono::TimeZone;
    let Ok(date) = chrono::NaiveDate::parse_from_str(day, "%Y%m%d") else {
        return Ok(0);
    };
    let bound = |d: chrono::NaiveDate| {
        chrono::Local
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            })
    };
    let (Some(start), Some(end)) = (bound(date), date.succ_opt().and_then(bound)) else {
        return Ok(0);
    };
    Ok(messages::queued_between(tx, &start, &end, ty)?)
}

/// Applies a parsed result file; returns its kind (ack, error, process, summary, daily) and
/// what it changed or could not believe.
pub(super) fn apply(
    tx: &Transaction,
    file: &ResultFile,
    evidence: &str,
    feedback_id: i64,
    config: &Config,
) -> Result<(FeedbackKind, Applied), FeedbackError> {
    let mut applied = Applied::default();
    let kind = match file {
        ResultFile::Ack(a) => {
            match by_file_name(tx, &a.message_id)? {
                Some(t) => {
                    let msg = match &a.receipt_no {
                        Some(r) => format!("acknowledged, receipt {r}"),
                        None => "acknowledged".to_string(),
                    };
                    conclude(
                        tx,
                        &t,
                        MessageState::Acked,
                        evidence,
                        None,
                        &msg,
                        Basis::Named,
                        &mut applied,
                    )?;
                }
                None => applied
                    .doubts
                    .push(plausible::never_sent(&a.message_id, MessageState::Acked)),
            }
            FeedbackKind::Ack
        }
        ResultFile::Error(e) => {
            match by_file_name(tx, &e.original_message_id)? {
                Some(t) => {
                    let msg = e.error_message.clone().unwrap_or_else(|| "error".into());
                    let code = Some(e.error_code.as_str());
                    conclude(
                        tx,
                        &t,
                        MessageState::Error,
                        evidence,
                        code,
                        &msg,
                        Basis::Named,
                        &mut applied,
                    )?;
                }
                None => applied.doubts.push(plausible::never_sent(
                    &e.original_message_id,
                    MessageState::Error,
                )),
            }
            FeedbackKind::Error
        }
        ResultFile::Process(p)
            if crate::turnkey::gateway::apply_to_pack(tx, p, evidence, &mut applied)? =>
        {
            FeedbackKind::Process
        }
        ResultFile::Process(p) => {
            // MessageInfo/Id may be turnbridge's file name, or Turnkey's own pack id: then an
            // invoice number among the results' parameters names the message.
            let found = match by_file_name(tx, &p.message_id)? {
                Some(t) => Some(t),
                None => by_parameters(tx, p)?,
            };
            match found {
                Some(t) => {
                    // Codes of zeros mean success; anything else is an error with its code.
                    let failure = p
                        .results
                        .iter()
                        .find(|i| !i.code.bytes().all(|b| b == b'0'));
                    match failure {
                        None => conclude(
                            tx,
                            &t,
                            MessageState::Acked,
                            evidence,
                            None,
                            "accepted (ProcessResult)",
                            Basis::Named,
                            &mut applied,
                        )?,
                        Some(i) => {
                            let msg = i
                                .description
                                .clone()
                                .unwrap_or_else(|| "ProcessResult error".into());
                            let code = Some(i.code.as_str());
                            conclude(
                                tx,
                                &t,
                                MessageState::Error,
                                evidence,
                                code,
                                &msg,
                                Basis::Named,
                                &mut applied,
                            )?
                        }
                    }
                }
                // The flat layout's outbox holds results about turnbridge's own files only;
                // Turnkey's Unpack folder also holds other systems' uploads.
                None if config.turnkey.layout == Layout::Flat => applied
                    .doubts
                    .push(plausible::never_sent(&p.message_id, "processed")),
                None => applied.unmatched.push(p.message_id.clone()),
            }
            FeedbackKind::Process
        }
        ResultFile::Summary(s) => {
            for m in &s.messages {
                let unmatched_before = applied.unmatched.len() as i64;
                let changed_before = applied.changed;
                // What this summary is known by on the messages it judges (its Message/Info/Id).
                let summary_key = if m.id.is_empty() {
                    evidence
                } else {
                    m.id.as_str()
                };
                let mut newly_judged = 0;
                let ty = MessageType::parse_with_legacy(&m.message_type)
                    .ok()
                    .map(|(t, _)| t);
                let mut mismatch = Vec::new();
                if !m.counts_agree() {
                    mismatch.push(format!(
                        "Total {} is not Good {} + Failed {}",
                        m.total, m.good, m.failed
                    ));
                }
                match ty {
                    None => mismatch.push(format!("unknown message type {}", m.message_type)),
                    Some(ty) => {
                        for (refs, to, text) in [
                            (
                                &m.good_invoices,
                                MessageState::Acked,
                                "accepted by the platform",
                            ),
                            (
                                &m.failed_invoices,
                                MessageState::Error,
                                "failed at the platform",
                            ),
                        ] {
                            for r in refs {
                                match by_reference(tx, ty, r, s.from.as_deref())? {
                                    Some(t) => {
                                        let msg = format!("{text} (SummaryResult {})", m.id);
                                        conclude(
                                            tx,
                                            &t,
                                            to,
                                            evidence,
                                            None,
                                            &msg,
                                            Basis::Named,
                                            &mut applied,
                                        )?;
                                        newly_judged +=
                                            messages::note_summary(tx, t.id, summary_key)? as usize;
                                    }
                                    None => applied.unmatched.push(format!("{ty} {}", r.number)),
                                }
                            }
                        }
                    }
                }
                // A SummaryResult message covers one pack: what turnbridge expected is the
                // listed invoices it knows; listed invoices it does not know are a mismatch.
                let date = m.date().map(str::to_string);
                let listed = (m.good_invoices.len() + m.failed_invoices.len()) as i64;
                let unknown = applied.unmatched.len() as i64 - unmatched_before;
                let expected = listed - unknown;
                if unknown > 0 {
                    mismatch.push(format!("{unknown} listed invoice(s) unknown to turnbridge"));
                }
                if listed > 0 && listed != m.total as i64 {
                    mismatch.push(format!(
                        "{listed} invoice(s) listed, Total says {}",
                        m.total
                    ));
                }
                // Read again (its record pruned, the file dropped again): nothing is new about
                // any message it names, so it raises nothing again.
                if expected > 0 && newly_judged == 0 && applied.changed == changed_before {
                    applied.notes.push(format!(
                        "SummaryResult {} was applied before: nothing new about its {expected} invoice(s)",
                        printable(&m.id, 100)
                    ));
                    continue;
                }
                summary_event(
                    tx,
                    evidence,
                    feedback_id,
                    Some(&m.id),
                    Some(&m.message_type),
                    date.as_deref(),
                    expected,
                    m.total,
                    m.good,
                    m.failed,
                    &mismatch,
                    config,
                )?;
                applied.notes.extend(mismatch);
            }
            if !applied.unmatched.is_empty() {
                applied.notes.push(format!(
                    "{} reference(s) unknown to turnbridge",
                    applied.unmatched.len()
                ));
            }
            FeedbackKind::Summary
        }
        ResultFile::Daily(d) => {
            let mut mismatch = Vec::new();
            if d.success.checked_add(d.failed) != Some(d.total) {
                mismatch.push(format!(
                    "Total {} is not Success {} + Failed {}",
                    d.total, d.success, d.failed
                ));
            }
            let expected = queued_on(tx, None, &d.date)?;
            if expected != d.total as i64 {
                mismatch.push(format!(
                    "turnbridge queued {expected} on {}, the summary counts {}",
                    d.date, d.total
                ));
            }
            summary_event(
                tx,
                evidence,
                feedback_id,
                None,
                None,
                Some(&d.date),
                expected,
                d.total,
                d.success,
                d.failed,
                &mismatch,
                config,
            )?;
            applied.notes.extend(mismatch);
            FeedbackKind::Daily
        }
    };
    Ok((kind, applied))
}

#[allow(clippy::too_many_arguments)]
fn summary_event(
    tx: &Transaction,
    evidence: &str,
    feedback_id: i64,
    summary_id: Option<&str>,
    message_type: Option<&str>,
    date: Option<&str>,
    expected: i64,
    total: u64,
    good: u64,
    failed: u64,
    mismatch: &[String],
    config: &Config,
) -> Result<(), FeedbackError> {
    let mismatch = (!mismatch.is_empty()).then(|| mismatch.join("; "));
    let owned = |s: Option<&str>| s.map(str::to_string);
    records::add_summary(
        tx,
        feedback_id,
        &Summary {
            date: owned(date),
            message_type: owned(message_type),
            summary_id: owned(summary_id),
            expected,
            total: total as i64,
            good: good as i64,
            failed: failed as i64,
            mismatch: mismatch.clone(),
            at: store::now(),
        },
    )?;
    store::events::add(
        tx,
        &DailySummary {
            tenant: config.einvoice.default_tenant.clone(),
            date: owned(date),
            summary_id: owned(summary_id),
            message_type: owned(message_type),
            expected,
            total,
            ack_count: good,
            error_count: failed,
            mismatch: mismatch.clone(),
            evidence: evidence.to_string(),
        },
    )?;
    if let Some(m) = &mismatch {
        warn!(date, "summary does not match the store: {m}");
    }
    Ok(())
}
