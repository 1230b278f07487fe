//! Health and metrics for one worker process: liveness (is anything wedged?), the HTTP
//! endpoint behind `--health-port`, and the systemd notifications (`notify.rs`).
//!
//! * `liveness`: the two heartbeats (dispatcher, Python event loop) and the verdict;
//! * `pulse`: the thread that keeps the event loop's heartbeat going;
//! * `routes`: `/livez`, `/readyz`, `/metrics`, served by the binary's HTTP stack
//!   (`crate::http`), which caps connections and times out slow and idle clients;
//! * `metrics`: the Prometheus text;
//! * `figures`: the queue's figures from Redis, read at most once a second.

mod figures;
mod liveness;
mod metrics;
mod pulse;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use ardiq_core::{Config, Counters, Keys, Phase, StopHandle};
use tokio::net::TcpListener;
use tracing::info;

use crate::cli::RunArgs;
use crate::executor::Bridge;
use crate::failure::{code, Failure};
use crate::http::{Limits, Server};
use crate::notify::{self, Notifier};
use figures::QueueFigures;
pub use liveness::Liveness;
use pulse::Pulse;
use routes::Endpoint;

/// Connections the endpoint serves at once. Probes and a scraper or two need a handful;
/// the cap keeps a flood of connections from taking the file descriptors the tasks need.
const MAX_CONNECTIONS: usize = 32;

/// How long answering a request may take. `/metrics` waits at most about 6 s for Redis
/// (connecting, then reading the figures; see `figures`), the probes not at all.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the requests in flight may take to finish once the worker stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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
    server: Option<Server>,
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
        stop: &StopHandle,
    ) -> Result<Probes, Failure> {
        let threshold = Duration::from_secs_f64(args.liveness_threshold);
        let liveness = Arc::new(Liveness::new(threshold));
        let notifier = Notifier::from_env();
        let watchdog = notifier.is_some() && notify::watchdog_interval().is_some();
        let mut tasks = Vec::new();
        let mut pulse = None;
        let mut server = None;
        if args.health_port.is_some() || watchdog {
            pulse = Some(
                Pulse::spawn(bridge.object(), liveness.clone()).map_err(|e| {
                    Failure::new(code::RUNTIME, format!("cannot start a thread: {e}"))
                })?,
            );
        }
        if let Some(port) = args.health_port {
            let addr = format!("{}:{port}", args.health_host);
            let cannot_serve = |e: std::io::Error| {
                Failure::new(
                    code::RUNTIME,
                    format!("cannot serve the health endpoint on `{addr}`: {e}"),
                )
                .hint("pick another `--health-port`, or `--health-host`")
            };
            let listener = std::net::TcpListener::bind(&addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(cannot_serve)?;
            let endpoint = Arc::new(Endpoint {
                liveness: liveness.clone(),
                counters: counters.clone(),
                queue: config.queue.clone(),
                worker: config.worker_id.clone(),
                figures: QueueFigures::new(
                    Keys::new(&config.queue, &config.lanes),
                    config.redis_url.clone(),
                    Duration::from_secs(2),
                ),
            });
            let limits = Limits {
                max_connections: MAX_CONNECTIONS,
                // Capped: a timer a day away is as good as none, and cannot overflow.
                header_timeout: Duration::from_secs_f64(args.health_timeout.min(86_400.0)),
                answer_timeout: ANSWER_TIMEOUT,
            };
            let _guard = runtime.enter();
            let served = TcpListener::from_std(listener)
                .and_then(|l| Server::spawn("health endpoint", l, limits, endpoint));
            server = Some(served.map_err(cannot_serve)?);
            info!(addr = %addr, "health endpoint listening (/livez, /readyz, /metrics)");
        }
        if let Some(n) = notifier.clone() {
            tasks.push(runtime.spawn(notify::watch(n, liveness, counters.clone(), stop.clone())));
        }
        Ok(Probes {
            pulse,
            server,
            tasks,
            notifier,
            counters,
        })
    }

    /// The engine returned: stop the endpoint (requests in flight finish, briefly), the
    /// pulse (before the interpreter goes) and the watcher. `STOPPING=1` goes out now if
    /// the engine never drained (it stopped while starting).
    pub fn stop(self, runtime: &tokio::runtime::Runtime) {
        if let Some(server) = self.server {
            runtime.block_on(server.shutdown(SHUTDOWN_GRACE));
        }
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
