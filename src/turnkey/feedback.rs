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
//! files in Turnkey's own folders are left where they are. A result file that cannot
//! be read, or is too large to be one ([`results::MAX_RESULT_BYTES`], set aside unread), goes
//! to `state/rejected/feedback/` beside a report.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::json;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, Layout};
use crate::durable;
use crate::einvoice::archive::hex;
use crate::einvoice::MessageType;
use crate::spool::{self, Report, ReportEntry};
use crate::store::{self, Store, StoreError, TxExt};
use crate::turnkey::layout::{Def, DefTemplate};
use crate::turnkey::results::{self, InvoiceRef, ResultFile};
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

/// Message states in the order they are reached; acked and error are both final.
fn rank(state: &str) -> u8 {
    match state {
        "validated" => 0,
        "queued" => 1,
        "picked_up" => 2,
        _ => 3,
    }
}

/// A message row as feedback needs it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) id: i64,
    pub(super) state: String,
    pub(super) tenant: String,
    pub(super) number: String,
    pub(super) message_type: String,
}

pub(super) const TARGET_COLUMNS: &str = "id, state, tenant, number, message_type";

pub(super) fn target(r: &rusqlite::Row) -> rusqlite::Result<Target> {
    Ok(Target {
        id: r.get(0)?,
        state: r.get(1)?,
        tenant: r.get(2)?,
        number: r.get(3)?,
        message_type: r.get(4)?,
    })
}

/// What one applied file changed, for its record and the log.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub(super) changed: usize,
    pub(super) unmatched: Vec<String>,
    pub(super) notes: Vec<String>,
}

impl Applied {
    fn outcome(&self) -> String {
        let mut s = format!("{} message(s) changed", self.changed);
        if !self.unmatched.is_empty() {
            s.push_str(&format!(
                "; matched nothing for {}",
                self.unmatched.join(", ")
            ));
        }
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }
}

/// Moves a message forward (never back) and raises `invoice.status.updated`, inside `tx`.
pub(super) fn advance(
    tx: &Transaction,
    t: &Target,
    to: &str,
    evidence: &str,
    mof_code: Option<&str>,
    message: &str,
) -> Result<bool, FeedbackError> {
    if rank(to) <= rank(&t.state) {
        return Ok(false);
    }
    tx.transition(t.id, Some(&t.state), to, Some(evidence))?;
    tx.execute(
        "UPDATE messages SET mof_code = ?1, status_message = ?2, overdue_raised = 0 WHERE id = ?3",
        params![mof_code, message, t.id],
    )?;
    tx.add_event(
        "invoice.status.updated",
        Some(&t.tenant),
        &json!({
            "tenant_id": t.tenant,
            "invoice_no": t.number,
            "message_type": t.message_type,
            "status": to.to_ascii_uppercase(),
            "mof_code": mof_code,
            "message": message,
            "evidence": evidence,
        }),
    )?;
    info!(
        tenant_id = %t.tenant,
        invoice_no = %t.number,
        message_type = %t.message_type,
        from = %t.state,
        to,
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
    rejected: PathBuf,
    /// ERR files whose reason is not in Turnkey.log yet, and ProcessResults whose pack is not
    /// seen yet, with when they were first seen; only those seen in the last scan are kept.
    pub(super) deferred: std::collections::HashMap<PathBuf, std::time::Instant>,
    /// The deferred files seen in the current scan.
    pub(super) touched: std::collections::HashSet<PathBuf>,
    /// Set by a result deferred in this scan.
    pub(super) deferring: bool,
    /// Files that could not be read: how many scans tried, and the error.
    pub(super) unreadable: std::collections::BTreeMap<PathBuf, (u32, String)>,
    /// ProcessResults applied to nothing after their pack never showed up.
    pub(super) late: std::collections::BTreeMap<PathBuf, String>,
    /// How long a ProcessResult waits for its upload's pack before falling back to numbers.
    pub pack_wait: Duration,
    /// Set by a scan that saw files still being written: scan again soon.
    pub pending: bool,
}

/// How many scans try a file that cannot be read (per run of the daemon).
const UNREADABLE_TRIES: u32 = 3;

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
        let unreadable = {
            let mut stmt = store
                .conn()
                .prepare("SELECT path, outcome FROM feedback_files WHERE kind = 'unreadable'")?;
            let rows = stmt.query_map([], |r| {
                Ok((PathBuf::from(r.get::<_, String>(0)?), (0, r.get(1)?)))
            })?;
            rows.collect::<Result<_, _>>()?
        };
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
                    let r = self.message_file(&f, "err", None);
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
                let entry = self
                    .unreadable
                    .entry(f.to_path_buf())
                    .or_insert((0, why.clone()));
                entry.0 += 1;
                entry.1 = why.clone();
                let tx = self.store.transaction()?;
                let new = tx.execute(
                    "INSERT OR IGNORE INTO feedback_files (path, md5, kind, outcome, kept_at, seen_at)
                     VALUES (?1, '', 'unreadable', ?2, NULL, ?3)",
                    params![f.to_string_lossy(), why, store::now()],
                )? > 0;
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

    /// Whether a file that could not be read was tried often enough in this run.
    pub(super) fn gave_up(&self, f: &Path) -> bool {
        self.unreadable
            .get(f)
            .is_some_and(|(n, _)| *n >= UNREADABLE_TRIES)
    }

    /// How many files wait (for their reason in Turnkey.log, or their pack).
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// What is wrong with feedback now, for [`crate::health`]: files that cannot be read, and
    /// ProcessResults that matched nothing after their pack never showed up.
    pub fn problem(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((p, (_, why))) = self.unreadable.iter().next() {
            parts.push(format!(
                "{} file(s) in Turnkey's folders cannot be read (e.g. {}: {why})",
                self.unreadable.len(),
                p.display()
            ));
        }
        if let Some((p, why)) = self.late.iter().next() {
            parts.push(format!(
                "{} ProcessResult(s) applied to nothing (e.g. {}: {why})",
                self.late.len(),
                p.display()
            ));
        }
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
        let mut tenants: BTreeSet<String> = {
            let mut stmt = self
                .store
                .conn()
                .prepare("SELECT DISTINCT tenant FROM messages")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tenants.insert(self.config.einvoice.default_tenant.clone());
        Ok(tenants)
    }

    pub(super) fn known(
        &self,
        path: &Path,
    ) -> Result<Option<(String, Option<String>)>, FeedbackError> {
        Ok(self
            .store
            .conn()
            .query_row(
                "SELECT md5, kept_at FROM feedback_files WHERE path = ?1 AND kind != 'unreadable'
                 ORDER BY id DESC LIMIT 1",
                [path.to_string_lossy()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// A message file Turnkey moved (to BAK, ERR or ERROR), with Turnkey's reason for an ERR
    /// file when its log gave one. Returns whether it was new.
    pub(super) fn message_file(
        &mut self,
        path: &Path,
        kind: &str,
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
        let found = tx
            .query_row(
                &format!("SELECT {TARGET_COLUMNS} FROM messages WHERE xml_name = ?1"),
                [&name],
                target,
            )
            .optional()?;
        let (kind, outcome) = match &found {
            None => ("foreign", "not a file turnbridge wrote".to_string()),
            Some(t) => {
                let changed = if kind == "bak" {
                    advance(
                        &tx,
                        t,
                        "picked_up",
                        &evidence,
                        None,
                        "taken by Turnkey (BAK)",
                    )?
                } else {
                    let code = reason.and_then(crate::turnkey::tklog::code);
                    let message = match reason {
                        Some(r) => format!("rejected by Turnkey: {r}"),
                        None => "rejected by Turnkey's local check".to_string(),
                    };
                    advance(&tx, t, "error", &evidence, code.as_deref(), &message)?
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
        crate::metrics::inc("turnbridge_feedback_files_total", &[("kind", kind)]);
        Ok(true)
    }

    /// A result file: in the outbox (flat layout) or Unpack's BAK (turnkey layout, where it
    /// is left in place and recorded). Returns whether it was new.
    fn result_file(&mut self, path: &Path) -> Result<bool, FeedbackError> {
        let in_place = self.config.turnkey.layout == Layout::Turnkey;
        if in_place && self.known(path)?.is_some() {
            return Ok(false);
        }
        // A file too large to be a result is never held in memory: only its MD5 is taken,
        // in pieces, to record it like any other file.
        let bytes = read_limited(path, results::MAX_RESULT_BYTES)?;
        let md5 = match &bytes {
            Some(b) => hex(&Md5::digest(b)),
            None => md5_of(path)?,
        };
        // The same bytes again (a crash before the move, or the file dropped twice) are the
        // same result: applying them again would only repeat events.
        let seen: Option<(String, String)> = self
            .store
            .conn()
            .query_row(
                "SELECT kind, outcome FROM feedback_files WHERE md5 = ?1 AND kind NOT IN ('bak', 'err') LIMIT 1",
                [&md5],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((kind, outcome)) = seen {
            if kind == "foreign" || kind == "rejected" {
                // Left in Turnkey's folder on purpose (turnkey layout); nothing to do.
                return Ok(false);
            }
            if in_place {
                let tx = self.store.transaction()?;
                record(
                    &tx,
                    path,
                    &md5,
                    &kind,
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
        let Some(bytes) = bytes else {
            let size = fs::metadata(path).map_err(io_err("stat", path))?.len();
            let reason = format!(
                "the file is {size} bytes; result files are at most {} bytes",
                results::MAX_RESULT_BYTES
            );
            self.reject_result(path, &md5, &reason)?;
            return Ok(true);
        };
        let parsed = match results::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                // In the turnkey layout the outbox is Turnkey's own folder: files that are not
                // results (E0501 allocations, …) are left there, untouched.
                if self.config.turnkey.layout == Layout::Turnkey {
                    if let results::ResultError::Unknown(root) = &e {
                        let tx = self.store.transaction()?;
                        record(
                            &tx,
                            path,
                            &md5,
                            "foreign",
                            &format!("root element {root}; left in place"),
                            None,
                        )?;
                        tx.commit()?;
                        return Ok(true);
                    }
                }
                self.reject_result(path, &md5, &e.to_string())?;
                return Ok(true);
            }
        };
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
        let id = record(&tx, path, &md5, "result", "", None)?;
        let (kind, mut applied) = apply(&tx, &parsed, &evidence, id, &self.config)?;
        if let Some(uuid) = &late {
            applied.notes.push(format!(
                "the pack of upload {uuid} was not seen; matched by invoice numbers"
            ));
        }
        let outcome = applied.outcome();
        tx.execute(
            "UPDATE feedback_files SET kind = ?1, outcome = ?2 WHERE id = ?3",
            params![kind, outcome, id],
        )?;
        tx.commit()?;
        if late.is_some() && applied.changed == 0 && !applied.unmatched.is_empty() {
            self.late.insert(path.to_path_buf(), outcome.clone());
        }
        crate::metrics::inc("turnbridge_feedback_files_total", &[("kind", kind)]);
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
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        warn!(file = %path.display(), "result file rejected: {reason}");
        let day = chrono::Local::now().format("%Y%m%d").to_string();
        let dest = if self.config.turnkey.layout == Layout::Turnkey {
            durable::create_dir_all(&self.rejected).map_err(io_err("create", &self.rejected))?;
            let dest = durable::free_name(&self.rejected, &format!("{day}_{name}"));
            // A file too large (or not a regular file) is reported, not copied.
            if let Err(e) = durable::copy_atomic(path, &dest, results::MAX_RESULT_BYTES) {
                warn!(file = %path.display(), "result file not copied to rejected/: {e}");
            }
            dest
        } else {
            durable::move_into(path, &self.rejected, &format!("{day}_{name}"))
                .map_err(io_err("move to rejected", path))?
        };
        let report = Report {
            job_id: "-".into(),
            file: name.clone(),
            outcome: "rejected".into(),
            summary: format!(
                "This result file from {} was not applied: {reason}",
                path.display()
            ),
            accepted: 0,
            rejected: 1,
            rejected_files: vec![dest
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()],
            problems: vec![ReportEntry {
                rule: None,
                file: name,
                row: 0,
                message_type: None,
                number: None,
                field: String::new(),
                value: String::new(),
                reason: reason.to_string(),
            }],
        };
        report.write(&dest).map_err(io_err("write report", &dest))?;
        let tx = self.store.transaction()?;
        record(&tx, path, md5, "rejected", reason, Some(&dest))?;
        tx.commit()?;
        crate::metrics::inc("turnbridge_feedback_files_total", &[("kind", "rejected")]);
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
        self.store.conn().execute(
            "UPDATE feedback_files SET kept_at = ?1 WHERE path = ?2 AND kept_at IS NULL",
            params![dest.to_string_lossy(), path.to_string_lossy()],
        )?;
        info!(file = %path.display(), "result file kept at {}", dest.display());
        Ok(())
    }

    /// Flat layout: a queued file that left the pickup folder was taken by Turnkey.
    fn left_pickup_folder(&mut self) -> Result<(), FeedbackError> {
        let queued: Vec<(Target, String)> = {
            let mut stmt = self.store.conn().prepare(&format!(
                "SELECT {TARGET_COLUMNS}, xml_path FROM messages WHERE state = 'queued' AND xml_path IS NOT NULL"
            ))?;
            let rows = stmt.query_map([], |r| Ok((target(r)?, r.get::<_, String>(5)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let gone: Vec<_> = queued
            .into_iter()
            .filter(|(_, p)| !Path::new(p).exists())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let tx = self.store.transaction()?;
        for (t, p) in &gone {
            advance(
                &tx,
                t,
                "picked_up",
                &format!("{p} left the pickup folder"),
                None,
                "taken by Turnkey",
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Raises `invoice.feedback.overdue` once for each message waiting too long.
    pub fn raise_overdue(&mut self) -> Result<usize, FeedbackError> {
        let minutes = self.config.turnkey.overdue_minutes as i64;
        let before = (chrono::Utc::now() - chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let tx = self.store.transaction()?;
        let late: Vec<(Target, String)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {TARGET_COLUMNS}, updated_at FROM messages
                 WHERE state IN ('validated', 'queued', 'picked_up') AND overdue_raised = 0 AND updated_at < ?1"
            ))?;
            let rows = stmt.query_map([&before], |r| Ok((target(r)?, r.get::<_, String>(5)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (t, since) in &late {
            tx.execute(
                "UPDATE messages SET overdue_raised = 1 WHERE id = ?1",
                [t.id],
            )?;
            tx.add_event(
                "invoice.feedback.overdue",
                Some(&t.tenant),
                &json!({
                    "tenant_id": t.tenant,
                    "invoice_no": t.number,
                    "message_type": t.message_type,
                    "status": t.state.to_ascii_uppercase(),
                    "since": since,
                    "overdue_minutes": minutes,
                }),
            )?;
            warn!(invoice_no = %t.number, message_type = %t.message_type, state = %t.state, since = %since, "no feedback for {minutes} minutes");
        }
        tx.commit()?;
        Ok(late.len())
    }

    /// Deletes request and attempt logs older than `retention_days` (the rows that only
    /// grow: every stock callback request, and the attempts of finished deliveries).
    pub fn prune_logs(&mut self) -> Result<usize, FeedbackError> {
        let before = (chrono::Utc::now()
            - chrono::Duration::days(self.config.turnkey.retention_days as i64))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let tx = self.store.transaction()?;
        let mut n = tx.execute(
            "DELETE FROM inventory_logs WHERE received_at < ?1",
            [&before],
        )?;
        n += tx.execute(
            "DELETE FROM delivery_attempts WHERE started_at < ?1
             AND delivery_id IN (SELECT id FROM deliveries WHERE state IN ('succeeded', 'cancelled'))",
            [&before],
        )?;
        n += Self::prune_turnkey_records(&tx, self.config.turnkey.retention_days)?;
        tx.commit()?;
        if n > 0 {
            info!(
                "pruned {n} log rows older than {} days",
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

pub(super) fn record(
    tx: &Transaction,
    path: &Path,
    md5: &str,
    kind: &str,
    outcome: &str,
    kept_at: Option<&Path>,
) -> Result<i64, FeedbackError> {
    tx.execute(
        "DELETE FROM feedback_files WHERE path = ?1 AND kind = 'unreadable'",
        [path.to_string_lossy()],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO feedback_files (path, md5, kind, outcome, kept_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            path.to_string_lossy(),
            md5,
            kind,
            outcome,
            kept_at.map(|p| p.to_string_lossy().into_owned()),
            store::now()
        ],
    )?;
    Ok(tx.query_row(
        "SELECT id FROM feedback_files WHERE path = ?1 AND md5 = ?2",
        params![path.to_string_lossy(), md5],
        |r| r.get(0),
    )?)
}

/// The MD5 of a file, read in pieces (a message file may be megabytes).
pub(super) fn md5_of(path: &Path) -> Result<String, FeedbackError> {
    let mut md5 = Md5::new();
    let mut f = open_read(path)?;
    io::copy(&mut f, &mut md5).map_err(io_err("read", path))?;
    Ok(hex(&md5.finalize()))
}

/// Finds the message a file name (with or without `.xml`) is about.
fn by_file_name(tx: &Transaction, id: &str) -> Result<Option<Target>, FeedbackError> {
    let name = if id.ends_with(".xml") {
        id.to_string()
    } else {
        format!("{id}.xml")
    };
    Ok(tx
        .query_row(
            &format!("SELECT {TARGET_COLUMNS} FROM messages WHERE xml_name = ?1"),
            [name],
            target,
        )
        .optional()?)
}

/// Finds the message a SummaryResult invoice reference is about. Invoices and allowances match
/// on number and date; cancels and voids carry the report date, so they match on number only.
fn by_reference(
    tx: &Transaction,
    ty: MessageType,
    r: &InvoiceRef,
    seller: Option<&str>,
) -> Result<Option<Target>, FeedbackError> {
    let mut stmt = tx.prepare(&format!(
        "SELECT {TARGET_COLUMNS}, seller_ban, document_date FROM messages WHERE message_type = ?1 AND number = ?2"
    ))?;
    let rows = stmt.query_map(params![ty.as_str(), r.number], |row| {
        Ok((
            target(row)?,
            row.get::<_, String>(5)?,
            row.get::<_, String>(6)?,
        ))
    })?;
    let mut candidates: Vec<(Target, String, String)> = rows.collect::<Result<_, _>>()?;
    if matches!(ty, MessageType::F0401 | MessageType::G0401) {
        if let Some(d) = &r.date {
            let want = d.replace('-', "");
            candidates.retain(|(_, _, date)| date.replace('-', "") == want);
        }
    }
    if candidates.len() > 1 {
        if let Some(s) = seller {
            candidates.retain(|(_, ban, _)| ban == s);
        }
    }
    Ok(if candidates.len() == 1 {
        candidates.pop().map(|(t, _, _)| t)
    } else {
        None
    })
}

/// The message a ProcessResult names through an invoice number in its parameters.
fn by_parameters(
    tx: &Transaction,
    p: &results::ProcessResult,
) -> Result<Option<Target>, FeedbackError> {
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
    Ok(tx.query_row(
        "SELECT count(*) FROM transitions t JOIN messages m ON m.id = t.message_id
         WHERE t.to_state = 'queued' AND t.at >= ?1 AND t.at < ?2 AND (?3 IS NULL OR m.message_type = ?3)",
        params![start, end, ty],
        |r| r.get(0),
    )?)
}

fn apply(
    tx: &Transaction,
    file: &ResultFile,
    evidence: &str,
    feedback_id: i64,
    config: &Config,
) -> Result<(&'static str, Applied), FeedbackError> {
    let mut applied = Applied::default();
    let kind = match file {
        ResultFile::Ack(a) => {
            match by_file_name(tx, &a.message_id)? {
                Some(t) => {
                    let msg = match &a.receipt_no {
                        Some(r) => format!("acknowledged, receipt {r}"),
                        None => "acknowledged".to_string(),
                    };
                    applied.changed += advance(tx, &t, "acked", evidence, None, &msg)? as usize;
                }
                None => applied.unmatched.push(a.message_id.clone()),
            }
            "ack"
        }
        ResultFile::Error(e) => {
            match by_file_name(tx, &e.original_message_id)? {
                Some(t) => {
                    let msg = e.error_message.clone().unwrap_or_else(|| "error".into());
                    applied.changed +=
                        advance(tx, &t, "error", evidence, Some(&e.error_code), &msg)? as usize;
                }
                None => applied.unmatched.push(e.original_message_id.clone()),
            }
            "error"
        }
        ResultFile::Process(p)
            if crate::turnkey::gateway::apply_to_pack(tx, p, evidence, &mut applied)? =>
        {
            "process"
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
                    let changed = match failure {
                        None => {
                            advance(tx, &t, "acked", evidence, None, "accepted (ProcessResult)")?
                        }
                        Some(i) => {
                            let msg = i
                                .description
                                .clone()
                                .unwrap_or_else(|| "ProcessResult error".into());
                            advance(tx, &t, "error", evidence, Some(&i.code), &msg)?
                        }
                    };
                    applied.changed += changed as usize;
                }
                None => applied.unmatched.push(p.message_id.clone()),
            }
            "process"
        }
        ResultFile::Summary(s) => {
            for m in &s.messages {
                let unmatched_before = applied.unmatched.len() as i64;
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
                            (&m.good_invoices, "acked", "accepted by the platform"),
                            (&m.failed_invoices, "error", "failed at the platform"),
                        ] {
                            for r in refs {
                                match by_reference(tx, ty, r, s.from.as_deref())? {
                                    Some(t) => {
                                        let msg = format!("{text} (SummaryResult {})", m.id);
                                        applied.changed +=
                                            advance(tx, &t, to, evidence, None, &msg)? as usize;
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
            "summary"
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
            "daily"
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
    tx.execute(
        "INSERT INTO summaries (feedback_id, summary_id, message_type, date, expected, total, good, failed, mismatch, at)
         VALUES (?10, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![summary_id, message_type, date, expected, total as i64, good as i64, failed as i64, mismatch, store::now(), feedback_id],
    )?;
    tx.add_event(
        "turnkey.feedback.daily-summary",
        Some(&config.einvoice.default_tenant),
        &json!({
            "date": date,
            "summary_id": summary_id,
            "message_type": message_type,
            "expected": expected,
            "total": total,
            "ack_count": good,
            "error_count": failed,
            "mismatch": mismatch,
            "evidence": evidence,
        }),
    )?;
    if let Some(m) = &mismatch {
        warn!(date = ?date, "summary does not match the store: {m}");
    }
    Ok(())
}

/// Files below `dir` (recursively) that are complete: not hidden or temporary, and unchanged
/// for `settle`. A missing folder has none.
pub fn settled_files(dir: &Path, settle: Duration) -> Vec<PathBuf> {
    let mut young = false;
    settled_files_noting_young(dir, settle, &mut young)
}

/// [`settled_files`], also telling whether some file was too young to take yet.
pub fn settled_files_noting_young(dir: &Path, settle: Duration, young: &mut bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !spool::is_candidate(&name) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(settled_files_noting_young(&path, settle, young));
        } else if meta.is_file() {
            if is_settled(&meta, settle) {
                out.push(path);
            } else {
                *young = true;
            }
        }
    }
    out.sort();
    out
}

/// Whether a file has not been modified for `settle`.
pub(super) fn is_settled(meta: &fs::Metadata, settle: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= settle)
}

#[cfg(test)]
thread_local! {
    /// File names that fail to open, as a file the daemon's user cannot read does (the tests
    /// run as root, which reads anything).
    pub(super) static UNREADABLE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Opens one of Turnkey's files for reading through one descriptor: no link followed, a
/// regular file only (see [`crate::limited`]).
pub(super) fn open_read(path: &Path) -> Result<fs::File, FeedbackError> {
    #[cfg(test)]
    {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if UNREADABLE.with(|u| u.borrow().iter().any(|n| *n == name)) {
            return Err(io_err("read", path)(io::ErrorKind::PermissionDenied.into()));
        }
    }
    match crate::limited::open(path) {
        Ok((file, _)) => Ok(file),
        Err(crate::limited::LimitedError::Io(e)) => Err(io_err("read", path)(e)),
        Err(e) => Err(io_err("read", path)(io::Error::new(
            io::ErrorKind::InvalidData,
            e.to_string(),
        ))),
    }
}

/// A file's bytes, `None` when it holds more than `max` (it is read no further).
pub(super) fn read_limited(path: &Path, max: u64) -> Result<Option<Vec<u8>>, FeedbackError> {
    use io::Read;
    let mut bytes = Vec::new();
    open_read(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}
