//! Writing events into the outbox (`events`): a typed payload ([`crate::events`]) in the
//! transaction of the change it announces, so an event exists exactly when its change does.

use rusqlite::{params, Connection, Transaction};
use serde_json::Value;

use super::{now, Result};
use crate::events::{Event, EventName};

/// Writes `event` into the outbox inside `tx`.
pub fn add<E: Event>(tx: &Transaction, event: &E) -> Result<()> {
    let payload = serde_json::to_string(event).expect("an event payload serializes");
    tx.execute(
        "INSERT INTO events (event, tenant, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![E::NAME, event.tenant(), payload, now()],
    )?;
    Ok(())
}

/// The payloads of every event of one name, oldest first (for an operator or a test looking
/// at what was raised: it reads the whole outbox).
pub fn payloads(conn: &Connection, name: EventName) -> Result<Vec<Value>> {
    let mut stmt = conn.prepare("SELECT payload FROM events WHERE event = ?1 ORDER BY id")?;
    let rows = stmt.query_map([name], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(serde_json::from_str(&r?).unwrap_or(Value::Null));
    }
    Ok(out)
}

/// How many events the outbox holds.
pub fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
}
