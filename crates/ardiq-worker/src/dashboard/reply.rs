//! Building the dashboard's responses: JSON documents (written with serde_json, so text
//! from Redis, such as a task name holding markup, is only ever a JSON string), errors as
//! `{"error": "..."}`, and the security headers every response carries.

use ardiq_core::ops::OpsError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::http::Body;

/// The page loads nothing from elsewhere, runs no inline script and may not be framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; frame-ancestors 'none'";

/// A refusal or failure, answered as `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn response(&self) -> Response<Body> {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

impl From<OpsError> for ApiError {
    /// Redis failing is the gateway's fault (502); what it said is passed on (the URL in
    /// it is masked).
    fn from(e: OpsError) -> Self {
        let status = match &e {
            OpsError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `value` as JSON, `no-store`.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An embedded file. `no-cache`: the browser checks again each time (a new binary may
/// serve another page under the same name).
pub fn file(content_type: &'static str, bytes: &'static [u8]) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(bytes)));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `303 See Other` to `location` (relative, so it works under a proxy's path prefix).
pub fn see_other(location: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let h = response.headers_mut();
    h.insert(hyper::header::LOCATION, HeaderValue::from_static(location));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Adds the headers every response carries.
pub fn secure(mut response: Response<Body>) -> Response<Body> {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on the
    // sign-in and sign-out form posts, which the CSRF check refuses; no address leaves
    // the origin either way.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
