//! The command line: clap types only. What each command does lives in `commands/`.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

pub use crate::cli_dashboard::{DashboardArgs, DASHBOARD_HELP};
pub use crate::cli_ops::{
    CheckArgs, CronAction, CronArgs, DlqAction, DlqArgs, FunctionsAction, FunctionsArgs, IdsArgs,
    InfoArgs, JobArgs, PauseArgs, PurgeArgs, QueueArgs, OPS_EXIT_CODES,
};

/// Documented in `--help` and the README; the same failure always gives the same code.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  stopped as asked: a signal (graceful or not), a drained burst, the drain deadline
  1  runtime failure: the lifespan raised, Redis refused the credentials, internal error
  2  usage error: a bad option, MODULE:ATTR cannot be imported or is not an app, or a
     Python of another version than the one embedded
  3  the embedded Python cannot start: no interpreter found, or no shared libpython
  4-8  `check` and the ops commands: see their --help";

/// `ardiq`: runs ArdiQ workers for a Python app.
#[derive(Debug, Parser)]
#[command(name = "ardiq", version, about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve an app's queue: run its tasks until stopped (or, with --burst, drained)
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Check that an app imports and its queue can be served (for health checks): no
    /// task runs, no engine starts
    #[command(after_help = OPS_EXIT_CODES)]
    Check(CheckArgs),
    /// Show a queue's lanes (waiting, pending, running), scheduled and dead counts, and
    /// its workers
    #[command(after_help = OPS_EXIT_CODES)]
    Info(InfoArgs),
    /// List, replay or delete dead letters
    #[command(after_help = OPS_EXIT_CODES)]
    Dlq(DlqArgs),
    /// List, pause, resume or trigger crons
    #[command(after_help = OPS_EXIT_CODES)]
    Cron(CronArgs),
    /// Drop every queued and scheduled task (needs --yes)
    #[command(after_help = OPS_EXIT_CODES)]
    Purge(PurgeArgs),
    /// Show one task: status, attempts, timings
    #[command(after_help = OPS_EXIT_CODES)]
    Job(JobArgs),
    /// Pause a queue or one lane: workers stop taking its tasks within about a second
    /// (running tasks finish; prefetched ones are handed back)
    #[command(after_help = OPS_EXIT_CODES)]
    Pause(PauseArgs),
    /// Resume a paused queue or lane
    #[command(after_help = OPS_EXIT_CODES)]
    Resume(PauseArgs),
    /// Install ArdiQ's scripts as a Redis function library, or show its status (README,
    /// Security: producers and workers then need no script-loading right)
    #[command(after_help = OPS_EXIT_CODES)]
    Functions(FunctionsArgs),
    /// Serve a web dashboard of the queues (and its JSON API) on 127.0.0.1:9181
    #[command(after_help = DASHBOARD_HELP)]
    Dashboard(DashboardArgs),
}

const RUN_HELP: &str = "\
Options override the app's own settings; each has an ARDIQ_* environment twin (the
command line wins over the environment).

Signals: the first SIGINT/SIGTERM stops taking work, hands prefetched tasks back and lets
running tasks finish, then exits 0; a second signal (or --shutdown-timeout) exits at once
and leaves running tasks to be reclaimed by another worker. Nothing is lost either way.

Recycling: with --max-tasks or --max-memory a supervisor runs (even for one worker); a
worker that reaches either limit stops taking work, drains as on SIGTERM and exits 75, and
the supervisor starts a fresh one at once: whatever started `ardiq run` sees no exit.

Health: --health-port serves /livez (dispatcher and Python event loop both turning),
/readyz (connected, taking work) and /metrics (Prometheus), to at most 32 clients at once,
each cut after --health-timeout without a request. Under systemd (NOTIFY_SOCKET)
the worker sends READY=1 once the app is imported and Redis answers, WATCHDOG=1 while
live (with WatchdogSec), STOPPING=1 when it drains.

Exit codes:
  0  stopped as asked: a signal (graceful or not), a drained burst, the drain deadline
  1  runtime failure: the lifespan raised, Redis refused the credentials, internal error
  2  usage error: a bad option, MODULE:ATTR cannot be imported or is not an app, or a
     Python of another version than the one embedded
  3  the embedded Python cannot start: no interpreter found, or no shared libpython
  N  with --workers: the exit code of the first worker that failed
  75 never seen outside: a recycled worker to its supervisor, which replaces it";

/// Options of `ardiq run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The app, as `MODULE:ATTR` (`MODULE` alone means `MODULE:app`); imported as
    /// `python -m` would, current directory first
    #[arg(value_name = "MODULE:ATTR")]
    pub target: String,

    /// Run what is queued (and past-due scheduled) now, then exit 0
    #[arg(short, long, env = "ARDIQ_BURST", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub burst: bool,

    /// Debug logs: each task's start and end, the engine's decisions
    #[arg(short, long, env = "ARDIQ_VERBOSE", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new(), conflicts_with = "quiet")]
    pub verbose: bool,

    /// No banner: the `worker starting` log line says what is served (queue, concurrency,
    /// prefetch, burst, task and cron counts)
    #[arg(short, long, env = "ARDIQ_QUIET", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    pub quiet: bool,

    /// Worker processes to run under one supervisor
    #[arg(short, long, env = "ARDIQ_WORKERS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Task bodies running at once, per worker process
    #[arg(long, env = "ARDIQ_CONCURRENCY", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency: Option<u32>,

    /// Tasks held at once (running + waiting), at least --concurrency [default: the
    /// app's, raised to twice --concurrency]
    #[arg(long, env = "ARDIQ_PREFETCH", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub prefetch: Option<u32>,

    /// Redis to serve, e.g. `redis://:password@host:6379/0` [default: the app's]
    #[arg(
        long,
        env = "ARDIQ_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// After a stop signal, how long running tasks may take before the worker exits
    /// without them (they are reclaimed) [default: the app's, else wait]
    #[arg(long, env = "ARDIQ_SHUTDOWN_TIMEOUT", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub shutdown_timeout: Option<f64>,

    /// Completed tasks kept in the queue's history, about (0: keep no history, attempts
    /// or throughput counters) [default: the app's `history`, 1000]
    #[arg(long, env = "ARDIQ_HISTORY", value_name = "N")]
    pub history: Option<u32>,

    /// How long history entries and throughput counters are kept [default: the app's
    /// `history_ttl_s`, a day]
    #[arg(long, env = "ARDIQ_HISTORY_TTL", value_name = "SECONDS",
          value_parser = parse_seconds)]
    pub history_ttl: Option<f64>,

    /// Replace a child process of isolated tasks after N tasks [default: the app's
    /// `max_tasks_per_child`, never]
    #[arg(long, env = "ARDIQ_MAX_TASKS_PER_CHILD", value_name = "N",
          help_heading = "Isolated tasks",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tasks_per_child: Option<u32>,

    /// Replace a child process of isolated tasks whose resident memory is above MB after
    /// a task [default: the app's `max_memory_per_child`, never]
    #[arg(long, env = "ARDIQ_MAX_MEMORY_PER_CHILD", value_name = "MB",
          help_heading = "Isolated tasks",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_memory_per_child: Option<u32>,

    /// Log line format on stderr
    #[arg(long, env = "ARDIQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The Python interpreter whose environment to run in [default: $VIRTUAL_ENV's, the
    /// virtualenv `ardiq` is installed in, else `python3` on PATH]
    #[arg(long, env = "ARDIQ_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Serve /livez, /readyz and /metrics over HTTP on this port [default: off]
    #[arg(long, env = "ARDIQ_HEALTH_PORT", value_name = "PORT")]
    pub health_port: Option<u16>,

    /// The address the health endpoint binds (0.0.0.0 for probes from outside)
    #[arg(
        long,
        env = "ARDIQ_HEALTH_HOST",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub health_host: String,

    /// The health endpoint closes a connection that has not sent a whole request head
    /// within this long (also how long an idle keep-alive connection is kept)
    #[arg(long, env = "ARDIQ_HEALTH_TIMEOUT", value_name = "SECONDS",
          default_value_t = 5.0, value_parser = parse_seconds)]
    pub health_timeout: f64,

    /// /livez fails, and the systemd watchdog is held back, when the dispatcher or the
    /// Python event loop has not run for this long
    #[arg(long, env = "ARDIQ_LIVENESS_THRESHOLD", value_name = "SECONDS",
          default_value_t = 30.0, value_parser = parse_seconds)]
    pub liveness_threshold: f64,

    /// Recycle a worker process once it has run N tasks: it drains as on SIGTERM and its
    /// supervisor starts a fresh one at once [default: never]
    #[arg(long, env = "ARDIQ_MAX_TASKS", value_name = "N", value_parser = parse_max_tasks)]
    pub max_tasks: Option<u64>,

    /// Recycle a worker process whose resident memory goes over MB megabytes (checked
    /// every second): it drains as on SIGTERM and is replaced at once [default: never]
    #[arg(long, env = "ARDIQ_MAX_MEMORY", value_name = "MB", value_parser = parse_max_memory)]
    pub max_memory: Option<u64>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2024-01-01T00:00:00.000Z  INFO target: message key=value`
    Text,
    /// One JSON object per line
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// How chatty the logs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

impl RunArgs {
    pub fn verbosity(&self) -> Verbosity {
        if self.quiet {
            Verbosity::Quiet
        } else if self.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }

    /// Does a worker recycle itself (`--max-tasks`, `--max-memory`)? Then a supervisor
    /// runs even for one worker, to replace it.
    pub fn recycles(&self) -> bool {
        self.max_tasks.is_some() || self.max_memory.is_some()
    }

    /// The arguments a supervised child gets: the same options, as explicit flags,
    /// without `--workers` (children run one worker each) and without `--redis-url`,
    /// which may hold a password: the supervisor passes it in the child's environment.
    pub fn child_args(&self) -> Vec<String> {
        let mut args = vec!["run".to_owned(), self.target.clone()];
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_owned());
            }
        };
        flag(self.burst, "--burst");
        flag(self.verbose, "--verbose");
        flag(self.quiet, "--quiet");
        let mut opt = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                args.push(format!("{name}={v}"));
            }
        };
        opt("--concurrency", self.concurrency.map(|v| v.to_string()));
        opt("--prefetch", self.prefetch.map(|v| v.to_string()));
        opt(
            "--shutdown-timeout",
            self.shutdown_timeout.map(|v| v.to_string()),
        );
        opt("--history", self.history.map(|v| v.to_string()));
        opt("--history-ttl", self.history_ttl.map(|v| v.to_string()));
        opt(
            "--max-tasks-per-child",
            self.max_tasks_per_child.map(|v| v.to_string()),
        );
        opt(
            "--max-memory-per-child",
            self.max_memory_per_child.map(|v| v.to_string()),
        );
        opt("--log-format", Some(self.log_format.as_str().to_owned()));
        opt("--max-tasks", self.max_tasks.map(|v| v.to_string()));
        opt("--max-memory", self.max_memory.map(|v| v.to_string()));
        // A lone recycled worker keeps its health endpoint (`--workers` refuses one).
        opt("--health-port", self.health_port.map(|v| v.to_string()));
        if self.health_port.is_some() {
            opt("--health-host", Some(self.health_host.clone()));
            opt("--health-timeout", Some(self.health_timeout.to_string()));
        }
        opt(
            "--liveness-threshold",
            Some(self.liveness_threshold.to_string()),
        );
        opt(
            "--python",
            self.python
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        args
    }
}

/// The longest duration an option takes (a year), as for the app's own settings.
pub(crate) use ardiq_python::settings::MAX_SECONDS;

/// A duration option: a number of seconds, more than 0 and at most [`MAX_SECONDS`]
/// (NaN, infinities and negatives are refused too), so that no deadline built on it can
/// overflow: a bad value is a usage error (exit 2), never a panic.
pub(crate) fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_SECONDS => Ok(v),
        _ => Err(format!(
            "`{text}` is not a number of seconds above 0 and at most {MAX_SECONDS} (a year)"
        )),
    }
}

/// The most `--max-memory` takes, in MB (16 TB): its value in bytes then fits easily.
const MAX_MEMORY_MB: u64 = 16 << 20;

/// `--max-tasks`: a whole number of tasks, at least 1.
fn parse_max_tasks(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` is not a number of tasks of at least 1")),
    }
}

/// `--max-memory`: a whole number of megabytes, at least 1.
fn parse_max_memory(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_MEMORY_MB).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a number of megabytes from 1 to {MAX_MEMORY_MB}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut full = vec!["ardiq", "run"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|cli| match cli.command {
            Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        })
    }

    #[test]
    fn defaults() {
        let a = parse(&["m:app"]).unwrap();
        assert_eq!(a.target, "m:app");
        assert!(!a.burst && !a.verbose && !a.quiet);
        assert_eq!(a.workers, 1);
        assert_eq!(a.concurrency, None);
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(a.verbosity(), Verbosity::Normal);
    }

    #[test]
    fn every_option() {
        let a = parse(&[
            "m:app",
            "-b",
            "-v",
            "-w",
            "3",
            "--concurrency",
            "4",
            "--prefetch",
            "9",
            "--redis-url",
            "redis://h:1",
            "--shutdown-timeout",
            "2.5",
            "--log-format",
            "json",
            "--python",
            "/usr/bin/python3",
            "--history",
            "0",
            "--history-ttl",
            "90",
            "--max-tasks-per-child",
            "50",
            "--max-memory-per-child",
            "512",
        ])
        .unwrap();
        assert_eq!(a.max_tasks_per_child, Some(50));
        assert_eq!(a.max_memory_per_child, Some(512));
        assert_eq!(a.history, Some(0));
        assert_eq!(a.history_ttl, Some(90.0));
        assert!(a.burst && a.verbose);
        assert_eq!(a.workers, 3);
        assert_eq!(a.concurrency, Some(4));
        assert_eq!(a.prefetch, Some(9));
        assert_eq!(a.redis_url.as_deref(), Some("redis://h:1"));
        assert_eq!(a.shutdown_timeout, Some(2.5));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.python, Some(PathBuf::from("/usr/bin/python3")));
        assert_eq!(a.verbosity(), Verbosity::Verbose);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["m:app", "--concurrency", "0"]).is_err());
        assert!(parse(&["m:app", "--workers", "0"]).is_err());
        assert!(parse(&["m:app", "--shutdown-timeout", "-1"]).is_err());
        assert!(parse(&["m:app", "--shutdown-timeout", "soon"]).is_err());
        for huge in ["1e308", "1e20", "inf", "NaN", "-0", "0", "31536001"] {
            assert!(
                parse(&["m:app", "--shutdown-timeout", huge]).is_err(),
                "{huge}"
            );
            assert!(
                parse(&["m:app", "--liveness-threshold", huge]).is_err(),
                "{huge}"
            );
        }
        assert!(parse(&["m:app", "--shutdown-timeout", "31536000"]).is_ok());
        assert!(parse(&["m:app", "--log-format", "xml"]).is_err());
        assert!(parse(&["m:app", "--history", "-1"]).is_err());
        assert!(parse(&["m:app", "--history", "many"]).is_err());
        assert!(parse(&["m:app", "--history-ttl", "0"]).is_err());
        assert!(parse(&["m:app", "-v", "-q"]).is_err());
        assert!(parse(&["m:app", "--max-tasks-per-child", "0"]).is_err());
        assert!(parse(&["m:app", "--max-memory-per-child", "0"]).is_err());
        assert!(parse(&["m:app", "--max-memory-per-child", "lots"]).is_err());
        for bad in ["0", "-1", "1.5", "many", ""] {
            assert!(parse(&["m:app", "--max-tasks", bad]).is_err(), "{bad}");
            assert!(parse(&["m:app", "--max-memory", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["m:app", "--max-memory", "16777217"]).is_err());
    }

    #[test]
    fn recycling_options_reach_the_children() {
        let a = parse(&["m:app"]).unwrap();
        assert!(!a.recycles());
        let a = parse(&["m:app", "--max-tasks", "500", "--max-memory", "256"]).unwrap();
        assert!(a.recycles());
        assert_eq!((a.max_tasks, a.max_memory), (Some(500), Some(256)));
        let child = a.child_args();
        let again = parse(&child[1..].iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!((again.max_tasks, again.max_memory), (Some(500), Some(256)));
        let a = parse(&["m:app", "--max-tasks", "9", "--health-port", "9464"]).unwrap();
        let child = a.child_args();
        let again = parse(&child[1..].iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again.health_port, Some(9464));
        assert_eq!(again.health_host, "127.0.0.1");
    }

    #[test]
    fn child_args_never_carry_the_redis_url() {
        let a = parse(&["m:app", "-w", "2", "--redis-url", "redis://:secret@h:1"]).unwrap();
        assert!(!a.child_args().concat().contains("secret"));
    }

    #[test]
    fn child_args_drop_workers_and_keep_the_rest() {
        let a = parse(&[
            "m:app",
            "-w",
            "2",
            "-b",
            "--concurrency",
            "4",
            "--max-tasks-per-child",
            "7",
        ])
        .unwrap();
        let child = a.child_args();
        assert_eq!(
            child,
            [
                "run",
                "m:app",
                "--burst",
                "--concurrency=4",
                "--max-tasks-per-child=7",
                "--log-format=text",
                "--liveness-threshold=30"
            ]
        );
        let again = parse(&child[1..].iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again.workers, 1);
        assert!(again.burst);
        assert_eq!(again.concurrency, Some(4));
    }

    #[test]
    fn help_documents_exit_codes() {
        let err = Cli::try_parse_from(["ardiq", "--help"]).unwrap_err();
        assert!(err.to_string().contains("Exit codes:"));
    }
}
