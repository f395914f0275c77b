//! The embedded listener: one hyper server (plus, optionally, a second address for
//! `/healthz` and `/metrics`).
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `GET <nextengine.updatestock_path>` | NextEngine `.sig` | stock callback, EUC-JP XML reply |
//! | `POST /api/sync/company/webhook` | `X-Webhook-Secret` | company-system pushes |
//! | `GET /api/inventory/status`, `/updates`, `/logs`, `/api/webhook/status` | `Bearer` admin token | monitoring |
//! | `GET /healthz`, `/metrics` | none | liveness, Prometheus metrics |
//!
//! Every request gets an id (`X-Request-Id`, and `request_id` in every log line of it), a
//! deadline (`http.request_timeout_ms`), a header size cap (431 beyond), and a body cap
//! (413). Errors are JSON with a stable `code`. A request is answered only after what it
//! changed is committed. Which connections are held, and when one that stalls is closed, is
//! [`crate::listener`]'s part.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, trace, warn, Instrument};

use crate::config::{Config, StockSink};
use crate::listener::{self, Close, GuardedIo, Limits, Table};
use crate::metrics::labels::{CompanyEventType, CompanyOutcome, Listener, Route, StockOutcome};
use crate::metrics::{self, Live, StoreGauges};
use crate::nextengine::stock_callback::{self, StockQuery};
use crate::store::{self, Store, StoreError};
use crate::webhook::inbound;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Body = Full<Bytes>;

/// What the handlers share: the live config (replaced on reload) and one store connection.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    db: store::Shared,
    nextengine: Arc<crate::nextengine::client::Client>,
    /// Bounds what refused stock callbacks cost (rows, log lines).
    refusals: stock_callback::RefusalGate,
    /// The same bound for company webhooks without the right secret (log lines).
    webhook_refusals: stock_callback::RefusalGate,
    /// The connections of each listening address.
    main_conns: Arc<Table>,
    monitor_conns: Arc<Table>,
    /// When the listener last warned that it is evicting or refusing connections.
    pressure_warned: std::sync::Mutex<Option<Instant>>,
}

impl AppState {
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn table(&self, role: Role) -> &Arc<Table> {
        match role {
            Role::Main => &self.main_conns,
            Role::Monitor => &self.monitor_conns,
        }
    }

    /// Warns, at most once a minute, that connections are being evicted or refused (the
    /// counts are in `turnbridge_http_connections_closed_total`).
    fn warn_pressure(&self, role: Role, what: Close) {
        let mut last = self
            .pressure_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            warn!(
                listener = ?role,
                "the listener is full or a peer is at its cap: connections are being {} (see turnbridge_http_connections_closed_total; limits in [http])",
                if what == Close::Evicted { "evicted" } else { "refused" }
            );
        }
    }
}

/// A running listener: its bound addresses and how to stop it.
pub struct Server {
    pub addrs: Vec<SocketAddr>,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Applies a reloaded config (shops, secrets, limits). Addresses need a restart.
    pub fn reload(&self, config: Config) {
        let old = self.state.config();
        if old.http.listen != config.http.listen
            || old.http.monitor_listen != config.http.monitor_listen
        {
            warn!("http.listen / http.monitor_listen changes take effect at the next restart");
        }
        *self.state.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Stops accepting, lets requests in flight finish (at most `grace`), and returns.
    /// Whether an accept loop has ended (it should only on shutdown).
    pub fn is_dead(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }

    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(grace, t).await;
        }
    }
}

/// Binds the configured addresses and starts serving. Returns `None` when `http.listen` is
/// empty.
pub async fn start(
    config: &Config,
    nextengine: Arc<crate::nextengine::client::Client>,
) -> Result<Option<Server>, HttpError> {
    if config.http.listen.is_empty() {
        return Ok(None);
    }
    listener::check_open_file_limit(config);
    let state = Arc::new(AppState {
        config: RwLock::new(Arc::new(config.clone())),
        db: store::Shared::new(Store::open(&config.database())?),
        nextengine,
        refusals: Default::default(),
        webhook_refusals: Default::default(),
        main_conns: Default::default(),
        monitor_conns: Default::default(),
        pressure_warned: Default::default(),
    });
    let (tx, rx) = watch::channel(false);
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    let mut listeners = vec![(config.http.listen.clone(), Role::Main)];
    if !config.http.monitor_listen.is_empty() {
        listeners.push((config.http.monitor_listen.clone(), Role::Monitor));
    }
    for (addr, role) in listeners {
        let listener = listener::bind(&addr).map_err(|source| HttpError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let local = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        info!(addr = %local, role = ?role, "http listening on http://{local}");
        addrs.push(local);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            role,
            state.clone(),
            rx.clone(),
        )));
    }
    Ok(Some(Server {
        addrs,
        state,
        shutdown: tx,
        tasks,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything (and `/healthz`, `/metrics` when there is no monitor address).
    Main,
    /// Only `/healthz` and `/metrics`.
    Monitor,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    role: Role,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let table = state.table(role).clone();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let limits = Limits::from(&state.config().http);
        // Every slot being answered is the one case a new connection waits (and, while it
        // does, the ones after it wait in the kernel's accept queue).
        let admitted = loop {
            match table.admit(remote.ip(), &limits, tokio::time::Instant::now()) {
                Err(None) => tokio::select! {
                    _ = table.changed() => {}
                    _ = shutdown.changed() => break None,
                },
                other => break Some(other),
            }
        };
        let mut ticket = match admitted {
            None => break,
            Some(Ok((ticket, evicted))) => {
                if evicted {
                    state.warn_pressure(role, Close::Evicted);
                }
                ticket
            }
            Some(Err(refused)) => {
                let refused = refused.unwrap_or(Close::Full);
                // Reset at once: the cheapest answer, and nothing is kept for it.
                let _ = stream.set_zero_linger();
                drop(stream);
                trace!(%remote, reason = refused.as_str(), "connection refused");
                closed_metric(refused);
                state.warn_pressure(role, refused);
                continue;
            }
        };
        if limits.send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer);
        }
        let st = state.clone();
        let track = ticket.track.clone();
        let service = service_fn(move |req| {
            let (st, track) = (st.clone(), track.clone());
            async move {
                let busy = track.busy();
                let mut resp = handle(st, role, req, remote).await;
                if busy.track().too_old(&limits, tokio::time::Instant::now()) {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let io = TokioIo::new(GuardedIo::new(stream, ticket.track.clone()));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            // The listener keeps the header deadline itself (from a request's first byte,
            // apart from the idle time between requests).
            .header_read_timeout(None)
            .max_buf_size(state.config().http.max_header_bytes)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            match listener::supervise(conn, &mut ticket, &limits).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%remote, "connection ended: {e}"),
                Err(why) => {
                    trace!(%remote, reason = why.as_str(), "connection closed");
                    closed_metric(why);
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn closed_metric(why: Close) {
    metrics::get().connection_closed(why);
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json_response(status, json!({"code": code, "message": message.into()}))
}

/// The route name used in metrics (never the raw path, to keep label values few).
fn route_name(path: &str, cfg: &Config) -> Route {
    match path {
        p if p == cfg.nextengine.updatestock_path => Route::Updatestock,
        "/api/sync/company/webhook" => Route::CompanyWebhook,
        "/api/inventory/status"
        | "/api/inventory/updates"
        | "/api/inventory/logs"
        | "/api/webhook/status" => Route::Monitoring,
        p if p.starts_with("/api/v1/") => Route::Admin,
        "/healthz" => Route::Healthz,
        "/metrics" => Route::Metrics,
        _ => Route::Other,
    }
}

async fn handle(
    state: Arc<AppState>,
    role: Role,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let cfg = state.config();
    let route = route_name(req.uri().path(), &cfg);
    let span = tracing::info_span!("http", request_id = %request_id, method = %req.method(), path = %req.uri().path(), remote = %remote);
    let started = Instant::now();
    let deadline = Duration::from_millis(cfg.http.request_timeout_ms);
    let mut resp = match tokio::time::timeout(
        deadline,
        dispatch(state, cfg.clone(), role, req, remote, request_id.clone())
            .instrument(span.clone()),
    )
    .await
    {
        Ok(r) => r,
        // NextEngine reads XML: it gets the internal-error reply (-3) in its own format.
        Err(_) if route == Route::Updatestock => xml_response(
            StatusCode::SERVICE_UNAVAILABLE,
            stock_callback::reply(&StockQuery::parse(&query), -3),
        ),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request was not completed in time",
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    metrics::get().http_request(route, status, started.elapsed());
    span.in_scope(
        || debug!(status = %status, elapsed_ms = started.elapsed().as_millis() as u64, "answered"),
    );
    resp
}

/// Reads a body up to the configured cap; `Err` is the response to send.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > max {
            return Err(too_big());
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            e.to_string(),
        )),
    }
}

async fn dispatch(
    state: Arc<AppState>,
    cfg: Arc<Config>,
    role: Role,
    req: Request<Incoming>,
    remote: SocketAddr,
    request_id: String,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let monitor_here = role == Role::Monitor || cfg.http.monitor_listen.is_empty();
    match (role, req.method(), path.as_str()) {
        // Alive means 200; trouble the daemon is retrying is reported, not a failure.
        // Without the admin token only the status: the details name endpoints, hosts and
        // paths.
        (_, &Method::GET, "/healthz") if monitor_here => {
            let problems = crate::health::problems();
            let status = if problems.is_empty() {
                "ok"
            } else {
                "degraded"
            };
            let body = if admin_token_given(&cfg, &req) {
                json!({"status": status, "problems": problems})
            } else {
                json!({"status": status})
            };
            json_response(StatusCode::OK, body)
        }
        (_, &Method::GET, "/metrics") if monitor_here => metrics_response(&state).await,
        (Role::Monitor, _, _) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this address serves /healthz and /metrics only",
        ),
        (_, &Method::GET, p) if p == cfg.nextengine.updatestock_path => {
            let query = req.uri().query().unwrap_or("").to_string();
            updatestock(state, cfg, query, remote, request_id).await
        }
        (_, _, p) if p == cfg.nextengine.updatestock_path => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        // Starting a sign-in needs the admin token: the callback connects an account only
        // for a sign-in someone entitled started.
        (_, &Method::GET, "/auth/ne") => {
            if let Some(refused) = check_admin(&cfg, &req) {
                return refused;
            }
            let started = with_db(&state, |db| {
                db.start_ne_login()?;
                Ok(())
            })
            .await;
            if let Err(e) = started {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                );
            }
            match crate::nextengine::client::login_url(&cfg.nextengine) {
                Ok(url) => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::FOUND;
                    if let Ok(v) = HeaderValue::from_str(&url) {
                        r.headers_mut().insert(hyper::header::LOCATION, v);
                    }
                    r
                }
                Err(e) => error(StatusCode::NOT_FOUND, "not_configured", e.to_string()),
            }
        }
        (_, &Method::GET, "/auth/callback") => {
            let pairs = stock_callback::form_pairs(req.uri().query().unwrap_or(""));
            let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let (Some(uid), Some(st)) = (get("uid"), get("state")) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "missing_parameters",
                    "uid and state are required",
                );
            };
            let window = chrono::Duration::minutes(crate::nextengine::client::LOGIN_WINDOW_MINUTES);
            let open = with_db(&state, move |db| db.ne_login_open(window)).await;
            if !matches!(open, Ok(true)) {
                if state.refusals.admit(std::time::Instant::now()).detailed {
                    warn!(
                        "NextEngine callback refused: no sign-in was started in the last {} minutes",
                        crate::nextengine::client::LOGIN_WINDOW_MINUTES
                    );
                }
                return error(
                    StatusCode::FORBIDDEN,
                    "no_login_started",
                    format!(
                        "no NextEngine sign-in was started in the last {} minutes: run `turnbridge nextengine login` (or GET /auth/ne with the admin token) and sign in",
                        crate::nextengine::client::LOGIN_WINDOW_MINUTES
                    ),
                );
            }
            // The sign-in is used up only by a callback that connected an account, so bogus
            // callbacks cannot use it up before the operator's arrives.
            let connected = state.nextengine.connect(&uid, &st).await;
            let taken = match &connected {
                Ok(_) => with_db(&state, move |db| db.take_ne_login(window)).await,
                Err(_) => Ok(false),
            };
            match connected {
                Ok(a) if matches!(taken, Ok(true)) => json_response(
                    StatusCode::OK,
                    json!({"status": "connected", "account": a.id, "company": a.company_name, "refresh_expires_at": a.refresh_expires_at}),
                ),
                Ok(_) => error(
                    StatusCode::FORBIDDEN,
                    "no_login_started",
                    "the sign-in was already used by another callback",
                ),
                Err(e) => {
                    warn!("NextEngine sign-in could not be completed: {e}");
                    error(
                        StatusCode::BAD_GATEWAY,
                        "nextengine_login_failed",
                        e.to_string(),
                    )
                }
            }
        }
        (_, &Method::POST, "/api/sync/company/webhook") => {
            company_webhook(state, cfg, req, request_id).await
        }
        (_, _, "/api/sync/company/webhook") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        ),
        (_, _, p)
            if p == "/api/v1/webhooks"
                || p.starts_with("/api/v1/webhooks/")
                || p.starts_with("/api/v1/deliveries")
                || p == "/api/v1/dlq/resend" =>
        {
            if let Some(denied) = check_admin(&cfg, &req) {
                return denied;
            }
            admin_webhooks(state, cfg, req).await
        }
        (
            _,
            &Method::GET,
            "/api/inventory/status"
            | "/api/inventory/updates"
            | "/api/inventory/logs"
            | "/api/webhook/status",
        ) => {
            if let Some(denied) = check_admin(&cfg, &req) {
                return denied;
            }
            let limit = query_limit(req.uri().query());
            monitoring(state, path, limit).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        ),
    }
}

/// Whether the request carries the admin token (no refusal, nothing counted: for routes
/// that answer everyone and only add details for the operator).
fn admin_token_given(cfg: &Config, req: &Request<Incoming>) -> bool {
    let token = cfg.http.admin_token.expose();
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !token.is_empty() && inbound::secret_matches(token, given)
}

fn check_admin(cfg: &Config, req: &Request<Incoming>) -> Option<Response<Body>> {
    let token = cfg.http.admin_token.expose();
    if token.is_empty() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "set http.admin_token to use the monitoring routes",
        ));
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if inbound::secret_matches(token, given) {
        None
    } else {
        metrics::get().signature_failure(Route::Monitoring);
        Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Bearer token is required",
        ))
    }
}

fn query_limit(query: Option<&str>) -> i64 {
    stock_callback::form_pairs(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000)
}

/// Runs a store operation off the async threads.
async fn with_db<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    state.db.run(f).await
}

fn xml_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=EUC-JP"),
    );
    r
}

async fn updatestock(
    state: Arc<AppState>,
    cfg: Arc<Config>,
    query: String,
    remote: SocketAddr,
    request_id: String,
) -> Response<Body> {
    let q = StockQuery::parse(&query);
    // Refusals come from anyone: what they sent is logged escaped and cut short.
    let log_row = |outcome: &'static str, processed: i32, reason: Option<String>| {
        let request_id = request_id.clone();
        let short = |v: &Option<String>| v.as_deref().map(|v| crate::einvoice::printable(v, 128));
        let (account, code, stock, ts) = (
            short(&q.store_account),
            short(&q.code),
            short(&q.stock),
            short(&q.ts),
        );
        move |db: &mut Store| -> Result<(), StoreError> {
            db.conn().execute(
                "INSERT INTO inventory_logs (request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![request_id, store::now(), remote.to_string(), account, code, stock, ts, outcome, processed, reason],
            )?;
            Ok(())
        }
    };
    if q.is_connection_check() {
        info!("NextEngine connection check (接続を確認)");
        metrics::get().stock_update(StockOutcome::ConnectionCheck);
        // Unauthenticated too: stored within the same bound as refusals.
        if state.refusals.admit(std::time::Instant::now()).detailed {
            let _ = with_db(&state, log_row("connection_check", 0, None)).await;
        }
        return xml_response(StatusCode::OK, stock_callback::reply(&q, 0));
    }
    let ne = &cfg.nextengine;
    let verdict = stock_callback::verify(
        &q,
        ne,
        chrono::Utc::now(),
        ne.offset(),
        chrono::Duration::seconds(ne.ts_max_age_secs as i64),
        chrono::Duration::seconds(ne.ts_max_ahead_secs as i64),
    );
    let update = match verdict {
        Ok(u) => u,
        Err(refusal) => {
            let reason = refusal.reason();
            let status = if refusal.is_signature() {
                metrics::get().signature_failure(Route::Updatestock);
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            metrics::get().stock_update(StockOutcome::Refused);
            let admit = state.refusals.admit(std::time::Instant::now());
            admit.log_suppressed(
                "stock callbacks were refused (counted in turnbridge_stock_updates_total, not stored)",
            );
            if admit.detailed {
                let short = |v: &Option<String>| {
                    v.as_deref()
                        .map(|v| crate::einvoice::printable(v, 128))
                        .unwrap_or_default()
                };
                warn!(
                    store_account = %short(&q.store_account),
                    code = %short(&q.code),
                    "stock callback refused: {reason}"
                );
                let _ = with_db(&state, log_row("refused", -2, Some(reason))).await;
            }
            return xml_response(status, stock_callback::reply(&q, -2));
        }
    };
    let sink = match ne.stock_sink {
        StockSink::Record => "recorded",
        StockSink::Forward => "pending",
    };
    let (u, rid, q2) = (update.clone(), request_id.clone(), q.clone());
    let result = with_db(&state, move |db| {
        let tx = db.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO stock_updates (store_account, code, stock, ts, sig, request_id, received_at, sink_state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![u.store_account, u.code, u.stock, u.ts, u.sig, rid, store::now(), sink],
        )?;
        let (outcome, processed, reason) = if inserted == 1 {
            ("accepted", 0, None)
        } else {
            ("replayed", -2, Some("this ts and signature were already used".to_string()))
        };
        tx.execute(
            "INSERT INTO inventory_logs (request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![rid, store::now(), remote.to_string(), q2.store_account, q2.code, q2.stock, q2.ts, outcome, processed, reason],
        )?;
        tx.commit()?;
        Ok(inserted == 1)
    })
    .await;
    match result {
        Ok(true) => {
            metrics::get().stock_update(StockOutcome::Accepted);
            info!(store_account = %update.store_account, code = %update.code, stock = ?update.stock, ts = %update.ts, "stock level accepted");
            xml_response(StatusCode::OK, stock_callback::reply(&q, 0))
        }
        Ok(false) => {
            metrics::get().stock_update(StockOutcome::Replayed);
            warn!(store_account = %update.store_account, code = %update.code, ts = %update.ts, "stock callback refused: replayed");
            xml_response(StatusCode::CONFLICT, stock_callback::reply(&q, -2))
        }
        Err(e) => {
            metrics::get().stock_update(StockOutcome::Error);
            warn!("stock callback could not be recorded: {e}");
            xml_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                stock_callback::reply(&q, -3),
            )
        }
    }
}

async fn company_webhook(
    state: Arc<AppState>,
    cfg: Arc<Config>,
    req: Request<Incoming>,
    request_id: String,
) -> Response<Body> {
    let secret = cfg.company_webhook.secret.expose().to_string();
    if secret.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "not_configured",
            "set company_webhook.secret to receive company webhooks",
        );
    }
    let given = req
        .headers()
        .get("x-webhook-secret")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !inbound::secret_matches(&secret, &given) {
        metrics::get().signature_failure(Route::CompanyWebhook);
        metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::Unauthorized);
        let admit = state.webhook_refusals.admit(std::time::Instant::now());
        admit.log_suppressed(
            "company webhooks were refused for their secret (counted in turnbridge_company_webhooks_total)",
        );
        if admit.detailed {
            warn!("company webhook refused: missing or wrong X-Webhook-Secret");
        }
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Webhook-Secret",
        );
    }
    let body = match read_body(req, cfg.http.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => {
            metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::TooLarge);
            return resp;
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            metrics::get().company_webhook(CompanyEventType::UNKNOWN, CompanyOutcome::Malformed);
            return error(StatusCode::BAD_REQUEST, "malformed_json", e.to_string());
        }
    };
    let accepted = match inbound::validate(&value) {
        Ok(a) => a,
        Err(inv) => {
            let ty = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            metrics::get().company_webhook(CompanyEventType::of(&ty), CompanyOutcome::Invalid);
            warn!(event_type = %ty, field = %inv.field, "company webhook refused: {}", inv.reason);
            let (rid, detail) = (
                request_id.clone(),
                json!({"type": ty, "field": inv.field, "reason": inv.reason}).to_string(),
            );
            let _ = with_db(&state, move |db| {
                db.conn().execute(
                    "INSERT INTO audit (action, subject, detail, request_id, at) VALUES ('WEBHOOK_REJECTED', ?1, ?2, ?3, ?4)",
                    params![ty, detail, rid, store::now()],
                )?;
                Ok(())
            })
            .await;
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": inv.code, "field": inv.field, "message": inv.reason}),
            );
        }
    };
    let (a, rid) = (accepted.clone(), request_id.clone());
    let stored = with_db(&state, move |db| {
        let tx = db.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO company_events (event_type, business_key, content_md5, payload, request_id, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.event_type, a.key, a.content_md5, a.payload.to_string(), rid, store::now()],
        )?;
        let id: i64 = tx.query_row(
            "SELECT id FROM company_events WHERE event_type = ?1 AND business_key = ?2 AND content_md5 = ?3",
            params![a.event_type, a.key, a.content_md5],
            |r| r.get(0),
        )?;
        let action = if inserted == 1 { "WEBHOOK_RECEIVED" } else { "WEBHOOK_DUPLICATE" };
        tx.execute(
            "INSERT INTO audit (action, subject, detail, request_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![action, format!("{} {}", a.event_type, a.key), json!({"event_id": id}).to_string(), rid, store::now()],
        )?;
        tx.commit()?;
        Ok((inserted == 1, id))
    })
    .await;
    if let (Ok((true, _)), true, "inventory.updated") = (
        &stored,
        cfg.company_webhook.push_inventory_to_nextengine,
        accepted.event_type.as_str(),
    ) {
        push_inventory(&state, &cfg, &accepted.payload, &request_id).await;
    }
    match stored {
        Ok((new, id)) => {
            let outcome = if new {
                CompanyOutcome::Stored
            } else {
                CompanyOutcome::Duplicate
            };
            metrics::get().company_webhook(CompanyEventType::of(&accepted.event_type), outcome);
            let outcome = outcome.as_str();
            info!(event_type = %accepted.event_type, key = %accepted.key, "company webhook {outcome}");
            json_response(
                StatusCode::OK,
                json!({"status": outcome, "id": id, "request_id": request_id}),
            )
        }
        Err(e) => {
            warn!("company webhook could not be stored: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                "the event could not be stored; send it again",
            )
        }
    }
}

fn rows_as_json(conn: &Connection, sql: &str, limit: i64) -> Result<Vec<Value>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let rows = stmt.query_map([limit], |r| {
        let mut o = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(x) => json!(x),
                rusqlite::types::ValueRef::Real(x) => json!(x),
                rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                rusqlite::types::ValueRef::Blob(_) => Value::Null,
            };
            o.insert(n.clone(), v);
        }
        Ok(Value::Object(o))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

async fn monitoring(state: Arc<AppState>, path: String, limit: i64) -> Response<Body> {
    let cfg = state.config();
    let shops: Vec<String> = cfg
        .nextengine
        .shops
        .iter()
        .map(|s| s.store_account.clone())
        .collect();
    let updatestock_path = cfg.nextengine.updatestock_path.clone();
    let result = with_db(&state, move |db| {
        let c = db.conn();
        Ok(match path.as_str() {
            "/api/inventory/updates" => json!({"updates": rows_as_json(c, "SELECT id, store_account, code, stock, ts, request_id, received_at, sink_state FROM stock_updates ORDER BY id DESC LIMIT ?1", limit)?}),
            "/api/inventory/logs" => json!({"logs": rows_as_json(c, "SELECT id, request_id, received_at, remote, store_account, code, stock, ts, outcome, processed, reason FROM inventory_logs ORDER BY id DESC LIMIT ?1", limit)?}),
            "/api/inventory/status" => {
                let count = |sql: &str| -> Result<i64, StoreError> { Ok(c.query_row(sql, [], |r| r.get(0))?) };
                let last = rows_as_json(c, "SELECT store_account, code, stock, ts, received_at FROM stock_updates ORDER BY id DESC LIMIT ?1", 1)?;
                json!({
                    "updatestock_path": updatestock_path,
                    "shops": shops,
                    "accepted": count("SELECT count(*) FROM stock_updates")?,
                    "refused": count("SELECT count(*) FROM inventory_logs WHERE outcome IN ('refused', 'replayed')")?,
                    "requests": count("SELECT count(*) FROM inventory_logs")?,
                    "pending_forward": count("SELECT count(*) FROM stock_updates WHERE sink_state = 'pending'")?,
                    "signature_failures_since_start": metrics::get().signature_failures_on(Route::Updatestock),
                    "last_update": last.into_iter().next(),
                })
            }
            _ => {
                let by_type = rows_as_json(c, "SELECT event_type, count(*) AS stored, max(received_at) AS last_received FROM company_events GROUP BY event_type LIMIT ?1", 100)?;
                let rejected: i64 = c.query_row("SELECT count(*) FROM audit WHERE action = 'WEBHOOK_REJECTED'", [], |r| r.get(0))?;
                let last: Option<String> = c
                    .query_row("SELECT max(at) FROM audit WHERE action LIKE 'WEBHOOK_%'", [], |r| r.get(0))
                    .optional()?
                    .flatten();
                json!({"event_types": inbound::EVENT_TYPES, "stored": by_type, "rejected": rejected, "last_activity": last})
            }
        })
    })
    .await;
    match result {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failed",
            e.to_string(),
        ),
    }
}

async fn metrics_response(state: &Arc<AppState>) -> Response<Body> {
    let store = match with_db(state, |db| StoreGauges::read(db.conn())).await {
        Ok(g) => Some(g),
        Err(e) => {
            warn!("/metrics left out the store's gauges: {e}");
            None
        }
    };
    let mut connections = vec![(Listener::Main, state.table(Role::Main).len())];
    if !state.config().http.monitor_listen.is_empty() {
        connections.push((Listener::Monitor, state.table(Role::Monitor).len()));
    }
    let live = Live { store, connections };
    let mut r = Response::new(Full::new(Bytes::from(metrics::render(&live))));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    r
}

fn filter_from_query(query: Option<&str>) -> (crate::webhook::outbound::Filter, i64) {
    let mut f = crate::webhook::outbound::Filter::default();
    for (k, v) in stock_callback::form_pairs(query.unwrap_or("")) {
        match k.as_str() {
            "endpoint" => f.endpoint = Some(v),
            "since" => f.since = Some(v),
            "until" => f.until = Some(v),
            "state" => f.state = Some(v),
            _ => {}
        }
    }
    (f, query_limit(query))
}

fn json_strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|e| e.as_str().map(str::to_string))
        .collect()
}

/// The webhook registry and DLQ admin API (`/api/v1/...`, Bearer admin token).
async fn admin_webhooks(
    state: Arc<AppState>,
    cfg: Arc<Config>,
    req: Request<Incoming>,
) -> Response<Body> {
    use crate::webhook::outbound as ob;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = if method == Method::POST || method == Method::PATCH {
        match read_body(req, cfg.http.max_body_bytes).await {
            Ok(b) if b.is_empty() => Value::Object(Default::default()),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "malformed_json",
                        "the body must be a JSON object",
                    )
                }
                Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
            },
            Err(resp) => return resp,
        }
    } else {
        Value::Null
    };
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let overlap = cfg.webhooks.secret_overlap_hours;
    let allow_private = cfg.webhooks.allow_private_networks;
    let result = match (method.clone(), parts.as_slice()) {
        (Method::GET, ["webhooks"]) => {
            with_db(&state, |db| {
                Ok(json_response(
                    StatusCode::OK,
                    json!({"webhooks": ob::list_endpoints(db.conn())?}),
                ))
            })
            .await
        }
        (Method::POST, ["webhooks"]) => {
            let url = body
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let events = json_strings(body.get("events")).unwrap_or_default();
            let secret = body
                .get("secret")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let description = body
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string);
            with_db(&state, move |db| {
                Ok(match ob::add_endpoint(db.conn(), &url, &events, secret.as_deref(), description.as_deref(), allow_private)? {
                    Ok((ep, secret)) => {
                        // The URL may carry a token: log its host only.
                        let host = reqwest::Url::parse(&ep.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
                        info!(endpoint = %ep.id, host = %host, "webhook endpoint registered");
                        let mut v = json!(ep);
                        v["secret"] = json!(secret);
                        json_response(StatusCode::CREATED, v)
                    }
                    Err(inv) => json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"code": "invalid_webhook", "field": inv.field, "message": inv.reason})),
                })
            })
            .await
        }
        (Method::PATCH, ["webhooks", id]) => {
            let id = id.to_string();
            let u = ob::Update {
                url: body.get("url").and_then(Value::as_str).map(str::to_string),
                events: json_strings(body.get("events")),
                description: body
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                enabled: body.get("enabled").and_then(Value::as_bool),
                rotate_secret: body
                    .get("rotate_secret")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            with_db(&state, move |db| {
                Ok(match ob::update_endpoint(db.conn_mut(), &id, &u, overlap, allow_private)? {
                    Ok(Some((ep, secret))) => {
                        let mut v = json!(ep);
                        if let Some(s) = secret {
                            v["secret"] = json!(s);
                        }
                        json_response(StatusCode::OK, v)
                    }
                    Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such webhook"),
                    Err(inv) => json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"code": "invalid_webhook", "field": inv.field, "message": inv.reason})),
                })
            })
            .await
        }
        (Method::DELETE, ["webhooks", id]) => {
            let id = id.to_string();
            with_db(&state, move |db| {
                Ok(if ob::remove_endpoint(db.conn_mut(), &id)? {
                    json_response(StatusCode::OK, json!({"deleted": id}))
                } else {
                    error(StatusCode::NOT_FOUND, "not_found", "no such webhook")
                })
            })
            .await
        }
        (Method::GET, ["deliveries"]) => {
            let (f, limit) = filter_from_query(query.as_deref());
            with_db(&state, move |db| {
                Ok(json_response(
                    StatusCode::OK,
                    json!({"deliveries": ob::list_deliveries(db.conn(), &f, limit)?}),
                ))
            })
            .await
        }
        (Method::GET, ["deliveries", id]) => {
            let id = id.to_string();
            with_db(&state, move |db| {
                let f = ob::Filter {
                    ids: vec![id.clone()],
                    ..Default::default()
                };
                let mut rows = Vec::new();
                for st in ["pending", "succeeded", "dead", "cancelled"] {
                    let f = ob::Filter {
                        state: Some(st.into()),
                        ..f.clone()
                    };
                    rows.extend(ob::list_deliveries(db.conn(), &f, 100_000)?);
                }
                Ok(match rows.into_iter().next() {
                    Some(d) => json_response(
                        StatusCode::OK,
                        json!({"delivery": d, "attempts": ob::attempts(db.conn(), &id)?}),
                    ),
                    None => error(StatusCode::NOT_FOUND, "not_found", "no such delivery"),
                })
            })
            .await
        }
        (Method::POST, ["deliveries", id, "resend"]) => {
            let f = ob::Filter {
                ids: vec![id.to_string()],
                ..Default::default()
            };
            with_db(&state, move |db| {
                let ids = ob::resend(db.conn_mut(), &f)?;
                Ok(if ids.is_empty() {
                    error(
                        StatusCode::CONFLICT,
                        "not_dead",
                        "no dead delivery with this id",
                    )
                } else {
                    json_response(StatusCode::ACCEPTED, json!({"resent": ids}))
                })
            })
            .await
        }
        (Method::POST, ["dlq", "resend"]) => {
            let ids = match body.get("ids") {
                None => Some(Vec::new()),
                Some(v) => json_strings(Some(v)),
            };
            let Some(ids) = ids else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_filter",
                    "ids must be a list of delivery ids",
                );
            };
            let mut times = [None, None];
            for (i, key) in ["since", "until"].into_iter().enumerate() {
                if let Some(v) = body.get(key) {
                    match v.as_str().and_then(ob::normalise_time) {
                        Some(t) => times[i] = Some(t),
                        None => {
                            return error(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "invalid_filter",
                                format!("{key} must be an RFC 3339 time"),
                            )
                        }
                    }
                }
            }
            let endpoint = match body.get("endpoint") {
                None => None,
                Some(Value::String(e)) if !e.is_empty() => Some(e.clone()),
                Some(_) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_filter",
                        "endpoint must be an endpoint id",
                    )
                }
            };
            let all = body.get("all").and_then(Value::as_bool).unwrap_or(false);
            let named = !ids.is_empty() || endpoint.is_some() || times.iter().any(Option::is_some);
            if !all && !named {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_filter",
                    "name ids, an endpoint or a time range, or set \"all\": true",
                );
            }
            let [since, until] = times;
            let f = ob::Filter {
                ids,
                endpoint,
                since,
                until,
                state: None,
            };
            with_db(&state, move |db| {
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    json!({"resent": ob::resend(db.conn_mut(), &f)?}),
                ))
            })
            .await
        }
        _ => Ok(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )),
    };
    result.unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failed",
            e.to_string(),
        )
    })
}

/// Hands an `inventory.updated` level to the NextEngine stock spool, unless NextEngine itself
/// reported that very level for the code last (then pushing it would only echo it back).
async fn push_inventory(state: &Arc<AppState>, cfg: &Config, payload: &Value, request_id: &str) {
    let inv = &payload["inventory"];
    let code = match &inv["productId"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    let Some(level) = inv["quantity"]
        .as_f64()
        .filter(|q| q.fract() == 0.0 && *q >= 0.0)
        .map(|q| q as i64)
    else {
        warn!(code = %code, "inventory level is not a whole number of 0 or more; not pushed to NextEngine");
        return;
    };
    let c = code.clone();
    let last_from_ne: Option<Option<i64>> = with_db(state, move |db| {
        Ok(db
            .conn()
            .query_row(
                "SELECT stock FROM stock_updates WHERE code = ?1 ORDER BY id DESC LIMIT 1",
                [c],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?)
    })
    .await
    .unwrap_or(None);
    if last_from_ne == Some(Some(level)) {
        info!(code = %code, level, "inventory level is the one NextEngine sent; not echoed back");
        return;
    }
    let dir = cfg.paths.spool.join("nextengine/stock");
    let file = dir.join(format!("company-{request_id}.csv"));
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(["syohin_code", "stock"]);
    let _ = w.write_record([code.as_str(), &level.to_string()]);
    let bytes = w.into_inner().unwrap_or_default();
    let written = crate::durable::create_dir_all(&dir)
        .and_then(|_| crate::durable::write_atomic(&file, &bytes));
    match written {
        Ok(()) => info!(code = %code, level, "inventory level queued for NextEngine"),
        Err(e) => warn!(code = %code, "inventory level could not be queued for NextEngine: {e}"),
    }
}
