//! The command line of `ardiq dashboard`: clap types only. What it does lives in
//! `commands/dashboard.rs` and `dashboard/`.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

use crate::cli::LogFormat;

pub const DASHBOARD_HELP: &str = "\
Every option has an ARDIQ_* environment twin (the command line wins).

Authentication: set ARDIQ_DASHBOARD_TOKEN (or ARDIQ_DASHBOARD_TOKEN_FILE, a file holding
it) and every route needs `Authorization: Bearer <token>` or the session cookie the login
page sets. Without it anyone who reaches the port sees the queues (and, unless
--read-only, can act on them): keep the default 127.0.0.1 or put a proxy with its own
authentication in front.

Actions (run now, replay, delete, purge) are POSTs with the header `X-Ardiq-Action: 1`
from the same origin; --read-only refuses them all.

Exit codes:
  0  stopped by SIGINT/SIGTERM
  1  runtime failure (the port cannot be bound, internal error)
  2  usage error: a bad option, or MODULE:ATTR cannot be imported or is not an app
  3  the embedded Python cannot start (only with --app)
  4  Redis is unreachable at start
  5  Redis refused: wrong credentials, or the ACL user lacks a command";

/// Options of `ardiq dashboard`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Read the queue, lanes, Redis URL and crons from this app (imports its module; runs
    /// no task)
    #[arg(
        long = "app",
        env = "ARDIQ_APP",
        value_name = "MODULE:ATTR",
        conflicts_with = "queue"
    )]
    pub app: Option<String>,

    /// A queue to show (repeat, or comma-separate, for several) [default: the app's, else
    /// every queue in the database, found at start and again every minute]
    #[arg(long, env = "ARDIQ_QUEUE", value_name = "NAME", value_delimiter = ',',
          action = ArgAction::Append)]
    pub queue: Vec<String>,

    /// Lane names, lowest priority first, comma-separated, for every queue shown
    /// [default: the app's, else the lanes that have a stream in Redis]
    #[arg(
        long,
        env = "ARDIQ_LANES",
        value_name = "A,B,...",
        value_delimiter = ','
    )]
    pub lanes: Option<Vec<String>>,

    /// Redis to read [default: the app's, else $REDIS_URL, else redis://localhost:6379]
    #[arg(
        long,
        env = "ARDIQ_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// The address to listen on (0.0.0.0 exposes it: set a token)
    #[arg(
        long,
        env = "ARDIQ_DASHBOARD_HOST",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub host: String,

    /// The port to listen on (0: any free port, printed at start)
    #[arg(
        long,
        env = "ARDIQ_DASHBOARD_PORT",
        value_name = "PORT",
        default_value_t = 9181
    )]
    pub port: u16,

    /// Without a token, also serve requests whose `Host` is this name (repeat, or
    /// comma-separate): a reverse proxy's public name. IP addresses and `localhost` are
    /// always served; other names are refused (a DNS-rebinding page could use them)
    #[arg(long, env = "ARDIQ_DASHBOARD_ALLOWED_HOSTS", value_name = "NAME",
          value_delimiter = ',', action = ArgAction::Append)]
    pub allowed_host: Vec<String>,

    /// Show only: refuse every action (run now, replay, delete, purge)
    #[arg(long, env = "ARDIQ_DASHBOARD_READ_ONLY", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub read_only: bool,

    /// The Python interpreter for `--app` [default: as `ardiq run`]
    #[arg(long, env = "ARDIQ_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Log line format on stderr
    #[arg(long, env = "ARDIQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl DashboardArgs {
    /// The queues named on the command line, trimmed, empty names dropped, each once.
    pub fn queues(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for q in &self.queue {
            let q = q.trim();
            if !q.is_empty() && !out.iter().any(|o| o == q) {
                out.push(q.to_owned());
            }
        }
        out
    }

    /// The `--allowed-host` names, trimmed and lower-case.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.allowed_host
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// The lanes given, trimmed, empty names dropped.
    pub fn lanes(&self) -> Option<Vec<String>> {
        self.lanes.as_ref().map(|l| {
            l.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::*;

    fn parse(args: &[&str]) -> Result<DashboardArgs, clap::Error> {
        let mut full = vec!["ardiq", "dashboard"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|cli| match cli.command {
            Command::Dashboard(a) => a,
            other => panic!("not dashboard: {other:?}"),
        })
    }

    #[test]
    fn defaults_bind_loopback() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 9181));
        assert!(!a.read_only && a.app.is_none() && a.queues().is_empty());
    }

    #[test]
    fn several_queues() {
        let a = parse(&[
            "--queue",
            "a",
            "--queue",
            "b,c",
            "--queue",
            "a",
            "--read-only",
        ])
        .unwrap();
        assert_eq!(a.queues(), ["a", "b", "c"]);
        assert!(a.read_only);
        let a = parse(&["--queue", "q", "--lanes", "low, high,"]).unwrap();
        assert_eq!(a.lanes().unwrap(), ["low", "high"]);
        let a = parse(&[
            "--allowed-host",
            "A.example,b.example.",
            "--allowed-host",
            "c",
        ])
        .unwrap();
        assert_eq!(a.allowed_hosts(), ["a.example", "b.example", "c"]);
    }

    #[test]
    fn app_or_queues() {
        assert!(parse(&["--app", "m:app", "--queue", "q"]).is_err());
        assert!(parse(&["--port", "http"]).is_err());
        let a = parse(&["--app", "m:app", "--host", "0.0.0.0", "--port", "0"]).unwrap();
        assert_eq!(a.app.as_deref(), Some("m:app"));
        assert_eq!((a.host.as_str(), a.port), ("0.0.0.0", 0));
    }
}
