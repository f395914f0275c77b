//! Reading a request into typed values: its query, its JSON body (bounded), a cookie, the
//! admin token. Each refusal is an [`ApiError`] naming what is wrong.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, COOKIE};
use hyper::Request;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
use crate::config::Config;
use crate::metrics;
use crate::metrics::labels::Route;
use crate::webhook::inbound;

/// The query string as `T` (unknown keys are ignored). `%2B` and `+` decode as usual; a
/// value that does not parse names its key.
pub fn query<T: DeserializeOwned>(req: &Request<Incoming>) -> Result<T, ApiError> {
    query_str(req.uri().query().unwrap_or(""))
}

/// As [`query`], a refusal carrying `code` (e.g. `invalid_filter` for a listing's filter).
pub fn query_as<T: DeserializeOwned>(
    req: &Request<Incoming>,
    code: ErrorCode,
) -> Result<T, ApiError> {
    query_str_as(req.uri().query().unwrap_or(""), code)
}

pub(super) fn query_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    query_str_as(q, ErrorCode::InvalidQuery)
}

pub(super) fn query_str_as<T: DeserializeOwned>(q: &str, code: ErrorCode) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| refusal(code, e))
}

/// A value that does not fit its type, naming its field (a key the type does not know is at
/// the top: the message names it).
fn refusal<E: std::fmt::Display>(code: ErrorCode, e: serde_path_to_error::Error<E>) -> ApiError {
    let field = e.path().to_string();
    if field == "." {
        ApiError::new(code, e.inner().to_string())
    } else {
        ApiError::new(code, format!("{field}: {}", e.inner())).with_field(field)
    }
}

/// Reads a body up to `max` bytes (a declared length over it is refused before reading).
pub async fn body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    let too_big = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
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
        Err(e) => Err(ApiError::new(ErrorCode::BodyUnreadable, e.to_string())),
    }
}

/// A JSON object body as `T` (an empty body is `{}`). Broken JSON, or JSON that is not an
/// object, is 400 `malformed_json`; an object whose fields do not fit `T` is 422 with
/// `invalid` and the path of the field at fault.
pub async fn json_body<T: DeserializeOwned>(
    req: Request<Incoming>,
    max: usize,
    invalid: ErrorCode,
) -> Result<T, ApiError> {
    let bytes = body(req, max).await?;
    json_object(&bytes, invalid)
}

pub(super) fn json_object<T: DeserializeOwned>(
    bytes: &[u8],
    invalid: ErrorCode,
) -> Result<T, ApiError> {
    let value: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()))?
    };
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| refusal(invalid, e))
}

/// The value of cookie `name`, if the request sends it.
pub fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    cookie_in(req.headers().get_all(COOKIE).iter(), name)
}

fn cookie_in<'a>(
    headers: impl Iterator<Item = &'a hyper::header::HeaderValue>,
    name: &str,
) -> Option<String> {
    headers
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

fn bearer(req: &Request<Incoming>) -> &str {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Whether the request carries the admin token (no refusal, nothing counted: for routes that
/// answer everyone and only add details for the operator).
pub fn admin_token_given(cfg: &Config, req: &Request<Incoming>) -> bool {
    let token = cfg.http.admin_token.expose();
    !token.is_empty() && inbound::secret_matches(token, bearer(req))
}

/// Lets the request through only with the admin token (compared in constant time); a refusal
/// is counted in `turnbridge_signature_failures_total{route="monitoring"}`.
pub fn require_admin(cfg: &Config, req: &Request<Incoming>) -> Result<(), ApiError> {
    let token = cfg.http.admin_token.expose();
    if token.is_empty() {
        return Err(ApiError::new(
            ErrorCode::AdminDisabled,
            "set http.admin_token to use the monitoring routes",
        ));
    }
    if inbound::secret_matches(token, bearer(req)) {
        Ok(())
    } else {
        metrics::get().signature_failure(Route::Monitoring);
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a valid Bearer token is required",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Q {
        limit: Option<i64>,
        since: Option<crate::store::Timestamp>,
    }

    #[test]
    fn queries_are_typed_and_a_bad_value_names_its_key() {
        let q: Q = query_str("limit=5&since=2026-12-01T08:00:00%2B08:00&other=x").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.since.unwrap().to_string(), "2026-12-01T00:00:00.000Z");
        // An unencoded + arrives as a space; the time is still the one meant.
        let q: Q = query_str("since=2026-12-01T08:00:00+08:00").unwrap();
        assert_eq!(q.since.unwrap().to_string(), "2026-12-01T00:00:00.000Z");
        let e = query_str::<Q>("limit=many").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidQuery, Some("limit"))
        );
        let e = query_str::<Q>("since=yesterday").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("since"));
        assert!(e.message.contains("RFC 3339"), "{}", e.message);
    }

    #[derive(Debug, Deserialize)]
    struct B {
        #[allow(dead_code)]
        ids: Vec<String>,
    }

    #[test]
    fn bodies_tell_broken_json_from_wrong_fields() {
        let e = json_object::<B>(b"{\"ids\": [", ErrorCode::InvalidFilter).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = json_object::<B>(b"[1]", ErrorCode::InvalidFilter).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = json_object::<B>(br#"{"ids": [1]}"#, ErrorCode::InvalidFilter).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidFilter, Some("ids[0]"))
        );
        assert!(json_object::<B>(br#"{"ids": ["a"]}"#, ErrorCode::InvalidFilter).is_ok());
    }

    #[test]
    fn a_cookie_is_found_among_others_and_across_headers() {
        let a = HeaderValue::from_static("a=1; tb_ne_login=abc");
        let b = HeaderValue::from_static("x=2");
        assert_eq!(
            cookie_in([&b, &a].into_iter(), "tb_ne_login").as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_in([&b].into_iter(), "tb_ne_login"), None);
        let c = HeaderValue::from_static("xtb_ne_login=zzz");
        assert_eq!(cookie_in([&c].into_iter(), "tb_ne_login"), None);
    }
}
