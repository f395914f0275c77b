//! Outbound webhook endpoints (`webhook_endpoints`): the registry, each endpoint's signing
//! secret and, while a rotation overlaps, the secret it replaced.
//!
//! Listings never carry a secret ([`Endpoint`]); the deliverer reads them as [`Signing`],
//! whose `Debug` never shows them. A removed endpoint's row is deleted (the store zeroes
//! deleted content) and [`checkpoint`] takes its pages out of the WAL.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{write_locked, Readable, Result, Timestamp};
use crate::config::Secret;

/// A registered endpoint, as listings show it (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// Event names or families (`invoice.*`), `*` for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: Timestamp,
}

/// What signs an endpoint's deliveries: its secret and, until `old_until`, the one it
/// replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Signing {
    pub secret: Secret,
    pub old_secret: Option<Secret>,
    pub old_until: Option<Timestamp>,
}

impl Signing {
    /// The replaced secret, while its overlap has not ended at `now`.
    pub fn old_at(&self, now: Timestamp) -> Option<&Secret> {
        match (&self.old_secret, self.old_until) {
            (Some(old), Some(until)) if until > now => Some(old),
            _ => None,
        }
    }
}

/// A new endpoint, checked by its caller.
#[derive(Debug, Clone)]
pub struct NewEndpoint<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a Secret,
    pub description: Option<&'a str>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Changes<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a [String]>,
    pub description: Option<&'a str>,
    pub enabled: Option<bool>,
    /// A new secret; the current one keeps signing until the time given.
    pub rotate_to: Option<(&'a Secret, Timestamp)>,
}

impl Changes<'_> {
    fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.events.is_none()
            && self.description.is_none()
            && self.enabled.is_none()
            && self.rotate_to.is_none()
    }
}

/// Why an endpoint an operator turned off is off.
pub const DISABLED_BY_OPERATOR: &str = "disabled by an operator";

const COLUMNS: &str = "id, url, events, description, enabled, disabled_reason, created_at";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Endpoint> {
    let events: String = r.get(2)?;
    Ok(Endpoint {
        id: r.get(0)?,
        url: r.get(1)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(3)?,
        enabled: r.get(4)?,
        disabled_reason: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn events_text(events: &[String]) -> String {
    serde_json::Value::from(events.to_vec()).to_string()
}

/// Registers an endpoint (enabled) and returns it.
pub fn insert(tx: &Transaction, e: &NewEndpoint) -> Result<Endpoint> {
    write_locked(tx)?;
    let now = Timestamp::now();
    tx.execute(
        "INSERT INTO webhook_endpoints (id, url, events, secret, description, enabled, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
        params![e.id, e.url, events_text(e.events), e.secret.expose(), e.description, now],
    )?;
    Ok(get(tx, e.id)?.expect("just inserted"))
}

pub fn get(db: &impl Readable, id: &str) -> Result<Option<Endpoint>> {
    let conn = db.connection();
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Every endpoint, oldest first.
pub fn list(db: &impl Readable) -> Result<Vec<Endpoint>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Applies `c` to an endpoint; returns it as it now is, `None` if there is no such endpoint.
pub fn update(tx: &Transaction, id: &str, c: &Changes) -> Result<Option<Endpoint>> {
    write_locked(tx)?;
    if !c.is_empty() {
        let (secret, until) = match c.rotate_to {
            Some((s, until)) => (Some(s.expose()), Some(until)),
            None => (None, None),
        };
        // Every right-hand side reads the row as it was: `old_secret = secret` keeps the
        // secret being replaced.
        tx.execute(
            "UPDATE webhook_endpoints SET
                 url = coalesce(?1, url),
                 events = coalesce(?2, events),
                 description = coalesce(?3, description),
                 enabled = coalesce(?4, enabled),
                 disabled_reason = CASE WHEN ?4 IS NULL THEN disabled_reason WHEN ?4 THEN NULL ELSE ?5 END,
                 old_secret = CASE WHEN ?6 IS NULL THEN old_secret ELSE secret END,
                 old_secret_until = CASE WHEN ?6 IS NULL THEN old_secret_until ELSE ?7 END,
                 secret = coalesce(?6, secret),
                 updated_at = ?8
             WHERE id = ?9",
            params![
                c.url,
                c.events.map(events_text),
                c.description,
                c.enabled,
                DISABLED_BY_OPERATOR,
                secret,
                until,
                Timestamp::now(),
                id
            ],
        )?;
    }
    get(tx, id)
}

/// Deletes an endpoint with its secrets; whether it existed.
pub fn delete(tx: &Transaction, id: &str) -> Result<bool> {
    write_locked(tx)?;
    Ok(tx.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])? == 1)
}

/// Turns an endpoint off for `reason` (until an operator enables it again).
pub fn disable(tx: &Transaction, id: &str, reason: &str) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?1, updated_at = ?2 WHERE id = ?3",
        params![reason, Timestamp::now(), id],
    )?;
    Ok(())
}

/// The enabled endpoints and the events each one subscribed to.
pub fn subscriptions(db: &impl Readable) -> Result<Vec<(String, Vec<String>)>> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT id, events FROM webhook_endpoints WHERE enabled = 1")?;
    let rows = stmt.query_map([], |r| {
        let events: String = r.get(1)?;
        Ok((r.get(0)?, serde_json::from_str(&events).unwrap_or_default()))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The ids of the enabled endpoints.
pub fn enabled(db: &impl Readable) -> Result<Vec<String>> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT id FROM webhook_endpoints WHERE enabled = 1")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether a rotated-out secret's overlap has ended by `now` (read only, so the common case
/// takes no write lock).
pub fn rotated_out_due(db: &impl Readable, now: Timestamp) -> Result<bool> {
    let conn = db.connection();
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints
         WHERE old_secret IS NOT NULL AND (old_secret_until IS NULL OR old_secret_until <= ?1))",
        [now],
        |r| r.get(0),
    )?)
}

/// Removes every rotated-out secret whose overlap ended by `now`; how many.
pub fn forget_rotated_out(tx: &Transaction, now: Timestamp) -> Result<usize> {
    write_locked(tx)?;
    Ok(tx.execute(
        "UPDATE webhook_endpoints SET old_secret = NULL, old_secret_until = NULL
         WHERE old_secret IS NOT NULL AND (old_secret_until IS NULL OR old_secret_until <= ?1)",
        [now],
    )?)
}

/// Copies the WAL back into the database and empties it, so the pages that held a removed
/// secret are not left in the `-wal` file (`secure_delete` zeroes the main file only). Best
/// effort: a reader still holding old pages lets the next checkpoint finish the work.
pub fn checkpoint(db: &impl Readable) {
    let conn = db.connection();
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreError};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    fn add(store: &mut Store, id: &str, secret: &str) -> Endpoint {
        let events = ["*".to_string()];
        let secret = Secret::new(secret);
        store
            .write(|tx| {
                insert(
                    tx,
                    &NewEndpoint {
                        id,
                        url: "https://hooks.example/a",
                        events: &events,
                        secret: &secret,
                        description: Some("erp"),
                    },
                )
            })
            .unwrap()
    }

    fn signing(store: &Store, id: &str) -> (String, Option<String>) {
        store
            .conn()
            .query_row(
                "SELECT secret, old_secret FROM webhook_endpoints WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    #[test]
    fn a_rotation_keeps_the_replaced_secret_until_its_overlap_ends() {
        let (_dir, mut store) = store();
        add(&mut store, "e1", "first-secret");
        let fresh = Secret::new("second-secret");
        let until = Timestamp::now().plus(chrono::Duration::hours(1));
        let ep = store
            .write(|tx| {
                update(
                    tx,
                    "e1",
                    &Changes {
                        enabled: Some(false),
                        rotate_to: Some((&fresh, until)),
                        ..Changes::default()
                    },
                )
            })
            .unwrap()
            .unwrap();
        assert!(!ep.enabled);
        assert_eq!(ep.disabled_reason.as_deref(), Some(DISABLED_BY_OPERATOR));
        assert_eq!(ep.description.as_deref(), Some("erp"), "left as it was");
        assert_eq!(
            signing(&store, "e1"),
            ("second-secret".into(), Some("first-secret".into()))
        );
        assert!(!rotated_out_due(store.conn(), Timestamp::now()).unwrap());
        let later = until.plus(chrono::Duration::seconds(1));
        assert!(rotated_out_due(store.conn(), later).unwrap());
        assert_eq!(store.write(|tx| forget_rotated_out(tx, later)).unwrap(), 1);
        assert_eq!(signing(&store, "e1"), ("second-secret".into(), None));
        let on = store
            .write(|tx| {
                update(
                    tx,
                    "e1",
                    &Changes {
                        enabled: Some(true),
                        ..Changes::default()
                    },
                )
            })
            .unwrap()
            .unwrap();
        assert!(on.enabled && on.disabled_reason.is_none());
        assert!(store
            .write(|tx| update(tx, "nobody", &Changes::default()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_write_in_a_transaction_that_read_first_is_refused_before_it_writes() {
        let (_dir, mut store) = store();
        let events = ["*".to_string()];
        let secret = Secret::new("x");
        let new = NewEndpoint {
            id: "e1",
            url: "https://hooks.example/a",
            events: &events,
            secret: &secret,
            description: None,
        };
        // A deferred transaction that has read holds no write lock yet.
        let tx = store.conn_mut().transaction().unwrap();
        list(&tx).unwrap();
        assert!(matches!(insert(&tx, &new), Err(StoreError::NotLocked)));
        drop(tx);
        assert!(store.write(|tx| insert(tx, &new)).is_ok());
        assert_eq!(list(store.conn()).unwrap().len(), 1);
    }
}
