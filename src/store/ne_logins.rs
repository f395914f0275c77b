//! NextEngine sign-ins an operator started, each bound to one browser.
//!
//! A sign-in is started with the admin token at `/auth/ne`, which records the SHA-256 of a
//! random nonce and sets the nonce as a cookie in that browser, or with
//! `turnbridge nextengine login`, which records the SHA-256 of a one-time ticket and prints a
//! URL carrying it; opening that URL trades the ticket for a nonce cookie the same way.
//! `/auth/callback` takes the sign-in of the cookie it is sent with, once, within the window.
//! Only hashes are stored, so the database never holds a usable ticket or nonce, and a lookup
//! by hash shows nothing of the secret in its timing.

use base64::Engine;
use chrono::Duration;
use rand::RngCore;
use rusqlite::params;
use sha2::Digest;

use super::{Result, Store, Timestamp};

/// A random one-time secret of a sign-in (a ticket or a nonce): 32 bytes, base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginSecret(String);

impl LoginSecret {
    fn new() -> LoginSecret {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        LoginSecret(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Never shows the secret (it may end up in a log line by mistake).
impl std::fmt::Debug for LoginSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginSecret(..)")
    }
}

fn hash(secret: &str) -> String {
    crate::einvoice::archive::hex(&sha2::Sha256::digest(secret.as_bytes()))
}

fn since(window: Duration) -> Timestamp {
    Timestamp::now().plus(-window)
}

/// Whether a sign-in secret is one `start_*` or a redeem handed out (a quick refusal of
/// anything else before the store is asked).
pub fn plausible(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Records a sign-in started from the command line; returns its one-time ticket. Records
    /// older than a day are pruned.
    pub fn start_ne_login_ticket(&mut self) -> Result<LoginSecret> {
        self.start_ne_login("ticket_hash")
    }

    /// Records a sign-in started in a browser (with the admin token); returns the nonce the
    /// browser keeps as a cookie.
    pub fn start_ne_login_nonce(&mut self) -> Result<LoginSecret> {
        self.start_ne_login("nonce_hash")
    }

    fn start_ne_login(&mut self, column: &'static str) -> Result<LoginSecret> {
        let secret = LoginSecret::new();
        self.write(|tx| {
            tx.execute(
                "DELETE FROM ne_logins WHERE started_at < ?1",
                [since(Duration::days(1))],
            )?;
            tx.execute(
                &format!("INSERT INTO ne_logins (started_at, {column}) VALUES (?1, ?2)"),
                params![Timestamp::now(), hash(secret.expose())],
            )?;
            Ok(())
        })?;
        Ok(secret)
    }

    /// Trades an unused ticket started within `window` for a browser nonce (the ticket is
    /// used up, and the window starts again); `None` for a ticket unknown, used or older.
    pub fn redeem_ne_login_ticket(
        &mut self,
        ticket: &str,
        window: Duration,
    ) -> Result<Option<LoginSecret>> {
        if !plausible(ticket) {
            return Ok(None);
        }
        let nonce = LoginSecret::new();
        let n = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE ne_logins SET ticket_hash = NULL, nonce_hash = ?1, started_at = ?2
                 WHERE ticket_hash = ?3 AND used_at IS NULL AND started_at >= ?4",
                params![
                    hash(nonce.expose()),
                    Timestamp::now(),
                    hash(ticket),
                    since(window)
                ],
            )?)
        })?;
        Ok((n == 1).then_some(nonce))
    }

    /// Takes (marks used) the sign-in of `nonce` when it is unused and was started within
    /// `window`: true once, false for every other call.
    pub fn take_ne_login(&mut self, nonce: &str, window: Duration) -> Result<bool> {
        if !plausible(nonce) {
            return Ok(false);
        }
        let n = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE ne_logins SET used_at = ?1
                 WHERE nonce_hash = ?2 AND used_at IS NULL AND started_at >= ?3",
                params![Timestamp::now(), hash(nonce), since(window)],
            )?)
        })?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    const WINDOW: Duration = Duration::minutes(10);

    #[test]
    fn a_nonce_is_taken_once_and_only_its_own() {
        let (_d, mut s) = store();
        let a = s.start_ne_login_nonce().unwrap();
        let b = s.start_ne_login_nonce().unwrap();
        assert_ne!(a, b);
        assert!(plausible(a.expose()));
        assert!(!s.take_ne_login("not-a-nonce", WINDOW).unwrap());
        assert!(!s.take_ne_login(&LoginSecret::new().0, WINDOW).unwrap());
        assert!(s.take_ne_login(a.expose(), WINDOW).unwrap());
        assert!(!s.take_ne_login(a.expose(), WINDOW).unwrap(), "used");
        assert!(s.take_ne_login(b.expose(), WINDOW).unwrap(), "b is its own");
    }

    #[test]
    fn a_stale_sign_in_is_refused() {
        let (_d, mut s) = store();
        let a = s.start_ne_login_nonce().unwrap();
        s.conn()
            .execute(
                "UPDATE ne_logins SET started_at = ?1",
                [since(Duration::minutes(11))],
            )
            .unwrap();
        assert!(!s.take_ne_login(a.expose(), WINDOW).unwrap());
    }

    #[test]
    fn a_ticket_is_traded_once_for_a_nonce_and_is_no_nonce_itself() {
        let (_d, mut s) = store();
        let t = s.start_ne_login_ticket().unwrap();
        assert!(!s.take_ne_login(t.expose(), WINDOW).unwrap());
        let n = s
            .redeem_ne_login_ticket(t.expose(), WINDOW)
            .unwrap()
            .unwrap();
        assert!(s
            .redeem_ne_login_ticket(t.expose(), WINDOW)
            .unwrap()
            .is_none());
        assert!(s.take_ne_login(n.expose(), WINDOW).unwrap());
        let stored: String = s
            .conn()
            .query_row("SELECT nonce_hash FROM ne_logins", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, hash(n.expose()), "only the hash is kept");
        assert_eq!(format!("{n:?}"), "LoginSecret(..)");
    }
}
