//! The `jobs` table: one row per claimed e-invoice file, from `claimed` to `done`, `rejected`
//! or `duplicate` ([`JobState`]), with what counts its retries.
//!
//! Writes of a finished job take the caller's transaction (taken with the write lock first by
//! [`Store::transaction`]), so a job finishes together with the events announcing it.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::states::JobState;
use super::{now, Result, Store};

/// A job: one claimed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub source_name: String,
    pub md5: String,
    pub state: JobState,
    /// Why it was refused or set aside.
    pub reason: Option<String>,
    /// Where the source file went: the archive, or `rejected/`.
    pub final_path: Option<String>,
    pub success_count: i64,
    pub error_count: i64,
    /// Starts on the file that died before its messages were recorded.
    pub attempts: i64,
    /// Failed reads of the file in a row.
    pub read_failures: i64,
}

const COLUMNS: &str = "id, kind, source_name, md5, state, reason, final_path, success_count, error_count, attempts, read_failures";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        source_name: r.get(2)?,
        md5: r.get(3)?,
        state: r.get(4)?,
        reason: r.get(5)?,
        final_path: r.get(6)?,
        success_count: r.get(7)?,
        error_count: r.get(8)?,
        attempts: r.get(9)?,
        read_failures: r.get(10)?,
    })
}

/// The duplicate rule's lookup: an earlier job of `kind` that processed the same bytes.
pub(crate) const BY_MD5: &str = "SELECT id FROM jobs WHERE kind = ?1 AND md5 = ?2 AND id != ?3 AND state IN (?4, ?5) ORDER BY received_at LIMIT 1";

/// The jobs that took files of some content.
pub(crate) const OF_CONTENT: &str = "md5 = ?1 ORDER BY received_at, id";

/// How many jobs are in each state.
pub(crate) const COUNT_BY_STATE: &str =
    "SELECT state, count(*) FROM jobs GROUP BY state ORDER BY 1";

impl Store {
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        job(&self.conn, id)
    }

    /// Records a job claimed now.
    pub fn insert_job(
        &self,
        id: &str,
        kind: &str,
        source_name: &str,
        md5: &str,
        size: u64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO jobs (id, kind, source_name, md5, size, state, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                kind,
                source_name,
                md5,
                size as i64,
                JobState::Claimed,
                now()
            ],
        )?;
        Ok(())
    }

    /// A job first recorded by a read that failed learns its content.
    pub fn learn_job_content(&self, id: &str, md5: &str, size: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET md5 = ?1, size = ?2 WHERE id = ?3 AND md5 = ''",
            params![md5, size as i64, id],
        )?;
        Ok(())
    }

    /// Counts one more start on a job's file (committed at once, before the work it
    /// guards); returns the count so far.
    pub fn count_attempt(&self, id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "UPDATE jobs SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Forgets a job's starts once its file was read and checked without dying.
    pub fn reset_attempts(&self, id: &str) -> Result<()> {
        self.conn
            .execute("UPDATE jobs SET attempts = 0 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Counts one more failed read of a job's file (no permission, an I/O error), apart from
    /// the starts [`Store::count_attempt`] counts; returns the failures in a row so far.
    pub fn count_read_failure(&self, id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "UPDATE jobs SET read_failures = read_failures + 1 WHERE id = ?1 RETURNING read_failures",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Forgets a job's failed reads once its file was read.
    pub fn reset_read_failures(&self, id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET read_failures = 0 WHERE id = ?1 AND read_failures > 0",
            [id],
        )?;
        Ok(())
    }

    /// An earlier job (other than `except`) that processed the same bytes and was not
    /// refused.
    pub fn job_with_md5(&self, kind: &str, md5: &str, except: &str) -> Result<Option<Job>> {
        let id: Option<String> = self
            .conn
            .query_row(
                BY_MD5,
                params![kind, md5, except, JobState::Claimed, JobState::Done],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.job(&id),
            None => Ok(None),
        }
    }

    /// Where a finished job's source file went.
    pub fn set_job_final_path(&self, id: &str, path: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET final_path = ?1 WHERE id = ?2",
            params![path, id],
        )?;
        Ok(())
    }
}

pub fn job(conn: &Connection, id: &str) -> Result<Option<Job>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The jobs of files of this name, oldest first. For an operator looking for a file (it reads
/// the whole table: not for a path taken per file).
pub fn by_source_name(conn: &Connection, name: &str) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE source_name = ?1 ORDER BY received_at, id"
    ))?;
    let rows = stmt.query_map([name], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The jobs that took files of this content (MD5), oldest first.
pub fn of_content(conn: &Connection, md5: &str) -> Result<Vec<Job>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE {OF_CONTENT}"))?;
    let rows = stmt.query_map([md5], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Finishes a job refused as a whole (`rejected` or `duplicate`), inside `tx`.
pub fn refuse(
    tx: &Transaction,
    id: &str,
    state: JobState,
    reason: &str,
    duplicate_of: Option<&str>,
    final_path: &str,
) -> Result<()> {
    tx.execute(
        "UPDATE jobs SET state = ?1, reason = ?2, duplicate_of = ?3, final_path = ?4, finished_at = ?5
         WHERE id = ?6",
        params![state, reason, duplicate_of, final_path, now(), id],
    )?;
    Ok(())
}

/// Finishes a job whose messages were queued, inside `tx`.
pub fn done(tx: &Transaction, id: &str, success_count: usize, error_count: usize) -> Result<()> {
    tx.execute(
        "UPDATE jobs SET state = ?1, success_count = ?2, error_count = ?3, finished_at = ?4 WHERE id = ?5",
        params![
            JobState::Done,
            success_count as i64,
            error_count as i64,
            now(),
            id
        ],
    )?;
    Ok(())
}

/// How many jobs are in each state.
pub fn count_by_state(conn: &Connection) -> Result<Vec<(JobState, i64)>> {
    let mut stmt = conn.prepare(COUNT_BY_STATE)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
