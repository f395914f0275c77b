//! The NextEngine sign-in, bound to the operator's browser.
//!
//! `GET /auth/ne` starts one: with the admin token, or with the one-time `ticket` of the URL
//! `turnbridge nextengine login` prints. It records the sign-in, sets a short-lived cookie
//! (HttpOnly, SameSite=Lax, on the callback's folder) holding a random nonce, and redirects
//! to NextEngine's sign-in. `GET /auth/callback` (where NextEngine sends that browser back
//! with `uid` and `state`) connects an account only with the cookie of a sign-in that is
//! open: unused and started within [`LOGIN_WINDOW_MINUTES`]. The sign-in is used up before
//! NextEngine is asked, so one cookie connects at most one account, once. Another account of
//! the same app that sends its own callback meanwhile has no such cookie and connects
//! nothing.

use hyper::header::{HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use super::error::{json_response, ApiError, ErrorCode};
use super::router::{Answer, Call};
use super::{request, with_db};
use crate::config::Config;
use crate::nextengine::client::{self, LOGIN_WINDOW_MINUTES};

/// The cookie holding a sign-in's nonce.
const COOKIE: &str = "tb_ne_login";

fn window() -> chrono::Duration {
    chrono::Duration::minutes(LOGIN_WINDOW_MINUTES)
}

/// `GET /auth/ne?ticket=`.
#[derive(Debug, Deserialize)]
struct StartQuery {
    ticket: Option<String>,
}

/// `GET /auth/callback?uid=&state=` (NextEngine's own parameters).
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    uid: Option<String>,
    state: Option<String>,
}

/// The `Set-Cookie` value that gives this browser `nonce` for the window (an empty nonce and
/// no time: the cookie is removed). `Secure` when NextEngine sends the browser back over
/// HTTPS.
fn cookie(cfg: &Config, nonce: &str, max_age_secs: i64) -> HeaderValue {
    let ne = &cfg.nextengine;
    let secure = if ne.redirect_uri.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{COOKIE}={nonce}; Max-Age={max_age_secs}; Path={}; HttpOnly; SameSite=Lax{secure}",
        client::login_cookie_path(ne)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /auth/ne`: records a sign-in bound to this browser and sends it to NextEngine.
pub async fn start(c: Call) -> Answer {
    let q: StartQuery = request::query(&c.req)?;
    if q.ticket.is_none() {
        request::require_admin(&c.cfg, &c.req)?;
    }
    // Checked first: an unconfigured NextEngine records nothing.
    let url = client::login_url(&c.cfg.nextengine)
        .map_err(|e| ApiError::new(ErrorCode::NotConfigured, e.to_string()))?;
    let unavailable =
        |e: crate::store::StoreError| ApiError::new(ErrorCode::StoreUnavailable, e.to_string());
    let nonce = match q.ticket {
        None => with_db(&c.state, |db| db.start_ne_login_nonce())
            .await
            .map_err(unavailable)?,
        Some(ticket) => {
            let redeemed = with_db(&c.state, move |db| {
                db.redeem_ne_login_ticket(&ticket, window())
            })
            .await
            .map_err(unavailable)?;
            let Some(nonce) = redeemed else {
                if c.state.refusals.admit(std::time::Instant::now()).detailed {
                    warn!("NextEngine sign-in link refused: used, expired or unknown");
                }
                return Err(ApiError::new(
                    ErrorCode::InvalidLoginTicket,
                    format!(
                        "this sign-in link was used already, is older than {LOGIN_WINDOW_MINUTES} minutes, or is unknown: run `turnbridge nextengine login` again"
                    ),
                ));
            };
            nonce
        }
    };
    let mut r = Response::new(Default::default());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut().insert(
        SET_COOKIE,
        cookie(&c.cfg, nonce.expose(), LOGIN_WINDOW_MINUTES * 60),
    );
    Ok(r)
}

/// `GET /auth/callback`: connects the account NextEngine signed in, for the browser that
/// started the sign-in only.
pub async fn callback(c: Call) -> Answer {
    let q: CallbackQuery = request::query(&c.req)?;
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (Some(uid), Some(st)) = (nonempty(q.uid), nonempty(q.state)) else {
        return Err(ApiError::new(
            ErrorCode::MissingParameters,
            "uid and state are required",
        ));
    };
    let taken = match request::cookie(&c.req, COOKIE) {
        None => false,
        Some(nonce) => with_db(&c.state, move |db| db.take_ne_login(&nonce, window()))
            .await
            .map_err(|e| ApiError::new(ErrorCode::StoreUnavailable, e.to_string()))?,
    };
    if !taken {
        if c.state.refusals.admit(std::time::Instant::now()).detailed {
            warn!("NextEngine callback refused: no open sign-in was started from its browser");
        }
        return Err(ApiError::new(
            ErrorCode::NoLoginStarted,
            format!(
                "no NextEngine sign-in is open for this browser (none was started here, it was used, or it is older than {LOGIN_WINDOW_MINUTES} minutes): open the URL `turnbridge nextengine login` prints (or GET /auth/ne with the admin token) in this browser and sign in"
            ),
        ));
    }
    let connected = c.state.nextengine.connect(&uid, &st).await;
    let clear = cookie(&c.cfg, "", 0);
    let mut r = match connected {
        Ok(a) => json_response(
            StatusCode::OK,
            json!({"status": "connected", "account": a.id, "company": a.company_name, "refresh_expires_at": a.refresh_expires_at}),
        ),
        Err(e) => {
            warn!("NextEngine sign-in could not be completed: {e}");
            ApiError::new(ErrorCode::NextengineLoginFailed, e.to_string()).into_response()
        }
    };
    r.headers_mut().insert(SET_COOKIE, clear);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_lax_on_the_callbacks_folder_and_secure_over_https() {
        let mut cfg = Config::default();
        cfg.nextengine.redirect_uri = "https://erp.example/tb/auth/callback".into();
        assert_eq!(
            cookie(&cfg, "n0nce", 600),
            "tb_ne_login=n0nce; Max-Age=600; Path=/tb/auth; HttpOnly; SameSite=Lax; Secure"
        );
        cfg.nextengine.redirect_uri = String::new();
        assert_eq!(
            cookie(&cfg, "", 0),
            "tb_ne_login=; Max-Age=0; Path=/auth; HttpOnly; SameSite=Lax"
        );
    }
}
