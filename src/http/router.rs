//! The route table, written once: which paths exist, which methods each takes, who may call
//! it, on which listening address, and the name it is counted under in metrics.
//!
//! Routing answers before any handler runs: an unknown path is 404 `not_found`; a known path
//! asked with another method is 405 `method_not_allowed` with `Allow` listing the methods it
//! takes (admin routes included, token or not); an admin route then needs the admin token
//! before its body is read. Paths are matched by `matchit` (the router axum uses); the stock
//! callback's path comes from the live config and is matched exactly, before the table.
//!
//! `matchit` with the hyper stack rather than axum: the listener owns each connection
//! (admission, deadlines, [`crate::listener::GuardedIo`]) and hands hyper one service; what
//! axum would add over this table (tower layers, extractor rejections to map onto
//! [`ApiError`]) is more than the table itself.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::error::{ApiError, Body, ErrorCode};
use super::{admin, auth, company, monitoring, request, stock, AppState, Role};
use crate::config::Config;
use crate::metrics::labels::Route;

/// What a handler gets: the request and everything around it.
pub struct Call {
    pub state: Arc<AppState>,
    pub cfg: Arc<Config>,
    pub req: Request<Incoming>,
    /// The path's `{name}` segments, as sent (not percent-decoded).
    params: Params,
    pub remote: SocketAddr,
    pub request_id: String,
}

impl Call {
    /// The path segment `{name}` of the route (empty when the route has none).
    pub fn param(&self, name: &str) -> String {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

pub type Answer = Result<Response<Body>, ApiError>;
/// A route's path parameters: (`{name}`, segment).
type Params = Vec<(&'static str, String)>;
type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;
pub type Handler = fn(Call) -> Pending;

/// A handler `async fn(Call) -> Answer` as a table entry.
macro_rules! h {
    ($f:path) => {
        (|c: Call| -> Pending { Box::pin($f(c)) }) as Handler
    };
}

/// Where a route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The main address only.
    Main,
    /// `http.monitor_listen` when it is set, else the main address.
    Monitoring,
}

/// Who may call a route. Routes with a secret of their own (the stock callback's `.sig`, the
/// company webhook's secret, the sign-in's ticket, nonce or admin token) check it themselves,
/// still before reading a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    Admin,
}

/// The stock callback's entry: its path is `nextengine.updatestock_path`.
const STOCK_CALLBACK: &str = "";

/// One route: its path pattern (`{id}` for a segment), the name it is counted under, where
/// it is served, who may call it, and a handler per method.
struct Entry {
    path: &'static str,
    name: Route,
    place: Place,
    access: Access,
    methods: Vec<(Method, Handler)>,
}

fn route(
    path: &'static str,
    name: Route,
    place: Place,
    access: Access,
    methods: Vec<(Method, Handler)>,
) -> Entry {
    Entry {
        path,
        name,
        place,
        access,
        methods,
    }
}

/// Every route the listener has.
fn table() -> Vec<Entry> {
    use Access::{Admin, Open};
    use Method as M;
    use Place::{Main, Monitoring};
    use Route as N;
    vec![
        // Alive means 200; the problems it lists need the admin token.
        route(
            "/healthz",
            N::Healthz,
            Monitoring,
            Open,
            vec![(M::GET, h!(monitoring::healthz))],
        ),
        route(
            "/metrics",
            N::Metrics,
            Monitoring,
            Open,
            vec![(M::GET, h!(monitoring::metrics))],
        ),
        route(
            STOCK_CALLBACK,
            N::Updatestock,
            Main,
            Open,
            vec![(M::GET, h!(stock::updatestock))],
        ),
        route(
            "/auth/ne",
            N::Auth,
            Main,
            Open,
            vec![(M::GET, h!(auth::start))],
        ),
        route(
            "/auth/callback",
            N::Auth,
            Main,
            Open,
            vec![(M::GET, h!(auth::callback))],
        ),
        route(
            "/api/sync/company/webhook",
            N::CompanyWebhook,
            Main,
            Open,
            vec![(M::POST, h!(company::receive))],
        ),
        route(
            "/api/inventory/status",
            N::Monitoring,
            Main,
            Admin,
            vec![(M::GET, h!(monitoring::inventory_status))],
        ),
        route(
            "/api/inventory/updates",
            N::Monitoring,
            Main,
            Admin,
            vec![(M::GET, h!(monitoring::inventory_updates))],
        ),
        route(
            "/api/inventory/logs",
            N::Monitoring,
            Main,
            Admin,
            vec![(M::GET, h!(monitoring::inventory_logs))],
        ),
        route(
            "/api/webhook/status",
            N::Monitoring,
            Main,
            Admin,
            vec![(M::GET, h!(monitoring::webhook_status))],
        ),
        route(
            "/api/v1/webhooks",
            N::Admin,
            Main,
            Admin,
            vec![
                (M::GET, h!(admin::list_webhooks)),
                (M::POST, h!(admin::add_webhook)),
            ],
        ),
        route(
            "/api/v1/webhooks/{id}",
            N::Admin,
            Main,
            Admin,
            vec![
                (M::PATCH, h!(admin::update_webhook)),
                (M::DELETE, h!(admin::remove_webhook)),
            ],
        ),
        route(
            "/api/v1/deliveries",
            N::Admin,
            Main,
            Admin,
            vec![(M::GET, h!(admin::list_deliveries))],
        ),
        route(
            "/api/v1/deliveries/{id}",
            N::Admin,
            Main,
            Admin,
            vec![(M::GET, h!(admin::delivery))],
        ),
        route(
            "/api/v1/deliveries/{id}/resend",
            N::Admin,
            Main,
            Admin,
            vec![(M::POST, h!(admin::resend_delivery))],
        ),
        route(
            "/api/v1/dlq/resend",
            N::Admin,
            Main,
            Admin,
            vec![(M::POST, h!(admin::resend_dead))],
        ),
    ]
}

/// The table and its path index, built once.
struct Router {
    routes: Vec<Entry>,
    paths: matchit::Router<usize>,
    stock: usize,
}

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    let routes = table();
    let mut paths = matchit::Router::new();
    let mut stock = usize::MAX;
    for (i, r) in routes.iter().enumerate() {
        if r.path == STOCK_CALLBACK {
            stock = i;
        } else {
            paths
                .insert(r.path, i)
                .unwrap_or_else(|e| panic!("route table: {}: {e}", r.path));
        }
    }
    assert!(stock != usize::MAX, "route table: no stock callback");
    Router {
        routes,
        paths,
        stock,
    }
});

/// Whether `path` is one of the table's own paths (the stock callback's path may not be).
pub fn is_fixed_path(path: &str) -> bool {
    ROUTER.paths.at(path).is_ok()
}

/// What routing decided for a request: the name it is counted under, and the handler to run
/// or the error to answer.
pub struct Resolved {
    pub name: Route,
    access: Access,
    outcome: Result<(Handler, Params), ApiError>,
}

/// Finds the route of a request on the listener of `role`, checking its method.
pub fn resolve(cfg: &Config, role: Role, method: &Method, path: &str) -> Resolved {
    let r = &*ROUTER;
    let found = if path == cfg.nextengine.updatestock_path {
        Some((&r.routes[r.stock], Vec::new()))
    } else {
        r.paths.at(path).ok().map(|m| {
            let params = m
                .params
                .iter()
                .map(|(k, v)| (param_name(&r.routes[*m.value], k), v.to_string()))
                .collect();
            (&r.routes[*m.value], params)
        })
    };
    let monitor_apart = !cfg.http.monitor_listen.is_empty();
    let here = |route: &Entry| match (role, route.place) {
        (Role::Monitor, Place::Monitoring) => true,
        (Role::Monitor, Place::Main) => false,
        (Role::Main, Place::Monitoring) => !monitor_apart,
        (Role::Main, Place::Main) => true,
    };
    let Some((route, params)) = found.filter(|(route, _)| here(route)) else {
        let message = if role == Role::Monitor {
            "this address serves /healthz and /metrics only".to_string()
        } else {
            format!("no route for {path}")
        };
        return Resolved {
            name: Route::Other,
            access: Access::Open,
            outcome: Err(ApiError::new(ErrorCode::NotFound, message)),
        };
    };
    let outcome = match route.methods.iter().find(|(m, _)| m == method) {
        Some((_, handler)) => Ok((*handler, params)),
        None => {
            let allowed: Vec<Method> = route.methods.iter().map(|(m, _)| m.clone()).collect();
            Err(ApiError::method_not_allowed(method, &allowed))
        }
    };
    Resolved {
        name: route.name,
        access: route.access,
        outcome,
    }
}

/// The `'static` name of a route's path parameter (matchit lends it for the match only).
fn param_name(route: &Entry, key: &str) -> &'static str {
    route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .find(|name| *name == key)
        .unwrap_or("")
}

impl Resolved {
    /// Runs the request: the admin check first where the route needs it, then its handler.
    pub async fn run(
        self,
        state: Arc<AppState>,
        cfg: Arc<Config>,
        req: Request<Incoming>,
        remote: SocketAddr,
        request_id: String,
    ) -> Answer {
        let (handler, params) = self.outcome?;
        if self.access == Access::Admin {
            request::require_admin(&cfg, &req)?;
        }
        handler(Call {
            state,
            cfg,
            req,
            params,
            remote,
            request_id,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(monitor: &str) -> Config {
        let mut c = Config::default();
        c.http.monitor_listen = monitor.into();
        c
    }

    fn allow(r: Resolved) -> (u16, Option<String>) {
        match r.outcome {
            Ok(_) => (200, None),
            Err(e) => {
                let resp = e.into_response();
                let allow = resp
                    .headers()
                    .get(hyper::header::ALLOW)
                    .map(|v| v.to_str().unwrap().to_string());
                (resp.status().as_u16(), allow)
            }
        }
    }

    #[test]
    fn every_route_answers_its_methods_and_405s_the_others_with_allow() {
        let c = cfg("");
        for route in &ROUTER.routes {
            let path = if route.path == STOCK_CALLBACK {
                c.nextengine.updatestock_path.clone()
            } else {
                route.path.replace("{id}", "d-1")
            };
            let methods: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
            for (m, _) in &route.methods {
                let r = resolve(&c, Role::Main, m, &path);
                assert_eq!(r.name, route.name, "{path}");
                assert_eq!(allow(r), (200, None), "{m} {path}");
            }
            let r = resolve(&c, Role::Main, &Method::PUT, &path);
            assert_eq!(allow(r), (405, Some(methods.join(", "))), "PUT {path}");
        }
    }

    #[test]
    fn unknown_paths_are_404_and_path_segments_reach_the_handler() {
        let c = cfg("");
        for path in [
            "/nope",
            "/api/v1/webhooks/",
            "/api/v1/webhooks/a/b",
            "/api/v1",
        ] {
            let r = resolve(&c, Role::Main, &Method::GET, path);
            assert_eq!((r.name, allow(r).0), (Route::Other, 404), "{path}");
        }
        let r = resolve(
            &c,
            Role::Main,
            &Method::POST,
            "/api/v1/deliveries/d%2F1/resend",
        );
        let (_, params) = r.outcome.unwrap();
        assert_eq!(params, vec![("id", "d%2F1".to_string())]);
    }

    #[test]
    fn a_monitor_address_serves_health_and_metrics_and_takes_them_off_the_main_one() {
        let apart = cfg("127.0.0.1:0");
        assert_eq!(
            allow(resolve(&apart, Role::Monitor, &Method::GET, "/healthz")).0,
            200
        );
        assert_eq!(
            allow(resolve(&apart, Role::Main, &Method::GET, "/healthz")).0,
            404
        );
        assert_eq!(
            allow(resolve(
                &apart,
                Role::Monitor,
                &Method::GET,
                "/api/v1/webhooks"
            ))
            .0,
            404
        );
        let together = cfg("");
        assert_eq!(
            allow(resolve(&together, Role::Main, &Method::GET, "/metrics")).0,
            200
        );
    }

    #[test]
    fn the_stock_callback_follows_the_configured_path() {
        let mut c = cfg("");
        c.nextengine.updatestock_path = "/ne/stock".into();
        let r = resolve(&c, Role::Main, &Method::GET, "/ne/stock");
        assert_eq!(r.name, Route::Updatestock);
        let r = resolve(&c, Role::Main, &Method::POST, "/ne/stock");
        assert_eq!(allow(r), (405, Some("GET".into())));
        let r = resolve(&c, Role::Main, &Method::GET, "/UpdateStock.php");
        assert_eq!(r.name, Route::Other);
        assert!(is_fixed_path("/api/v1/webhooks/x") && !is_fixed_path("/ne/stock"));
    }

    #[test]
    fn admin_routes_are_the_monitoring_and_admin_groups() {
        for r in &ROUTER.routes {
            let admin = matches!(r.name, Route::Monitoring | Route::Admin);
            assert_eq!(r.access == Access::Admin, admin, "{}", r.path);
        }
    }
}
