//! NextEngine accounts and their tokens (`nextengine_accounts`).
//!
//! Tokens are kept as NextEngine returned them, replaced after every answer that carries
//! them; [`Credentials`] never shows them in `Debug`, and [`AccountStatus`] (what commands
//! and routes show) never holds them.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{write_locked, Readable, Result, Timestamp};
use crate::config::Secret;

/// A pair of tokens and when they lapse.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Secret,
    /// The end dates as NextEngine wrote them (Japan time), when it did.
    pub access_end: Option<String>,
    pub refresh_end: Option<String>,
    pub access_expires: Timestamp,
    pub refresh_expires: Timestamp,
}

/// What a call needs of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub access: Secret,
    pub refresh: Secret,
    /// NextEngine refused the tokens: nothing is sent until someone signs in again.
    pub needs_login: bool,
}

/// What `turnbridge nextengine status` shows of an account (never its tokens).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountStatus {
    pub id: String,
    pub company_name: Option<String>,
    pub access_expires_at: Timestamp,
    pub refresh_expires_at: Timestamp,
    pub needs_login: bool,
    pub last_call_at: Option<Timestamp>,
    pub last_call: Option<String>,
    pub last_error: Option<String>,
}

/// Connects an account (or connects it again): its tokens, and `needs_login` cleared.
pub fn connect(
    tx: &Transaction,
    id: &str,
    uid: &str,
    company_name: Option<&str>,
    t: &Tokens,
) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "INSERT INTO nextengine_accounts (id, uid, company_name, access_token, refresh_token, access_token_end_date,
             refresh_token_end_date, access_expires_at, refresh_expires_at, needs_login, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?10)
         ON CONFLICT(id) DO UPDATE SET uid = ?2, company_name = ?3, access_token = ?4, refresh_token = ?5,
             access_token_end_date = ?6, refresh_token_end_date = ?7, access_expires_at = ?8,
             refresh_expires_at = ?9, needs_login = 0, last_error = NULL, updated_at = ?10",
        params![
            id,
            uid,
            company_name,
            t.access.expose(),
            t.refresh.expose(),
            t.access_end,
            t.refresh_end,
            t.access_expires,
            t.refresh_expires,
            Timestamp::now()
        ],
    )?;
    Ok(())
}

/// Replaces an account's tokens with the ones an answer carried.
pub fn keep_tokens(tx: &Transaction, id: &str, t: &Tokens) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "UPDATE nextengine_accounts SET access_token = ?1, refresh_token = ?2, access_token_end_date = ?3,
             refresh_token_end_date = ?4, access_expires_at = ?5, refresh_expires_at = ?6, updated_at = ?7
         WHERE id = ?8",
        params![
            t.access.expose(),
            t.refresh.expose(),
            t.access_end,
            t.refresh_end,
            t.access_expires,
            t.refresh_expires,
            Timestamp::now(),
            id
        ],
    )?;
    Ok(())
}

/// Notes a call to `path` and how it ended (`error`: `None` for success).
pub fn note_call(tx: &Transaction, id: &str, path: &str, error: Option<&str>) -> Result<()> {
    write_locked(tx)?;
    tx.execute(
        "UPDATE nextengine_accounts SET last_call_at = ?1, last_call = ?2, last_error = ?3 WHERE id = ?4",
        params![Timestamp::now(), path, error, id],
    )?;
    Ok(())
}

/// Marks an account as needing a new login, for `reason`; whether it was usable until now
/// (so the event is raised once).
pub fn mark_needs_login(tx: &Transaction, id: &str, path: &str, reason: &str) -> Result<bool> {
    write_locked(tx)?;
    Ok(tx.execute(
        "UPDATE nextengine_accounts SET needs_login = 1, last_call_at = ?1, last_call = ?2, last_error = ?3
         WHERE id = ?4 AND needs_login = 0",
        params![Timestamp::now(), path, reason, id],
    )? == 1)
}

pub fn credentials(db: &impl Readable, id: &str) -> Result<Option<Credentials>> {
    let conn = db.connection();
    Ok(conn
        .query_row(
            "SELECT access_token, refresh_token, needs_login FROM nextengine_accounts WHERE id = ?1",
            [id],
            |r| {
                Ok(Credentials {
                    access: Secret::new(r.get::<_, String>(0)?),
                    refresh: Secret::new(r.get::<_, String>(1)?),
                    needs_login: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Every account's id and whether it needs a new login, by id.
pub fn logins(db: &impl Readable) -> Result<Vec<(String, bool)>> {
    let conn = db.connection();
    let mut stmt = conn.prepare("SELECT id, needs_login FROM nextengine_accounts ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The accounts that can be used (no new login needed), by id.
pub fn usable(db: &impl Readable) -> Result<Vec<String>> {
    let conn = db.connection();
    let mut stmt =
        conn.prepare("SELECT id FROM nextengine_accounts WHERE needs_login = 0 ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The usable accounts whose refresh token lapses before `before`.
pub fn expiring(db: &impl Readable, before: Timestamp) -> Result<Vec<String>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(
        "SELECT id FROM nextengine_accounts WHERE needs_login = 0 AND refresh_expires_at < ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([before], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const STATUS_COLUMNS: &str = "id, company_name, access_expires_at, refresh_expires_at, needs_login, last_call_at, last_call, last_error";

fn status_from_row(r: &rusqlite::Row) -> rusqlite::Result<AccountStatus> {
    Ok(AccountStatus {
        id: r.get(0)?,
        company_name: r.get(1)?,
        access_expires_at: r.get(2)?,
        refresh_expires_at: r.get(3)?,
        needs_login: r.get(4)?,
        last_call_at: r.get(5)?,
        last_call: r.get(6)?,
        last_error: r.get(7)?,
    })
}

/// One account's status (never its tokens).
pub fn status(db: &impl Readable, id: &str) -> Result<Option<AccountStatus>> {
    let conn = db.connection();
    Ok(conn
        .query_row(
            &format!("SELECT {STATUS_COLUMNS} FROM nextengine_accounts WHERE id = ?1"),
            [id],
            status_from_row,
        )
        .optional()?)
}

/// Every account's status, by id.
pub fn statuses(db: &impl Readable) -> Result<Vec<AccountStatus>> {
    let conn = db.connection();
    let mut stmt = conn.prepare(&format!(
        "SELECT {STATUS_COLUMNS} FROM nextengine_accounts ORDER BY id"
    ))?;
    let rows = stmt.query_map([], status_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn tokens(n: u32, refresh_expires: Timestamp) -> Tokens {
        Tokens {
            access: Secret::new(format!("access-{n}")),
            refresh: Secret::new(format!("refresh-{n}")),
            access_end: None,
            refresh_end: Some("2026-12-04 09:00:00".into()),
            access_expires: Timestamp::now(),
            refresh_expires,
        }
    }

    #[test]
    fn tokens_are_replaced_and_a_refused_account_is_marked_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db")).unwrap();
        let soon = Timestamp::now().plus(chrono::Duration::hours(2));
        store
            .write(|tx| connect(tx, "NE1", "uid", Some("テスト"), &tokens(1, soon)))
            .unwrap();
        store
            .write(|tx| keep_tokens(tx, "NE1", &tokens(2, soon)))
            .unwrap();
        let c = credentials(store.conn(), "NE1").unwrap().unwrap();
        assert_eq!(
            (c.access.expose(), c.refresh.expose()),
            ("access-2", "refresh-2")
        );
        assert!(
            !format!("{c:?}").contains("access-2"),
            "tokens never in Debug"
        );
        let day = Timestamp::now().plus(chrono::Duration::days(1));
        assert_eq!(expiring(store.conn(), day).unwrap(), ["NE1"]);
        assert!(store
            .write(|tx| mark_needs_login(tx, "NE1", "/p", "002002 invalid"))
            .unwrap());
        assert!(!store
            .write(|tx| mark_needs_login(tx, "NE1", "/p", "002002 invalid"))
            .unwrap());
        assert!(usable(store.conn()).unwrap().is_empty());
        assert!(expiring(store.conn(), day).unwrap().is_empty());
        let s = status(store.conn(), "NE1").unwrap().unwrap();
        assert!(s.needs_login);
        assert_eq!(s.refresh_expires_at, soon);
        assert_eq!(s.last_error.as_deref(), Some("002002 invalid"));
        // Signing in again clears it.
        store
            .write(|tx| connect(tx, "NE1", "uid", None, &tokens(3, soon)))
            .unwrap();
        assert_eq!(logins(store.conn()).unwrap(), [("NE1".to_string(), false)]);
        assert_eq!(statuses(store.conn()).unwrap()[0].last_error, None);
    }
}
