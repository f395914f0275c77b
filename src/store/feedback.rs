//! What the feedback tracker remembers of Turnkey's files: `feedback_files` (every file read
//! from Turnkey's folders, once, by path and MD5), `summaries` (each summary compared with the
//! store) and `turnkey_packs` (the documents of each Turnkey upload, in pack order).
//!
//! Writes take the caller's transaction, taken with the write lock first by
//! [`super::Store::transaction`].

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::states::text_enum;
use super::{now, Result};

text_enum! {
    /// What a file read from Turnkey's folders was, as its record says.
    pub enum FeedbackKind {
        /// A message file Turnkey moved to BAK (taken).
        Bak = "bak",
        /// A message file Turnkey moved to ERR, or the flat layout's error folder (refused).
        Err = "err",
        /// A pack Turnkey wrote (the documents of one upload).
        Pack = "pack",
        /// A result being applied (its record, before its kind is known).
        Result = "result",
        /// The flat layout's ACK.
        Ack = "ack",
        /// The flat layout's ERROR.
        Error = "error",
        /// A ProcessResult.
        Process = "process",
        /// A SummaryResult.
        Summary = "summary",
        /// The flat layout's DailySummary.
        Daily = "daily",
        /// Not turnbridge's (another system's file, or not a result), left in place.
        Foreign = "foreign",
        /// A result that cannot be applied (too large, does not parse), set aside.
        Rejected = "rejected",
        /// A file with claims that cannot be true, set aside until an operator removes it.
        Implausible = "implausible",
        /// A file that could not be read (recorded while it cannot).
        Unreadable = "unreadable",
    }
}

impl FeedbackKind {
    /// How a result of this kind is named in messages.
    pub const fn result_name(self) -> &'static str {
        match self {
            FeedbackKind::Ack => "ACK",
            FeedbackKind::Error => "ERROR",
            FeedbackKind::Process => "ProcessResult",
            FeedbackKind::Summary => "SummaryResult",
            FeedbackKind::Daily => "DailySummary",
            FeedbackKind::Bak
            | FeedbackKind::Err
            | FeedbackKind::Pack
            | FeedbackKind::Result
            | FeedbackKind::Foreign
            | FeedbackKind::Rejected
            | FeedbackKind::Implausible
            | FeedbackKind::Unreadable => "result",
        }
    }
}

fn text(p: &Path) -> std::borrow::Cow<'_, str> {
    p.to_string_lossy()
}

// The lookups, each served by an index (see `src/store/plans.rs`).
pub(crate) const SEEN_CONTENT: &str =
    "SELECT kind, outcome FROM feedback_files WHERE md5 = ?1 AND kind NOT IN (?2, ?3, ?4) LIMIT 1";
pub(crate) const KNOWN: &str = "SELECT md5, kept_at FROM feedback_files WHERE path = ?1 AND kind != ?2 ORDER BY id DESC LIMIT 1";
pub(crate) const ID_OF: &str = "SELECT id FROM feedback_files WHERE path = ?1 AND md5 = ?2";
pub(crate) const UNREADABLE: &str = "SELECT path, outcome FROM feedback_files WHERE kind = ?1";
pub(crate) const SET_KEPT: &str =
    "UPDATE feedback_files SET kept_at = ?1 WHERE path = ?2 AND kept_at IS NULL";
pub(crate) const FORGET_UNREADABLE: &str =
    "DELETE FROM feedback_files WHERE path = ?1 AND kind = ?2";
pub(crate) const DOUBTED: &str = "SELECT kept_at, outcome FROM feedback_files WHERE kind = ?1 AND kept_at IS NOT NULL ORDER BY id DESC LIMIT ?2";
pub(crate) const PACK_MEMBERS: &str =
    "SELECT seq, number, message_id FROM turnkey_packs WHERE uuid = ?1 ORDER BY seq";
pub(crate) const PACK_SEEN: &str = "SELECT 1 FROM turnkey_packs WHERE uuid = ?1 LIMIT 1";
pub(crate) const PRUNE_PACKS: &str = "DELETE FROM turnkey_packs WHERE rowid IN
     (SELECT rowid FROM turnkey_packs WHERE seen_at < ?1 LIMIT ?2)";
/// Results read in place (kept_at NULL) too; a pack still in Pack/…/SRC (not in a day
/// folder, so listed at every scan) keeps its record, or it would be read again.
pub(crate) const PRUNE_IN_PLACE: &str =
    "DELETE FROM feedback_files WHERE id IN (SELECT id FROM feedback_files
     WHERE seen_at < ?1 AND kept_at IS NULL
     AND kind IN (?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
     AND id NOT IN (SELECT feedback_id FROM summaries) LIMIT ?2)";
pub(crate) const OLD_PACKS: &str =
    "SELECT id, path FROM feedback_files WHERE seen_at < ?1 AND kind = ?4
     AND id > ?2 ORDER BY id LIMIT ?3";

/// The kinds [`PRUNE_IN_PLACE`] prunes (their records are not needed once their day folder
/// is no longer read).
const PRUNED_IN_PLACE: [FeedbackKind; 9] = [
    FeedbackKind::Bak,
    FeedbackKind::Err,
    FeedbackKind::Foreign,
    FeedbackKind::Unreadable,
    FeedbackKind::Process,
    FeedbackKind::Summary,
    FeedbackKind::Ack,
    FeedbackKind::Error,
    FeedbackKind::Daily,
];

/// The newest record of a file at `path` that was read (its MD5, and where it is kept).
pub fn known(conn: &Connection, path: &Path) -> Result<Option<(String, Option<String>)>> {
    Ok(conn
        .prepare_cached(KNOWN)?
        .query_row(params![text(path), FeedbackKind::Unreadable], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// The kind of the newest record of a file at `path`.
pub fn kind_of(conn: &Connection, path: &Path) -> Result<Option<FeedbackKind>> {
    Ok(conn
        .query_row(
            "SELECT kind FROM feedback_files WHERE path = ?1 ORDER BY id DESC LIMIT 1",
            [text(path)],
            |r| r.get(0),
        )
        .optional()?)
}

/// A result with this content read before (anywhere), with its kind and outcome; files only
/// moved by Turnkey and files not believed are not results seen.
pub fn seen_content(conn: &Connection, md5: &str) -> Result<Option<(FeedbackKind, String)>> {
    Ok(conn
        .prepare_cached(SEEN_CONTENT)?
        .query_row(
            params![
                md5,
                FeedbackKind::Bak,
                FeedbackKind::Err,
                FeedbackKind::Implausible
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Records a file read (once per path and content), forgetting that it could not be read;
/// returns the record's id.
pub fn record(
    tx: &Transaction,
    path: &Path,
    md5: &str,
    kind: FeedbackKind,
    outcome: &str,
    kept_at: Option<&Path>,
) -> Result<i64> {
    tx.execute(
        FORGET_UNREADABLE,
        params![text(path), FeedbackKind::Unreadable],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO feedback_files (path, md5, kind, outcome, kept_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            text(path),
            md5,
            kind,
            outcome,
            kept_at.map(|p| p.to_string_lossy().into_owned()),
            now()
        ],
    )?;
    Ok(tx.query_row(ID_OF, params![text(path), md5], |r| r.get(0))?)
}

/// Sets the kind and outcome of a record once its file was applied; it is kept nowhere yet.
pub fn set_outcome(tx: &Transaction, id: i64, kind: FeedbackKind, outcome: &str) -> Result<()> {
    tx.execute(
        "UPDATE feedback_files SET kind = ?1, outcome = ?2, kept_at = NULL WHERE id = ?3",
        params![kind, outcome, id],
    )?;
    Ok(())
}

/// Notes where a file read at `path` is kept (autocommit: one statement).
pub fn set_kept(conn: &Connection, path: &Path, kept: &Path) -> Result<()> {
    conn.execute(SET_KEPT, params![text(kept), text(path)])?;
    Ok(())
}

/// Records a file set aside (`kind` rejected or implausible) and where it is kept; a file
/// set aside before and dropped back is recorded anew.
pub fn record_set_aside(
    tx: &Transaction,
    path: &Path,
    md5: &str,
    kind: FeedbackKind,
    outcome: &str,
    kept: &Path,
) -> Result<()> {
    tx.execute(
        FORGET_UNREADABLE,
        params![text(path), FeedbackKind::Unreadable],
    )?;
    tx.execute(
        "INSERT INTO feedback_files (path, md5, kind, outcome, kept_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (path, md5) DO UPDATE SET kind = excluded.kind,
             outcome = excluded.outcome, kept_at = excluded.kept_at, seen_at = excluded.seen_at",
        params![text(path), md5, kind, outcome, text(kept), now()],
    )?;
    Ok(())
}

/// Records a file that could not be read, unless it is already; returns whether it is new.
pub fn record_unreadable(tx: &Transaction, path: &Path, why: &str) -> Result<bool> {
    Ok(tx.execute(
        "INSERT OR IGNORE INTO feedback_files (path, md5, kind, outcome, kept_at, seen_at)
         VALUES (?1, '', ?2, ?3, NULL, ?4)",
        params![text(path), FeedbackKind::Unreadable, why, now()],
    )? > 0)
}

/// The files recorded as unreadable, with why.
pub fn unreadable(conn: &Connection) -> Result<Vec<(PathBuf, String)>> {
    let mut stmt = conn.prepare(UNREADABLE)?;
    let rows = stmt.query_map([FeedbackKind::Unreadable], |r| {
        Ok((PathBuf::from(r.get::<_, String>(0)?), r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `limit` files not believed that were kept somewhere: where, and why.
pub fn doubted(conn: &Connection, limit: i64) -> Result<Vec<(PathBuf, String)>> {
    let mut stmt = conn.prepare(DOUBTED)?;
    let rows = stmt.query_map(params![FeedbackKind::Implausible, limit], |r| {
        Ok((PathBuf::from(r.get::<_, String>(0)?), r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets a file not believed whose set-aside copy (`kept`) an operator removed.
pub fn forget_doubted(tx: &Transaction, kept: &Path) -> Result<()> {
    tx.execute(
        "DELETE FROM feedback_files WHERE kind = ?1 AND kept_at = ?2",
        params![FeedbackKind::Implausible, text(kept)],
    )?;
    Ok(())
}

/// A summary compared with the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub date: Option<String>,
    pub message_type: Option<String>,
    pub summary_id: Option<String>,
    pub expected: i64,
    pub total: i64,
    pub good: i64,
    pub failed: i64,
    pub mismatch: Option<String>,
    pub at: String,
}

/// Records a summary of the result file recorded as `feedback_id`.
pub fn add_summary(tx: &Transaction, feedback_id: i64, s: &Summary) -> Result<()> {
    tx.execute(
        "INSERT INTO summaries (feedback_id, summary_id, message_type, date, expected, total, good, failed, mismatch, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            feedback_id,
            s.summary_id,
            s.message_type,
            s.date,
            s.expected,
            s.total,
            s.good,
            s.failed,
            s.mismatch,
            s.at
        ],
    )?;
    Ok(())
}

/// The summary recorded last.
pub fn last_summary(conn: &Connection) -> Result<Option<Summary>> {
    Ok(conn
        .query_row(
            "SELECT date, message_type, summary_id, expected, total, good, failed, mismatch, at
             FROM summaries ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok(Summary {
                    date: r.get(0)?,
                    message_type: r.get(1)?,
                    summary_id: r.get(2)?,
                    expected: r.get(3)?,
                    total: r.get(4)?,
                    good: r.get(5)?,
                    failed: r.get(6)?,
                    mismatch: r.get(7)?,
                    at: r.get(8)?,
                })
            },
        )
        .optional()?)
}

/// One document of a Turnkey upload.
#[derive(Debug, Clone, PartialEq)]
pub struct PackMember {
    pub uuid: String,
    /// Its place in the pack (Turnkey's SEQNO order), from 1.
    pub seq: i64,
    pub message_type: String,
    pub number: String,
    /// The message it is, when it is turnbridge's.
    pub message_id: Option<i64>,
}

/// Records one document of an upload's pack (once per upload and place).
pub fn add_pack_member(tx: &Transaction, m: &PackMember, pack_file: &Path) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO turnkey_packs (uuid, seq, message_type, number, message_id, pack_file, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            m.uuid,
            m.seq,
            m.message_type,
            m.number,
            m.message_id,
            text(pack_file),
            now()
        ],
    )?;
    Ok(())
}

/// The documents of an upload, in pack order.
pub fn pack_members(conn: &Connection, uuid: &str) -> Result<Vec<PackMember>> {
    let mut stmt = conn.prepare_cached(PACK_MEMBERS)?;
    let rows = stmt.query_map([uuid], |r| {
        Ok(PackMember {
            uuid: uuid.to_string(),
            seq: r.get(0)?,
            message_type: String::new(),
            number: r.get(1)?,
            message_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every pack document recorded, by upload and place (for an operator: reads them all).
pub fn all_pack_members(conn: &Connection) -> Result<Vec<PackMember>> {
    let mut stmt = conn.prepare(
        "SELECT uuid, seq, message_type, number, message_id FROM turnkey_packs ORDER BY uuid, seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PackMember {
            uuid: r.get(0)?,
            seq: r.get(1)?,
            message_type: r.get(2)?,
            number: r.get(3)?,
            message_id: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether a pack of this upload was read.
pub fn pack_seen(conn: &Connection, uuid: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(PACK_SEEN)?
        .query_row([uuid], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// One batch of the pruning of Turnkey's records seen before `before`: at most `limit` rows of
/// each kind, old packs from `after_id` on. Returns the rows deleted and where the next batch
/// starts, `None` when nothing is left.
pub fn prune_turnkey_batch(
    tx: &Transaction,
    before: &str,
    after_id: i64,
    limit: usize,
) -> Result<(usize, Option<i64>)> {
    let packs = tx.execute(PRUNE_PACKS, params![before, limit as i64])?;
    let [a, b, c, d, e, f, g, h, i] = PRUNED_IN_PLACE;
    let results = tx.execute(
        PRUNE_IN_PLACE,
        params![before, limit as i64, a, b, c, d, e, f, g, h, i],
    )?;
    let old_packs: Vec<(i64, String)> = {
        let mut stmt = tx.prepare_cached(OLD_PACKS)?;
        let rows = stmt.query_map(
            params![before, after_id, limit as i64, FeedbackKind::Pack],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    let mut n = packs + results;
    for (id, path) in &old_packs {
        if !Path::new(path).exists() {
            n += tx.execute("DELETE FROM feedback_files WHERE id = ?1", [id])?;
        }
    }
    let more = packs == limit || results == limit || old_packs.len() == limit;
    let next = old_packs.last().map_or(after_id, |(id, _)| *id);
    Ok((n, more.then_some(next)))
}
