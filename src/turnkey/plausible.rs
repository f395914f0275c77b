//! Whether what a Turnkey file says about a message can be true, and what becomes of a file
//! that cannot be believed.
//!
//! A result, or a file Turnkey moved, is believed about a message only when:
//! - the message exists: a result naming a file turnbridge never wrote is not believed (in the
//!   flat layout, whose outbox is turnbridge's; Turnkey's own Unpack folder also holds other
//!   systems' uploads);
//! - Turnkey has taken its XML: the message is `picked_up`, or `queued` with its XML gone from
//!   the pickup folder (not `validated`, which was not handed to Turnkey yet, unless its
//!   staged file already left: moved into the pickup folder just before the process stopped);
//! - the state machine allows the step: a final state (`acked`, `error`) is only confirmed,
//!   never changed into the other, unless turnbridge only guessed it (a ProcessResult error
//!   naming no document) and the claim names the invoice; a guess about an invoice already
//!   judged is no claim against it (the better-evidenced verdict stands).
//!
//! A file with any claim that is not believed is not applied at all: its transaction is rolled
//! back and it is set aside in `state/rejected/feedback/` (moved out of the flat outbox, copied
//! out of Turnkey's folders, or only reported for a message file Turnkey moved) beside a report
//! naming the file, what it claims and why that is not believed. It stays a `feedback` health
//! problem until an operator removes what was set aside (or its report, when nothing could be
//! kept) from that folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::durable;
use crate::einvoice::printable;
use crate::spool::{Report, ReportEntry};
use crate::store::feedback::{self as records, FeedbackKind};
use crate::store::messages::MessageRow;
use crate::store::{Basis, MessageState};
use crate::turnkey::feedback::{io_err, FeedbackError, Tracker};
use crate::turnkey::results;

/// Why a claim that message `t` is now `to`, evidenced by `basis`, cannot be believed, or
/// `None` when it can.
pub(super) fn doubt(t: &MessageRow, to: MessageState, basis: Basis) -> Option<String> {
    let final_state =
        |s: MessageState| format!("it is already {s}, a final state that does not change");
    let why = match t.state {
        MessageState::PickedUp => None,
        MessageState::Queued => t
            .xml_path
            .as_ref()
            .filter(|p| Path::new(p).exists())
            .map(|p| {
                format!("its XML {p} is still in the pickup folder (Turnkey has not taken it)")
            }),
        MessageState::Acked | MessageState::Error => {
            // A repeat of the final verdict, or a move seen after the verdict, changes
            // nothing; a verdict naming the invoice overrules a guess; a guess outweighed by a
            // verdict changes nothing.
            let nothing_new = to == t.state || to == MessageState::PickedUp;
            let overrules = t.guessed && basis == Basis::Named;
            (!(nothing_new || overrules || basis == Basis::Guess)).then(|| final_state(t.state))
        }
        // Its staged file gone means it was moved into the pickup folder and the process
        // stopped before recording that: Turnkey may well have answered meanwhile.
        MessageState::Validated if published_before_a_stop(t) => None,
        MessageState::Validated => Some(format!(
            "it was never handed to Turnkey (it is {})",
            t.state
        )),
    };
    why.map(|w| format!("claims {} {} {to}, but {w}", t.message_type, t.number))
}

/// Whether a `validated` message was staged and its staged file has left (moved into the
/// pickup folder before the process stopped; it is marked `queued` when the job resumes).
fn published_before_a_stop(t: &MessageRow) -> bool {
    t.staged
        && t.staged_path
            .as_ref()
            .is_some_and(|p| !Path::new(p).exists())
}

/// The doubt about a result naming a file turnbridge never wrote.
pub(super) fn never_sent(id: &str, to: impl std::fmt::Display) -> String {
    format!(
        "claims {} {to}, but turnbridge never sent a message of that name",
        printable(id, 200)
    )
}

/// How a file set aside is kept in `state/rejected/feedback/`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Keep {
    /// Moved there (the flat outbox is turnbridge's).
    Move,
    /// Copied there (Turnkey's own folders are never changed).
    Copy,
    /// Only a report (a message file Turnkey moved: it stays where Turnkey put it).
    ReportOnly,
}

/// Files set aside as not believed, kept while what was set aside is still there: the path
/// kept (the file, or its report when the file was not kept) and the first doubt.
pub(super) type Doubted = BTreeMap<PathBuf, String>;

/// How many records of files not believed are looked at when the daemon starts.
const DOUBTED_LOADED: i64 = 1000;

/// The files not believed that are still set aside, from their records.
pub(super) fn load(conn: &rusqlite::Connection) -> Result<Doubted, FeedbackError> {
    let mut out = Doubted::new();
    for (kept, why) in records::doubted(conn, DOUBTED_LOADED)? {
        if kept.exists() {
            out.insert(kept, why);
        }
    }
    Ok(out)
}

/// The report path beside a file set aside as `base`.
fn report_of(base: &Path) -> PathBuf {
    let name = base.file_name().unwrap_or_default().to_string_lossy();
    base.with_file_name(format!("{name}.error.txt"))
}

/// A name in `dir` that neither a file nor a report holds yet.
fn free_base(dir: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|n| {
            if n == 0 {
                dir.join(name)
            } else {
                dir.join(format!("{name}-{n}"))
            }
        })
        .find(|p| !p.exists() && !report_of(p).exists())
        .expect("an unused name exists")
}

impl Tracker {
    /// Sets a file aside in `state/rejected/feedback/` beside a report, and records it (kind
    /// `rejected` or `implausible`) so it is not read again. Returns the path kept: the file
    /// there, or its report when the file was not kept.
    pub(super) fn set_aside(
        &mut self,
        path: &Path,
        md5: &str,
        kind: FeedbackKind,
        keep: Keep,
        summary: String,
        reasons: &[String],
    ) -> Result<PathBuf, FeedbackError> {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let day = chrono::Local::now().format("%Y%m%d").to_string();
        let rejected = self.rejected.clone();
        durable::create_dir_all(&rejected).map_err(io_err("create", &rejected))?;
        let dest = match keep {
            Keep::Move => durable::move_into(path, &rejected, &format!("{day}_{name}"))
                .map_err(io_err("move to rejected", path))?,
            Keep::Copy => {
                let dest = free_base(&rejected, &format!("{day}_{name}"));
                // A file too large (or not a regular file) is reported, not copied.
                if let Err(e) = durable::copy_atomic(path, &dest, results::MAX_RESULT_BYTES) {
                    warn!(file = %path.display(), "file not copied to {}: {e}", rejected.display());
                }
                dest
            }
            Keep::ReportOnly => free_base(&rejected, &format!("{day}_{name}")),
        };
        let report = Report {
            job_id: "-".into(),
            file: name.clone(),
            outcome: kind.as_str().into(),
            summary,
            accepted: 0,
            rejected: 1,
            rejected_files: if dest.exists() {
                vec![dest
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()]
            } else {
                vec![]
            },
            problems: reasons
                .iter()
                .map(|r| ReportEntry::whole_file(name.clone(), r.clone()))
                .collect(),
        };
        report.write(&dest).map_err(io_err("write report", &dest))?;
        let kept = if dest.exists() {
            dest
        } else {
            report_of(&dest)
        };
        let outcome = reasons.first().cloned().unwrap_or_default();
        let tx = self.store.transaction()?;
        // A file set aside before and dropped back (to be read again) is recorded anew.
        records::record_set_aside(&tx, path, md5, kind, &outcome, &kept)?;
        tx.commit()?;
        crate::metrics::get().feedback_file(kind);
        Ok(kept)
    }

    /// Sets aside a file whose claims are not all believed; nothing of it was applied.
    pub(super) fn set_aside_doubted(
        &mut self,
        path: &Path,
        md5: &str,
        what: &str,
        keep: Keep,
        doubts: &[String],
    ) -> Result<(), FeedbackError> {
        let again = match keep {
            Keep::Move => " (or move it back where it came from to have it read again)",
            _ => "",
        };
        let summary = format!(
            "This {what} ({}) was not believed, so nothing in it was applied: {} of its claims cannot be true. Check it against Turnkey; then delete it from here{again}. Until then turnbridge reports it as a problem.",
            path.display(),
            doubts.len()
        );
        let first = doubts.first().cloned().unwrap_or_default();
        warn!(
            file = %path.display(),
            "{what} not believed and set aside: {first} ({} claim(s) not believed)",
            doubts.len()
        );
        let kept = self.set_aside(path, md5, FeedbackKind::Implausible, keep, summary, doubts)?;
        self.doubted.insert(kept, first);
        Ok(())
    }

    /// Forgets files not believed whose set-aside copy (or report) an operator removed.
    /// Forgets the files not believed whose set-aside copy an operator removed: the problem
    /// ends, and so does the record, so a file Turnkey still holds (read in place) is read
    /// and judged again at the next scan (its cause may be gone: the XML left SRC since).
    pub(super) fn prune_doubted(&mut self) -> Result<(), FeedbackError> {
        let removed: Vec<PathBuf> = self
            .doubted
            .keys()
            .filter(|kept| !kept.exists())
            .cloned()
            .collect();
        if removed.is_empty() {
            return Ok(());
        }
        let tx = self.store.transaction()?;
        for kept in &removed {
            records::forget_doubted(&tx, kept)?;
        }
        tx.commit()?;
        for kept in &removed {
            self.doubted.remove(kept);
        }
        Ok(())
    }

    /// The health problem about files not believed, while some are set aside.
    pub(super) fn doubted_problem(&self) -> Option<String> {
        let (kept, why) = self.doubted.iter().next()?;
        Some(format!(
            "{} file(s) from Turnkey not believed and set aside in {} until removed from there (e.g. {}: {})",
            self.doubted.len(),
            printable(&self.rejected.display().to_string(), 300),
            printable(&kept.display().to_string(), 300),
            printable(why, 300)
        ))
    }
}
