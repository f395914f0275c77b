//! Following each message after it is queued: Turnkey's folder moves and the results it and
//! the platform write back drive the message's state,
//! `queued → picked_up → acked | error`.
//!
//! Evidence, by layout:
//! - **flat**: a file gone from the pickup folder is `picked_up`; a file in `error` is `error`
//!   (Turnkey could not process it); `ACK` / `ERROR` files in `outbox` make it `acked` /
//!   `error`; `DailySummary` files raise a summary event.
//! - **turnkey**: the real Turnkey's own folders, read in place (see
//!   `turnkey::gateway`): BAK/ERR moves, packs, and the ProcessResult and SummaryResult
//!   files Unpack leaves.
//!
//! Every file is applied in one transaction that also records the file (path and MD5) and
//! writes the events the changes raise, so a file seen again after a restart changes nothing.
//! States only move forward; a final state never changes. Result files are moved to
//! `state/archive/feedback/YYYY-MM-DD/` once applied, and pruned after `retention_days`;
//! files in Turnkey's own folders are left where they are.
//!
//! What is not applied goes to `state/rejected/feedback/` beside a report: a result file too
//! large to be one ([`results::MAX_RESULT_BYTES`], set aside unread); one that does not parse
//! once it has stayed the same for `turnkey.result_unchanged_ms` (it may still be being
//! written, see [`crate::turnkey::unparsed`]); and a file whose claims cannot be true (see
//! [`crate::turnkey::plausible`]), which stays a health problem until an operator removes it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use rusqlite::Transaction;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, Layout};
use crate::durable;
use crate::einvoice::archive::hex;
use crate::einvoice::printable;
use crate::events::InvoiceFeedbackOverdue;
use crate::store::feedback::{self as records, FeedbackKind};
use crate::store::messages::{self, Change, MessageRow};
use crate::store::{self, Basis, MessageState, Store, StoreError};
use crate::turnkey::apply::apply;
pub use crate::turnkey::files::settled_files;
use crate::turnkey::files::{md5_of, read_limited, settled_files_noting_young};
use crate::turnkey::layout::{Def, DefTemplate};
use crate::turnkey::plausible::{self, Keep};
use crate::turnkey::results::{self, ResultFile};
use crate::turnkey::unparsed::{self, Verdict};
use crate::turnkey::InboxTemplate;

#[derive(Debug, Error)]
pub enum FeedbackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<rusqlite::Error> for FeedbackError {
    fn from(e: rusqlite::Error) -> Self {
        FeedbackError::Store(StoreError::Sql(e))
    }
}

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FeedbackError + 'a {
    move |source| FeedbackError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What one applied file changed, for its record and the log.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub(super) changed: usize,
    pub(super) unmatched: Vec<String>,
    pub(super) notes: Vec<String>,
    /// Claims that cannot be true: the file is then not applied at all.
    pub(super) doubts: Vec<String>,
}

/// How many unmatched references an outcome names (the rest are counted).
const NAMED_UNMATCHED: usize = 20;

impl Applied {
    fn outcome(&self) -> String {
        let mut s = format!("{} message(s) changed", self.changed);
        if !self.unmatched.is_empty() {
            let named: Vec<String> = self
                .unmatched
                .iter()
                .take(NAMED_UNMATCHED)
                .map(|u| printable(u, 100))
                .collect();
            s.push_str(&format!("; matched nothing for {}", named.join(", ")));
            if self.unmatched.len() > NAMED_UNMATCHED {
                s.push_str(&format!(
                    " and {} more",
                    self.unmatched.len() - NAMED_UNMATCHED
                ));
            }
        }
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }
}

/// Moves a message forward (never back), with its event, inside `tx`; returns whether it
/// moved. A final state turnbridge guessed is the one that changes into the other, by a
/// verdict naming the message; confirmed by one, it is no longer a guess.
pub(super) fn advance(
    tx: &Transaction,
    t: &MessageRow,
    to: MessageState,
    evidence: &str,
    mof_code: Option<&str>,
    message: &str,
    basis: Basis,
) -> Result<bool, FeedbackError> {
    if !t.state.allows(to, t.guessed, basis) {
        if basis == Basis::Named && t.guessed && to == t.state {
            messages::confirm_guess(tx, t.id)?;
        }
        return Ok(false);
    }
    let change = Change {
        to,
        evidence,
        mof_code,
        message: Some(message),
        basis,
    };
    messages::transition(tx, t.id, t.state, &change)?;
    info!(
        tenant_id = %t.tenant,
        invoice_no = %t.number,
        message_type = %t.message_type,
        from = %t.state,
        to = %to,
        evidence,
        "message {to}"
    );
    Ok(true)
}

/// Reads Turnkey's folders and results and applies them to the store.
pub struct Tracker {
    pub config: Config,
    pub store: Store,
    template: InboxTemplate,
    /// Turnkey's `<def>` folder (turnkey layout).
    pub(super) def: Option<DefTemplate>,
    archive: PathBuf,
    pub(super) rejected: PathBuf,
    /// ERR files whose reason is not in Turnkey.log yet, and ProcessResults whose pack is not
    /// seen yet, with when they were first seen; only those seen in the last scan are kept.
    pub(super) deferred: std::collections::HashMap<PathBuf, std::time::Instant>,
    /// The deferred files seen in the current scan.
    pub(super) touched: std::collections::HashSet<PathBuf>,
    /// Set by a result deferred in this scan.
    pub(super) deferring: bool,
    /// Files that could not be read.
    pub(super) unreadable: std::collections::BTreeMap<PathBuf, Unreadable>,
    /// ProcessResults applied to nothing after their pack never showed up.
    pub(super) late: std::collections::BTreeMap<PathBuf, String>,
    /// Files not believed, set aside until an operator removes them.
    pub(super) doubted: plausible::Doubted,
    /// Result files that do not parse yet (they may still be being written).
    pub(super) unparsed: unparsed::Waiting,
    /// How long a result that does not parse must stay the same before it is set aside.
    pub result_unchanged: Duration,
    /// How long a ProcessResult waits for its upload's pack before falling back to numbers.
    pub pack_wait: Duration,
    /// Set by a scan that saw files still being written: scan again soon.
    pub pending: bool,
}

/// How many scans try a file that cannot be read (per run of the daemon).
const UNREADABLE_TRIES: u32 = 3;

/// A file that could not be read: how many scans tried since it last changed, the error, and
/// the file as it was then (size, modification and status-change times), so a file fixed
/// since (its mode or owner changed, or a new copy) is tried again.
#[derive(Debug, Default)]
pub(super) struct Unreadable {
    tries: u32,
    why: String,
    stamp: Option<(u64, i64, i64)>,
}

/// What changes when a file is fixed or replaced.
fn stamp_of(f: &Path) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(f).ok()?;
    Some((
        m.size(),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime_nsec() + m.ctime() * 1_000_000_000,
    ))
}

impl Tracker {
    pub fn open(config: Config) -> Result<Tracker, FeedbackError> {
        let store = Store::open(&config.database())?;
        let template =
            InboxTemplate::parse(&config.turnkey.inbox).map_err(|m| FeedbackError::Io {
                action: "parse turnkey.inbox",
                path: config.turnkey.inbox.clone().into(),
                source: io::Error::new(io::ErrorKind::InvalidInput, m),
            })?;
        let def = match config.turnkey.layout {
            Layout::Flat => None,
            Layout::Turnkey => Some(DefTemplate::from_pickup(&config.turnkey.inbox).map_err(
                |m| FeedbackError::Io {
                    action: "derive Turnkey's folder from turnkey.inbox",
                    path: config.turnkey.inbox.clone().into(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, m),
                },
            )?),
        };
        let archive = config.paths.state.join("archive/feedback");
        let rejected = config.paths.state.join("rejected/feedback");
        let unreadable = records::unreadable(store.conn())?
            .into_iter()
            .map(|(path, why)| {
                let u = Unreadable {
                    why,
                    ..Unreadable::default()
                };
                (path, u)
            })
            .collect();
        let doubted = plausible::load(store.conn())?;
        let result_unchanged = Duration::from_millis(config.turnkey.result_unchanged_ms);
        Ok(Tracker {
            config,
            store,
            template,
            def,
            archive,
            rejected,
            deferred: Default::default(),
            touched: Default::default(),
            deferring: false,
            unreadable,
            late: Default::default(),
            doubted,
            unparsed: Default::default(),
            result_unchanged,
            pack_wait: Duration::from_secs(60),
            pending: false,
        })
    }

    /// The folders to watch for feedback (recursively). Turnkey's own folders are only
    /// watched when they exist: the daemon never creates them.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        match self.config.turnkey.layout {
            Layout::Flat => vec![
                self.config.turnkey.outbox.clone(),
                self.config.turnkey.error.clone(),
                self.template.fixed_root(),
            ],
            Layout::Turnkey => {
                let mut dirs = vec![self.template.fixed_root()];
                if let Ok(defs) = self.defs() {
                    for d in defs {
                        dirs.extend(d.pack_dirs());
                        dirs.extend(d.result_dirs());
                    }
                }
                dirs.retain(|d| d.is_dir());
                dirs
            }
        }
    }

    /// Reads every new file in the feedback folders and applies it; returns how many files
    /// were applied.
    pub fn scan(&mut self) -> Result<usize, FeedbackError> {
        let settle = Duration::from_millis(self.config.einvoice.settle_ms);
        let mut young = false;
        self.touched.clear();
        self.deferring = false;
        let n = match self.config.turnkey.layout {
            Layout::Flat => {
                let mut n = 0;
                let error_dir = self.config.turnkey.error.clone();
                for f in settled_files_noting_young(&error_dir, settle, &mut young) {
                    if self.gave_up(&f) {
                        continue;
                    }
                    let r = self.message_file(&f, FeedbackKind::Err, None);
                    n += self.per_file(&f, r)? as usize;
                }
                // Folder moves before results: a file that left the pickup folder was picked
                // up before any answer about it, so the story reads queued → picked_up → acked.
                self.left_pickup_folder()?;
                let outbox = self.config.turnkey.outbox.clone();
                for f in settled_files_noting_young(&outbox, settle, &mut young) {
                    if self.gave_up(&f) {
                        continue;
                    }
                    let r = self.guarded_result_file(&f);
                    n += self.per_file(&f, r)?;
                }
                n
            }
            Layout::Turnkey => self.scan_turnkey(settle, &mut young)?,
        };
        let touched = std::mem::take(&mut self.touched);
        self.deferred.retain(|p, _| touched.contains(p));
        self.unreadable.retain(|p, _| p.exists());
        self.late.retain(|p, _| p.exists());
        self.prune_doubted()?;
        self.prune_unparsed();
        self.pending = young || self.deferring;
        self.raise_overdue()?;
        Ok(n)
    }

    /// The result of handling one file: an error reading that file is recorded (kind
    /// `unreadable`, logged once) and the scan goes on with the next file.
    pub(super) fn per_file<T: Default>(
        &mut self,
        f: &Path,
        r: Result<T, FeedbackError>,
    ) -> Result<T, FeedbackError> {
        match r {
            Err(FeedbackError::Io {
                action: "read" | "stat",
                path,
                source,
            }) if path == f => {
                let why = source.to_string();
                let entry = self.unreadable.entry(f.to_path_buf()).or_default();
                entry.tries += 1;
                entry.why = why.clone();
                entry.stamp = stamp_of(f);
                let tx = self.store.transaction()?;
                let new = records::record_unreadable(&tx, f, &why)?;
                tx.commit()?;
                if new {
                    warn!(file = %f.display(), "cannot read this file, skipped: {why}");
                }
                Ok(T::default())
            }
            Ok(v) => {
                self.unreadable.remove(f);
                Ok(v)
            }
            other => other,
        }
    }

    /// Whether a file that could not be read was tried often enough since it last changed.
    pub(super) fn gave_up(&mut self, f: &Path) -> bool {
        let Some(u) = self.unreadable.get_mut(f) else {
            return false;
        };
        if u.tries < UNREADABLE_TRIES {
            return false;
        }
        if u.stamp != stamp_of(f) {
            // Fixed or replaced since: tried again (still reported until it is read).
            u.tries = 0;
            return false;
        }
        true
    }

    /// How many files wait (for their reason in Turnkey.log, or their pack).
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// What is wrong with feedback now, for [`crate::health`]: files that cannot be read,
    /// ProcessResults that matched nothing after their pack never showed up, and files not
    /// believed that are still set aside.
    pub fn problem(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((p, Unreadable { why, .. })) = self.unreadable.iter().next() {
            parts.push(format!(
                "{} file(s) in Turnkey's folders cannot be read (e.g. {}: {})",
                self.unreadable.len(),
                printable(&p.display().to_string(), 300),
                printable(why, 300)
            ));
        }
        if let Some((p, why)) = self.late.iter().next() {
            parts.push(format!(
                "{} ProcessResult(s) applied to nothing (e.g. {}: {})",
                self.late.len(),
                printable(&p.display().to_string(), 300),
                printable(why, 300)
            ));
        }
        parts.extend(self.doubted_problem());
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// [`Tracker::result_file`], setting the file aside if a bug panics on it instead of
    /// stopping feedback.
    pub(super) fn guarded_result_file(&mut self, f: &Path) -> Result<usize, FeedbackError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.result_file(f))) {
            Ok(r) => Ok(r? as usize),
            Err(_) => {
                let md5 = fs::read(f)
                    .map(|b| hex(&Md5::digest(&b)))
                    .unwrap_or_default();
                self.reject_result(
                    f,
                    &md5,
                    "turnbridge hit an internal error on this file; please report it",
                )?;
                Ok(0)
            }
        }
    }

    /// Turnkey's `<def>` folder for every known tenant (turnkey layout).
    pub(super) fn defs(&self) -> Result<BTreeSet<Def>, FeedbackError> {
        let Some(def) = &self.def else {
            return Ok(BTreeSet::new());
        };
        Ok(self.tenants()?.iter().map(|t| def.resolve(t)).collect())
    }

    fn tenants(&self) -> Result<BTreeSet<String>, FeedbackError> {
        let mut tenants = messages::tenants(self.store.conn())?;
        tenants.insert(self.config.einvoice.default_tenant.clone());
        Ok(tenants)
    }

    pub(super) fn known(
        &self,
        path: &Path,
    ) -> Result<Option<(String, Option<String>)>, FeedbackError> {
        Ok(records::known(self.store.conn(), path)?)
    }

    /// A message file Turnkey moved (`kind` Bak: to BAK; Err: to ERR or ERROR), with Turnkey's
    /// reason for an ERR file when its log gave one. Returns whether it was new.
    pub(super) fn message_file(
        &mut self,
        path: &Path,
        kind: FeedbackKind,
        reason: Option<&str>,
    ) -> Result<bool, FeedbackError> {
        if self.known(path)?.is_some() {
            return Ok(false);
        }
        let md5 = md5_of(path)?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // UpCast names a repeat in the same hour folder `<name>.001`, `.002`…
        let name = crate::turnkey::layout::original_name(&name).to_string();
        let evidence = path.to_string_lossy().into_owned();
        let tx = self.store.transaction()?;
        let found = messages::by_xml_name(&tx, &name)?;
        // A move of a file Turnkey has not taken, or that contradicts a final state, is not
        // believed (another file of the same name, not Turnkey's move of ours).
        let to = if kind == FeedbackKind::Bak {
            MessageState::PickedUp
        } else {
            MessageState::Error
        };
        let doubt = match &found {
            Some(t) => plausible::doubt(t, to, Basis::Named),
            None => None,
        };
        if let Some(why) = doubt {
            tx.rollback()?;
            let what = if kind == FeedbackKind::Bak {
                "file in Turnkey's BAK folder"
            } else {
                "file in Turnkey's error folder"
            };
            self.set_aside_doubted(path, &md5, what, Keep::ReportOnly, &[why])?;
            return Ok(true);
        }
        let (kind, outcome) = match &found {
            None => (
                FeedbackKind::Foreign,
                "not a file turnbridge wrote".to_string(),
            ),
            Some(t) => {
                let changed = if kind == FeedbackKind::Bak {
                    advance(
                        &tx,
                        t,
                        MessageState::PickedUp,
                        &evidence,
                        None,
                        "taken by Turnkey (BAK)",
                        Basis::Named,
                    )?
                } else {
                    let code = reason.and_then(crate::turnkey::tklog::code);
                    let message = match reason {
                        Some(r) => format!("rejected by Turnkey: {r}"),
                        None => "rejected by Turnkey's local check".to_string(),
                    };
                    advance(
                        &tx,
                        t,
                        MessageState::Error,
                        &evidence,
                        code.as_deref(),
                        &message,
                        Basis::Named,
                    )?
                };
                (
                    kind,
                    format!(
                        "{} {}: {}",
                        t.message_type,
                        t.number,
                        if changed { "applied" } else { "no change" }
                    ),
                )
            }
        };
        record(&tx, path, &md5, kind, &outcome, None)?;
        tx.commit()?;
        crate::metrics::get().feedback_file(kind);
        Ok(true)
    }

    /// A result file: in the outbox (flat layout) or Unpack's BAK (turnkey layout, where it
    /// is left in place and recorded). Returns whether it was new.
    fn result_file(&mut self, path: &Path) -> Result<bool, FeedbackError> {
        let in_place = self.config.turnkey.layout == Layout::Turnkey;
        if in_place && self.known(path)?.is_some() {
            // Recorded (a copy, a foreign file, set aside): no longer waited for.
            self.unparsed.remove(path);
            return Ok(false);
        }
        if self.unparsed_waits(path)? {
            return Ok(false);
        }
        // A file too large to be a result is never held in memory: only its MD5 is taken,
        // in pieces, to record it like any other file.
        let bytes = read_limited(path, results::MAX_RESULT_BYTES)?;
        let md5 = match &bytes {
            Some(b) => hex(&Md5::digest(b)),
            None => md5_of(path)?,
        };
        let Some(bytes) = bytes else {
            self.unparsed.remove(path);
            let size = fs::metadata(path).map_err(io_err("stat", path))?.len();
            let reason = format!(
                "the file is {size} bytes; result files are at most {} bytes",
                results::MAX_RESULT_BYTES
            );
            self.reject_result(path, &md5, &reason)?;
            return Ok(true);
        };
        let parsed = match results::parse(&bytes) {
            Ok(p) => {
                self.unparsed.remove(path);
                p
            }
            Err(e) => {
                // In the turnkey layout the outbox is Turnkey's own folder: files that are not
                // results (E0501 allocations, …) are left there, untouched.
                if self.config.turnkey.layout == Layout::Turnkey {
                    if let results::ResultError::Unknown(root) = &e {
                        self.unparsed.remove(path);
                        let tx = self.store.transaction()?;
                        record(
                            &tx,
                            path,
                            &md5,
                            FeedbackKind::Foreign,
                            &format!("root element {root}; left in place"),
                            None,
                        )?;
                        tx.commit()?;
                        return Ok(true);
                    }
                }
                // Perhaps half-written: read again until it has stayed the same a while.
                if self.unparsed_verdict(path, &md5, &e.to_string())? == Verdict::Wait {
                    return Ok(false);
                }
                let reason = if self.result_unchanged.is_zero() {
                    e.to_string()
                } else {
                    format!(
                        "{e} (unchanged for {} ms)",
                        self.result_unchanged.as_millis()
                    )
                };
                self.reject_result(path, &md5, &reason)?;
                return Ok(true);
            }
        };
        // The same bytes again (a crash before the move, or the file dropped twice) are the
        // same result: applying them again would only repeat events. Only a result that
        // parses is compared: an empty or half-written file may match an earlier one by
        // chance, and waits above like any file that does not parse yet.
        let seen = records::seen_content(self.store.conn(), &md5)?;
        if let Some((kind, outcome)) = seen {
            if !in_place && matches!(kind, FeedbackKind::Foreign | FeedbackKind::Rejected) {
                // Dropped again into turnbridge's outbox: set aside again rather than left
                // there to be read at every scan.
                let reason = format!("the same bytes were set aside before: {outcome}");
                self.reject_result(path, &md5, &reason)?;
                return Ok(true);
            }
            if in_place {
                let tx = self.store.transaction()?;
                record(
                    &tx,
                    path,
                    &md5,
                    kind,
                    &format!("a copy of a result seen before ({outcome})"),
                    None,
                )?;
                tx.commit()?;
                return Ok(false);
            }
            info!(file = %path.display(), "result file seen before ({outcome}); kept without applying it again");
            self.keep(path)?;
            return Ok(false);
        }
        // A ProcessResult about an upload whose pack is not read yet waits for it: applied
        // now, it would reach none of the upload's messages, and never again.
        let mut late = None;
        if in_place {
            if let ResultFile::Process(p) = &parsed {
                if let Some(uuid) =
                    crate::turnkey::gateway::awaited_upload(self.store.conn(), p, path)?
                {
                    let first = *self
                        .deferred
                        .entry(path.to_path_buf())
                        .or_insert_with(std::time::Instant::now);
                    self.touched.insert(path.to_path_buf());
                    if first.elapsed() < self.pack_wait {
                        self.deferring = true;
                        return Ok(false);
                    }
                    warn!(file = %path.display(), "no pack of upload {uuid} seen within {} s; matching the result by invoice numbers", self.pack_wait.as_secs());
                    late = Some(uuid);
                }
            }
        }
        self.deferred.remove(path);
        let evidence = path.to_string_lossy().into_owned();
        let tx = self.store.transaction()?;
        let id = record(&tx, path, &md5, FeedbackKind::Result, "", None)?;
        let (kind, mut applied) = apply(&tx, &parsed, &evidence, id, &self.config)?;
        if !applied.doubts.is_empty() {
            // Not believed: nothing of it is applied, not even its record.
            tx.rollback()?;
            let keep = if in_place { Keep::Copy } else { Keep::Move };
            let what = format!("{} result file", kind.result_name());
            self.set_aside_doubted(path, &md5, &what, keep, &applied.doubts)?;
            return Ok(true);
        }
        if let Some(uuid) = &late {
            applied.notes.push(format!(
                "the pack of upload {uuid} was not seen; matched by invoice numbers"
            ));
        }
        let outcome = applied.outcome();
        // kept_at is set again when it is kept (a file set aside before and dropped back).
        records::set_outcome(&tx, id, kind, &outcome)?;
        tx.commit()?;
        if late.is_some() && applied.changed == 0 && !applied.unmatched.is_empty() {
            self.late.insert(path.to_path_buf(), outcome.clone());
        }
        crate::metrics::get().feedback_file(kind);
        if applied.unmatched.is_empty() {
            info!(file = %path.display(), "{kind} applied: {outcome}");
        } else {
            warn!(file = %path.display(), "{kind} applied: {outcome}");
        }
        if !in_place {
            self.keep(path)?;
        }
        Ok(true)
    }

    /// Sets aside a result file that cannot be applied, beside a report: moved in the flat
    /// layout (the outbox is turnbridge's), copied in the turnkey layout (the folder is
    /// Turnkey's). Recorded, so it is not read again.
    fn reject_result(&mut self, path: &Path, md5: &str, reason: &str) -> Result<(), FeedbackError> {
        warn!(file = %path.display(), "result file rejected: {reason}");
        let keep = if self.config.turnkey.layout == Layout::Turnkey {
            Keep::Copy
        } else {
            Keep::Move
        };
        let summary = format!(
            "This result file from {} was not applied: {reason}",
            path.display()
        );
        self.set_aside(
            path,
            md5,
            FeedbackKind::Rejected,
            keep,
            summary,
            &[reason.to_string()],
        )?;
        Ok(())
    }

    /// Moves an applied result file into the feedback archive.
    fn keep(&mut self, path: &Path) -> Result<(), FeedbackError> {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let day = chrono::Local::now().format("%Y-%m-%d").to_string();
        let dest = durable::move_into(path, &self.archive.join(day), &name)
            .map_err(io_err("archive", path))?;
        records::set_kept(self.store.conn(), path, &dest)?;
        info!(file = %path.display(), "result file kept at {}", dest.display());
        Ok(())
    }

    /// Flat layout: a queued file that left the pickup folder was taken by Turnkey.
    fn left_pickup_folder(&mut self) -> Result<(), FeedbackError> {
        let gone: Vec<(MessageRow, String)> = messages::queued_in_pickup(self.store.conn())?
            .into_iter()
            .filter_map(|m| {
                let p = m.xml_path.clone()?;
                (!Path::new(&p).exists()).then_some((m, p))
            })
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let tx = self.store.transaction()?;
        for (t, p) in &gone {
            advance(
                &tx,
                t,
                MessageState::PickedUp,
                &format!("{p} left the pickup folder"),
                None,
                "taken by Turnkey",
                Basis::Named,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Raises `invoice.feedback.overdue` once for each message waiting too long.
    pub fn raise_overdue(&mut self) -> Result<usize, FeedbackError> {
        let minutes = self.config.turnkey.overdue_minutes;
        let before = (chrono::Utc::now() - chrono::Duration::minutes(minutes as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let tx = self.store.transaction()?;
        let late = messages::overdue(&tx, &before)?;
        for t in &late {
            messages::mark_overdue(&tx, t.id)?;
            store::events::add(
                &tx,
                &InvoiceFeedbackOverdue {
                    tenant_id: t.tenant.clone(),
                    invoice_no: t.number.clone(),
                    message_type: t.message_type.clone(),
                    status: t.state,
                    since: t.updated_at.clone(),
                    overdue_minutes: minutes,
                },
            )?;
            warn!(invoice_no = %t.number, message_type = %t.message_type, state = %t.state, since = %t.updated_at, "no feedback for {minutes} minutes");
        }
        tx.commit()?;
        Ok(late.len())
    }

    /// Deletes the records of Turnkey's files older than `retention_days` (the request and
    /// attempt logs are [`crate::retention`]'s, under `[retention]`).
    pub fn prune_logs(&mut self) -> Result<usize, FeedbackError> {
        let (mut n, mut from) = (0, Some(0));
        while let Some(after) = from {
            let tx = self.store.transaction()?;
            let (deleted, next) =
                Self::prune_turnkey_batch(&tx, self.config.turnkey.retention_days, after)?;
            tx.commit()?;
            n += deleted;
            from = next;
        }
        if n > 0 {
            info!(
                "pruned {n} records of Turnkey files older than {} days",
                self.config.turnkey.retention_days
            );
        }
        Ok(n)
    }

    /// Deletes kept result files older than `retention_days`.
    pub fn prune(&self) -> Result<usize, FeedbackError> {
        let keep_after = chrono::Local::now().date_naive()
            - chrono::Duration::days(self.config.turnkey.retention_days as i64);
        let mut removed = 0;
        let Ok(days) = fs::read_dir(&self.archive) else {
            return Ok(0);
        };
        for d in days.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let Ok(day) = chrono::NaiveDate::parse_from_str(&name, "%Y-%m-%d") else {
                continue;
            };
            if day < keep_after {
                fs::remove_dir_all(d.path()).map_err(io_err("prune", &d.path()))?;
                info!(folder = %d.path().display(), "pruned result files older than {} days", self.config.turnkey.retention_days);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Records a file read (see [`records::record`]); returns the record's id.
pub(super) fn record(
    tx: &Transaction,
    path: &Path,
    md5: &str,
    kind: FeedbackKind,
    outcome: &str,
    kept_at: Option<&Path>,
) -> Result<i64, FeedbackError> {
    Ok(records::record(tx, path, md5, kind, outcome, kept_at)?)
}
