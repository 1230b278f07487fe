//! What `check` and the ops commands (`info`, `dlq`, `purge`, `job`) share: finding the
//! queue (flags, or an app imported in the embedded Python without running anything),
//! connecting, exit codes, and output (text for people, `--json` for machines).

use std::time::{Duration, UNIX_EPOCH};

use ardiq_core::ops::{Client, OpsError};
use ardiq_core::{Config, Keys};
use clap::Parser;
use pyo3::prelude::*;
use serde::Serialize;

use crate::cli::{Cli, Command, QueueArgs, RunArgs};
use crate::failure::{code, Failure};

/// Exit codes beyond `failure::code` (see `cli_ops::OPS_EXIT_CODES`).
pub mod exit {
    pub const UNREACHABLE: i32 = 4;
    pub const DENIED: i32 = 5;
    pub const NOT_SERVED: i32 = 6;
    pub const NOT_LIVE: i32 = 7;
    pub const NOT_FOUND: i32 = 8;
}

/// How long a tool waits for Redis on any one command.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The app's settings, read by importing `MODULE:ATTR` in the embedded interpreter (as
/// `ardiq run` does, with `redis_url` overriding the app's). Imports the module, so its
/// tasks are defined, but runs nothing: no lifespan, no event loop, no engine.
pub fn load_app(
    target: &str,
    redis_url: Option<&str>,
    python: Option<&std::path::Path>,
) -> Result<Config, Failure> {
    // Parsed through clap, so the settings are exactly those `ardiq run` would use.
    let mut argv: Vec<String> = vec!["ardiq".into(), "run".into(), target.into()];
    if let Some(url) = redis_url {
        argv.push(format!("--redis-url={url}"));
    }
    if let Some(p) = python {
        argv.push(format!("--python={}", p.display()));
    }
    let run_args: RunArgs = match Cli::try_parse_from(&argv) {
        Ok(Cli {
            command: Command::Run(a),
        }) => a,
        Ok(_) => unreachable!("parsed a `run` command line"),
        Err(e) => return Err(Failure::new(code::USAGE, e.to_string().trim().to_owned())),
    };
    crate::commands::run::start_python(&run_args)?;
    let loaded = Python::attach(|py| crate::app::load(py, &run_args, None, false))?;
    Ok(loaded.config)
}

/// Ends a tool: through `embed::exit` once Python runs (never finalizing), else plainly.
pub fn leave(code: i32) -> i32 {
    crate::embed::exit_if_started(code)
}

/// The queue a command acts on.
pub struct Target {
    pub url: String,
    pub queue: Option<String>,
    pub lanes: Option<Vec<String>>,
    pub result_ttl_ms: Option<i64>,
}

/// Flags first, then the app (if given), then `REDIS_URL` and the default URL.
pub fn resolve(args: &QueueArgs) -> Result<Target, Failure> {
    Ok(resolve_with_app(args)?.0)
}

/// [`resolve`], also handing back the app's settings when `--app` was given.
pub fn resolve_with_app(args: &QueueArgs) -> Result<(Target, Option<Config>), Failure> {
    let mut loaded = None;
    let mut t = Target {
        url: args.redis_url.clone().unwrap_or_default(),
        queue: args.queue.clone(),
        lanes: args.lanes.clone().map(|l| {
            l.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        result_ttl_ms: None,
    };
    if let Some(app) = &args.app {
        let config = load_app(app, args.redis_url.as_deref(), args.python.as_deref())?;
        if t.url.is_empty() {
            t.url = config.redis_url.clone();
        }
        t.queue.get_or_insert(config.queue.clone());
        t.lanes.get_or_insert(config.lanes.clone());
        t.result_ttl_ms = Some(config.result_ttl_ms);
        loaded = Some(config);
    }
    if t.url.is_empty() {
        t.url = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "redis://localhost:6379".to_owned());
    }
    Ok((t, loaded))
}

/// A current-thread tokio runtime, or the failure to report. Every command uses one: the
/// tools make a few round trips, the supervisor only waits on children, and the worker's
/// engine does little per task (a single thread never wakes another to hand a future over).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                code::RUNTIME,
                format!("cannot start the async runtime: {e}"),
            )
        })
}

/// The failure and exit code for an error from Redis.
pub fn failure(e: OpsError) -> Failure {
    let c = match &e {
        OpsError::Url { .. } => code::USAGE,
        OpsError::Unreachable { .. } => exit::UNREACHABLE,
        OpsError::Denied { .. } => exit::DENIED,
        OpsError::Redis(_) => code::RUNTIME,
    };
    Failure::new(c, e.to_string())
}

pub async fn connect(url: &str) -> Result<Client, Failure> {
    Client::connect(url, TIMEOUT).await.map_err(failure)
}

/// The queue's keys: its lanes as given, else those with a stream in Redis.
pub async fn keys(
    client: &mut Client,
    queue: &str,
    lanes: Option<&[String]>,
) -> Result<Keys, Failure> {
    let lanes = match lanes {
        Some(l) => l.to_vec(),
        None => client.discover_lanes(queue).await.map_err(failure)?,
    };
    Ok(Keys::new(queue, &lanes))
}

/// The one queue a command needs (`--queue` or the app's).
pub fn need_queue(t: &Target) -> Result<String, Failure> {
    t.queue.clone().ok_or_else(|| {
        Failure::new(code::USAGE, "which queue? none was given")
            .hint("pass `--queue NAME` (and `--redis-url`), or `--app MODULE:ATTR`")
    })
}

/// Epoch ms as RFC 3339 UTC; `-` for 0.
pub fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    crate::logging::timestamp(UNIX_EPOCH + Duration::from_millis(ms as u64))
}

/// A duration in ms, for people: `850ms`, `12.3s`, `5m02s`, `3h07m`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

/// Prints `doc` on stdout as one line of JSON (`--json` output).
pub fn print_json(doc: &impl Serialize) {
    match serde_json::to_string(doc) {
        Ok(line) => println!("{line}"),
        // Only maps with keys that are not strings fail, and no document has one.
        Err(e) => eprintln!("error: cannot write the JSON document: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanizes() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(302_000), "5m02s");
        assert_eq!(human_ms(11_220_000), "3h07m");
        assert_eq!(when(0), "-");
        assert_eq!(when(86_400_000), "1970-01-02T00:00:00.000Z");
    }
}
