//! The start-up banner on stderr: what is being served, from where, with what. Plain
//! text off a terminal or under `NO_COLOR`; the Redis password is always masked.

use std::fmt::Write as _;

use ardiq_core::{mask_url, Config};

use crate::cli::RunArgs;

/// What the banner shows.
pub struct Info<'a> {
    pub target: &'a str,
    pub python: &'a str,
    pub python_source: &'a str,
    /// The worker's engine configuration (absent for the supervisor, which imports
    /// nothing).
    pub config: Option<&'a Config>,
    pub tasks: usize,
    pub workers: u16,
    pub redis_url: Option<&'a str>,
}

pub fn print(info: &Info<'_>, colour: bool) {
    eprint!("{}", render(info, colour));
}

pub fn render(info: &Info<'_>, colour: bool) -> String {
    let (bold, dim, reset) = if colour {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let mut out = String::new();
    let _ = writeln!(out, "{bold}ardiq {}{reset}", env!("CARGO_PKG_VERSION"));
    let mut row = |key: &str, value: String| {
        let _ = writeln!(out, "  {dim}{key:<13}{reset}{value}");
    };
    row("app", info.target.to_owned());
    if let Some(c) = info.config {
        row("queue", c.queue.clone());
        let lanes: Vec<&str> = c.lanes.iter().rev().map(String::as_str).collect();
        row("lanes", lanes.join(" > "));
        row("tasks", format!("{} ({} cron)", info.tasks, c.crons.len()));
        row("redis", mask_url(&c.redis_url));
        row("worker", c.worker_id.clone());
        row(
            "concurrency",
            format!("{} (prefetch {})", c.concurrency, c.prefetch),
        );
        if c.signing_key.is_some() {
            // Says that payloads are checked; never anything about the key.
            row(
                "payloads",
                "signed (unsigned or altered ones are refused)".to_owned(),
            );
        }
        if c.burst {
            row("mode", "burst: exit once the queue is drained".to_owned());
        }
    } else {
        row("workers", format!("{} processes", info.workers));
        if let Some(url) = info.redis_url {
            row("redis", mask_url(url));
        }
    }
    row(
        "python",
        format!("{} (from {})", info.python, info.python_source),
    );
    out
}

/// The supervisor's banner (it imports nothing: the workers do).
pub fn supervisor(args: &RunArgs, python: &str, source: &str, colour: bool) {
    print(
        &Info {
            target: &args.target,
            python,
            python_source: source,
            config: None,
            tasks: 0,
            workers: args.workers,
            redis_url: args.redis_url.as_deref(),
        },
        colour,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_stays_plain() {
        let mut c = Config::new("redis://user:hunter2@10.0.0.1:6380/1", "emails");
        c.lanes = vec!["low".into(), "high".into()];
        let text = render(
            &Info {
                target: "proj.tasks:app",
                python: "/venv/bin/python",
                python_source: "VIRTUAL_ENV",
                config: Some(&c),
                tasks: 3,
                workers: 1,
                redis_url: None,
            },
            false,
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://user:***@10.0.0.1:6380/1"), "{text}");
        assert!(text.contains("high > low"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(render(
            &Info {
                target: "x:app",
                python: "p",
                python_source: "PATH",
                config: None,
                tasks: 0,
                workers: 2,
                redis_url: Some("redis://:pw@h"),
            },
            true,
        )
        .contains('\x1b'));
    }
}
