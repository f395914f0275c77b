//! The NextEngine API client and the keeping of each account's tokens.
//!
//! NextEngine has no refresh endpoint: every call sends both tokens, and a call made with an
//! expired access token (and a live refresh token) succeeds and returns a new pair, which
//! replaces the old one on NextEngine's side at once. So:
//! - tokens from **any** response that carries both (errors included) are stored before
//!   anything else happens, as the strings NextEngine sent;
//! - calls for one account never overlap (a per-account lock), so two calls never race on a
//!   rotation;
//! - `002002`, `002004` and a `redirect` result mean the account needs a new login: it is
//!   marked, `nextengine.auth.required` is raised (in the same transaction), and it is not
//!   used again until someone logs in; those calls are never retried;
//! - `003001` / `003002` (busy) are retried with a doubling back-off; `999999` (system
//!   error), HTTP errors and maintenance pages are left for the next pass;
//! - expiry comes from the returned end dates (Japan time), or from the time of issue + 1 day
//!   (access) / + 3 days (refresh) when they are missing or malformed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Value};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{NextEngine as Settings, Secret};
use crate::events::{NextengineAccountConnected, NextengineAuthExpiring, NextengineAuthRequired};
use crate::metrics::labels::NeResult;
use crate::store::ne_accounts::{self, Tokens};
use crate::store::{self, Readable, Store, StoreError, Timestamp};

/// What `turnbridge nextengine status` shows of an account (never its tokens).
pub use crate::store::ne_accounts::AccountStatus;

#[derive(Debug, Error)]
pub enum NeError {
    #[error("NextEngine is not configured (nextengine.client_id / client_secret)")]
    NotConfigured,
    #[error("no NextEngine account {0}; connect one with `turnbridge nextengine login`")]
    UnknownAccount(String),
    #[error("NextEngine account {0} needs a new login (run `turnbridge nextengine login`)")]
    AuthRequired(String),
    #[error("NextEngine error {code}: {message}")]
    Api { code: String, message: String },
    #[error("NextEngine stayed busy ({0}) after every retry")]
    Busy(String),
    #[error("NextEngine had a system error ({0}); retried on the next pass")]
    Unavailable(String),
    #[error("NextEngine could not be reached: {0}")]
    Http(String),
    #[error("NextEngine answered something that is not its JSON: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for NeError {
    fn from(e: rusqlite::Error) -> Self {
        NeError::Store(StoreError::Sql(e))
    }
}

/// How long a started sign-in may take before its callback is refused.
pub const LOGIN_WINDOW_MINUTES: i64 = 10;

/// The sign-in URL a person opens to connect an account.
pub fn login_url(s: &Settings) -> Result<String, NeError> {
    if s.client_id.is_empty() {
        return Err(NeError::NotConfigured);
    }
    let mut url = reqwest::Url::parse(&format!(
        "{}/users/sign_in/",
        s.login_base.trim_end_matches('/')
    ))
    .map_err(|e| NeError::Malformed(e.to_string()))?;
    url.query_pairs_mut().append_pair("client_id", &s.client_id);
    if !s.redirect_uri.is_empty() {
        url.query_pairs_mut()
            .append_pair("redirect_uri", &s.redirect_uri);
    }
    Ok(url.to_string())
}

/// The URL `turnbridge nextengine login` prints: the listener's `/auth/ne` with the sign-in's
/// one-time ticket. It is found beside the callback in `redirect_uri` (so through the same
/// reverse proxy and prefix), or, without one, on `http.listen`. Opened in a browser, it
/// binds the sign-in to that browser and goes on to NextEngine's sign-in.
pub fn ticket_url(s: &Settings, listen: &str, ticket: &str) -> Result<String, NeError> {
    let callback = if s.redirect_uri.is_empty() {
        let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
            NeError::Malformed(format!(
                "set nextengine.redirect_uri (http.listen {listen:?} gives no address to open)"
            ))
        })?;
        let ip = match addr.ip() {
            ip if !ip.is_unspecified() => ip,
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        format!(
            "http://{}/auth/callback",
            std::net::SocketAddr::new(ip, addr.port())
        )
    } else {
        s.redirect_uri.clone()
    };
    let mut url = reqwest::Url::parse(&callback)
        .and_then(|u| u.join("ne"))
        .map_err(|e| NeError::Malformed(format!("nextengine.redirect_uri: {e}")))?;
    url.query_pairs_mut().append_pair("ticket", ticket);
    Ok(url.to_string())
}

/// The path the sign-in cookie is sent on: the folder of the callback in `redirect_uri`
/// (`/auth`, or `/<prefix>/auth` behind a proxy), so the browser sends it to the callback
/// and to nothing outside it.
pub fn login_cookie_path(s: &Settings) -> String {
    let path = reqwest::Url::parse(&s.redirect_uri)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    match path.rsplit_once('/') {
        Some((dir, _)) if dir.starts_with('/') => dir.to_string(),
        _ => "/auth".to_string(),
    }
}

/// Parses NextEngine's `YYYY-MM-DD HH:MM:SS` (Japan time).
fn parse_end_date(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    let jst = chrono::FixedOffset::east_opt(9 * 3600)?;
    jst.from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Both tokens, or nothing: a response without them leaves the stored pair alone.
fn tokens_of(v: &Value, now: DateTime<Utc>) -> Option<Tokens> {
    let access = str_field(v, "access_token")?;
    let refresh = str_field(v, "refresh_token")?;
    let access_end = str_field(v, "access_token_end_date");
    let refresh_end = str_field(v, "refresh_token_end_date");
    let access_expires = access_end
        .as_deref()
        .and_then(parse_end_date)
        .unwrap_or(now + chrono::Duration::days(1));
    let refresh_expires = refresh_end
        .as_deref()
        .and_then(parse_end_date)
        .unwrap_or(now + chrono::Duration::days(3));
    Some(Tokens {
        access: Secret::new(access),
        refresh: Secret::new(refresh),
        access_end,
        refresh_end,
        access_expires: Timestamp::from_utc(access_expires),
        refresh_expires: Timestamp::from_utc(refresh_expires),
    })
}

/// Talks to NextEngine for every connected account.
pub struct Client {
    settings: Arc<Mutex<Settings>>,
    db: store::Shared,
    http: reqwest::Client,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Client {
    pub fn new(settings: Settings, store: Store) -> Client {
        let http = reqwest::Client::builder()
            .user_agent(concat!("turnbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        Client {
            settings: Arc::new(Mutex::new(settings)),
            db: store::Shared::new(store),
            http,
            locks: Mutex::default(),
        }
    }

    /// Takes reloaded settings: the next call uses them (credentials, API base, timeouts).
    pub fn reload(&self, settings: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, NeError> {
        Ok(self.db.run(f).await?)
    }

    /// An exclusive `flock` on `<database>.nextengine-<account>.lock`, held until dropped.
    async fn file_lock(&self, account: &str) -> Result<Option<std::fs::File>, NeError> {
        let db_path = self.db.lock().conn().path().map(str::to_string);
        let Some(db_path) = db_path.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let safe: String = account
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = format!("{db_path}.nextengine-{safe}.lock");
        tokio::task::spawn_blocking(move || {
            use std::os::unix::io::AsRawFd;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| NeError::Http(format!("lock {path}: {e}")))?;
            // SAFETY: flock on a file descriptor we own; released when the file is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(NeError::Http(format!(
                    "lock {path}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            Ok(Some(f))
        })
        .await
        .expect("lock task")
    }

    fn lock_for(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(account.to_string())
            .or_default()
            .clone()
    }

    async fn post(&self, path: &str, form: &[(String, String)]) -> Result<Value, NeError> {
        let s = self.settings();
        let url = format!("{}{path}", s.api_base.trim_end_matches('/'));
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(url)
            // Per request, so a reloaded nextengine.timeout_ms applies at once.
            .timeout(Duration::from_millis(s.timeout_ms))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| NeError::Http(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| NeError::Http(e.without_url().to_string()))?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(v),
            // A maintenance page or a proxy's error: say which, it is retried like a network
            // failure.
            Err(_) if !status.is_success() => Err(NeError::Http(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
            ))),
            Err(e) => Err(NeError::Malformed(e.to_string())),
        }
    }

    /// Exchanges the `uid` and `state` of a sign-in for tokens and stores the account.
    pub async fn connect(&self, uid: &str, state: &str) -> Result<AccountStatus, NeError> {
        let s = self.settings();
        if s.client_id.is_empty() || s.client_secret.is_empty() {
            return Err(NeError::NotConfigured);
        }
        let form = vec![
            ("uid".to_string(), uid.to_string()),
            ("state".to_string(), state.to_string()),
            ("client_id".to_string(), s.client_id.clone()),
            (
                "client_secret".to_string(),
                s.client_secret.expose().to_string(),
            ),
        ];
        let v = self.post("/api_neauth", &form).await?;
        let now = Utc::now();
        let Some(t) = tokens_of(&v, now) else {
            return Err(NeError::Api {
                code: str_field(&v, "code").unwrap_or_default(),
                message: str_field(&v, "message")
                    .unwrap_or_else(|| "no tokens in the answer".into()),
            });
        };
        let id = str_field(&v, "company_ne_id").unwrap_or_else(|| uid.to_string());
        let company = str_field(&v, "company_name");
        let (uid, id2) = (uid.to_string(), id.clone());
        self.with_db(move |db| {
            db.write(|tx| {
                ne_accounts::connect(tx, &id2, &uid, company.as_deref(), &t)?;
                store::events::add(tx, &NextengineAccountConnected { account_id: id2 })
            })
        })
        .await?;
        info!(account = %id, "NextEngine account connected");
        self.status(&id).await?.ok_or(NeError::UnknownAccount(id))
    }

    pub async fn status(&self, account: &str) -> Result<Option<AccountStatus>, NeError> {
        let account = account.to_string();
        self.with_db(move |db| ne_accounts::status(db, &account))
            .await
    }

    /// Calls an API path for an account, with both tokens; returns the whole JSON answer of a
    /// `success`. `wait` sets NextEngine's `wait_flag`.
    pub async fn call(
        &self,
        account: &str,
        path: &'static str,
        params: &[(&str, &str)],
        wait: bool,
    ) -> Result<Value, NeError> {
        let lock = self.lock_for(account);
        let _one_at_a_time = lock.lock().await;
        // And one at a time across processes too (the daemon and a `turnbridge nextengine`
        // command share the account's tokens).
        let _across_processes = self.file_lock(account).await?;
        let s = self.settings();
        let mut delay = Duration::from_millis(s.busy_backoff_ms);
        let mut attempt = 0;
        loop {
            let acc = account.to_string();
            let credentials = self
                .with_db(move |db| ne_accounts::credentials(db, &acc))
                .await?;
            let Some(c) = credentials else {
                return Err(NeError::UnknownAccount(account.to_string()));
            };
            if c.needs_login {
                return Err(NeError::AuthRequired(account.to_string()));
            }
            let mut form: Vec<(String, String)> = vec![
                ("access_token".into(), c.access.expose().to_string()),
                ("refresh_token".into(), c.refresh.expose().to_string()),
                ("wait_flag".into(), if wait { "1" } else { "0" }.into()),
            ];
            form.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let started = std::time::Instant::now();
            let answer = match self.post(path, &form).await {
                Ok(v) => v,
                Err(e) => {
                    crate::metrics::get().nextengine_call(path, NeResult::Unreachable);
                    warn!(
                        account,
                        path,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "NextEngine call failed: {e}"
                    );
                    self.note(account, path, Some(e.to_string())).await?;
                    return Err(e);
                }
            };
            {
                let result = str_field(&answer, "result").unwrap_or_default();
                crate::metrics::get().nextengine_call(path, NeResult::of_answer(&result));
                info!(
                    account,
                    path,
                    result = %result,
                    code = %str_field(&answer, "code").unwrap_or_default(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "NextEngine call"
                );
            }
            // Tokens first: NextEngine has already replaced the old pair.
            self.keep_tokens(account, &answer).await?;
            let result = str_field(&answer, "result").unwrap_or_default();
            let code = str_field(&answer, "code").unwrap_or_default();
            let message = str_field(&answer, "message").unwrap_or_default();
            match (result.as_str(), code.as_str()) {
                ("success", _) => {
                    self.note(account, path, None).await?;
                    return Ok(answer);
                }
                ("redirect", _) | (_, "002002") | (_, "002004") => {
                    self.needs_login(account, path, &code, &message).await?;
                    return Err(NeError::AuthRequired(account.to_string()));
                }
                (_, "003001") | (_, "003002") if attempt < s.busy_retries => {
                    attempt += 1;
                    warn!(account, path, code = %code, attempt, "NextEngine is busy; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                (_, "003001") | (_, "003002") => {
                    self.note(account, path, Some(format!("{code} {message}")))
                        .await?;
                    return Err(NeError::Busy(code));
                }
                // The call may have been half done: not repeated here. An upload in flight
                // is looked for in the queue on the next pass before it is sent again.
                (_, "999999") => {
                    self.note(account, path, Some(format!("{code} {message}")))
                        .await?;
                    return Err(NeError::Unavailable(format!("{code} {message}")));
                }
                _ => {
                    self.note(account, path, Some(format!("{code} {message}")))
                        .await?;
                    return Err(NeError::Api { code, message });
                }
            }
        }
    }

    async fn keep_tokens(&self, account: &str, answer: &Value) -> Result<(), NeError> {
        let Some(t) = tokens_of(answer, Utc::now()) else {
            return Ok(());
        };
        let account = account.to_string();
        self.with_db(move |db| db.write(|tx| ne_accounts::keep_tokens(tx, &account, &t)))
            .await
    }

    async fn note(&self, account: &str, path: &str, error: Option<String>) -> Result<(), NeError> {
        let (account, path) = (account.to_string(), path.to_string());
        self.with_db(move |db| {
            db.write(|tx| ne_accounts::note_call(tx, &account, &path, error.as_deref()))
        })
        .await
    }

    async fn needs_login(
        &self,
        account: &str,
        path: &str,
        code: &str,
        message: &str,
    ) -> Result<(), NeError> {
        warn!(
            account,
            path, code, "NextEngine account needs a new login; it is not used until then"
        );
        let (account, path) = (account.to_string(), path.to_string());
        let reason = if code.is_empty() {
            "redirect".to_string()
        } else {
            format!("{code} {message}")
        };
        self.with_db(move |db| {
            db.write(|tx| {
                if ne_accounts::mark_needs_login(tx, &account, &path, &reason)? {
                    store::events::add(
                        tx,
                        &NextengineAuthRequired {
                            account_id: account,
                            reason,
                        },
                    )?;
                }
                Ok(())
            })
        })
        .await
    }

    /// One cheap authenticated call per usable account, so the refresh token never lapses on
    /// a quiet system; warns (and raises `nextengine.auth.expiring`, at each keep-alive) when an
    /// account is within a day of needing a new login.
    pub async fn keep_alive(&self) -> Result<usize, NeError> {
        let ids = self.with_db(|db| ne_accounts::usable(db)).await?;
        let mut ok = 0;
        let mut failures = Vec::new();
        for id in &ids {
            match self.call(id, "/api_v1_login_user/info", &[], false).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    warn!(account = %id, "NextEngine keep-alive failed: {e}");
                    failures.push(format!("{id}: {e}"));
                }
            }
        }
        if failures.is_empty() {
            crate::health::clear("nextengine keep-alive");
        } else {
            crate::health::set("nextengine keep-alive", failures.join("; "));
        }
        let soon = Timestamp::now().plus(chrono::Duration::days(1));
        let expiring = self
            .with_db(move |db| ne_accounts::expiring(db, soon))
            .await?;
        for id in expiring {
            warn!(account = %id, "NextEngine refresh token expires within a day; it needs a new login soon");
            let id2 = id.clone();
            self.with_db(move |db| {
                db.write(|tx| store::events::add(tx, &NextengineAuthExpiring { account_id: id2 }))
            })
            .await?;
        }
        Ok(ok)
    }
}

/// Which upload API a CSV goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Goods,
    WarehouseStock,
}

impl Client {
    /// Sends an upload CSV; returns NextEngine's queue id (the upload runs later: poll
    /// [`Client::queue`]).
    pub async fn upload(
        &self,
        account: &str,
        kind: UploadKind,
        csv: &[u8],
    ) -> Result<String, NeError> {
        let path = match kind {
            UploadKind::Goods => "/api_v1_master_goods/upload",
            UploadKind::WarehouseStock => "/api_v1_warehouse_stock/upload",
        };
        let text = String::from_utf8_lossy(csv).into_owned();
        let answer = self
            .call(
                account,
                path,
                &[("data_type", "csv"), ("data", &text)],
                true,
            )
            .await?;
        str_field(&answer, "que_id")
            .ok_or_else(|| NeError::Malformed("an upload answer without que_id".into()))
    }

    /// What the upload queue says of an upload.
    pub async fn queue(
        &self,
        account: &str,
        que_id: &str,
    ) -> Result<super::upload::QueueState, NeError> {
        let answer = self
            .call(
                account,
                "/api_v1_system_que/search",
                &[
                    ("fields", "que_id,que_status_id,que_message"),
                    ("que_id-eq", que_id),
                ],
                false,
            )
            .await?;
        let row = answer
            .get("data")
            .and_then(|d| d.get(0))
            .cloned()
            .unwrap_or(Value::Null);
        let status = str_field(&row, "que_status_id").unwrap_or_default();
        let message = str_field(&row, "que_message").unwrap_or_default();
        if status.is_empty() {
            return Ok(super::upload::QueueState::Unknown(
                "no such queue entry".into(),
            ));
        }
        Ok(super::upload::queue_state(&status, &message))
    }

    /// Current free stock of goods in one warehouse (by its name), keyed as
    /// [`super::upload::stock_csv`] wants it. Goods NextEngine does not list count as 0.
    pub async fn warehouse_levels(
        &self,
        account: &str,
        warehouse: &str,
        codes: &[String],
    ) -> Result<std::collections::BTreeMap<(String, String), i64>, NeError> {
        let bases = self
            .call(
                account,
                "/api_v1_warehouse_base/search",
                &[("fields", "warehouse_id,warehouse_name")],
                false,
            )
            .await?;
        let id = bases
            .get("data")
            .and_then(Value::as_array)
            .and_then(|rows| {
                rows.iter()
                    .find(|r| str_field(r, "warehouse_name").as_deref() == Some(warehouse))
            })
            .and_then(|r| str_field(r, "warehouse_id"))
            .ok_or_else(|| NeError::Api {
                code: "warehouse".into(),
                message: format!("NextEngine has no warehouse named {warehouse}"),
            })?;
        let mut out = std::collections::BTreeMap::new();
        for code in codes {
            let answer = self
                .call(
                    account,
                    "/api_v1_warehouse_stock/search",
                    &[
                        (
                            "fields",
                            "warehouse_stock_goods_id,warehouse_stock_free_quantity",
                        ),
                        ("warehouse_stock_warehouse_id-eq", &id),
                        ("warehouse_stock_goods_id-eq", code),
                    ],
                    false,
                )
                .await?;
            let level = answer
                .get("data")
                .and_then(|d| d.get(0))
                .and_then(|r| str_field(r, "warehouse_stock_free_quantity"))
                .and_then(|q| q.parse::<i64>().ok())
                .unwrap_or(0);
            out.insert((warehouse.to_string(), code.clone()), level);
        }
        Ok(out)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why no NextEngine account can be used for uploads and searches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAccount {
    /// Nothing was ever connected: there is nothing to do yet.
    #[error("no NextEngine account is connected: run `turnbridge nextengine login`")]
    NoneConnected,
    /// An operator must act (a login, or naming the account): a problem until then.
    #[error("{0}")]
    Unusable(String),
}

/// The account uploads and searches use: the one `nextengine.account` names, or else the
/// only connected one; never a guess by id order.
pub fn chosen_account(
    db: &impl Readable,
    configured: &str,
) -> Result<Result<String, NoAccount>, StoreError> {
    let accounts = ne_accounts::logins(db)?;
    let unusable = |why: String| Err(NoAccount::Unusable(why));
    if !configured.is_empty() {
        return Ok(match accounts.iter().find(|(id, _)| id == configured) {
            Some((id, false)) => Ok(id.clone()),
            Some((id, true)) => unusable(format!(
                "NextEngine account {id} (nextengine.account) needs a new login: run `turnbridge nextengine login`"
            )),
            None => unusable(format!(
                "NextEngine account {configured} (nextengine.account) is not connected: run `turnbridge nextengine login` and sign in to it"
            )),
        });
    }
    Ok(match accounts.as_slice() {
        [] => Err(NoAccount::NoneConnected),
        [(id, false)] => Ok(id.clone()),
        [(id, true)] => unusable(format!(
            "NextEngine account {id} needs a new login: run `turnbridge nextengine login`"
        )),
        several => unusable(format!(
            "{} NextEngine accounts are connected ({}); name the one uploads and searches use in nextengine.account",
            several.len(),
            several.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    })
}

/// Sums an order search (`/api_v1_receiveorder_row/search` rows) into one line per order:
/// lines, quantity, quantity with stock allocated, and whether it is fully, partly or not
/// allocated (引当済 / 一部引当 / 未引当). Cancelled lines are left out.
pub fn allocation_summary(rows: &[Value]) -> Vec<Value> {
    let mut orders: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
    for r in rows {
        if str_field(r, "receive_order_row_cancel_flag").as_deref() == Some("1") {
            continue;
        }
        let Some(id) = str_field(r, "receive_order_row_receive_order_id") else {
            continue;
        };
        let qty = str_field(r, "receive_order_row_quantity")
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let alloc = str_field(r, "receive_order_row_stock_allocation_quantity")
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let e = orders.entry(id).or_default();
        e.0 += 1;
        e.1 += qty;
        e.2 += alloc;
    }
    orders
        .into_iter()
        .map(|(id, (lines, qty, alloc))| {
            let status = if alloc >= qty && qty > 0 {
                "引当済"
            } else if alloc > 0 {
                "一部引当"
            } else {
                "未引当"
            };
            json!({"receive_order_id": id, "lines": lines, "quantity": qty, "allocated": alloc, "status": status})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_url_and_cookie_path_follow_the_callback_behind_its_proxy() {
        let s = |redirect: &str| Settings {
            redirect_uri: redirect.into(),
            ..Settings::default()
        };
        let behind = s("https://erp.example/tb/auth/callback");
        assert_eq!(
            ticket_url(&behind, "127.0.0.1:8780", "T-1").unwrap(),
            "https://erp.example/tb/auth/ne?ticket=T-1"
        );
        assert_eq!(login_cookie_path(&behind), "/tb/auth");
        let plain = s("https://erp.example/auth/callback");
        assert_eq!(login_cookie_path(&plain), "/auth");
        // No redirect URI: the listener itself, on an address a browser can open.
        assert_eq!(
            ticket_url(&s(""), "0.0.0.0:8780", "T").unwrap(),
            "http://127.0.0.1:8780/auth/ne?ticket=T"
        );
        assert_eq!(login_cookie_path(&s("")), "/auth");
        assert!(ticket_url(&s(""), "", "T").is_err());
    }

    #[test]
    fn the_account_is_the_configured_one_or_the_only_one_never_the_first_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Store::open(&dir.path().join("t.db")).unwrap();
        let add = |db: &mut Store, id: &str, needs_login: bool| {
            let t = tokens_of(
                &json!({"access_token": "a", "refresh_token": "r"}),
                Utc::now(),
            )
            .unwrap();
            db.write(|tx| {
                ne_accounts::connect(tx, id, id, None, &t)?;
                if needs_login {
                    ne_accounts::mark_needs_login(tx, id, "/api_v1_login_user/info", "002002")?;
                }
                Ok(())
            })
            .unwrap();
        };
        assert_eq!(
            chosen_account(&db, "").unwrap(),
            Err(NoAccount::NoneConnected)
        );
        add(&mut db, "NE2", false);
        assert_eq!(chosen_account(&db, "").unwrap(), Ok("NE2".to_string()));
        assert!(
            matches!(chosen_account(&db, "NE9").unwrap(), Err(NoAccount::Unusable(m)) if m.contains("NE9"))
        );
        add(&mut db, "NE1", true);
        let several = chosen_account(&db, "").unwrap();
        assert!(
            matches!(&several, Err(NoAccount::Unusable(m)) if m.contains("NE1, NE2") && m.contains("nextengine.account")),
            "{several:?}"
        );
        assert_eq!(chosen_account(&db, "NE2").unwrap(), Ok("NE2".to_string()));
        assert!(
            matches!(chosen_account(&db, "NE1").unwrap(), Err(NoAccount::Unusable(m)) if m.contains("new login"))
        );
    }

    #[test]
    fn expiry_from_dates_or_from_issue_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let v = json!({"access_token": "a", "refresh_token": "r",
            "access_token_end_date": "2026-11-27 09:00:00", "refresh_token_end_date": "garbage"});
        let t = tokens_of(&v, now).unwrap();
        assert_eq!(
            t.access_expires.to_string(),
            "2026-11-27T00:00:00.000Z",
            "Japan time"
        );
        assert_eq!(
            t.refresh_expires.utc(),
            now + chrono::Duration::days(3),
            "malformed: issue + 3 days"
        );
        assert!(
            tokens_of(&json!({"access_token": "a"}), now).is_none(),
            "both or nothing"
        );
    }

    #[test]
    fn orders_are_summed_by_allocation() {
        let rows = vec![
            json!({"receive_order_row_receive_order_id": "1", "receive_order_row_quantity": "2", "receive_order_row_stock_allocation_quantity": "2"}),
            json!({"receive_order_row_receive_order_id": "2", "receive_order_row_quantity": "3", "receive_order_row_stock_allocation_quantity": "1"}),
            json!({"receive_order_row_receive_order_id": "2", "receive_order_row_quantity": "1", "receive_order_row_stock_allocation_quantity": "0"}),
            json!({"receive_order_row_receive_order_id": "3", "receive_order_row_quantity": "1", "receive_order_row_stock_allocation_quantity": "0"}),
            json!({"receive_order_row_receive_order_id": "3", "receive_order_row_quantity": "5", "receive_order_row_cancel_flag": "1"}),
        ];
        let s = allocation_summary(&rows);
        let status: Vec<&str> = s.iter().map(|o| o["status"].as_str().unwrap()).collect();
        assert_eq!(status, ["引当済", "一部引当", "未引当"]);
        assert_eq!(s[1]["quantity"], 4);
        assert_eq!(s[2]["lines"], 1, "cancelled lines are left out");
    }

    #[test]
    fn the_sign_in_url_carries_only_client_id_and_redirect_uri() {
        let s = Settings {
            client_id: "cid".into(),
            redirect_uri: "https://x.example/auth/callback".into(),
            client_secret: crate::config::Secret::new("never in the URL"),
            ..Settings::default()
        };
        let url = login_url(&s).unwrap();
        assert_eq!(url, "https://base.next-engine.org/users/sign_in/?client_id=cid&redirect_uri=https%3A%2F%2Fx.example%2Fauth%2Fcallback");
    }
}
