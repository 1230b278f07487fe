//! The accept loop around hyper's HTTP/1.1 connections.
//!
//! What hyper leaves to its caller, and why each is here:
//! * **a connection cap**: every connection costs a file descriptor, shared with the
//!   tasks the worker runs. Without a cap a few hundred idle connections filled a
//!   worker's descriptor table and a task failed with `Too many open files`. Past the cap
//!   a connection is answered `503` (if its socket takes the bytes at once) and closed
//!   right away, so its descriptor is back before the next `accept`;
//! * **timeouts**: hyper's header read timeout runs whenever a connection waits for a
//!   request head, on a new connection and between keep-alive requests, so one setting
//!   bounds both a slow (or silent) client and an idle keep-alive connection. Answering
//!   has its own bound: a handler (reading a request body included) that has not answered
//!   within the answer timeout is answered `503` for it and the connection closed, and a
//!   write of the answer that a client does not take for as long ends the connection
//!   (`write_timeout`), so a client that never reads cannot hold a slot forever;
//! * **warnings that cannot flood the log** (a failing `accept` repeats every few ms);
//! * **graceful shutdown**: stop accepting, let the requests in flight finish for a
//!   grace period, then cut what is left.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use super::response::{text, Body};
use super::throttle::Throttle;
use super::write_timeout::WriteTimeout;

/// Answers requests. One value serves every connection, concurrently.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// What one server allows its clients. [`Limits::default`] suits a server for a few
/// probes, scrapers or people: `Limits { max_connections: 8, ..Limits::default() }`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (each holds a file descriptor until it closes).
    pub max_connections: usize,
    /// How long a client may take to send a whole request head, counted from when the
    /// connection starts waiting for one. Also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// How long the handler may take to answer (reading a request body included; past
    /// it the answer is `503` and the connection closes), and how long a write of the
    /// answer may wait for a client that takes nothing (past it the connection ends).
    pub answer_timeout: Duration,
}

impl Default for Limits {
    /// 32 connections, 5 s for a request head, 10 s to answer.
    fn default() -> Self {
        Limits {
            max_connections: 32,
            header_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(10),
        }
    }
}

/// Read buffer per connection: hyper's minimum, far more than any probe or scraper
/// sends (a longer head is refused with 431).
const MAX_BUFFER: usize = 8192;

/// After a failed `accept` (typically out of file descriptors) the loop pauses rather
/// than spin on an error that repeats until something closes.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Repeated warnings (a failing `accept`, refused connections) go out at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The answer past the cap, written without waiting (a socket that cannot take it at once
/// is closed without it).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n";

/// A running server: its accept loop is a task on the tokio runtime it was spawned on.
/// Dropping it without [`Server::shutdown`] stops the loop and cuts every connection.
#[must_use = "dropping the server stops it"]
pub struct Server {
    addr: SocketAddr,
    /// Sends the grace period: stop accepting and wind down.
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` with `handler`, under `limits`. Call within the tokio runtime.
    /// `name` prefixes the server's warnings ("health endpoint: ...").
    pub fn spawn<H: Handler>(
        name: &'static str,
        listener: TcpListener,
        limits: Limits,
        handler: Arc<H>,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(name, listener, limits, handler, stopped));
        Ok(Server { addr, stop, task })
    }

    /// Where it listens.
    #[cfg(test)]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (new connections are refused by the OS), closes idle connections,
    /// lets the requests in flight finish within `grace`, then cuts the rest. Returns when
    /// every connection is closed.
    pub async fn shutdown(self, grace: Duration) {
        debug!(addr = %self.addr, "HTTP server stopping");
        let _ = self.stop.send(grace);
        let _ = self.task.await;
    }
}

async fn accept_loop<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    handler: Arc<H>,
    mut stop: oneshot::Receiver<Duration>,
) {
    // A connection holds a permit until it closes; none left means the cap is reached.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUFFER);
    let graceful = GracefulShutdown::new();
    // The connections' tasks, owned here so that none outlives the server.
    let mut connections = JoinSet::new();
    let mut accept_failed = Throttle::new(WARN_EVERY);
    let mut refused = Throttle::new(WARN_EVERY);
    let grace = loop {
        let accepted = tokio::select! {
            // A dropped `Server` stops at once.
            grace = &mut stop => break grace.unwrap_or_default(),
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(quiet) = accept_failed.hit() {
                    warn!(error = %e, suppressed = quiet, "{name}: accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream);
            if let Some(quiet) = refused.hit() {
                warn!(
                    %peer,
                    max_connections = limits.max_connections,
                    suppressed = quiet,
                    "{name}: too many connections, refusing new ones"
                );
            }
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move {
                let answer = tokio::time::timeout(limits.answer_timeout, handler.handle(request));
                Ok::<_, Infallible>(answer.await.unwrap_or_else(|_| too_slow()))
            }
        });
        let io = TokioIo::new(WriteTimeout::new(stream, limits.answer_timeout));
        let connection = graceful.watch(http.serve_connection(io, service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, %peer, "{name}: connection ended");
            }
            drop(slot);
        });
    };
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        debug!(
            open = connections.len(),
            "{name}: cutting connections after the grace period"
        );
    }
    connections.shutdown().await;
}

/// The answer of a handler that took longer than the answer timeout; the connection
/// closes after it (whatever the handler was still reading is unknown).
fn too_slow() -> Response<Body> {
    let mut response = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "the answer took too long\n".into(),
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Answers a connection past the cap and closes it, never waiting on the client.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;

    /// `/slow` answers after 300 ms, `/hang` after a minute, `/big` with 32 MiB; anything
    /// else at once.
    struct Hello;

    impl Handler for Hello {
        async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
            match request.uri().path() {
                "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                "/hang" => tokio::time::sleep(Duration::from_secs(60)).await,
                "/big" => {
                    let body = "x".repeat(32 << 20);
                    return text(StatusCode::OK, "text/plain", body);
                }
                _ => {}
            }
            text(StatusCode::OK, "text/plain", "hi\n".into())
        }
    }

    fn start(max_connections: usize, header_timeout: Duration) -> Server {
        start_with(Limits {
            max_connections,
            header_timeout,
            ..Limits::default()
        })
    }

    fn start_with(limits: Limits) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        Server::spawn("test server", listener, limits, Arc::new(Hello)).unwrap()
    }

    /// Everything the server sends until it closes (or `limit` passes).
    async fn read_all(s: &mut TcpStream, limit: Duration) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        read_all(&mut s, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn refuses_connections_past_the_cap_at_once() {
        let server = start(2, Duration::from_secs(30));
        let addr = server.local_addr();
        let idle = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        tokio::time::sleep(Duration::from_millis(50)).await; // both accepted
        let started = Instant::now();
        let mut third = TcpStream::connect(addr).await.unwrap();
        let refused = read_all(&mut third, Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        assert!(
            refused.ends_with("\r\n\r\ntoo many connections\n"),
            "{refused}"
        );
        // A slot frees up when a connection closes.
        drop(idle);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get(addr, "/").await.ends_with("\r\n\r\nhi\n"));
    }

    #[tokio::test]
    async fn cuts_a_client_that_sends_its_head_too_slowly() {
        let server = start(4, Duration::from_millis(300));
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        let started = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut cut = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                cut = true;
                break;
            }
            let mut byte = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut byte)).await
            {
                cut = true;
                break;
            }
        }
        let took = started.elapsed();
        assert!(cut, "a client trickling its head was never cut");
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn closes_an_idle_keep_alive_connection() {
        let server = start(4, Duration::from_millis(300));
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        // Kept alive after the answer, then closed for idling: the read ends with EOF.
        let out = read_all(&mut s, Duration::from_secs(3)).await;
        let took = started.elapsed();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nhi\n"), "{out}");
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish() {
        let server = start(4, Duration::from_secs(30));
        let addr = server.local_addr();
        let slow = tokio::spawn(async move { get(addr, "/slow").await });
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.shutdown(Duration::from_secs(5)).await;
        let answer = slow.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        // The idle connection was closed, and nothing listens any more.
        assert_eq!(read_all(&mut idle, Duration::from_secs(1)).await, "");
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_cuts_what_outlasts_the_grace_period() {
        let server = start(4, Duration::from_secs(30));
        let addr = server.local_addr();
        let slow = tokio::spawn(async move { get(addr, "/slow").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        server.shutdown(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_millis(250));
        assert_eq!(slow.await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_handler_that_does_not_answer_in_time_gets_a_503() {
        let server = start_with(Limits {
            answer_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let started = Instant::now();
        // Keep-alive asked: the connection is closed all the same after the 503.
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut s, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\nthe answer took too long\n"),
            "{answer}"
        );
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Quick handlers are not affected.
        assert!(get(server.local_addr(), "/")
            .await
            .ends_with("\r\n\r\nhi\n"));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_the_answer_loses_its_slot() {
        let server = start_with(Limits {
            max_connections: 1,
            answer_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let addr = server.local_addr();
        // Asks for 32 MiB with a small receive buffer, and reads none of it.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut greedy = socket.connect(addr).await.unwrap();
        greedy
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // It holds the one slot while the write waits...
        let mut s = TcpStream::connect(addr).await.unwrap();
        let refused = read_all(&mut s, Duration::from_secs(2)).await;
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        // ...until the write made no progress for the timeout: then the slot is free.
        let started = Instant::now();
        loop {
            let answer = get(addr, "/").await;
            if answer.ends_with("\r\n\r\nhi\n") {
                break;
            }
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            assert!(started.elapsed() < Duration::from_secs(3), "never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(greedy);
    }
}
