//! The `manual_requests` table: operators' requests to cancel, void, issue again or resend a
//! message (`turnbridge invoice …`). Each request writes one file into the spool; the job that
//! takes a file of that name *and* content ([`for_job`]) is the request's, so a file someone
//! else dropped under such a name is an ordinary drop. The pipeline notes what became of the
//! request ([`fulfil`], [`refuse`]) in the transaction that records (or refuses) its message.
//!
//! Kept for good, with the messages they made: each row is one operator action.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::states::text_enum;
use super::{now, Result};

text_enum! {
    /// What an operator asked for.
    pub enum ManualAction {
        /// Cancel an invoice (F0501) written from what the store knows.
        Cancel = "cancel",
        /// Void an invoice (F0701) written from what the store knows.
        Void = "void",
        /// Issue a voided invoice again (F0401, the same number): its last issue, again.
        Reissue = "reissue",
        /// Send a message that ended in `error` again, the same document.
        Resend = "resend",
    }
}

/// A request as recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Request {
    pub id: i64,
    pub action: ManualAction,
    pub message_type: String,
    pub seller_ban: String,
    pub number: String,
    pub reason: Option<String>,
    pub requested_by: String,
    pub requested_at: String,
    /// The file it wrote into the spool.
    pub file_name: String,
    #[serde(skip)]
    pub md5: String,
    /// The job that took the file, once one did.
    pub job_id: Option<String>,
    /// The message it recorded, once recorded.
    pub message_id: Option<i64>,
    /// Why the job refused the message, when it did.
    pub refusal: Option<String>,
}

const COLUMNS: &str = "id, action, message_type, seller_ban, number, reason, requested_by, requested_at, file_name, md5, job_id, message_id, refusal";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Request> {
    Ok(Request {
        id: r.get(0)?,
        action: r.get(1)?,
        message_type: r.get(2)?,
        seller_ban: r.get(3)?,
        number: r.get(4)?,
        reason: r.get(5)?,
        requested_by: r.get(6)?,
        requested_at: r.get(7)?,
        file_name: r.get(8)?,
        md5: r.get(9)?,
        job_id: r.get(10)?,
        message_id: r.get(11)?,
        refusal: r.get(12)?,
    })
}

/// A request to record.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub action: ManualAction,
    pub message_type: &'a str,
    pub seller_ban: &'a str,
    pub number: &'a str,
    pub reason: Option<&'a str>,
    pub requested_by: &'a str,
    pub md5: &'a str,
}

/// Records a request; its spool file's name comes from its id (`name(id)`), so two requests
/// never share one. Returns the id.
pub fn insert(tx: &Transaction, r: &NewRequest, name: impl Fn(i64) -> String) -> Result<i64> {
    tx.execute(
        "INSERT INTO manual_requests (action, message_type, seller_ban, number, reason,
             requested_by, requested_at, file_name, md5)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8)",
        params![
            r.action,
            r.message_type,
            r.seller_ban,
            r.number,
            r.reason,
            r.requested_by,
            now(),
            r.md5
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE manual_requests SET file_name = ?1 WHERE id = ?2",
        params![name(id), id],
    )?;
    Ok(id)
}

/// Forgets a request whose file could not be written (nothing can take it).
pub fn remove(tx: &Transaction, id: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM manual_requests WHERE id = ?1 AND job_id IS NULL",
        [id],
    )?;
    Ok(())
}

pub fn by_id(conn: &Connection, id: i64) -> Result<Option<Request>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM manual_requests WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?)
}

pub(crate) const FOR_FILE: &str = "file_name = ?1 AND md5 = ?2 AND (job_id IS NULL OR job_id = ?3)";

/// The request a job belongs to: the one that wrote a file of the job's name and content, not
/// taken by another job. A job taking it is noted ([`take`]).
pub fn for_job(
    conn: &Connection,
    source_name: &str,
    md5: &str,
    job_id: &str,
) -> Result<Option<Request>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM manual_requests WHERE {FOR_FILE}"
        ))?
        .query_row(params![source_name, md5, job_id], from_row)
        .optional()?)
}

/// The request a message was recorded for, if one was.
pub fn of_message(conn: &Connection, message_id: i64) -> Result<Option<Request>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM manual_requests WHERE message_id = ?1"
        ))?
        .query_row([message_id], from_row)
        .optional()?)
}

/// Notes that job `job_id` took request `id`'s file.
pub fn take(tx: &Transaction, id: i64, job_id: &str) -> Result<()> {
    tx.execute(
        "UPDATE manual_requests SET job_id = ?1 WHERE id = ?2",
        params![job_id, id],
    )?;
    Ok(())
}

/// Notes the message recorded for request `id`.
pub fn fulfil(tx: &Transaction, id: i64, message_id: i64) -> Result<()> {
    tx.execute(
        "UPDATE manual_requests SET message_id = ?1, refusal = NULL WHERE id = ?2",
        params![message_id, id],
    )?;
    Ok(())
}

/// Notes why request `id`'s message was refused.
pub fn refuse(tx: &Transaction, id: i64, reason: &str) -> Result<()> {
    tx.execute(
        "UPDATE manual_requests SET refusal = ?1 WHERE id = ?2",
        params![reason, id],
    )?;
    Ok(())
}
