//! Outbound webhook deliveries (`deliveries`) and their attempts (`delivery_attempts`).
//!
//! A delivery is one event to one endpoint, under one id on every attempt:
//! `pending → succeeded | dead | cancelled`, and `dead → pending` when an operator resends it.
//! A delivery leaves `pending` only by an attempt recorded with it ([`record_attempt`]), its
//! endpoint's removal ([`cancel_pending_of`]) or the endpoint answering 410
//! ([`kill_pending_of`]).

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::Value;

use super::audit::{self, Action};
use super::endpoints::Signing;
use super::states::text_enum;
use super::{write_locked, Readable, Result, Timestamp};
use crate::config::Secret;

text_enum! {
    /// Where a delivery is.
    pub enum DeliveryState {
        /// Waiting for its next attempt (`next_attempt_at`).
        Pending = "pending",
        /// The receiver answered 2xx.
        Succeeded = "succeeded",
        /// Every scheduled attempt failed, or the receiver is gone: the dead-letter queue.
        Dead = "dead",
        /// Its endpoint was removed.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// What started an attempt.
    pub enum Trigger {
        /// The retry schedule.
        Scheduled = "scheduled",
        /// The first attempt after an operator resent a dead delivery.
        Manual = "manual",
    }
}

/// A delivery as listings show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// The exact body sent.
    pub payload: Value,
}

/// Which deliveries a listing or a resend is about; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// These deliveries (any other field narrows them further); empty: not narrowed by id.
    pub ids: Vec<String>,
    pub endpoint: Option<String>,
    /// Bounds on the delivery's creation time, both included.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub state: Option<DeliveryState>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub attempt: i64,
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    /// The first 2 KiB of the answer.
    pub response: Option<String>,
}

/// A delivery to create, pending and due at once.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub event_id: i64,
    pub endpoint_id: &'a str,
    pub event: &'a str,
    pub tenant: Option<&'a str>,
    pub payload: &'a str,
}

/// A due attempt with what it takes to send it.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub endpoint_id: String,
    pub event: String,
    pub payload: String,
    /// Attempts since it was created or last resent.
    pub attempts: i64,
    /// Every attempt on record, resent ones included.
    pub recorded_attempts: i64,
    pub url: String,
    pub signing: Signing,
    pub next_attempt_at: Timestamp,
    pub created_at: Timestamp,
}

/// An attempt's outcome, and where it leaves the delivery.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub delivery_id: &'a str,
    /// The attempt's number since the delivery was created or last resent.
    pub attempt: i64,
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub response: Option<&'a str>,
    pub state: DeliveryState,
    /// When `state` is pending: when to try again.
    pub next_attempt_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, endpoint_id, event, state, attempts, last_status, last_error, next_attempt_at, created_at, payload";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    let payload: String = r.get(9)?;
    Ok(Delivery {
        delivery_id: r.get(0)?,
        endpoint_id: r.get(1)?,
        event: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        last_status: r.get(5)?,
        last_error: r.get(6)?,
        next_attempt_at: r.get(7)?,
        created_at: r.get(8)?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
    })
}

/// The deliveries `f` names, oldest first; at most `limit` unless `f` names them by id.
pub fn list(db: &impl Readable, f: &Filter, limit: i64) -> Result<Vec<Delivery>> {
    let conn = db.connection();
    if !f.ids.is_empty() {
        // Named deliveries: looked up one by one, never cut by the listing limit.
        let mut out = Vec::new();
        for id in &f.ids {
            out.extend(get(conn, id)?.filter(|d| {
                f.state.is_none_or(|s| d.state == s)
                    && f.endpoint.as_ref().is_none_or(|e| *e == d.endpoint_id)
                    && f.since.is_none_or(|t| d.created_at >= t)
                    && f.until.is_none_or(|t| d.created_at <= t)
            }));
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM deliveries
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR endpoint_id = ?2)
           AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at <= ?4)
         ORDER BY created_at, id LIMIT ?5"
    ))?;
    let rows = stmt.query_map(
        params![f.state, f.endpoint, f.since, f.until, limit],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(db: &impl Readable, id: &str) -> Result<Option<Delivery>> {
    let conn = db.connection();
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// The attempts at one delivery, oldest first.
pub fn attempts(db: &impl Readable, delivery_id: &str) -> Result<Vec<Attempt>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(ATTEMPTS)?;
    let rows = stmt.query_map([delivery_id], |r| {
        Ok(Attempt {
            attempt: r.get(0)?,
            trigger: r.get(1)?,
            started_at: r.get(2)?,
            duration_ms: r.get(3)?,
            status: r.get(4)?,
            error: r.get(5)?,
            response: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const ATTEMPTS: &str =
    "SELECT attempt, trigger, started_at, duration_ms, status, error, response
     FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY id";

/// Creates a pending delivery, due now, unless the event already has one for the endpoint;
/// whether it was created.
pub fn insert_pending(tx: &Transaction, d: &NewDelivery) -> Result<bool> {
    write_locked(tx)?;
    Ok(tx.execute(
        "INSERT OR IGNORE INTO deliveries (id, event_id, endpoint_id, event, tenant, payload, state, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8, ?8)",
        params![d.id, d.event_id, d.endpoint_id, d.event, d.tenant, d.payload, DeliveryState::Pending, Timestamp::now()],
    )? == 1)
}

/// One endpoint's pending deliveries due by `now`, soonest first, at most `limit`.
pub fn due_of(db: &impl Readable, endpoint: &str, now: Timestamp, limit: i64) -> Result<Vec<Due>> {
    let conn = db.connection();
    let mut stmt = conn.prepare_cached(DUE)?;
    let rows = stmt.query_map(params![DeliveryState::Pending, endpoint, now, limit], |r| {
        Ok(Due {
            id: r.get(0)?,
            endpoint_id: r.get(1)?,
            event: r.get(2)?,
            payload: r.get(3)?,
            attempts: r.get(4)?,
            url: r.get(5)?,
            signing: Signing {
                secret: Secret::new(r.get::<_, String>(6)?),
                old_secret: r.get::<_, Option<String>>(7)?.map(Secret::new),
                old_until: r.get(8)?,
            },
            recorded_attempts: r.get(9)?,
            next_attempt_at: r.get(10)?,
            created_at: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const DUE: &str = "SELECT d.id, d.endpoint_id, d.event, d.payload, d.attempts, e.url, e.secret, e.old_secret, e.old_secret_until,
        (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id),
        d.next_attempt_at, d.created_at
     FROM deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
     WHERE d.state = ?1 AND d.endpoint_id = ?2 AND d.next_attempt_at <= ?3
     ORDER BY d.next_attempt_at, d.created_at LIMIT ?4";

/// Records an attempt and moves its delivery on as of the attempt's end, if the delivery is
/// still pending (a delivery cancelled meanwhile stays cancelled; the attempt is on record
/// either way).
pub fn record_attempt(tx: &Transaction, o: &Outcome) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, trigger, started_at, duration_ms, status, error, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![o.delivery_id, o.attempt, o.trigger, o.started_at, o.duration_ms, o.status, o.error, o.response],
    )?;
    let last_error = match o.state {
        DeliveryState::Succeeded => None,
        _ => o
            .error
            .map(str::to_string)
            .or_else(|| o.status.map(|s| format!("HTTP {s}"))),
    };
    tx.execute(
        "UPDATE deliveries SET state = ?1, attempts = ?2, next_attempt_at = ?3, last_status = ?4,
                last_error = ?5, updated_at = ?6
         WHERE id = ?7 AND state = ?8",
        params![
            o.state,
            o.attempt,
            o.next_attempt_at,
            o.status,
            last_error,
            o.started_at
                .plus(chrono::Duration::milliseconds(o.duration_ms)),
            o.delivery_id,
            DeliveryState::Pending
        ],
    )?;
    Ok(())
}

/// Moves an endpoint's pending deliveries to the dead-letter queue with `reason` (its
/// receiver is gone: they would wait forever); how many.
pub fn kill_pending_of(tx: &Transaction, endpoint: &str, reason: &str) -> Result<usize> {
    write_locked(tx)?;
    Ok(tx.execute(
        "UPDATE deliveries SET state = ?1, next_attempt_at = NULL, last_error = ?2, updated_at = ?3
         WHERE endpoint_id = ?4 AND state = ?5",
        params![
            DeliveryState::Dead,
            reason,
            Timestamp::now(),
            endpoint,
            DeliveryState::Pending
        ],
    )?)
}

/// Cancels an endpoint's pending deliveries (it was removed); how many.
pub fn cancel_pending_of(tx: &Transaction, endpoint: &str) -> Result<usize> {
    write_locked(tx)?;
    Ok(tx.execute(
        CANCEL,
        params![
            DeliveryState::Cancelled,
            Timestamp::now(),
            endpoint,
            DeliveryState::Pending
        ],
    )?)
}

pub(crate) const CANCEL: &str =
    "UPDATE deliveries SET state = ?1, next_attempt_at = NULL, updated_at = ?2
     WHERE endpoint_id = ?3 AND state = ?4";

/// Puts the dead deliveries `f` names back in the queue, due now, with a fresh schedule
/// and the same id, each with an audit row; at most `limit`, and only those whose endpoint
/// still exists (the others have nowhere to go). Returns the ids resent.
pub fn resend(tx: &Transaction, f: &Filter, limit: i64) -> Result<Vec<String>> {
    write_locked(tx)?;
    let f = Filter {
        state: Some(DeliveryState::Dead),
        ..f.clone()
    };
    let mut endpoint_exists = tx.prepare("SELECT 1 FROM webhook_endpoints WHERE id = ?1")?;
    let mut ids = Vec::new();
    for d in list(tx, &f, limit)? {
        if endpoint_exists.exists([&d.endpoint_id])? {
            ids.push(d.delivery_id);
        }
    }
    let now = Timestamp::now();
    for id in &ids {
        tx.execute(
            "UPDATE deliveries SET state = ?1, attempts = 0, next_attempt_at = ?2, updated_at = ?2
             WHERE id = ?3 AND state = ?4",
            params![DeliveryState::Pending, now, id, DeliveryState::Dead],
        )?;
        audit::add(
            tx,
            &audit::Entry {
                action: Action::DeliveryResent,
                subject: Some(id),
                detail: None,
                request_id: None,
                at: now,
            },
        )?;
    }
    Ok(ids)
}

/// How many dead deliveries each endpoint has (endpoints with none left out).
pub fn dead_by_endpoint(db: &impl Readable) -> Result<Vec<(String, i64)>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(DEAD_BY_ENDPOINT)?;
    let rows = stmt.query_map([DeliveryState::Dead], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) const DEAD_BY_ENDPOINT: &str =
    "SELECT endpoint_id, count(*) FROM deliveries WHERE state = ?1 GROUP BY endpoint_id";

/// How many of one endpoint's deliveries are in the dead-letter queue.
pub fn dead_of(db: &impl Readable, endpoint: &str) -> Result<i64> {
    let conn = db.connection();
    Ok(
        conn.query_row(DEAD_OF, params![DeliveryState::Dead, endpoint], |r| {
            r.get(0)
        })?,
    )
}

pub(crate) const DEAD_OF: &str =
    "SELECT count(*) FROM deliveries WHERE state = ?1 AND endpoint_id = ?2";

/// Attempts started since `since`: how many, and how many the receiver answered 2xx.
pub fn attempts_since(db: &impl Readable, since: Timestamp) -> Result<(i64, i64)> {
    let conn = db.connection();
    Ok(conn.query_row(ATTEMPTS_SINCE, [since], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

pub(crate) const ATTEMPTS_SINCE: &str =
    "SELECT count(*), coalesce(sum(CASE WHEN status BETWEEN 200 AND 299 THEN 1 ELSE 0 END), 0)
     FROM delivery_attempts WHERE started_at >= ?1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::endpoints::{self, NewEndpoint};
    use crate::store::{outbox, Store};

    fn store_with_endpoint() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let events = ["*".to_string()];
        store
            .write(|tx| {
                endpoints::insert(
                    tx,
                    &NewEndpoint {
                        id: "e1",
                        url: "https://hooks.example/a",
                        events: &events,
                        secret: &Secret::new("s"),
                        description: None,
                    },
                )?;
                let fields = serde_json::json!({});
                outbox::append(tx, "upload.completed", None, &fields, Timestamp::now())?;
                for id in ["d1", "d2"] {
                    insert_pending(
                        tx,
                        &NewDelivery {
                            id,
                            event_id: 1,
                            endpoint_id: if id == "d1" { "e1" } else { "gone" },
                            event: "upload.completed",
                            tenant: None,
                            payload: "{}",
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn fail(tx: &Transaction, id: &str, state: DeliveryState) -> Result<()> {
        record_attempt(
            tx,
            &Outcome {
                delivery_id: id,
                attempt: 1,
                trigger: Trigger::Scheduled,
                started_at: Timestamp::now(),
                duration_ms: 5,
                status: Some(500),
                error: None,
                response: Some("no"),
                state,
                next_attempt_at: None,
            },
        )
    }

    #[test]
    fn an_attempt_moves_a_pending_delivery_and_a_resend_brings_a_dead_one_back() {
        let (_dir, mut store) = store_with_endpoint();
        let due = due_of(store.conn(), "e1", Timestamp::now(), 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].signing.secret.expose(), "s");
        store
            .write(|tx| fail(tx, "d1", DeliveryState::Dead))
            .unwrap();
        let d = get(store.conn(), "d1").unwrap().unwrap();
        assert_eq!(
            (d.state, d.attempts, d.last_status, d.last_error.as_deref()),
            (DeliveryState::Dead, 1, Some(500), Some("HTTP 500"))
        );
        assert_eq!(dead_of(store.conn(), "e1").unwrap(), 1);
        assert_eq!(
            dead_by_endpoint(store.conn()).unwrap(),
            vec![("e1".to_string(), 1)]
        );
        // A later attempt at a delivery no longer pending changes nothing but the record.
        store
            .write(|tx| fail(tx, "d1", DeliveryState::Pending))
            .unwrap();
        assert_eq!(
            get(store.conn(), "d1").unwrap().unwrap().state,
            DeliveryState::Dead
        );
        assert_eq!(attempts(store.conn(), "d1").unwrap().len(), 2);
        let resent = store
            .write(|tx| resend(tx, &Filter::default(), 100))
            .unwrap();
        assert_eq!(resent, ["d1"]);
        let d = get(store.conn(), "d1").unwrap().unwrap();
        assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
        assert_eq!(
            audit::count(store.conn(), Action::DeliveryResent).unwrap(),
            1
        );
    }

    #[test]
    fn a_dead_delivery_whose_endpoint_is_gone_is_not_resent() {
        let (_dir, mut store) = store_with_endpoint();
        store
            .write(|tx| fail(tx, "d2", DeliveryState::Dead))
            .unwrap();
        let named = Filter {
            ids: vec!["d2".into()],
            ..Filter::default()
        };
        assert!(store
            .write(|tx| resend(tx, &named, 100))
            .unwrap()
            .is_empty());
        assert_eq!(
            get(store.conn(), "d2").unwrap().unwrap().state,
            DeliveryState::Dead
        );
    }

    #[test]
    fn a_filter_narrows_by_state_endpoint_and_time_with_any_offset() {
        let (_dir, mut store) = store_with_endpoint();
        store
            .write(|tx| cancel_pending_of(tx, "gone").map(|_| ()))
            .unwrap();
        let all = list(store.conn(), &Filter::default(), 10).unwrap();
        assert_eq!(all.len(), 2);
        let created = all[0].created_at;
        let by = |f: Filter| -> Vec<String> {
            list(store.conn(), &f, 10)
                .unwrap()
                .into_iter()
                .map(|d| d.delivery_id)
                .collect()
        };
        assert_eq!(
            by(Filter {
                state: Some(DeliveryState::Cancelled),
                ..Filter::default()
            }),
            ["d2"]
        );
        assert_eq!(
            by(Filter {
                endpoint: Some("e1".into()),
                ..Filter::default()
            }),
            ["d1"]
        );
        // The same instant written in Taiwan time still bounds it.
        let taipei = created
            .utc()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339();
        let since = Timestamp::parse(&taipei).unwrap();
        assert_eq!(
            by(Filter {
                since: Some(since),
                ..Filter::default()
            })
            .len(),
            2
        );
        let after = Filter {
            since: Some(created.plus(chrono::Duration::hours(1))),
            ..Filter::default()
        };
        assert!(by(after.clone()).is_empty());
        assert!(
            by(Filter {
                ids: vec!["d1".into()],
                ..after
            })
            .is_empty(),
            "named deliveries are narrowed too"
        );
    }
}
