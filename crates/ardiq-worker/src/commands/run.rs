//! `ardiq run MODULE:ATTR`: one worker process (or, with `--workers N`, the supervisor of
//! N of them, see `supervisor.rs`).
//!
//! Start-up: signal handlers, the interpreter (configured, see `embed.rs`), Python's
//! logging into ours, the app import, the banner, the event loop thread with the
//! lifespan, the inbox between engine and loop, then the engine on tokio.
//!
//! Shutdown, in this order so that the way out never crashes: the engine stops fetching
//! and drains (or returns at once on a second signal / the drain deadline); the loop
//! takes what is left in the inbox (aborts); the event loop is stopped (cancelling
//! abandoned attempts) and its thread joined, which leaves the lifespan; tokio is shut
//! down; the process exits holding the GIL without finalizing (`embed::exit`).

use std::io::IsTerminal;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use ardiq_core::{Engine, StopReason};
use pyo3::prelude::*;
use tracing::{error, info};

use crate::app;
use crate::banner;
use crate::cli::{LogFormat, RunArgs};
use crate::embed;
use crate::executor::{emit_log, Bridge};
use crate::failure::{code, Failure};
use crate::interpreter::{self, Inputs};
use crate::logging;
use crate::signals::{self, Stopper};

/// Set by the supervisor in each worker's environment: its index. The worker then skips
/// the banner and watches its parent.
pub const SUPERVISED_ENV: &str = "ARDIQ_SUPERVISED";

/// Runs the command; returns the exit code (or leaves the process itself).
pub fn run(args: RunArgs) -> i32 {
    logging::init(args.log_format, args.verbosity());
    crate::fdlimit::raise();
    if let Err(f) = crate::health::check_args(&args) {
        f.print();
        return f.code;
    }
    let supervised = std::env::var(SUPERVISED_ENV).ok().filter(|s| !s.is_empty());
    // A recycling worker always has a supervisor to replace it, even alone: the service
    // manager above never sees it exit.
    if args.workers > 1 || (args.recycles() && supervised.is_none()) {
        return crate::supervisor::run(&args);
    }
    // One thread runs the whole engine (fetch, finish, leases, health).
    let runtime = match crate::ops::runtime() {
        Ok(rt) => rt,
        Err(f) => {
            f.print();
            return f.code;
        }
    };
    let stopper = Stopper::default();
    {
        let _guard = runtime.enter();
        match signals::listen(stopper.clone()) {
            Ok(task) => {
                runtime.spawn(task);
            }
            Err(e) => {
                Failure::new(
                    code::RUNTIME,
                    format!("cannot install signal handlers: {e}"),
                )
                .print();
                return code::RUNTIME;
            }
        }
        if supervised.is_some() {
            runtime.spawn(signals::watch_parent(stopper.clone()));
        }
    }

    let found = match start_python(&args) {
        Ok(found) => found,
        Err(f) => {
            f.print();
            return f.code;
        }
    };
    let worker = Worker {
        args: &args,
        found,
        supervised: supervised.as_deref(),
        stopper,
    };
    let (code, graceful) = match worker.serve(&runtime) {
        Ok(outcome) => outcome,
        Err(f) => {
            f.print();
            (f.code, false)
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(2));
    embed::exit(code, graceful)
}

/// Finds the interpreter and starts it.
pub(crate) fn start_python(args: &RunArgs) -> Result<interpreter::Found, Failure> {
    if cfg!(ardiq_static_python) {
        return Err(Failure::new(
            code::PYTHON,
            format!(
                "this `ardiq` was built against a Python {} without a shared libpython, which \
                 the native worker needs to load extension modules",
                interpreter::BUILD_VERSION
            ),
        )
        .hint(
            "run the worker in code instead (`await app.run()`), or rebuild `ardiq` against a \
             Python configured with `--enable-shared`",
        ));
    }
    let found = interpreter::discover(&Inputs::from_process(args.python.clone()))
        .map_err(|m| Failure::new(code::PYTHON, m).hint("point at one with `--python PATH`"))?;
    if let Some(version) = interpreter::version_of(&found.executable) {
        if version != interpreter::BUILD_VERSION {
            return Err(Failure::new(
                code::USAGE,
                format!(
                    "`{}` is Python {version}, but this `ardiq` embeds Python {}",
                    found.executable.display(),
                    interpreter::BUILD_VERSION
                ),
            )
            .hint(format!(
                "install `ardiq-worker` into that environment (it builds for its Python), or \
                 pass `--python` a Python {}",
                interpreter::BUILD_VERSION
            )));
        }
    }
    let argv: Vec<_> = std::env::args_os().collect();
    embed::initialize(&found.executable, &argv).map_err(|m| {
        Failure::new(
            code::PYTHON,
            format!("the embedded Python failed to start: {m}"),
        )
        .hint(format!(
            "it was pointed at `{}` ({})",
            found.executable.display(),
            found.source
        ))
    })?;
    Ok(found)
}

struct Worker<'a> {
    args: &'a RunArgs,
    found: interpreter::Found,
    supervised: Option<&'a str>,
    stopper: Stopper,
}

impl Worker<'_> {
    /// Everything after the interpreter started. Returns (exit code, graceful).
    fn serve(self, runtime: &tokio::runtime::Runtime) -> Result<(i32, bool), Failure> {
        let args = self.args;
        let verbosity = args.verbosity();
        let mut loaded = Python::attach(|py| {
            let bridge = app::bridge(py)?;
            let emit = wrap_pyfunction!(emit_log, py).map_err(|e| {
                Failure::new(code::RUNTIME, "cannot install the log handler")
                    .detail(app::format_traceback(py, &e))
            })?;
            bridge
                .call_method1("install_logging", (emit, logging::python_level(verbosity)))
                .map_err(|e| {
                    Failure::new(code::RUNTIME, "cannot install the log handler")
                        .detail(app::format_traceback(py, &e))
                })?;
            app::load(py, args, self.supervised, args.verbose)
        })?;
        if self.stopper.requested() > 0 {
            info!("stopped before the worker started");
            return Ok((code::OK, true));
        }
        loaded.config.max_tasks = args.max_tasks;
        let python = self.found.executable.display().to_string();
        // A log collector reading JSON lines gets no banner: "worker starting" says it all.
        if !args.quiet && self.supervised.is_none() && args.log_format == LogFormat::Text {
            banner::print(
                &banner::Info {
                    target: &args.target,
                    python: &python,
                    python_source: self.found.source,
                    config: Some(&loaded.config),
                    tasks: loaded.tasks,
                    workers: 1,
                    redis_url: None,
                },
                logging::colour_allowed() && std::io::stderr().is_terminal(),
            );
        }
        let engine = {
            let _guard = runtime.enter();
            Engine::new(loaded.config.clone())
                .map_err(|e| Failure::new(code::USAGE, e.to_string()))?
        };
        let worker_id = loaded.config.worker_id.clone();
        let bridge =
            Python::attach(|py| Bridge::new(py, &loaded.app, &worker_id)).map_err(|e| {
                Python::attach(|py| {
                    Failure::new(code::RUNTIME, "cannot start the Python executor")
                        .detail(app::format_traceback(py, &e))
                })
            })?;
        let (event_loop, started) = bridge
            .spawn_loop()
            .map_err(|e| Failure::new(code::RUNTIME, format!("cannot start a thread: {e}")))?;

        // The lifespan runs before the engine starts, as around the in-code worker.
        loop {
            match started.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(RecvTimeoutError::Timeout) if !event_loop.is_finished() => continue,
                Err(_) => {
                    let traceback = match event_loop.join(None) {
                        Some(Err(tb)) => tb,
                        _ => String::new(),
                    };
                    return Err(
                        Failure::new(code::RUNTIME, "the app's lifespan failed to start")
                            .detail(traceback),
                    );
                }
            }
        }

        // With the lifespan started (it may load a model, fill a cache): a limit below
        // this, before any task, would recycle the worker for ever.
        if let Some(mb) = args.max_memory {
            crate::recycle::check_start(mb)?;
        }
        let (executor, inbox) = bridge
            .connect_inbox()
            .map_err(|e| Failure::new(code::RUNTIME, format!("cannot start a thread: {e}")))?;
        let stop = engine.stop_handle();
        let probes = crate::health::Probes::start(
            runtime,
            args,
            &loaded.config,
            engine.counters(),
            &bridge,
            &stop,
        )?;
        self.stopper.attach(stop.clone());
        let memory = args
            .max_memory
            .map(|mb| runtime.spawn(crate::recycle::watch_memory(mb, stop.clone())));
        let result = runtime.block_on(engine.run(executor));
        if let Some(m) = memory {
            m.abort();
        }
        probes.stop(runtime);
        drop(started);

        let (mut exit_code, hard) = match result {
            Ok(report) => {
                let hard = report.abandoned > 0
                    || matches!(report.reason, StopReason::Forced | StopReason::DrainTimeout);
                // Recycled (even if the drain deadline cut it short: what it left is
                // reclaimed), unless a signal asked it to stop meanwhile: then it only
                // stopped, and its supervisor, stopping too, must not replace it.
                let recycled = matches!(
                    report.reason,
                    StopReason::Recycle | StopReason::DrainTimeout
                ) && stop.recycling().is_some()
                    && self.stopper.requested() == 0;
                let code = if recycled { code::RECYCLED } else { code::OK };
                (code, hard)
            }
            Err(e) => {
                error!(error = %e, "the worker cannot go on");
                (code::RUNTIME, true)
            }
        };
        inbox.close();
        bridge.stop(hard);
        // After a forced stop nothing may hold the exit for long: a lifespan that hangs
        // on its way out is left behind.
        let wait = hard.then_some(Duration::from_secs(3));
        match event_loop.join(wait) {
            Some(Ok(())) => {}
            Some(Err(traceback)) => {
                error!("the app's lifespan failed on exit\n{traceback}");
                if exit_code == code::OK {
                    exit_code = code::RUNTIME;
                }
            }
            None => error!("the event loop did not stop in time; exiting without it"),
        }
        Ok((exit_code, !hard))
    }
}
