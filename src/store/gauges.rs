//! What `/metrics` counts in the store at scrape time besides the messages
//! ([`super::messages::count_by_type_and_state`]): webhook deliveries by state, and the events
//! still waiting in the outbox. Each count is one statement (one consistent snapshot) that
//! walks a covering index, never a table (see `plans.rs`).

use rusqlite::Connection;

use super::Result;

/// Webhook deliveries in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    pub state: String,
    pub count: u64,
}

pub(crate) const DELIVERIES_BY_STATE: &str = "SELECT state, count(*) FROM deliveries GROUP BY 1";
/// An event waits until it is fanned out to the endpoints subscribed to it and each of its
/// deliveries has succeeded or ended (dead or cancelled). The two sets are disjoint: fan-out
/// creates an event's deliveries and marks it fanned out in one transaction.
pub(crate) const OUTBOX_WAITING: &str = "SELECT
     (SELECT count(*) FROM events WHERE fanned_out = 0)
   + (SELECT count(DISTINCT event_id) FROM deliveries WHERE state = 'pending')";

/// Webhook deliveries by state.
pub fn deliveries_by_state(conn: &Connection) -> Result<Vec<DeliveryCount>> {
    let mut stmt = conn.prepare_cached(DELIVERIES_BY_STATE)?;
    let rows = stmt.query_map([], |r| {
        Ok(DeliveryCount {
            state: r.get(0)?,
            count: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events in the outbox not yet delivered: not yet fanned out, or with a delivery still
/// pending. An event whose deliveries all succeeded, died or were cancelled no longer counts
/// (dead letters are counted with the deliveries).
pub fn outbox_waiting(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row(OUTBOX_WAITING, [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use rusqlite::params;

    fn event(store: &Store, fanned_out: bool) -> i64 {
        store
            .conn()
            .execute(
                "INSERT INTO events (event, payload, created_at, fanned_out) VALUES ('invoice.status.updated', '{}', ?1, ?2)",
                params![crate::store::now(), fanned_out],
            )
            .unwrap();
        store.conn().last_insert_rowid()
    }

    fn delivery(store: &Store, event_id: i64, endpoint: &str, state: &str) {
        store
            .conn()
            .execute(
                "INSERT INTO deliveries (id, event_id, endpoint_id, event, payload, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'invoice.status.updated', '{}', ?4, ?5, ?5)",
                params![format!("{event_id}-{endpoint}"), event_id, endpoint, state, crate::store::now()],
            )
            .unwrap();
    }

    #[test]
    fn the_outbox_counts_events_waiting_for_fan_out_or_a_pending_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("turnbridge.db")).unwrap();
        assert_eq!(outbox_waiting(store.conn()).unwrap(), 0);
        // Not fanned out yet.
        event(&store, false);
        // Fanned out, one delivery done and one pending: waits, counted once.
        let partly = event(&store, true);
        delivery(&store, partly, "a", "succeeded");
        delivery(&store, partly, "b", "pending");
        // Two pending deliveries of one event: counted once.
        let twice = event(&store, true);
        delivery(&store, twice, "a", "pending");
        delivery(&store, twice, "b", "pending");
        // Done: delivered, dead, cancelled, or no endpoint subscribed.
        for state in ["succeeded", "dead", "cancelled"] {
            let done = event(&store, true);
            delivery(&store, done, "a", state);
        }
        event(&store, true);
        assert_eq!(outbox_waiting(store.conn()).unwrap(), 3);

        let states = deliveries_by_state(store.conn()).unwrap();
        let pending = states.iter().find(|d| d.state == "pending").unwrap();
        assert_eq!(pending.count, 3);
        store
            .conn()
            .execute("UPDATE deliveries SET state = 'succeeded'", [])
            .unwrap();
        store
            .conn()
            .execute("UPDATE events SET fanned_out = 1", [])
            .unwrap();
        assert_eq!(outbox_waiting(store.conn()).unwrap(), 0);
    }
}
