//! The events outbox (`events`) as the deliverer reads it: every event a change raised,
//! written in the change's own transaction ([`super::events::add`]), then fanned out into
//! one delivery per subscribed endpoint ([`mark_fanned`]).

use rusqlite::{params, Transaction};
use serde_json::Value;

use super::{write_locked, Readable, Result, Timestamp};

/// An event not yet fanned out.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub event: String,
    pub tenant: Option<String>,
    /// The event's fields, as JSON text.
    pub payload: String,
    pub created_at: Timestamp,
}

/// Appends an event raised at `at` (the same row [`super::events::add`] writes for a change
/// committed now).
pub fn append(
    tx: &Transaction,
    event: &str,
    tenant: Option<&str>,
    payload: &Value,
    at: Timestamp,
) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT INTO events (event, tenant, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![event, tenant, payload.to_string(), at],
    )?;
    Ok(())
}

/// Whether any event waits to be fanned out (read only, so a quiet poll takes no write lock).
pub fn any_waiting(db: &impl Readable) -> Result<bool> {
    let conn = db.connection();
    Ok(conn.prepare(ANY_WAITING)?.exists([])?)
}

pub(crate) const ANY_WAITING: &str = "SELECT 1 FROM events WHERE fanned_out = 0 LIMIT 1";

/// The oldest events not yet fanned out, at most `limit`.
pub fn waiting(db: &impl Readable, limit: usize) -> Result<Vec<Event>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(WAITING)?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(Event {
            id: r.get(0)?,
            event: r.get(1)?,
            tenant: r.get(2)?,
            payload: r.get(3)?,
            created_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const WAITING: &str = "SELECT id, event, tenant, payload, created_at FROM events
     WHERE fanned_out = 0 ORDER BY id LIMIT ?1";

/// Marks an event fanned out (its deliveries are written in the same transaction).
pub fn mark_fanned(tx: &Transaction, id: i64) -> Result<()> {
    write_locked(tx)?;
    tx.execute("UPDATE events SET fanned_out = 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// How many events wait to be fanned out.
pub fn count_waiting(db: &impl Readable) -> Result<i64> {
    let conn = db.connection();
    Ok(conn.query_row(
        "SELECT count(*) FROM events WHERE fanned_out = 0",
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Writer;
    use crate::store::{open_read_only, Store};

    #[tokio::test]
    async fn the_store_functions_write_through_the_group_writer_and_read_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Writer::start(Store::open(&path).unwrap()).unwrap();
        let at = Timestamp::parse("2026-12-01T08:00:00+08:00").unwrap();
        writer
            .write(move |tx| {
                append(
                    tx,
                    "upload.completed",
                    Some("t1"),
                    &serde_json::json!({"n": 1}),
                    at,
                )
            })
            .await
            .unwrap();
        let db = open_read_only(&path).unwrap();
        assert!(any_waiting(&db).unwrap());
        let waiting = waiting(&db, 10).unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            waiting[0].created_at.to_string(),
            "2026-12-01T00:00:00.000Z"
        );
        let raised = crate::store::events::payloads(&db, crate::events::EventName::UploadCompleted);
        assert_eq!(raised.unwrap()[0]["n"], 1);
        let id = waiting[0].id;
        writer.write(move |tx| mark_fanned(tx, id)).await.unwrap();
        assert_eq!(count_waiting(&db).unwrap(), 0);
        assert_eq!(crate::store::events::count(&db).unwrap(), 1);
    }
}
