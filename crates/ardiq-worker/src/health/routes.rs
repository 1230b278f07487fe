//! The endpoint's routes: `/livez`, `/readyz` and `/metrics`, GET or HEAD.

use std::sync::Arc;

use ardiq_core::{Counters, Live, Phase};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response, StatusCode};

use super::figures::QueueFigures;
use super::liveness::Liveness;
use super::metrics;
use crate::http::{self, Body, Handler};

/// State the routes read.
pub(super) struct Endpoint {
    pub(super) liveness: Arc<Liveness>,
    pub(super) counters: Arc<Counters>,
    /// The queue and worker, as labels.
    pub(super) queue: String,
    pub(super) worker: String,
    pub(super) figures: QueueFigures,
}

const PLAIN: &str = "text/plain";

impl Handler for Endpoint {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        // hyper leaves the body out of the answer to a HEAD.
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                PLAIN,
                "only GET and HEAD\n".into(),
            );
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(ALLOW, allow);
            return response;
        }
        route(self, request.uri().path()).await
    }
}

async fn route(e: &Endpoint, path: &str) -> Response<Body> {
    let live = e.counters.live();
    let verdict = |result: Result<(), String>, not: &str| match result {
        Ok(()) => http::text(StatusCode::OK, PLAIN, "ok\n".into()),
        Err(why) => http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            format!("{not}: {why}\n"),
        ),
    };
    match path {
        "/livez" => verdict(e.liveness.check(live), "not live"),
        "/readyz" => verdict(readiness(live), "not ready"),
        "/metrics" => {
            let figures = e.figures.get().await;
            let body = metrics::render(e, figures.as_ref());
            http::text(StatusCode::OK, metrics::CONTENT_TYPE, body)
        }
        _ => http::text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "try /livez, /readyz or /metrics\n".into(),
        ),
    }
}

/// Ready: serving (connected, subscribed, not draining) and the latest Redis call worked.
pub(super) fn readiness(live: &Live) -> Result<(), String> {
    match live.phase() {
        Phase::Serving if live.redis_ok() => Ok(()),
        Phase::Serving => Err("redis is unreachable".into()),
        other => Err(other.as_str().into()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use ardiq_core::Keys;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::http::{Limits, Server};

    pub(in crate::health) fn endpoint() -> Endpoint {
        Endpoint {
            liveness: Arc::new(Liveness::new(Duration::from_secs(5))),
            counters: Arc::new(Counters::default()),
            queue: "q".into(),
            worker: "w\"1".into(),
            figures: QueueFigures::new(
                Keys::new("q", &["default".into()]),
                "redis://127.0.0.1:1".into(),
                Duration::from_millis(100),
            ),
        }
    }

    #[test]
    fn not_ready_until_serving() {
        let live = Live::default();
        assert_eq!(readiness(&live).unwrap_err(), "starting");
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let server = Server::spawn("health endpoint", listener, limits, Arc::new(endpoint()));
        let server = server.unwrap();
        let addr = server.local_addr();
        let get = |path| request(addr, "GET", path);
        let livez = get("/livez").await;
        assert!(livez.starts_with("HTTP/1.1 200 OK\r\n"), "{livez}");
        assert!(livez.contains("\r\ncache-control: no-store\r\n"), "{livez}");
        assert!(livez.ends_with("\r\n\r\nok\n"));
        let readyz = get("/readyz?verbose").await;
        assert!(readyz.starts_with("HTTP/1.1 503 "), "{readyz}");
        assert!(readyz.contains("not ready: starting"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404 "));
        let metrics = get("/metrics").await;
        assert!(metrics.contains("text/plain; version=0.0.4"));
        assert!(metrics.contains("ardiq_queue_up{queue=\"q\"} 0"));
        let head = request(addr, "HEAD", "/livez").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let post = request(addr, "POST", "/livez").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nallow: GET, HEAD\r\n"), "{post}");
    }
}
