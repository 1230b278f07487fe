//! `ardiq run --workers N`: a supervisor of N worker processes.
//!
//! The supervisor embeds no Python and imports nothing: it starts N copies of this binary
//! as `ardiq run MODULE:ATTR` with the same options minus `--workers` (and
//! `ARDIQ_WORKERS=1`, `ARDIQ_SUPERVISED=<index>` in their environment, so they skip the
//! banner and watch their parent). The Redis URL and the signing keys reach them through
//! their environment, never their command line (see `secrets`). Each worker runs in a process group of its own, so a
//! Ctrl-C at a terminal reaches the supervisor only, which forwards every SIGINT/SIGTERM
//! to every worker exactly once. When a worker exits non-zero, the others are stopped
//! (SIGTERM: they drain) and the supervisor exits with that worker's code.

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

    let mut pids: HashMap<usize, i32> = HashMap::new();
    let mut waits = JoinSet::new();
    for index in 0..usize::from(args.workers) {
        let mut command = Command::new(&exe);
        command
            .args(args.child_args())
            .env("ARDIQ_WORKERS", "1")
            .env(SUPERVISED_ENV, index.to_string())
            .process_group(0);
        // Secrets go through the environment (readable by this user only), never argv
        // (`/proc/<pid>/cmdline` is readable by every local user).
        for (name, value) in secrets::pairs() {
            command.env(name, value);
        }
        if let Some(url) = &args.redis_url {
            command.env(secrets::REDIS_URL, url);
        }
        let spawned = command.spawn();
        match spawned {
            Ok(mut child) => {
                if let Some(pid) = child.id() {
                    pids.insert(index, pid as i32);
                }
                waits.spawn(async move { (index, child.wait().await) });
            }
            Err(e) => {
                error!(error = %e, "cannot start a worker process; stopping the others");
                forward(&pids, SIGTERM);
                while waits.join_next().await.is_some() {}
                return code::RUNTIME;
            }
        }
    }
    info!(workers = args.workers, "supervisor started");

    let mut result = code::OK;
    while !waits.is_empty() {
        tokio::select! {
            Some(sig) = signals.next() => forward(&pids, sig),
            Some(joined) = waits.join_next() => {
                let Ok((index, status)) = joined else { continue };
                pids.remove(&index);
                let exit = match status {
                    Ok(s) => s.code().unwrap_or_else(|| {
                        128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
                    }),
                    Err(_) => code::RUNTIME,
                };
                if exit != code::OK && result == code::OK {
                    result = exit;
                    error!(worker = index, code = exit, "a worker failed; stopping the others");
                    forward(&pids, SIGTERM);
                }
            }
        }
    }
    info!(code = result, "supervisor stopped");
    result
}

fn forward(pids: &HashMap<usize, i32>, sig: i32) {
    let Ok(signal) = Signal::try_from(sig) else {
        return;
    };
    for pid in pids.values() {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
}
