//! `ardiq run --workers N`: a supervisor of N worker processes (also of one, when
//! workers recycle themselves: `--max-tasks`, `--max-memory`).
//!
//! The supervisor embeds no Python and imports nothing: it starts N copies of this binary
//! as `ardiq run MODULE:ATTR` with the same options minus `--workers` (and
//! `ARDIQ_WORKERS=1`, `ARDIQ_SUPERVISED=<index>` in their environment, so they skip the
//! banner and watch their parent). The Redis URL and the signing keys reach them through
//! their environment, never their command line (see `secrets`). Each worker runs in a process group of its own, so a
//! Ctrl-C at a terminal reaches the supervisor only, which forwards every SIGINT/SIGTERM
//! to every worker exactly once. When a worker exits non-zero, the others are stopped
//! (SIGTERM: they drain) and the supervisor exits with that worker's code.
//!
//! Except a recycled worker (exit [`code::RECYCLED`]: it reached `--max-tasks` or
//! `--max-memory`, handed its buffer back and finished its running tasks): it is
//! replaced at once by a fresh one in the same slot, so the service manager above never
//! sees an exit. Once a signal came, nobody is replaced: a worker recycling then simply
//! stops, and one killed by that signal while still starting stopped as asked.

use std::collections::HashMap;

use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::process::Command;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::banner;
use crate::cli::{LogFormat, RunArgs};
use crate::commands::run::SUPERVISED_ENV;
use crate::failure::{code, Failure};
use crate::interpreter::{self, Inputs};
use crate::logging;
use crate::secrets;

pub fn run(args: &RunArgs) -> i32 {
    let runtime = match crate::ops::runtime() {
        Ok(rt) => rt,
        Err(f) => {
            f.print();
            return f.code;
        }
    };
    runtime.block_on(supervise(args))
}

async fn supervise(args: &RunArgs) -> i32 {
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            Failure::new(
                code::RUNTIME,
                format!("cannot install signal handlers: {e}"),
            )
            .print();
            return code::RUNTIME;
        }
    };
    // Through the launcher when there is one: it puts libpython's directory in place.
    let exe = match crate::launch::launcher()
        .map(|p| Ok(p.to_path_buf()))
        .unwrap_or_else(std::env::current_exe)
    {
        Ok(exe) => exe,
        Err(e) => {
            Failure::new(code::RUNTIME, format!("cannot find this executable: {e}")).print();
            return code::RUNTIME;
        }
    };
    if !args.quiet && args.log_format == LogFormat::Text {
        let (python, source) =
            match interpreter::discover(&Inputs::from_process(args.python.clone())) {
                Ok(f) => (f.executable.display().to_string(), f.source),
                Err(_) => ("?".to_owned(), "nowhere"),
            };
        banner::supervisor(args, &python, source, logging::colour_allowed());
    }

    let mut pool = Pool {
        exe,
        args,
        pids: HashMap::new(),
        waits: JoinSet::new(),
        generations: HashMap::new(),
    };
    for index in 0..usize::from(args.workers) {
        if let Err(e) = pool.spawn(index) {
            error!(error = %e, "cannot start a worker process; stopping the others");
            forward(&pool.pids, SIGTERM);
            while pool.waits.join_next().await.is_some() {}
            return code::RUNTIME;
        }
    }
    info!(workers = args.workers, "supervisor started");

    let mut result = code::OK;
    // Once set (a signal, or a worker that failed), nobody is replaced any more.
    let mut stopping = false;
    while !pool.waits.is_empty() {
        tokio::select! {
            Some(sig) = signals.next() => {
                stopping = true;
                forward(&pool.pids, sig);
            }
            Some(joined) = pool.waits.join_next() => {
                let Ok((index, status)) = joined else { continue };
                pool.pids.remove(&index);
                let (exit, signal) = match status {
                    Ok(s) => {
                        let signal = std::os::unix::process::ExitStatusExt::signal(&s);
                        (s.code().unwrap_or_else(|| 128 + signal.unwrap_or(0)), signal)
                    }
                    Err(_) => (code::RUNTIME, None),
                };
                match Exit::of(exit, signal, stopping) {
                    Exit::Done => {}
                    Exit::Recycled => {
                        info!(worker = index, "replacing worker {index}");
                        if let Err(e) = pool.spawn(index) {
                            error!(worker = index, error = %e,
                                "cannot start a worker process; stopping the others");
                            stopping = true;
                            result = code::RUNTIME;
                            forward(&pool.pids, SIGTERM);
                        }
                    }
                    Exit::Failed if result == code::OK => {
                        result = exit;
                        stopping = true;
                        error!(worker = index, code = exit, "a worker failed; stopping the others");
                        forward(&pool.pids, SIGTERM);
                    }
                    Exit::Failed => {}
                }
            }
        }
    }
    info!(code = result, "supervisor stopped");
    result
}

/// What a worker's exit means to the supervisor.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// Stopped as asked (or drained its burst): nothing to do.
    Done,
    /// Recycled itself (`--max-tasks`, `--max-memory`) while the pool serves: replace it.
    Recycled,
    /// A real failure: the others are stopped and the supervisor exits with its code.
    Failed,
}

impl Exit {
    /// `code` is the exit code (128 + N for a death by signal N, `signal`), `stopping`
    /// whether the pool is stopping already.
    fn of(code: i32, signal: Option<i32>, stopping: bool) -> Exit {
        match code {
            code::OK => Exit::Done,
            code::RECYCLED if stopping => Exit::Done,
            code::RECYCLED => Exit::Recycled,
            // A worker just replaced, still starting when the stop signal came, had no
            // handler yet: the signal ended it, as asked.
            _ if stopping && matches!(signal, Some(SIGINT | SIGTERM)) => Exit::Done,
            _ => Exit::Failed,
        }
    }
}

/// The worker processes: how to start one, and the ones running.
struct Pool<'a> {
    exe: std::path::PathBuf,
    args: &'a RunArgs,
    pids: HashMap<usize, i32>,
    waits: JoinSet<(usize, std::io::Result<std::process::ExitStatus>)>,
    /// How many times each slot was replaced: its workers' names differ (see `spawn`).
    generations: HashMap<usize, u32>,
}

impl Pool<'_> {
    /// Starts the worker of slot `index` (again, when replacing one).
    fn spawn(&mut self, index: usize) -> std::io::Result<()> {
        // The worker's name suffix: `3` at first, then `3.1`, `3.2`... so that an app with
        // an explicit `worker_id` never has a replacement take its predecessor's consumer
        // name (whose entries, if the drain deadline cut it short, wait for reclaim).
        let generation = self.generations.entry(index).or_insert(0);
        let suffix = match *generation {
            0 => index.to_string(),
            g => format!("{index}.{g}"),
        };
        *generation += 1;
        let mut command = Command::new(&self.exe);
        command
            .args(self.args.child_args())
            .env("ARDIQ_WORKERS", "1")
            .env(SUPERVISED_ENV, suffix)
            // Under systemd (`NotifyAccess=all`) each worker pets the watchdog itself:
            // systemd's WATCHDOG_PID names the supervisor, which would turn theirs off.
            .env_remove("WATCHDOG_PID")
            .process_group(0);
        // Secrets go through the environment (readable by this user only), never argv
        // (`/proc/<pid>/cmdline` is readable by every local user).
        for (name, value) in secrets::pairs() {
            command.env(name, value);
        }
        if let Some(url) = &self.args.redis_url {
            command.env(secrets::REDIS_URL, url);
        }
        let mut child = command.spawn()?;
        if let Some(pid) = child.id() {
            self.pids.insert(index, pid as i32);
        }
        self.waits.spawn(async move { (index, child.wait().await) });
        Ok(())
    }
}

fn forward(pids: &HashMap<usize, i32>, sig: i32) {
    let Ok(signal) = Signal::try_from(sig) else {
        return;
    };
    for pid in pids.values() {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits() {
        assert_eq!(Exit::of(code::OK, None, false), Exit::Done);
        assert_eq!(Exit::of(code::RECYCLED, None, false), Exit::Recycled);
        assert_eq!(Exit::of(code::RECYCLED, None, true), Exit::Done);
        assert_eq!(Exit::of(code::RUNTIME, None, false), Exit::Failed);
        assert_eq!(Exit::of(code::RUNTIME, None, true), Exit::Failed);
        assert_eq!(Exit::of(128 + SIGTERM, Some(SIGTERM), true), Exit::Done);
        assert_eq!(Exit::of(128 + SIGTERM, Some(SIGTERM), false), Exit::Failed);
        assert_eq!(Exit::of(128 + 9, Some(9), true), Exit::Failed);
    }
}
