//! `ardiq dashboard`: finds the queues (as the ops commands do: `--app`, or `--queue`
//! with `--redis-url` and `--lanes`, or every queue in the database), connects, and serves
//! `dashboard::Dashboard` on `--host:--port` until SIGINT or SIGTERM, then lets the
//! requests in flight finish (a few seconds at most).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::cli::{DashboardArgs, Verbosity};
use crate::dashboard::{AppInfo, Auth, Catalog, Dashboard, Given};
use crate::failure::{code, Failure};
use crate::http::{Limits, Server};
use crate::ops;

/// Browsers open a handful of connections per page; a few tabs and scripts fit.
const MAX_CONNECTIONS: usize = 64;

/// A client must send a request head within this long (also the keep-alive idle time).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an answer may take: a purge of a big queue (its ids read, then one script
/// call per 200) is the slowest; reads are a page each.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long requests in flight may take to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(5);

pub fn run(args: DashboardArgs) -> i32 {
    crate::logging::init(args.log_format, Verbosity::Normal);
    let code = match serve(&args) {
        Ok(()) => code::OK,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn serve(args: &DashboardArgs) -> Result<(), Failure> {
    let mut given = Given {
        queues: args.queues(),
        lanes: args.lanes(),
    };
    let mut url = args.redis_url.clone().unwrap_or_default();
    let mut app = None;
    if let Some(target) = &args.app {
        let config = ops::load_app(target, args.redis_url.as_deref(), args.python.as_deref())?;
        if url.is_empty() {
            url = config.redis_url.clone();
        }
        given.queues = vec![config.queue.clone()];
        given.lanes.get_or_insert(config.lanes.clone());
        app = Some(AppInfo {
            queue: config.queue,
            crons: config.crons,
            result_ttl_ms: config.result_ttl_ms,
            signing_key: config.signing_key,
            signature_ttl_ms: config.signature_ttl_ms,
        });
    }
    if url.is_empty() {
        url = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "redis://localhost:6379".to_owned());
    }
    let addr = format!("{}:{}", args.host, args.port);
    let token = crate::secrets::taken().dashboard_token.clone();
    let rt = ops::runtime()?;
    rt.block_on(async {
        let catalog = Catalog::open(url, given, app).await.map_err(ops::failure)?;
        catalog.spawn_rediscovery();
        let cannot_serve = |e: std::io::Error| {
            Failure::new(
                code::RUNTIME,
                format!("cannot serve the dashboard on `{addr}`: {e}"),
            )
            .hint("pick another `--port`, or `--host`")
        };
        let listener = TcpListener::bind(&addr).await.map_err(cannot_serve)?;
        let bound = listener.local_addr().map_err(cannot_serve)?;
        let dashboard = Arc::new(Dashboard {
            auth: Auth::new(token.as_deref()),
            read_only: args.read_only,
            allowed_hosts: args.allowed_hosts(),
            catalog: catalog.clone(),
        });
        let limits = Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            answer_timeout: ANSWER_TIMEOUT,
        };
        let server =
            Server::spawn("dashboard", listener, limits, dashboard).map_err(cannot_serve)?;
        let queues: Vec<String> = catalog
            .queues()
            .iter()
            .map(|k| k.queue().to_owned())
            .collect();
        info!(
            url = %format!("http://{bound}/"),
            redis = catalog.masked_url(),
            queues = %queues.join(","),
            read_only = args.read_only,
            token = token.is_some(),
            "dashboard listening"
        );
        if token.is_none() && !bound.ip().is_loopback() {
            warn!(
                addr = %bound,
                "dashboard: no ARDIQ_DASHBOARD_TOKEN, and the address is not loopback: \
                 anyone who reaches it sees the queues{}",
                if args.read_only { "" } else { " and can act on them" }
            );
        }
        stopped().await;
        info!("dashboard stopping");
        server.shutdown(GRACE).await;
        Ok(())
    })
}

/// Returns at the first SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
