//! NextEngine upload jobs (`ne_jobs`): a goods or stock file, its upload CSV, and NextEngine's
//! queue id.
//!
//! `claimed → uploading → queued → done | failed | unknown`, or `claimed → rejected`. A job
//! moves to `uploading` with its CSV and the send time before the upload is sent, so after a
//! crash it is looked for in NextEngine's queue before it is ever sent again; a finished job
//! never moves again.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Transaction};

use super::states::text_enum;
use super::{write_locked, Readable, Result, Timestamp};

text_enum! {
    /// What a job uploads.
    pub enum NeJobKind {
        /// Goods master rows (`spool/nextengine/goods/`).
        Goods = "goods",
        /// Stock levels to reach (`spool/nextengine/stock/`).
        Stock = "stock",
    }
}

text_enum! {
    /// Where a job is.
    pub enum NeJobState {
        /// Its file is in `work/`, not yet turned into an upload.
        Claimed = "claimed",
        /// Its CSV is fixed and being sent (after a crash: perhaps sent).
        Uploading = "uploading",
        /// NextEngine took it (`que_id`); its queue is followed to a verdict.
        Queued = "queued",
        /// NextEngine processed it.
        Done = "done",
        /// NextEngine refused it, or processed it with errors.
        Failed = "failed",
        /// NextEngine's queue answered a status it does not document.
        Unknown = "unknown",
        /// Nothing in the file could be sent.
        Rejected = "rejected",
    }
}

impl NeJobState {
    /// The states a job is still followed in (never pruned, and the only ones that move).
    pub const OPEN: [NeJobState; 3] = [
        NeJobState::Claimed,
        NeJobState::Uploading,
        NeJobState::Queued,
    ];

    pub fn is_final(self) -> bool {
        !NeJobState::OPEN.contains(&self)
    }
}

/// A job as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct NeJob {
    pub id: String,
    pub kind: NeJobKind,
    pub source_name: String,
    pub state: NeJobState,
    pub que_id: Option<String>,
    pub csv: Option<Vec<u8>>,
    pub upload_started_at: Option<Timestamp>,
    /// The account it was uploaded to (`None` before the upload, or for a job from before
    /// accounts were recorded).
    pub account: Option<String>,
    pub rejected_rows: i64,
    pub result: Option<String>,
}

/// What [`finish`] recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub kind: NeJobKind,
    /// Rows left out, over the job's life.
    pub rejected_rows: i64,
}

const COLUMNS: &str =
    "id, kind, source_name, state, que_id, csv, upload_started_at, account, rejected_rows, result";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<NeJob> {
    Ok(NeJob {
        id: r.get(0)?,
        kind: r.get(1)?,
        source_name: r.get(2)?,
        state: r.get(3)?,
        que_id: r.get(4)?,
        csv: r.get(5)?,
        upload_started_at: r.get(6)?,
        account: r.get(7)?,
        rejected_rows: r.get(8)?,
        result: r.get(9)?,
    })
}

/// Records a claimed file (once: a job claimed before keeps its row).
pub fn claim(tx: &Transaction, id: &str, kind: NeJobKind, source_name: &str) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT OR IGNORE INTO ne_jobs (id, kind, source_name, state, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id, kind, source_name, NeJobState::Claimed, Timestamp::now()],
    )?;
    Ok(())
}

pub fn get(db: &impl Readable, id: &str) -> Result<Option<NeJob>> {
    let conn = db.connection();
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM ne_jobs WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Every job, by source file name (for operators' checks).
pub fn list(db: &impl Readable) -> Result<Vec<NeJob>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM ne_jobs ORDER BY source_name, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Fixes a job's upload CSV and notes the send time, before it is sent to `account`.
pub fn start_upload(
    tx: &Transaction,
    id: &str,
    csv: &[u8],
    csv_md5: &str,
    rejected_rows: i64,
    account: &str,
) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "UPDATE ne_jobs SET state = ?1, csv = ?2, csv_md5 = ?3, rejected_rows = ?4,
             upload_started_at = ?5, updated_at = ?5, account = ?6 WHERE id = ?7",
        params![
            NeJobState::Uploading,
            csv,
            csv_md5,
            rejected_rows,
            Timestamp::now(),
            account,
            id
        ],
    )?;
    Ok(())
}

/// NextEngine took the upload as `que_id`.
pub fn queued(tx: &Transaction, id: &str, que_id: &str) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "UPDATE ne_jobs SET state = ?1, que_id = ?2, updated_at = ?3 WHERE id = ?4",
        params![NeJobState::Queued, que_id, Timestamp::now(), id],
    )?;
    Ok(())
}

/// The queue ids some job already follows.
pub fn followed_queue_ids(db: &impl Readable) -> Result<HashSet<String>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(FOLLOWED)?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const FOLLOWED: &str = "SELECT que_id FROM ne_jobs WHERE que_id IS NOT NULL";

/// The jobs waiting for NextEngine's verdict on their upload.
pub fn in_queue(db: &impl Readable) -> Result<Vec<NeJob>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(IN_QUEUE)?;
    let rows = stmt.query_map([NeJobState::Queued], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const IN_QUEUE: &str = "SELECT id, kind, source_name, state, que_id, csv, upload_started_at, account, rejected_rows, result
     FROM ne_jobs WHERE state = ?1";

/// Ends a job in `state` with `result`, adding `rejected_rows` to the rows left out; what
/// it recorded, or `None` when the job had already finished (nothing changes then, and no
/// event is due).
pub fn finish(
    tx: &Transaction,
    id: &str,
    state: NeJobState,
    result: &str,
    rejected_rows: i64,
) -> Result<Option<Finished>> {
    write_locked(tx)?;
    let Some(job) = get(tx, id)? else {
        return Ok(None);
    };
    if job.state.is_final() {
        return Ok(None);
    }
    let rejected = job.rejected_rows + rejected_rows;
    tx.execute(
        "UPDATE ne_jobs SET state = ?1, result = ?2, rejected_rows = ?3, updated_at = ?4 WHERE id = ?5",
        params![state, result, rejected, Timestamp::now(), id],
    )?;
    Ok(Some(Finished {
        kind: job.kind,
        rejected_rows: rejected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_job_goes_through_its_states_and_a_finished_one_never_moves() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        store
            .write(|tx| claim(tx, "j1", NeJobKind::Stock, "levels.csv"))
            .unwrap();
        // A second claim of the same job (a resumed file) changes nothing.
        store
            .write(|tx| claim(tx, "j1", NeJobKind::Goods, "other.csv"))
            .unwrap();
        store
            .write(|tx| start_upload(tx, "j1", b"csv", "md5", 2, "NE1"))
            .unwrap();
        let j = get(store.conn(), "j1").unwrap().unwrap();
        assert_eq!(
            (
                j.kind,
                j.state,
                j.source_name.as_str(),
                j.account.as_deref()
            ),
            (
                NeJobKind::Stock,
                NeJobState::Uploading,
                "levels.csv",
                Some("NE1")
            )
        );
        assert!(j.upload_started_at.is_some());
        store.write(|tx| queued(tx, "j1", "7")).unwrap();
        assert_eq!(
            in_queue(store.conn()).unwrap()[0].que_id.as_deref(),
            Some("7")
        );
        assert!(followed_queue_ids(store.conn()).unwrap().contains("7"));
        let done = store
            .write(|tx| finish(tx, "j1", NeJobState::Done, "processed", 1))
            .unwrap();
        assert_eq!(
            done,
            Some(Finished {
                kind: NeJobKind::Stock,
                rejected_rows: 3
            })
        );
        let again = store
            .write(|tx| finish(tx, "j1", NeJobState::Failed, "late", 0))
            .unwrap();
        assert_eq!(again, None);
        let j = get(store.conn(), "j1").unwrap().unwrap();
        assert_eq!(
            (j.state, j.result.as_deref()),
            (NeJobState::Done, Some("processed"))
        );
        assert!(in_queue(store.conn()).unwrap().is_empty());
        assert_eq!(list(store.conn()).unwrap().len(), 1);
    }
}
