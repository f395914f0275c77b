//! The embedded listener: one hyper server (plus, optionally, a second address for
//! `/healthz` and `/metrics`).
//!
//! The routes, who may call them and where they are served are in [`router`]'s table; each
//! group has its module: [`stock`] (NextEngine's stock callback), [`auth`] (the NextEngine
//! sign-in), [`company`] (company-system pushes), [`admin`] (webhook endpoints and
//! deliveries), [`monitoring`] (`/healthz`, `/metrics` and the read-only status routes).
//!
//! Every request gets an id (`X-Request-Id`, and `request_id` in every log line of it), a
//! deadline (`http.request_timeout_ms`), a header size cap (431 beyond), and a body cap
//! (413). Errors are JSON with a stable `code` ([`error::ErrorCode`]). A request is answered
//! only after what it changed is committed. Which connections are held, and when one that
//! stalls is closed, is [`crate::listener`]'s part.

mod admin;
mod auth;
mod company;
pub mod error;
mod monitoring;
mod request;
pub mod router;
mod stock;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, trace, warn, Instrument};

use crate::config::Config;
use crate::listener::{self, Close, GuardedIo, Limits, Table};
use crate::metrics;
use crate::metrics::labels::Route;
use crate::nextengine::stock_callback::{self, StockQuery};
use crate::store::{self, Store, StoreError};
use error::{ApiError, Body, ErrorCode};

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

/// What the handlers share: the live config (a reload reaches it at once) and one store
/// connection.
pub struct AppState {
    config: watch::Receiver<Arc<Config>>,
    db: store::Shared,
    nextengine: Arc<crate::nextengine::client::Client>,
    /// Bounds what refused stock callbacks (rows, log lines) and refused NextEngine sign-in
    /// links and callbacks (log lines) cost.
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
        self.config.borrow().clone()
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

/// The bound listener: its addresses, and one accept loop per address for the caller to run.
pub struct Server {
    pub addrs: Vec<SocketAddr>,
    pub loops: Vec<AcceptLoop>,
}

/// One bound address and what serves it.
pub struct AcceptLoop {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    role: Role,
    state: Arc<AppState>,
}

impl AcceptLoop {
    /// Serves until `stop` turns true, then stops accepting and lets the requests in flight
    /// finish.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        accept_loop(self.listener, self.role, self.state, stop).await
    }
}

/// Binds the configured addresses (read from the live `config`; they change at a restart).
/// Returns `None` when `http.listen` is empty.
pub async fn start(
    config: watch::Receiver<Arc<Config>>,
    nextengine: Arc<crate::nextengine::client::Client>,
) -> Result<Option<Server>, HttpError> {
    let now = config.borrow().clone();
    if now.http.listen.is_empty() {
        return Ok(None);
    }
    listener::check_open_file_limit(&now);
    let database = now.database();
    let db = tokio::task::spawn_blocking(move || Store::open(&database))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let state = Arc::new(AppState {
        config,
        db: store::Shared::new(db),
        nextengine,
        refusals: Default::default(),
        webhook_refusals: Default::default(),
        main_conns: Default::default(),
        monitor_conns: Default::default(),
        pressure_warned: Default::default(),
    });
    let mut addrs = Vec::new();
    let mut loops = Vec::new();
    let mut listeners = vec![(now.http.listen.clone(), Role::Main)];
    if !now.http.monitor_listen.is_empty() {
        listeners.push((now.http.monitor_listen.clone(), Role::Monitor));
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
        loops.push(AcceptLoop {
            addr: local,
            listener,
            role,
            state: state.clone(),
        });
    }
    Ok(Some(Server { addrs, loops }))
}

/// Which listening address a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
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

async fn handle(
    state: Arc<AppState>,
    role: Role,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let cfg = state.config();
    let resolved = router::resolve(&cfg, role, req.method(), req.uri().path());
    let route = resolved.name;
    let query = req.uri().query().unwrap_or("").to_string();
    let span = tracing::info_span!("http", request_id = %request_id, method = %req.method(), path = %req.uri().path(), remote = %remote);
    let started = Instant::now();
    let deadline = Duration::from_millis(cfg.http.request_timeout_ms);
    let mut resp = match tokio::time::timeout(
        deadline,
        resolved
            .run(state, cfg.clone(), req, remote, request_id.clone())
            .instrument(span.clone()),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        // NextEngine reads XML: it gets the internal-error reply (-3) in its own format.
        Err(_) if route == Route::Updatestock => stock::xml_response(
            StatusCode::SERVICE_UNAVAILABLE,
            stock_callback::reply(&StockQuery::parse(&query), -3),
        ),
        Err(_) => ApiError::new(ErrorCode::Timeout, "the request was not completed in time")
            .into_response(),
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

/// Runs a store operation off the async threads.
async fn with_db<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    state.db.run(f).await
}
