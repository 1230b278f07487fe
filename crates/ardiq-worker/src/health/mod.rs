//! Health and metrics for one worker process: liveness (is anything wedged?), the HTTP
//! endpoint behind `--health-port`, and the systemd notifications (`notify.rs`).
//!
//! Liveness has two heartbeats, both atomic timestamps:
//! * the engine's dispatcher stamps one at every loop iteration (`ardiq_core::Live`); it
//!   wakes at least every `poll_block_ms` (or its Redis backoff) while serving;
//! * the **pulse** thread (`ardiq-pulse`) posts a tiny callback onto the Python event loop
//!   (`call_soon_threadsafe`) every `threshold / 4`, and the callback stamps the other.
//!   An `async def` body that blocks the loop (a `time.sleep`, a CPU loop) stops the
//!   stamps, while the pulse thread itself keeps going.
//!
//! A stale stamp (older than `--liveness-threshold`) makes `/livez` fail and holds back
//! the systemd watchdog. A Redis outage does neither: the dispatcher keeps turning (it
//! retries with backoff) and the loop is idle but fine; that is what `/readyz` reports.
//!
//! The HTTP server is a few dozen lines on tokio (HTTP/1.1, one request per connection,
//! `Connection: close`): probes and scrapers need nothing more.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ardiq_core::metrics::escape_label;
use ardiq_core::ops::{Client, QueueStats};
use ardiq_core::{Config, Counters, Keys, Live, Phase};
use pyo3::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::cli::RunArgs;
use crate::executor::Bridge;
use crate::failure::{code, Failure};
use crate::notify::{self, Notifier};

/// Epoch ms on the local clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The dispatcher is given at least this long, whatever the threshold: while Redis is
/// down it legitimately sleeps through its backoff (up to 5 s) after a command that may
/// take its timeout (5 s). A low threshold still catches a blocked event loop quickly.
const DISPATCHER_FLOOR_MS: i64 = 12_000;

/// The Python side of liveness, and the threshold both heartbeats are held to.
#[derive(Debug)]
pub struct Liveness {
    threshold_ms: i64,
    /// Epoch ms of the latest pulse callback the event loop ran.
    loop_beat_ms: AtomicI64,
    /// Cleared if the pulse cannot reach the event loop at all (a bridge without the
    /// loop it expects): the loop is then not judged, rather than judged dead.
    loop_watched: AtomicBool,
}

impl Liveness {
    pub fn new(threshold: Duration) -> Self {
        Liveness {
            threshold_ms: threshold.as_millis() as i64,
            loop_beat_ms: AtomicI64::new(now_ms()),
            loop_watched: AtomicBool::new(true),
        }
    }

    fn stamp(&self) {
        self.loop_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// `Ok` when both the event loop and (while serving) the dispatcher turned within the
    /// threshold; else what is stuck.
    pub fn check(&self, live: &Live) -> Result<(), String> {
        let loop_idle = now_ms() - self.loop_beat_ms.load(Ordering::Relaxed);
        if loop_idle > self.threshold_ms && self.loop_watched.load(Ordering::Relaxed) {
            return Err(format!(
                "the Python event loop has not run for {:.1}s (a task blocks it?)",
                loop_idle as f64 / 1000.0
            ));
        }
        let phase = live.phase();
        let dispatcher_idle = live.dispatcher_idle_ms();
        let limit = self.threshold_ms.max(DISPATCHER_FLOOR_MS);
        if phase == Phase::Serving && dispatcher_idle > limit {
            return Err(format!(
                "the dispatcher has not run for {:.1}s",
                dispatcher_idle as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

/// `__call__` stamps the loop heartbeat; posted onto the event loop by the pulse thread.
#[pyclass(frozen)]
struct Beat {
    liveness: Arc<Liveness>,
}

#[pymethods]
impl Beat {
    fn __call__(&self) {
        self.liveness.stamp();
    }
}

/// The pulse thread.
struct Pulse {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Pulse {
    fn spawn(bridge: Py<PyAny>, liveness: Arc<Liveness>) -> std::io::Result<Pulse> {
        let every = Duration::from_millis((liveness.threshold_ms / 4).clamp(20, 1000) as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ardiq-pulse".into())
            .spawn(move || {
                let beat = match Python::attach(|py| {
                    Py::new(
                        py,
                        Beat {
                            liveness: liveness.clone(),
                        },
                    )
                }) {
                    Ok(b) => b,
                    Err(_) => return,
                };
                while !flag.load(Ordering::Relaxed) {
                    let posted = Python::attach(|py| -> PyResult<bool> {
                        // The bridge's loop (private to `ardiq._bridge`, set while it runs).
                        let event_loop = bridge.bind(py).getattr("_loop")?;
                        if event_loop.is_none() {
                            return Ok(true); // not started yet
                        }
                        if event_loop.call_method0("is_closed")?.is_truthy()? {
                            return Ok(false);
                        }
                        event_loop.call_method1("call_soon_threadsafe", (beat.bind(py),))?;
                        Ok(true)
                    });
                    match posted {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            warn!(error = %e, "cannot watch the Python event loop; /livez and \
                                the watchdog judge the dispatcher only");
                            liveness.loop_watched.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                    std::thread::park_timeout(every);
                }
            })?;
        Ok(Pulse { stop, handle })
    }

    /// Stops the thread and joins it (it may enter Python, so it must end before the
    /// interpreter does); gives up after a moment if the GIL is wedged.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        }
    }
}

/// `--health-port` and friends, checked before anything starts.
pub fn check_args(args: &RunArgs) -> Result<(), Failure> {
    if args.health_port.is_some() && args.workers > 1 {
        return Err(Failure::new(
            code::USAGE,
            "`--health-port` serves one worker process and cannot be combined with `--workers`",
        )
        .hint("run one worker per container or unit instance, each with its own port"));
    }
    Ok(())
}

/// Everything health-related a running worker has: the endpoint, the pulse and the
/// systemd notifier.
pub struct Probes {
    pulse: Option<Pulse>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    notifier: Option<Notifier>,
    counters: Arc<Counters>,
}

impl Probes {
    /// Binds the endpoint (if asked), starts the pulse (if anything reads liveness) and
    /// the systemd watcher (under `NOTIFY_SOCKET`). Call after the event loop started,
    /// before the engine runs.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        args: &RunArgs,
        config: &Config,
        counters: Arc<Counters>,
        bridge: &Bridge,
    ) -> Result<Probes, Failure> {
        let threshold = Duration::from_secs_f64(args.liveness_threshold);
        let liveness = Arc::new(Liveness::new(threshold));
        let notifier = Notifier::from_env();
        let watchdog = notifier.is_some() && notify::watchdog_interval().is_some();
        let mut tasks = Vec::new();
        let mut pulse = None;
        if args.health_port.is_some() || watchdog {
            pulse = Some(
                Pulse::spawn(bridge.object(), liveness.clone()).map_err(|e| {
                    Failure::new(code::RUNTIME, format!("cannot start a thread: {e}"))
                })?,
            );
        }
        if let Some(port) = args.health_port {
            let addr = format!("{}:{port}", args.health_host);
            let listener = std::net::TcpListener::bind(&addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    Failure::new(
                        code::RUNTIME,
                        format!("cannot serve the health endpoint on `{addr}`: {e}"),
                    )
                    .hint("pick another `--health-port`, or `--health-host`")
                })?;
            let endpoint = Arc::new(Endpoint {
                liveness: liveness.clone(),
                counters: counters.clone(),
                keys: Keys::new(&config.queue, &config.lanes),
                queue: config.queue.clone(),
                worker: config.worker_id.clone(),
                redis_url: config.redis_url.clone(),
                command_timeout: Duration::from_secs(2),
                client: tokio::sync::Mutex::new(None),
            });
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(listener).map_err(|e| {
                Failure::new(
                    code::RUNTIME,
                    format!("cannot serve the health endpoint: {e}"),
                )
            })?;
            info!(addr = %addr, "health endpoint listening (/livez, /readyz, /metrics)");
            tasks.push(runtime.spawn(serve(listener, endpoint)));
        }
        if let Some(n) = notifier.clone() {
            tasks.push(runtime.spawn(notify::watch(n, liveness, counters.clone())));
        }
        Ok(Probes {
            pulse,
            tasks,
            notifier,
            counters,
        })
    }

    /// The engine returned: stop the pulse (before the interpreter goes) and the server.
    /// `STOPPING=1` goes out now if the engine never drained (it stopped while starting).
    pub fn stop(self) {
        if let Some(p) = self.pulse {
            p.stop();
        }
        for t in self.tasks {
            t.abort();
        }
        if let Some(n) = self.notifier {
            if self.counters.live().phase() < Phase::Draining {
                n.send("STOPPING=1");
            }
        }
    }
}

/// State the HTTP handlers read.
struct Endpoint {
    liveness: Arc<Liveness>,
    counters: Arc<Counters>,
    keys: Keys,
    queue: String,
    worker: String,
    redis_url: String,
    command_timeout: Duration,
    /// The metrics connection, made on first scrape and dropped after an error.
    client: tokio::sync::Mutex<Option<Client>>,
}

async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let e = endpoint.clone();
                tokio::spawn(async move {
                    if let Err(err) = handle(stream, &e).await {
                        debug!(error = %err, "health request failed");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, e: &Endpoint) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (405, "text/plain", "only GET and HEAD\n".to_owned())
    } else {
        route(e, path).await
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

async fn route(e: &Endpoint, path: &str) -> (u16, &'static str, String) {
    let live = e.counters.live();
    match path {
        "/livez" => match e.liveness.check(live) {
            Ok(()) => (200, "text/plain", "ok\n".into()),
            Err(why) => (503, "text/plain", format!("not live: {why}\n")),
        },
        "/readyz" => match readiness(live) {
            Ok(()) => (200, "text/plain", "ok\n".into()),
            Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let stats = queue_stats(e).await;
            let body = render(e, stats.as_ref());
            (200, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        _ => (
            404,
            "text/plain",
            "try /livez, /readyz or /metrics\n".into(),
        ),
    }
}

/// Ready: serving (connected, subscribed, not draining) and the latest Redis call worked.
fn readiness(live: &Live) -> Result<(), String> {
    match live.phase() {
        Phase::Serving if live.redis_ok() => Ok(()),
        Phase::Serving => Err("redis is unreachable".into()),
        other => Err(other.as_str().into()),
    }
}

async fn queue_stats(e: &Endpoint) -> Option<QueueStats> {
    let mut guard = e.client.lock().await;
    if guard.is_none() {
        *guard = Client::connect(&e.redis_url, e.command_timeout).await.ok();
    }
    let client = guard.as_mut()?;
    let stats = tokio::time::timeout(e.command_timeout * 2, client.queue_stats(&e.keys)).await;
    match stats {
        Ok(Ok(s)) => Some(s),
        _ => {
            *guard = None;
            None
        }
    }
}

fn render(e: &Endpoint, stats: Option<&QueueStats>) -> String {
    let live = e.counters.live();
    let c = e.counters.snapshot();
    let q = format!("queue=\"{}\"", escape_label(&e.queue));
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    metric(
        "ardiq_worker_info",
        "gauge",
        "This worker process (value 1).",
        &[(
            format!(
                "{q},worker=\"{}\",version=\"{}\"",
                escape_label(&e.worker),
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        )],
    );
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metric(
        "ardiq_ready",
        "gauge",
        "1 while /readyz is OK.",
        &[(q.clone(), flag(readiness(live).is_ok()))],
    );
    metric(
        "ardiq_live",
        "gauge",
        "1 while /livez is OK.",
        &[(q.clone(), flag(e.liveness.check(live).is_ok()))],
    );
    metric(
        "ardiq_redis_up",
        "gauge",
        "1 when the engine's latest Redis call worked.",
        &[(q.clone(), flag(live.redis_ok()))],
    );
    let outcome = |o: &str| format!("{q},outcome=\"{o}\"");
    metric(
        "ardiq_tasks_finished_total",
        "counter",
        "Attempts finished by this worker, by outcome (retries are counted apart).",
        &[
            (outcome("ok"), c.ok as f64),
            (outcome("failed"), c.failed as f64),
            (outcome("expired"), c.expired as f64),
            (outcome("aborted"), c.aborted as f64),
        ],
    );
    let counters = [
        (
            "ardiq_task_retries_total",
            "Attempts that failed and were scheduled again.",
            c.retried,
        ),
        (
            "ardiq_tasks_reclaimed_total",
            "Entries of stalled workers this worker re-queued.",
            c.reclaimed,
        ),
        (
            "ardiq_dead_letters_total",
            "Tasks this worker dead-lettered (last attempt failed, malformed, or worker lost).",
            c.failed + c.dead,
        ),
        (
            "ardiq_tasks_delivered_total",
            "Entries read from the streams.",
            c.delivered,
        ),
        (
            "ardiq_outcomes_stale_total",
            "Outcomes dropped because the entry was reclaimed meanwhile.",
            c.stale,
        ),
        (
            "ardiq_leases_lost_total",
            "Held entries whose lease was lost.",
            c.lost_leases,
        ),
        (
            "ardiq_promoted_total",
            "Scheduled tasks this worker moved to their streams.",
            c.promoted,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, &[(q.clone(), v as f64)]);
    }
    let held = live.held();
    metric(
        "ardiq_tasks_in_flight",
        "gauge",
        "Attempts started and not yet acknowledged.",
        &[(q.clone(), held.in_flight as f64)],
    );
    metric(
        "ardiq_tasks_buffered",
        "gauge",
        "Prefetched entries waiting to start.",
        &[(q.clone(), held.buffered as f64)],
    );
    live.run_time.render(
        &mut out,
        "ardiq_task_run_seconds",
        "Run time of each attempt, start to outcome.",
        &q,
    );
    live.wait_time.render(
        &mut out,
        "ardiq_task_wait_seconds",
        "Time from entering the stream to the start of the attempt.",
        &q,
    );
    let mut metric = |name: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    metric(
        "ardiq_queue_up",
        "1 when the queue's counts below could be read from Redis.",
        &[(q.clone(), flag(stats.is_some()))],
    );
    if let Some(s) = stats {
        let lane = |l: &str| format!("{q},lane=\"{}\"", escape_label(l));
        let rows = |f: &dyn Fn(&ardiq_core::ops::LaneStats) -> f64| -> Vec<(String, f64)> {
            s.lanes.iter().map(|l| (lane(&l.lane), f(l))).collect()
        };
        metric(
            "ardiq_queue_depth",
            "Tasks not yet finished per lane: waiting plus pending.",
            &rows(&|l| l.depth() as f64),
        );
        metric(
            "ardiq_queue_waiting",
            "Queued tasks not yet delivered, per lane.",
            &rows(&|l| l.waiting as f64),
        );
        metric(
            "ardiq_queue_pending",
            "Delivered tasks not yet finished, per lane.",
            &rows(&|l| l.pending as f64),
        );
        metric(
            "ardiq_queue_oldest_waiting_seconds",
            "Age of the oldest waiting task per lane (0 when none waits).",
            &rows(&|l| l.oldest_waiting_age_ms.unwrap_or(0) as f64 / 1000.0),
        );
        metric(
            "ardiq_queue_scheduled",
            "Tasks waiting for a time (delay, schedule, retry backoff).",
            &[(q.clone(), s.scheduled as f64)],
        );
        metric(
            "ardiq_queue_dead_letters",
            "Dead letters kept.",
            &[(q.clone(), s.dead as f64)],
        );
        metric(
            "ardiq_queue_workers_alive",
            "Workers whose heartbeat is recent.",
            &[(
                q.clone(),
                s.workers.iter().filter(|w| w.alive).count() as f64,
            )],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            liveness: Arc::new(Liveness::new(Duration::from_secs(5))),
            counters: Arc::new(Counters::default()),
            keys: Keys::new("q", &["default".into()]),
            queue: "q".into(),
            worker: "w\"1".into(),
            redis_url: "redis://127.0.0.1:1".into(),
            command_timeout: Duration::from_millis(100),
            client: tokio::sync::Mutex::new(None),
        }
    }

    #[test]
    fn liveness_fails_on_a_stale_loop() {
        let l = Liveness::new(Duration::from_millis(50));
        let live = Live::default();
        assert!(l.check(&live).is_ok());
        l.loop_beat_ms.store(now_ms() - 1000, Ordering::Relaxed);
        let why = l.check(&live).unwrap_err();
        assert!(why.contains("event loop"), "{why}");
        l.stamp();
        assert!(l.check(&live).is_ok());
    }

    #[test]
    fn not_ready_until_serving() {
        let live = Live::default();
        assert_eq!(readiness(&live).unwrap_err(), "starting");
    }

    #[test]
    fn renders_metrics_without_queue_stats() {
        let e = endpoint();
        let text = render(&e, None);
        assert!(text.contains("ardiq_worker_info{queue=\"q\",worker=\"w\\\"1\",version="));
        assert!(text.contains("ardiq_tasks_finished_total{queue=\"q\",outcome=\"ok\"} 0\n"));
        assert!(text.contains("ardiq_queue_up{queue=\"q\"} 0\n"));
        assert!(text.contains("# TYPE ardiq_task_run_seconds histogram\n"));
        assert!(!text.contains("ardiq_queue_depth"));
        let stats = QueueStats {
            queue: "q".into(),
            lanes: vec![ardiq_core::ops::LaneStats {
                lane: "default".into(),
                waiting: 2,
                pending: 1,
                oldest_waiting_age_ms: Some(1500),
                ..Default::default()
            }],
            scheduled: 4,
            ..Default::default()
        };
        let text = render(&e, Some(&stats));
        assert!(text.contains("ardiq_queue_depth{queue=\"q\",lane=\"default\"} 3\n"));
        assert!(
            text.contains("ardiq_queue_oldest_waiting_seconds{queue=\"q\",lane=\"default\"} 1.5\n")
        );
        assert!(text.contains("ardiq_queue_scheduled{queue=\"q\"} 4\n"));
    }

    #[tokio::test]
    async fn serves_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(endpoint())));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let livez = get("/livez").await;
        assert!(livez.starts_with("HTTP/1.1 200 OK\r\n"), "{livez}");
        assert!(livez.ends_with("\r\n\r\nok\n"));
        let readyz = get("/readyz?verbose").await;
        assert!(readyz.starts_with("HTTP/1.1 503 "), "{readyz}");
        assert!(readyz.contains("not ready: starting"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404 "));
        let metrics = get("/metrics").await;
        assert!(metrics.contains("text/plain; version=0.0.4"));
        assert!(metrics.contains("ardiq_queue_up{queue=\"q\"} 0"));
    }
}
