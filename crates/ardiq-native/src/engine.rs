//! `ardiq_native.Engine`: one run of the engine, started from Python and ended by it.
//!
//! Life of a run (driven by `ardiq.worker.native.NativeWorker`):
//! 1. `Engine(settings)` reads the `WorkerSettings` into a `Config`, checks it and makes a
//!    single-threaded tokio runtime (nothing connects yet);
//! 2. `outcomes()` and `progress()` are the callables the `Bridge` reports outcomes and
//!    progress to;
//! 3. `start(bridge, on_done)` (on the event loop's thread, inside the lifespan) connects
//!    the inbox to the loop and starts the `ardiq-engine` thread, which serves until a
//!    stop or a drained burst, hands the loop what is left in the inbox, and calls
//!    `on_done(reason, abandoned, error)` (holding the GIL) as its last act;
//! 4. `stop()` (drain, then at once), `stop_now()` and `set_burst(on)` from any thread;
//! 5. `join()` waits for the thread (without the GIL).

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use ardiq_core::{Engine, EngineError, RunReport, StopHandle};
use ardiq_python::executor::{self, OutcomeSlot};
use ardiq_python::format_traceback;
use ardiq_python::settings::read_config;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tracing::error;

use crate::lock;

/// An engine and the runtime it will run on, until `start` takes them.
struct Ready {
    engine: Engine,
    runtime: tokio::runtime::Runtime,
}

#[pyclass(frozen, name = "Engine", module = "ardiq_native")]
pub struct NativeEngine {
    stop: StopHandle,
    outcomes: OutcomeSlot,
    ready: Mutex<Option<Ready>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[pymethods]
impl NativeEngine {
    /// Checks `settings` (a `WorkerSettings`) and prepares a run; `ValueError` says what
    /// is wrong with them.
    #[new]
    fn new(py: Python<'_>, settings: &Bound<'_, PyAny>) -> PyResult<Self> {
        crate::logging::install(py)?;
        let config = read_config(settings)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the async runtime: {e}")))?;
        let engine = {
            let _guard = runtime.enter();
            Engine::new(config).map_err(|e| PyValueError::new_err(e.to_string()))?
        };
        Ok(NativeEngine {
            stop: engine.stop_handle(),
            outcomes: OutcomeSlot::default(),
            ready: Mutex::new(Some(Ready { engine, runtime })),
            thread: Mutex::new(None),
        })
    }

    /// The `on_outcomes(list)` callable for `Bridge(app, worker_id, on_outcomes,
    /// on_progress)`.
    fn outcomes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcomes.callback(py)
    }

    /// The `on_progress(...)` callable for the same `Bridge`.
    fn progress(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcomes.progress_callback(py)
    }

    /// Connects the engine to `bridge` (whose event loop runs on this thread) and starts
    /// serving on the `ardiq-engine` thread. `on_done(reason, abandoned, error)` is called
    /// once, from that thread, when the run has ended: `reason` as in the "worker
    /// stopped" line, `error` the message of what ended it early (bad credentials), else
    /// `None`.
    fn start(&self, py: Python<'_>, bridge: Py<PyAny>, on_done: Py<PyAny>) -> PyResult<()> {
        let Ready { engine, runtime } = lock(&self.ready)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this engine has already run"))?;
        let (executor, inbox) = executor::connect(py, &bridge, &self.outcomes)?;
        let thread = std::thread::Builder::new()
            .name("ardiq-engine".into())
            .spawn(move || {
                let result = runtime.block_on(engine.run(executor));
                // The loop takes what is left queued (aborts) before it hears of the end.
                inbox.close();
                runtime.shutdown_timeout(Duration::from_secs(2));
                report(on_done, result);
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?;
        *lock(&self.thread) = Some(thread);
        Ok(())
    }

    /// First call: drain (no new work, running tasks finish). Second: stop at once,
    /// leaving running tasks for reclaim. Safe from any thread and from signal handlers.
    fn stop(&self) {
        self.stop.stop();
    }

    /// Stop at once, leaving running tasks for reclaim.
    fn stop_now(&self) {
        self.stop.stop_now();
    }

    /// Burst mode on (return once the queue is drained) or off, while serving.
    fn set_burst(&self, on: bool) {
        self.stop.set_burst(on);
    }

    /// Waits for the engine's thread to end (it has called `on_done`), without the GIL,
    /// then hands Python every log line the run left queued.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        let joined = match lock(&self.thread).take() {
            Some(thread) => py.detach(|| thread.join()),
            None => Ok(()),
        };
        crate::logging::drain(py);
        joined.map_err(|_| PyRuntimeError::new_err("the engine's thread panicked"))
    }
}

/// Calls `on_done(reason, abandoned, error)` with the run's result.
fn report(on_done: Py<PyAny>, result: Result<RunReport, EngineError>) {
    let (reason, abandoned, failure) = match result {
        Ok(r) => (r.reason.as_str(), r.abandoned, None),
        Err(e) => ("error", 0, Some(e.to_string())),
    };
    Python::attach(|py| {
        if let Err(e) = on_done.call1(py, (reason, abandoned, failure)) {
            error!(
                "could not report the end of the run: {}",
                format_traceback(py, &e)
            );
        }
    });
}
