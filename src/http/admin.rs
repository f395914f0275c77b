//! The webhook registry and dead-letter queue admin API (`/api/v1/...`, admin token): the
//! same operations as `turnbridge webhooks` and `turnbridge dlq`, on the same
//! delivery [`Filter`]. Bodies are typed: a field of the wrong type, or a key the route does
//! not know, is 422 naming it.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::error::{json_response, ApiError, ErrorCode};
use super::monitoring::listing_limit;
use super::router::{Answer, Call};
use super::{request, with_db};
use crate::store::deliveries::{self, DeliveryState};
use crate::store::{endpoints, Timestamp};
use crate::webhook::filter::{self, Filter};
use crate::webhook::outbound as ob;

/// `POST /api/v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    #[serde(default)]
    url: String,
    #[serde(default)]
    events: Vec<String>,
    /// At least 24 characters; a random `whsec_` secret when absent or empty.
    secret: Option<String>,
    description: Option<String>,
}

/// `PATCH /api/v1/webhooks/{id}`: what is absent stays as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookChange {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
    #[serde(default)]
    rotate_secret: bool,
}

/// `GET /api/v1/deliveries?state=&endpoint=&since=&until=&limit=`.
#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    endpoint: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    state: Option<DeliveryState>,
    limit: Option<i64>,
}

/// `POST /api/v1/dlq/resend`: dead deliveries by id, endpoint or time, or `"all": true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    #[serde(default)]
    ids: Vec<String>,
    endpoint: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    #[serde(default)]
    all: bool,
}

fn invalid(inv: ob::Invalid) -> ApiError {
    ApiError::new(ErrorCode::InvalidWebhook, inv.reason).with_field(inv.field)
}

fn no_such(what: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
}

/// `GET /api/v1/webhooks`: endpoints, never their secrets.
pub async fn list_webhooks(c: Call) -> Answer {
    let list = with_db(&c.state, |db| endpoints::list(db)).await?;
    Ok(json_response(StatusCode::OK, json!({"webhooks": list})))
}

/// `POST /api/v1/webhooks`: 201 with the endpoint and its secret (shown this once).
pub async fn add_webhook(c: Call) -> Answer {
    let allow_private = c.cfg.webhooks.allow_private_networks;
    let new: NewWebhook =
        request::json_body(c.req, c.cfg.http.max_body_bytes, ErrorCode::InvalidWebhook).await?;
    let secret = new.secret.filter(|s| !s.is_empty());
    let added = with_db(&c.state, move |db| {
        ob::add_endpoint(
            db,
            &new.url,
            &new.events,
            secret.as_deref(),
            new.description.as_deref(),
            allow_private,
        )
    })
    .await?;
    let (ep, secret) = added.map_err(invalid)?;
    // The URL may carry a token: log its host only.
    let host = reqwest::Url::parse(&ep.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    info!(endpoint = %ep.id, host = %host, "webhook endpoint registered");
    let mut v = json!(ep);
    v["secret"] = json!(secret);
    Ok(json_response(StatusCode::CREATED, v))
}

/// `PATCH /api/v1/webhooks/{id}`: the endpoint (and its new secret when rotated).
pub async fn update_webhook(c: Call) -> Answer {
    let id = c.param("id");
    let (overlap, allow_private) = (
        c.cfg.webhooks.secret_overlap_hours,
        c.cfg.webhooks.allow_private_networks,
    );
    let change: WebhookChange =
        request::json_body(c.req, c.cfg.http.max_body_bytes, ErrorCode::InvalidWebhook).await?;
    let u = ob::Update {
        url: change.url,
        events: change.events,
        description: change.description,
        enabled: change.enabled,
        rotate_secret: change.rotate_secret,
    };
    let updated = with_db(&c.state, move |db| {
        ob::update_endpoint(db, &id, &u, overlap, allow_private)
    })
    .await?;
    let (ep, secret) = updated
        .map_err(invalid)?
        .ok_or_else(|| no_such("webhook"))?;
    let mut v = json!(ep);
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    Ok(json_response(StatusCode::OK, v))
}

/// `DELETE /api/v1/webhooks/{id}`: removes it; its pending deliveries are cancelled.
pub async fn remove_webhook(c: Call) -> Answer {
    let id = c.param("id");
    let i = id.clone();
    if with_db(&c.state, move |db| ob::remove_endpoint(db, &i)).await? {
        Ok(json_response(StatusCode::OK, json!({"deleted": id})))
    } else {
        Err(no_such("webhook"))
    }
}

/// `GET /api/v1/deliveries`: deliveries (dead ones unless `state` names another). A time or
/// state that is not one is refused (422 `invalid_filter` naming it), never read as no
/// filter.
pub async fn list_deliveries(c: Call) -> Answer {
    let q: DeliveriesQuery = request::query_as(&c.req, ErrorCode::InvalidFilter)?;
    let limit = listing_limit(q.limit);
    let f = Filter {
        ids: Vec::new(),
        endpoint: q.endpoint,
        since: q.since,
        until: q.until,
        state: Some(q.state.unwrap_or(DeliveryState::Dead)),
    };
    let rows = with_db(&c.state, move |db| deliveries::list(db, &f, limit)).await?;
    Ok(json_response(StatusCode::OK, json!({"deliveries": rows})))
}

/// `GET /api/v1/deliveries/{id}`: one delivery with every attempt.
pub async fn delivery(c: Call) -> Answer {
    let id = c.param("id");
    let found = with_db(&c.state, move |db| {
        Ok(match deliveries::get(db, &id)? {
            Some(d) => Some((d, deliveries::attempts(db, &id)?)),
            None => None,
        })
    })
    .await?;
    let (d, attempts) = found.ok_or_else(|| no_such("delivery"))?;
    Ok(json_response(
        StatusCode::OK,
        json!({"delivery": d, "attempts": attempts}),
    ))
}

/// `POST /api/v1/deliveries/{id}/resend`: that dead delivery, queued again (202), or 409.
pub async fn resend_delivery(c: Call) -> Answer {
    let f = Filter {
        ids: vec![c.param("id")],
        ..Default::default()
    };
    let ids = with_db(&c.state, move |db| ob::resend(db, &f)).await?;
    if ids.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotDead,
            "no dead delivery with this id",
        ));
    }
    Ok(json_response(StatusCode::ACCEPTED, json!({"resent": ids})))
}

/// `POST /api/v1/dlq/resend`: the dead deliveries the body names, queued again (202).
pub async fn resend_dead(c: Call) -> Answer {
    let r: Resend =
        request::json_body(c.req, c.cfg.http.max_body_bytes, ErrorCode::InvalidFilter).await?;
    if r.endpoint.as_deref() == Some("") {
        return Err(
            ApiError::new(ErrorCode::InvalidFilter, "endpoint must be an endpoint id")
                .with_field("endpoint"),
        );
    }
    let f = Filter {
        ids: r.ids,
        endpoint: r.endpoint,
        since: r.since,
        until: r.until,
        state: None,
    };
    let f = filter::for_resend(f, r.all).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidFilter,
            "name ids, an endpoint or a time range, or set \"all\": true",
        )
    })?;
    let ids = with_db(&c.state, move |db| ob::resend(db, &f)).await?;
    Ok(json_response(StatusCode::ACCEPTED, json!({"resent": ids})))
}

#[cfg(test)]
mod tests {
    use super::super::request::{json_object, query_str, query_str_as};
    use super::*;

    #[test]
    fn the_deliveries_query_reads_offsets_and_the_limit() {
        let q: DeliveriesQuery =
            query_str("since=2026-12-01T08:00:00%2B08:00&state=dead&limit=5000").unwrap();
        assert_eq!(q.since.unwrap().to_string(), "2026-12-01T00:00:00.000Z");
        assert_eq!(q.state, Some(DeliveryState::Dead));
        assert_eq!(listing_limit(q.limit), 1000);
        let q: DeliveriesQuery = query_str("").unwrap();
        assert_eq!(listing_limit(q.limit), 50);
        let e = query_str::<DeliveriesQuery>("limit=ten").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidQuery, Some("limit"))
        );
        for (bad, field) in [("since=yesterday", "since"), ("state=lost", "state")] {
            let e = query_str_as::<DeliveriesQuery>(bad, ErrorCode::InvalidFilter).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref(), e.code.status().as_u16()),
                (ErrorCode::InvalidFilter, Some(field), 422),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_resend_body_is_typed_and_unknown_keys_are_refused() {
        let r: Resend = json_object(
            br#"{"ids": ["d1"], "until": "2026-12-01T08:00:00+08:00"}"#,
            ErrorCode::InvalidFilter,
        )
        .unwrap();
        assert_eq!(r.until.unwrap().to_string(), "2026-12-01T00:00:00.000Z");
        let e = json_object::<Resend>(br#"{"since": "last week"}"#, ErrorCode::InvalidFilter)
            .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidFilter, Some("since"))
        );
        let e = json_object::<Resend>(
            br#"{"sinse": "2026-12-01T00:00:00Z", "all": true}"#,
            ErrorCode::InvalidFilter,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidFilter, Some("sinse"))
        );
        assert!(e.message.contains("unknown field `sinse`"), "{}", e.message);
        let e = json_object::<WebhookChange>(br#"{"enabled": "yes"}"#, ErrorCode::InvalidWebhook)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("enabled"));
    }
}
