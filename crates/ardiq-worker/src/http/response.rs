//! Building responses: every answer the binary serves is a small text body.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The body of every response: the whole text at once (nothing the binary serves is big
/// enough to stream).
pub type Body = Full<Bytes>;

/// A `status` response with `body` of `content_type`. `Cache-Control: no-store`: probe
/// and metric answers are about this instant, no proxy may keep them.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
