//! The `messages` table (one e-invoice message each, unique by type, seller, number and
//! generation) and `allowance_lines`. A message's state changes only through [`transition`]
//! (`src/store/transitions.rs`), which writes the transition row and the event with it.
//!
//! Writes take the caller's transaction, taken with the write lock first by
//! [`super::Store::transaction`].

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::states::{MessageState, TransitionFrom};
use super::{now, Result};

pub use super::transitions::{queued_between, transition, transitions_of, Change, TransitionRow};

/// A message as the pipeline, feedback and reports read it (its XML apart).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: i64,
    pub job_id: String,
    pub message_type: String,
    pub legacy_type: Option<String>,
    pub seller_ban: String,
    pub number: String,
    /// 1 for the first message of its type, seller and number; each one sent again after it
    /// (a correction after an error, an issue after a void) is the next.
    pub generation: u32,
    /// The buyer's id (`0000000000` for a consumer); `None` for messages recorded before it
    /// was kept.
    pub buyer_id: Option<String>,
    /// `YYYY-MM-DD`.
    pub document_date: String,
    /// The untaxed total of an invoice (F0401) or allowance (G0401), as recorded.
    pub amount: Option<String>,
    pub tenant: String,
    pub state: MessageState,
    pub staged: bool,
    pub xml_name: String,
    /// Its XML in the pickup folder, once published.
    pub xml_path: Option<String>,
    pub source_file: String,
    pub source_row: i64,
    pub staged_path: Option<String>,
    pub xml_md5: Option<String>,
    pub mof_code: Option<String>,
    pub status_message: Option<String>,
    /// Its final state is turnbridge's inference ([`super::states::Basis::Guess`]).
    pub guessed: bool,
    pub updated_at: String,
}

const COLUMNS: &str = "id, job_id, message_type, legacy_type, seller_ban, number, document_date, tenant, state, staged, xml_name, xml_path, source_file, source_row, staged_path, xml_md5, mof_code, status_message, guessed, updated_at, generation, buyer_id, amount";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        job_id: r.get(1)?,
        message_type: r.get(2)?,
        legacy_type: r.get(3)?,
        seller_ban: r.get(4)?,
        number: r.get(5)?,
        document_date: r.get(6)?,
        tenant: r.get(7)?,
        state: r.get(8)?,
        staged: r.get(9)?,
        xml_name: r.get(10)?,
        xml_path: r.get(11)?,
        source_file: r.get(12)?,
        source_row: r.get(13)?,
        staged_path: r.get(14)?,
        xml_md5: r.get(15)?,
        mof_code: r.get(16)?,
        status_message: r.get(17)?,
        guessed: r.get(18)?,
        updated_at: r.get(19)?,
        generation: r.get(20)?,
        buyer_id: r.get(21)?,
        amount: r.get(22)?,
    })
}

/// The messages `WHERE …` selects (every column but the XML).
fn select(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MessageRow>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE {filter}"))?;
    let rows = stmt.query_map(params, from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn select_one(
    conn: &Connection,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Option<MessageRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE {filter}"))?
        .query_row(params, from_row)
        .optional()?)
}

// The lookups, each served by an index (see `src/store/plans.rs`).
pub(crate) const BY_ID: &str = "id = ?1";
pub(crate) const BY_KEY: &str =
    "message_type = ?1 AND seller_ban = ?2 AND number = ?3 ORDER BY generation DESC LIMIT 1";
pub(crate) const GENERATIONS: &str =
    "message_type = ?1 AND seller_ban = ?2 AND number = ?3 ORDER BY generation";
pub(crate) const ABOUT_INVOICE: &str =
    "number = ?1 AND seller_ban = ?2 AND message_type IN (?3, ?4, ?5) ORDER BY id";
pub(crate) const BY_XML_NAME: &str = "xml_name = ?1";
pub(crate) const BY_TYPE_AND_NUMBER: &str = "message_type = ?1 AND number = ?2 ORDER BY id";
pub(crate) const BY_NUMBER: &str = "number = ?1 ORDER BY id";
pub(crate) const OF_JOB: &str = "job_id = ?1 ORDER BY id";
pub(crate) const PACK_CANDIDATES: &str = "message_type = ?1 AND number = ?2 AND seller_ban = ?3 AND state IN (?4, ?5, ?6) ORDER BY id DESC";
pub(crate) const QUEUED_IN_PICKUP: &str = "state = ?1 AND xml_path IS NOT NULL";
pub(crate) const OVERDUE: &str = "state IN (?1, ?2, ?3) AND overdue_raised = 0 AND updated_at < ?4";
pub(crate) const OLDEST_WAITING: &str = "state IN (?1, ?2, ?3) ORDER BY updated_at LIMIT 1";
/// The lines of allowances on an invoice that still stand: their G0401 not refused (`error`)
/// and not cancelled by a G0501 that was not refused.
pub(crate) const STANDING_ALLOWANCES: &str = "SELECT m.number, l.amount FROM allowance_lines l
     JOIN messages m ON m.id = l.message_id
     WHERE l.seller_ban = ?1 AND l.original_invoice = ?2 AND m.state != ?3
       AND NOT EXISTS (SELECT 1 FROM messages c
           WHERE c.message_type = ?4 AND c.seller_ban = m.seller_ban AND c.number = m.number
             AND c.state != ?3)
     ORDER BY l.message_id";
pub(crate) const COUNT_BY_TYPE_AND_STATE: &str =
    "SELECT message_type, state, count(*) FROM messages GROUP BY message_type, state ORDER BY 1, 2";
pub(crate) const TENANTS: &str = "SELECT DISTINCT tenant FROM messages";

/// A new message to record.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub job_id: &'a str,
    pub message_type: &'a str,
    pub legacy_type: Option<&'a str>,
    pub seller_ban: &'a str,
    pub number: &'a str,
    /// 1, or the next after the generations already recorded (see [`MessageRow::generation`]).
    pub generation: u32,
    pub buyer_id: &'a str,
    pub document_date: chrono::NaiveDate,
    pub tenant: &'a str,
    pub source_file: &'a str,
    pub source_row: usize,
    pub amount: Option<String>,
    pub xml: &'a [u8],
    pub xml_md5: &'a str,
}

/// Records a message `validated`, with its rendered XML, its XML name (from its id, never
/// reused) and its first transition (`received → validated`); returns its id. A generation
/// already recorded for the same type, seller and number is a database error (unique).
pub fn insert(tx: &Transaction, m: &NewMessage, xml_name: impl Fn(i64) -> String) -> Result<i64> {
    let at = now();
    tx.execute(
        "INSERT INTO messages (job_id, message_type, legacy_type, seller_ban, number,
             document_date, tenant, source_file, source_row, amount, state, created_at, updated_at,
             xml, xml_md5, generation, buyer_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16)",
        params![
            m.job_id,
            m.message_type,
            m.legacy_type,
            m.seller_ban,
            m.number,
            m.document_date.format("%Y-%m-%d").to_string(),
            m.tenant,
            m.source_file,
            m.source_row as i64,
            m.amount,
            MessageState::Validated,
            at,
            m.xml,
            m.xml_md5,
            m.generation,
            m.buyer_id
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.execute(
        "UPDATE messages SET xml_name = ?1 WHERE id = ?2",
        params![xml_name(id), id],
    )?;
    tx.execute(
        "INSERT INTO transitions (message_id, from_state, to_state, at, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id,
            TransitionFrom::Received,
            MessageState::Validated,
            at,
            format!("{} row {}", m.source_file, m.source_row)
        ],
    )?;
    Ok(id)
}

pub fn by_id(conn: &Connection, id: i64) -> Result<Option<MessageRow>> {
    select_one(conn, BY_ID, [id])
}

/// The latest generation of the message of a type, seller and number.
pub fn by_key(
    conn: &Connection,
    ty: &str,
    seller: &str,
    number: &str,
) -> Result<Option<MessageRow>> {
    select_one(conn, BY_KEY, params![ty, seller, number])
}

/// Every generation of the message of a type, seller and number, first to latest.
pub fn generations(
    conn: &Connection,
    ty: &str,
    seller: &str,
    number: &str,
) -> Result<Vec<MessageRow>> {
    select(conn, GENERATIONS, params![ty, seller, number])
}

/// The issues, cancels and voids (F0401, F0501, F0701) of a seller's invoice, every
/// generation, in the order they were recorded.
pub fn about_invoice(conn: &Connection, seller: &str, number: &str) -> Result<Vec<MessageRow>> {
    use crate::einvoice::MessageType as T;
    select(
        conn,
        ABOUT_INVOICE,
        params![
            number,
            seller,
            T::F0401.as_str(),
            T::F0501.as_str(),
            T::F0701.as_str()
        ],
    )
}

/// The message whose XML has this file name.
pub fn by_xml_name(conn: &Connection, name: &str) -> Result<Option<MessageRow>> {
    select_one(conn, BY_XML_NAME, [name])
}

/// The messages of a type and number (of any seller), oldest first.
pub fn by_type_and_number(conn: &Connection, ty: &str, number: &str) -> Result<Vec<MessageRow>> {
    select(conn, BY_TYPE_AND_NUMBER, params![ty, number])
}

/// Every message about a document number, oldest first.
pub fn by_number(conn: &Connection, number: &str) -> Result<Vec<MessageRow>> {
    select(conn, BY_NUMBER, [number])
}

/// The first `limit` messages recorded, oldest first (an operator's listing).
pub fn first(conn: &Connection, limit: usize) -> Result<Vec<MessageRow>> {
    select(conn, "1 ORDER BY id LIMIT ?1", [limit as i64])
}

/// A job's messages, in the order they were recorded.
pub fn of_job(conn: &Connection, job_id: &str) -> Result<Vec<MessageRow>> {
    select(conn, OF_JOB, [job_id])
}

/// The messages a pack document of this type, number and seller may be: still waiting for
/// Turnkey (`validated`, `queued`, `picked_up`), newest first.
pub fn pack_candidates(
    conn: &Connection,
    ty: &str,
    number: &str,
    seller: &str,
) -> Result<Vec<MessageRow>> {
    let [a, b, c] = MessageState::WAITING;
    select(conn, PACK_CANDIDATES, params![ty, number, seller, a, b, c])
}

/// The messages queued whose XML was put in the pickup folder.
pub fn queued_in_pickup(conn: &Connection) -> Result<Vec<MessageRow>> {
    select(conn, QUEUED_IN_PICKUP, [MessageState::Queued])
}

/// Messages waiting since before `before` (RFC 3339) with no overdue event raised yet.
pub fn overdue(conn: &Connection, before: &str) -> Result<Vec<MessageRow>> {
    let [a, b, c] = MessageState::WAITING;
    select(conn, OVERDUE, params![a, b, c, before])
}

/// Notes that a message's overdue event was raised (until its next transition).
pub fn mark_overdue(tx: &Transaction, id: i64) -> Result<()> {
    tx.execute("UPDATE messages SET overdue_raised = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// The message waiting longest for its next step.
pub fn oldest_waiting(conn: &Connection) -> Result<Option<MessageRow>> {
    let [a, b, c] = MessageState::WAITING;
    select_one(conn, OLDEST_WAITING, params![a, b, c])
}

/// A message's rendered XML, kept until it is queued.
pub fn xml(conn: &Connection, id: i64) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .query_row("SELECT xml FROM messages WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Notes where a message's XML was staged (written and synced).
pub fn mark_staged(tx: &Transaction, id: i64, staged_path: &str) -> Result<()> {
    tx.execute(
        "UPDATE messages SET staged = 1, staged_path = ?1 WHERE id = ?2",
        params![staged_path, id],
    )?;
    Ok(())
}

/// Notes where a message's XML was published; its rendered copy is no longer kept.
pub fn mark_published(tx: &Transaction, id: i64, xml_path: &str) -> Result<()> {
    tx.execute(
        "UPDATE messages SET xml_path = ?1, xml = NULL WHERE id = ?2",
        params![xml_path, id],
    )?;
    Ok(())
}

/// Notes that a SummaryResult (`key`) judged a message; false when it had already.
pub fn note_summary(tx: &Transaction, id: i64, key: &str) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE messages SET summary_id = ?1 WHERE id = ?2 AND summary_id IS NOT ?1",
        params![key, id],
    )? > 0)
}

/// A guessed final state confirmed by a verdict naming the message: no longer a guess.
pub fn confirm_guess(tx: &Transaction, id: i64) -> Result<()> {
    tx.execute("UPDATE messages SET guessed = 0 WHERE id = ?1", [id])?;
    Ok(())
}

/// Every tenant a message was recorded for.
pub fn tenants(conn: &Connection) -> Result<BTreeSet<String>> {
    let mut stmt = conn.prepare_cached(TENANTS)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many messages of each type are in each state.
pub fn count_by_type_and_state(conn: &Connection) -> Result<Vec<(String, MessageState, i64)>> {
    let mut stmt = conn.prepare(COUNT_BY_TYPE_AND_STATE)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The lines of a seller's allowances on an invoice that still stand (see
/// [`STANDING_ALLOWANCES`]), as (allowance number, untaxed amount), oldest first.
pub fn standing_allowances(
    conn: &Connection,
    seller: &str,
    invoice: &str,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(STANDING_ALLOWANCES)?;
    let rows = stmt.query_map(
        params![
            seller,
            invoice,
            MessageState::Error,
            crate::einvoice::MessageType::G0501.as_str()
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records one line of allowance `id` on an invoice.
pub fn add_allowance_line(
    tx: &Transaction,
    id: i64,
    seller: &str,
    invoice: &str,
    amount: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO allowance_lines (message_id, seller_ban, original_invoice, amount)
         VALUES (?1, ?2, ?3, ?4)",
        params![id, seller, invoice, amount],
    )?;
    Ok(())
}
