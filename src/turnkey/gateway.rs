//! Feedback in the `turnkey` layout: reading the real Turnkey's own folders (see
//! [`crate::turnkey::layout`]) without ever changing them.
//!
//! - A file in `<MSG>/BAK/**` is `picked_up`, the BAK path its evidence.
//! - A file in `<MSG>/ERR/**` is `error`, with Turnkey's reason from `Turnkey.log`
//!   ([`crate::turnkey::tklog`]); a reason not in the log yet is waited for a few seconds.
//! - A pack in `Pack/B2SSTORAGE/{SRC,BAK}` records which messages one upload (uuid) holds, in
//!   pack order, in `turnkey_packs`.
//! - A ProcessResult in `Unpack/BAK/ProcessResult/**` applies to the messages of its upload:
//!   Code `00000` acknowledges them all; otherwise each `No. N` Info marks the N-th message of
//!   the pack `error` (its Code and Description) and the others are acknowledged. A result
//!   whose pack is not read yet waits for it (up to [`Tracker::pack_wait`]).
//! - A SummaryResult in `Unpack/BAK/SummaryResult/**` applies per listed invoice.
//!
//! Every file is recorded (path and MD5) in the transaction that applies it, so it is applied
//! once. Day folders older than `turnkey.retention_days` are not read again, and the records
//! of files in them are pruned after that.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Transaction;
use tracing::{info, warn};

use crate::einvoice::MessageType;
use crate::store::feedback::{self as records, FeedbackKind, PackMember};
use crate::store::messages;
use crate::store::{Basis, MessageState};
use crate::turnkey::apply::conclude;
use crate::turnkey::feedback::{io_err, record, Applied, FeedbackError, Tracker};
use crate::turnkey::files::{self, md5_of, read_limited};
use crate::turnkey::layout::{self, Def, PackName};
use crate::turnkey::pack::{self, MAX_PACK_BYTES};
use crate::turnkey::results::ProcessResult;
use crate::turnkey::tklog;

/// How long an ERR file waits for its reason to appear in Turnkey.log (UpCast logs the move
/// right after making it).
const REASON_WAIT: Duration = Duration::from_secs(5);

impl Tracker {
    /// One pass over every Turnkey `<def>` folder; returns how many files were applied.
    pub(super) fn scan_turnkey(
        &mut self,
        settle: Duration,
        young: &mut bool,
    ) -> Result<usize, FeedbackError> {
        let keep_after = chrono::Local::now().date_naive()
            - chrono::Duration::days(self.config.turnkey.retention_days as i64);
        let defs = self.defs()?;
        let mut n = 0;
        let mut logs: HashMap<PathBuf, String> = HashMap::new();
        for def in &defs {
            for ty in MessageType::ALL {
                let base = def.message_dir(ty);
                for (sub, kind) in [("BAK", FeedbackKind::Bak), ("ERR", FeedbackKind::Err)] {
                    for f in fresh_files(&base.join(sub), settle, young, keep_after) {
                        if self.gave_up(&f) || self.known(&f)?.is_some() {
                            continue;
                        }
                        let reason = if kind == FeedbackKind::Err {
                            let log = logs.entry(def.log_file()).or_insert_with(|| {
                                tklog::tail(&def.log_file(), tklog::MAX_LOG_TAIL)
                            });
                            let found = tklog::reason(log, &f);
                            if found.is_none() {
                                self.touched.insert(f.clone());
                                let first =
                                    *self.deferred.entry(f.clone()).or_insert_with(Instant::now);
                                if first.elapsed() < REASON_WAIT {
                                    *young = true;
                                    continue;
                                }
                                warn!(file = %f.display(), "no reason for this ERR file in the last {} bytes of {}", tklog::MAX_LOG_TAIL, def.log_file().display());
                            }
                            found
                        } else {
                            None
                        };
                        self.deferred.remove(&f);
                        let r = self.message_file(&f, kind, reason.as_deref());
                        n += self.per_file(&f, r)? as usize;
                    }
                }
            }
            for dir in def.pack_dirs() {
                for f in fresh_files(&dir, settle, young, keep_after) {
                    if self.gave_up(&f) {
                        continue;
                    }
                    let r = self.pack_file(&f, def);
                    n += self.per_file(&f, r)? as usize;
                }
            }
        }
        // Results after moves and packs: a pack is known before the answer about it.
        for def in &defs {
            for dir in def.result_dirs() {
                for f in fresh_files(&dir, settle, young, keep_after) {
                    if self.gave_up(&f) {
                        continue;
                    }
                    let r = self.guarded_result_file(&f);
                    n += self.per_file(&f, r)?;
                }
            }
        }
        Ok(n)
    }

    /// Records which messages a pack file holds. Returns whether the file was new.
    fn pack_file(&mut self, path: &Path, def: &Def) -> Result<bool, FeedbackError> {
        if self.known(path)?.is_some() {
            return Ok(false);
        }
        let md5 = md5_of(path)?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let size = fs::metadata(path).map_err(io_err("stat", path))?.len();
        let parsed = PackName::parse(&name);
        let docs = match (&parsed, size > MAX_PACK_BYTES) {
            (None, _) => Err("not a Turnkey pack name".to_string()),
            (Some(_), true) => Err(format!(
                "the file is {size} bytes; packs are at most {MAX_PACK_BYTES} bytes"
            )),
            (Some(_), false) => match read_limited(path, MAX_PACK_BYTES)? {
                Some(bytes) => pack::documents(&bytes).map_err(|e| e.to_string()),
                None => Err(format!("the file grew past {MAX_PACK_BYTES} bytes")),
            },
        };
        let tx = self.store.transaction()?;
        let outcome = match (parsed, docs) {
            (Some(p), Ok(docs)) => {
                let mut ours = 0;
                let tenant_def = self.def.clone().filter(|t| t.per_tenant());
                for (i, d) in docs.iter().enumerate() {
                    let found = member(
                        &tx,
                        &p.upload.message_type,
                        &d.number,
                        &p.from_ban,
                        |tenant| {
                            tenant_def
                                .as_ref()
                                .is_none_or(|t| t.resolve(tenant) == *def)
                        },
                    )?;
                    ours += found.is_some() as usize;
                    let doc = PackMember {
                        uuid: p.upload.uuid.clone(),
                        seq: (i + 1) as i64,
                        message_type: p.upload.message_type.clone(),
                        number: d.number.clone(),
                        message_id: found,
                    };
                    records::add_pack_member(&tx, &doc, path)?;
                }
                let mut o = format!(
                    "{} upload {}: {} document(s), {ours} turnbridge's",
                    p.upload.message_type,
                    p.upload.uuid,
                    docs.len()
                );
                if docs.len() != p.count {
                    o.push_str(&format!("; the name says {}", p.count));
                    warn!(file = %path.display(), "{o}");
                } else {
                    info!(file = %path.display(), "{o}");
                }
                o
            }
            (_, Err(why)) => {
                warn!(file = %path.display(), "pack not read: {why}");
                format!("not read: {why}")
            }
            (None, Ok(_)) => unreachable!("a name that does not parse is never read"),
        };
        record(&tx, path, &md5, FeedbackKind::Pack, &outcome, None)?;
        tx.commit()?;
        crate::metrics::get().feedback_file(FeedbackKind::Pack);
        Ok(true)
    }

    /// Deletes pack records and the records of Turnkey's files older than the retention
    /// (their day folders are no longer read, see [`fresh_files`]).
    /// One batch of the pruning of Turnkey's records older than `retention_days` (+2): at
    /// most [`PRUNE_BATCH`] rows of each kind, old packs from `after_id` on. Returns the rows
    /// deleted and where the next batch starts, `None` when nothing is left.
    pub(super) fn prune_turnkey_batch(
        tx: &Transaction,
        retention_days: u64,
        after_id: i64,
    ) -> Result<(usize, Option<i64>), FeedbackError> {
        let before = (chrono::Utc::now() - chrono::Duration::days(retention_days as i64 + 2))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Ok(records::prune_turnkey_batch(
            tx,
            &before,
            after_id,
            PRUNE_BATCH,
        )?)
    }
}

/// Rows one transaction of the records' pruning deletes at most, so the writer is never held
/// long.
const PRUNE_BATCH: usize = 1_000;

/// The message a pack document is, if it is turnbridge's: same type, number and seller (the
/// pack's fromBan), still waiting for Turnkey (`queued` — UpCast writes the pack before it
/// moves the sources to BAK — `picked_up`, or `validated` with its staged file gone), of a
/// tenant `in_def` accepts; the newest wins.
fn member(
    tx: &Transaction,
    message_type: &str,
    number: &str,
    from_ban: &str,
    in_def: impl Fn(&str) -> bool,
) -> Result<Option<i64>, FeedbackError> {
    // A `validated` message whose staged file is gone was published before a stop that came
    // before it was recorded `queued`: UpCast may have packed it meanwhile.
    for m in messages::pack_candidates(tx, message_type, number, from_ban)? {
        let published = m.state != MessageState::Validated
            || m.staged_path.is_some_and(|p| !Path::new(&p).exists());
        if published && in_def(&m.tenant) {
            return Ok(Some(m.id));
        }
    }
    Ok(None)
}

/// The uuid of the upload a ProcessResult is about: its `MessageInfo/Id` when that is a bare
/// uuid, else from its file name or an upload id in `MessageInfo/Id`.
fn upload_uuid(p: &ProcessResult, path: &Path) -> Option<String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if p.message_id.len() == 36 && p.message_id.bytes().filter(|b| *b == b'-').count() == 4 {
        return Some(p.message_id.clone());
    }
    layout::result_upload(&name)
        .or_else(|| layout::UploadId::parse(&p.message_id))
        .map(|u| u.uuid)
}

/// The upload a ProcessResult names (by its file name or an upload id in `MessageInfo/Id`)
/// when no pack of that upload has been read yet.
pub(super) fn awaited_upload(
    conn: &rusqlite::Connection,
    p: &ProcessResult,
    path: &Path,
) -> Result<Option<String>, FeedbackError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if layout::result_upload(&name).is_none() && layout::UploadId::parse(&p.message_id).is_none() {
        return Ok(None);
    }
    let Some(uuid) = upload_uuid(p, path) else {
        return Ok(None);
    };
    let seen = records::pack_seen(conn, &uuid)?;
    Ok((!seen).then_some(uuid))
}

/// Applies a ProcessResult to the messages of the upload it names, when that upload's pack
/// was seen. Returns false when the upload is unknown (the caller falls back to numbers).
pub(super) fn apply_to_pack(
    tx: &Transaction,
    p: &ProcessResult,
    evidence: &str,
    applied: &mut Applied,
) -> Result<bool, FeedbackError> {
    let Some(uuid) = upload_uuid(p, Path::new(evidence)) else {
        return Ok(false);
    };
    let members: Vec<(i64, String, Option<i64>)> = records::pack_members(tx, &uuid)?
        .into_iter()
        .map(|m| (m.seq, m.number, m.message_id))
        .collect();
    if members.is_empty() {
        return Ok(false);
    }
    let zeros = |c: &str| !c.is_empty() && c.bytes().all(|b| b == b'0');
    let all_good = p.results.first().is_some_and(|i| zeros(&i.code));
    let mut failed: BTreeMap<i64, (String, String)> = BTreeMap::new();
    if !all_good {
        for info in p.results.iter().filter(|i| !zeros(&i.code)) {
            let desc = info
                .description
                .clone()
                .unwrap_or_else(|| "ProcessResult error".into());
            let by_ordinal = pack::ordinal(&desc)
                .map(|n| n as i64)
                .filter(|n| members.iter().any(|(s, _, _)| s == n));
            // Parameter0 is the invoice number (Parameter1 its date, which the pack records
            // do not hold): it decides when it names exactly one member.
            let by_number: Vec<i64> = info
                .parameters
                .first()
                .map(|p0| {
                    members
                        .iter()
                        .filter(|(_, num, _)| num == p0)
                        .map(|(s, _, _)| *s)
                        .collect()
                })
                .unwrap_or_default();
            let chosen = match (by_ordinal, by_number.as_slice()) {
                (Some(n), [s]) if n != *s => {
                    let note = format!(
                        "[{}] {desc}: No. {n} but Parameter0 names document {s} of upload {uuid}; taken as {s}",
                        info.code
                    );
                    warn!("{note}");
                    applied.notes.push(note);
                    Some(*s)
                }
                (Some(n), _) => Some(n),
                (None, [s]) => Some(*s),
                (None, _) => None,
            };
            match chosen {
                Some(seq) => {
                    failed.insert(seq, (info.code.clone(), desc));
                }
                None => applied.notes.push(format!(
                    "[{}] {desc} names no document of upload {uuid}",
                    info.code
                )),
            }
        }
    }
    // An error that names no document leaves nothing known to be accepted: the whole upload
    // is marked with it rather than acknowledged.
    let whole = if !all_good && failed.is_empty() {
        p.results.first().map(|i| {
            (
                i.code.clone(),
                i.description
                    .clone()
                    .unwrap_or_else(|| "ProcessResult error".into()),
            )
        })
    } else {
        None
    };
    for (seq, number, id) in &members {
        let Some(id) = id else {
            applied.unmatched.push(number.clone());
            continue;
        };
        let Some(t) = messages::by_id(tx, *id)? else {
            applied.unmatched.push(number.clone());
            continue;
        };
        match (failed.get(seq), &whole) {
            (Some((code, desc)), _) => conclude(
                tx,
                &t,
                MessageState::Error,
                evidence,
                Some(code),
                desc,
                Basis::Named,
                applied,
            )?,
            // turnbridge's guess: a verdict naming the invoice (a SummaryResult) overrules it.
            (None, Some((code, desc))) => conclude(
                tx,
                &t,
                MessageState::Error,
                evidence,
                Some(code),
                &format!("{desc} (names no document: taken for every document of upload {uuid})"),
                Basis::Guess,
                applied,
            )?,
            (None, None) => conclude(
                tx,
                &t,
                MessageState::Acked,
                evidence,
                None,
                &format!("accepted by the platform (ProcessResult, upload {uuid})"),
                Basis::Named,
                applied,
            )?,
        }
    }
    Ok(true)
}

/// Settled files below `dir`, skipping `<yyyyMMdd>` folders older than `keep_after` (files in
/// them were read when they were new).
fn fresh_files(
    dir: &Path,
    settle: Duration,
    young: &mut bool,
    keep_after: chrono::NaiveDate,
) -> Vec<PathBuf> {
    let old = |name: &str| {
        chrono::NaiveDate::parse_from_str(name, "%Y%m%d").is_ok_and(|d| d < keep_after)
    };
    files::settled_files_outside(dir, settle, young, &old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tracker(dir: &Path) -> Tracker {
        let config = Config::parse(
            "[paths]\nspool = \"spool\"\nstate = \"state\"\n[einvoice]\nsettle_ms = 0\n\
             [turnkey]\nlayout = \"turnkey\"\ninbox = \"tk/UpCast/B2SSTORAGE/{message_type}/SRC\"\n",
            dir,
        )
        .unwrap();
        std::fs::create_dir_all(&config.paths.state).unwrap();
        Tracker::open(config).unwrap()
    }

    /// What reading a file the daemon's user may not read gives (the tests run as root, which
    /// reads anything; `tests/it/faults.rs` produces the real error with the daemon as another
    /// user).
    fn denied(path: &Path) -> Result<bool, FeedbackError> {
        Err(io_err("read", path)(
            std::io::ErrorKind::PermissionDenied.into(),
        ))
    }

    #[test]
    fn a_file_that_cannot_be_read_is_recorded_reported_and_read_again_once_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tracker(dir.path());
        let bak = dir
            .path()
            .join("tk/UpCast/B2SSTORAGE/F0401/BAK/20991231/10");
        std::fs::create_dir_all(&bak).unwrap();
        let f = bak.join("A_FOREIGN.xml");
        std::fs::write(&f, "<x/>").unwrap();
        // The scan goes on: the error becomes a record and a problem, not the scan's error.
        assert!(!t.per_file(&f, denied(&f)).unwrap());
        let kind = records::kind_of(t.store.conn(), &f).unwrap();
        assert_eq!(kind, Some(FeedbackKind::Unreadable));
        let p = t.problem().expect("a health problem");
        assert!(
            p.contains("A_FOREIGN.xml") && p.contains("cannot be read"),
            "{p}"
        );
        // Readable again: read, recorded as usual, and the problem is gone.
        assert_eq!(t.scan().unwrap(), 1);
        let kind = records::kind_of(t.store.conn(), &f).unwrap();
        assert_eq!(kind, Some(FeedbackKind::Foreign));
        assert_eq!(t.problem(), None);
    }

    #[test]
    fn a_file_that_stays_unreadable_is_tried_a_bounded_number_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tracker(dir.path());
        let pack = dir.path().join("tk/Pack/B2SSTORAGE/SRC");
        std::fs::create_dir_all(&pack).unwrap();
        let f = pack.join("a.xml_28080623_00000000_v41-F0401-20991231-103633689-a72cf668-ca86-446c-8c67-5ff8d73159fd_1");
        std::fs::write(&f, "<Invoice/>").unwrap();
        let mut tries = 0;
        for _ in 0..5 {
            if !t.gave_up(&f) {
                tries += 1;
                t.per_file(&f, denied(&f)).unwrap();
            }
        }
        assert_eq!(tries, 3);
        assert!(t.problem().is_some(), "reported while the file is there");
        // Fixed (its mode changes its status-change time): tried again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!t.gave_up(&f), "a changed file is tried again");
        t.per_file(&f, denied(&f)).unwrap();
        assert!(!t.gave_up(&f), "counted afresh");
        std::fs::remove_file(&f).unwrap();
        t.scan().unwrap();
        assert_eq!(t.problem(), None, "not once it is gone");
    }
}
