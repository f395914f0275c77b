//! The one error every JSON route answers with.
//!
//! The body is `{"code": "...", "message": "..."}` (plus `"field"` when one field is at
//! fault). `code` is stable and machine-readable ([`ErrorCode`]); `message` is for people
//! and may change. The HTTP status follows from the code.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::store::StoreError;

pub(super) type Body = Full<Bytes>;

/// Every error code the listener answers with; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No route for the path, or no such webhook / delivery (404).
    NotFound,
    /// The path exists but not for this method; `Allow` lists the ones it takes (405).
    MethodNotAllowed,
    /// A missing or wrong `Authorization: Bearer` token or `X-Webhook-Secret` (401).
    Unauthorized,
    /// `http.admin_token` is not set, so the admin routes are off (403).
    AdminDisabled,
    /// The feature the route serves is not configured (company webhook secret, NextEngine
    /// client id) (404).
    NotConfigured,
    /// The body is over `http.max_body_bytes` (413).
    BodyTooLarge,
    /// The body could not be read (the client broke off, bad chunking) (400).
    BodyUnreadable,
    /// The body is not JSON, or not a JSON object (400).
    MalformedJson,
    /// A query parameter does not parse (a `limit` that is not a number, a `since` that is
    /// not an RFC 3339 time) (400).
    InvalidQuery,
    /// The NextEngine callback lacks `uid` or `state` (400).
    MissingParameters,
    /// A company webhook whose fields are wrong; `field` names the one (422).
    InvalidPayload,
    /// A company webhook of a type turnbridge does not take (422).
    UnknownEventType,
    /// A webhook registration or change that cannot be accepted; `field` names why (422).
    InvalidWebhook,
    /// A resend that names nothing, or names it wrongly (422).
    InvalidFilter,
    /// The delivery named is not in the dead-letter queue (409).
    NotDead,
    /// A NextEngine callback from a browser that has no open sign-in: none started there,
    /// or it was used, or it is older than its window (403).
    NoLoginStarted,
    /// A sign-in link from `turnbridge nextengine login` that is used, expired or unknown (403).
    InvalidLoginTicket,
    /// NextEngine refused the sign-in or could not be reached (502).
    NextengineLoginFailed,
    /// The store failed while answering (500).
    StoreFailed,
    /// The store could not record a sign-in (503).
    StoreUnavailable,
    /// The request was not answered within `http.request_timeout_ms` (408).
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::AdminDisabled => "admin_disabled",
            ErrorCode::NotConfigured => "not_configured",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BodyUnreadable => "body_unreadable",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::MissingParameters => "missing_parameters",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::UnknownEventType => "unknown_event_type",
            ErrorCode::InvalidWebhook => "invalid_webhook",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::NotDead => "not_dead",
            ErrorCode::NoLoginStarted => "no_login_started",
            ErrorCode::InvalidLoginTicket => "invalid_login_ticket",
            ErrorCode::NextengineLoginFailed => "nextengine_login_failed",
            ErrorCode::StoreFailed => "store_failed",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Timeout => "timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotFound | ErrorCode::NotConfigured => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::AdminDisabled
            | ErrorCode::NoLoginStarted
            | ErrorCode::InvalidLoginTicket => StatusCode::FORBIDDEN,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyUnreadable
            | ErrorCode::MalformedJson
            | ErrorCode::InvalidQuery
            | ErrorCode::MissingParameters => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidPayload
            | ErrorCode::UnknownEventType
            | ErrorCode::InvalidWebhook
            | ErrorCode::InvalidFilter => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotDead => StatusCode::CONFLICT,
            ErrorCode::NextengineLoginFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::StoreFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Every code, for the tests that keep this list and its documentation in step.
    #[cfg(test)]
    pub(super) const ALL: [ErrorCode; 21] = [
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::AdminDisabled,
        ErrorCode::NotConfigured,
        ErrorCode::BodyTooLarge,
        ErrorCode::BodyUnreadable,
        ErrorCode::MalformedJson,
        ErrorCode::InvalidQuery,
        ErrorCode::MissingParameters,
        ErrorCode::InvalidPayload,
        ErrorCode::UnknownEventType,
        ErrorCode::InvalidWebhook,
        ErrorCode::InvalidFilter,
        ErrorCode::NotDead,
        ErrorCode::NoLoginStarted,
        ErrorCode::InvalidLoginTicket,
        ErrorCode::NextengineLoginFailed,
        ErrorCode::StoreFailed,
        ErrorCode::StoreUnavailable,
        ErrorCode::Timeout,
    ];
}

/// An error answer: its code, a message for people, and what else it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The field at fault (422s).
    pub field: Option<String>,
    /// The methods the path takes (405s).
    allow: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            allow: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// A 405 for a path that takes only `allowed`.
    pub fn method_not_allowed(method: &hyper::Method, allowed: &[hyper::Method]) -> ApiError {
        let list = allowed
            .iter()
            .map(hyper::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        ApiError {
            allow: Some(list.clone()),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not allowed here; use {list}"),
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        let mut r = json_response(self.code.status(), body);
        if let Some(v) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            r.headers_mut().insert(ALLOW, v);
        }
        r
    }
}

/// A store failure while answering: 500, with what failed.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(ErrorCode::StoreFailed, e.to_string())
    }
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_errors_map_to_4xx_5xx() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
    }

    /// The JSON body of an answer.
    pub(in crate::http) fn body_json(r: Response<Body>) -> Value {
        use http_body_util::BodyExt;
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_body_carries_code_message_and_field_and_a_405_its_allow_header() {
        let r = ApiError::new(ErrorCode::InvalidWebhook, "bad url")
            .with_field("url")
            .into_response();
        assert_eq!(r.status(), 422);
        assert_eq!(
            body_json(r),
            json!({"code": "invalid_webhook", "message": "bad url", "field": "url"})
        );
        let r = ApiError::method_not_allowed(
            &hyper::Method::PUT,
            &[hyper::Method::GET, hyper::Method::POST],
        )
        .into_response();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, POST");
        assert_eq!(body_json(r)["code"], "method_not_allowed");
    }
}
