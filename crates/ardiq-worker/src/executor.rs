//! The binary's event loop: `ardiq._bridge.Bridge.run` on a thread of its own
//! (`ardiq-loop`), with the app's lifespan around it. The hand-over between the engine
//! and that loop is `ardiq_python::executor`, shared with the extension.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ardiq_python::executor::{self, InboxLink, OutcomeSlot, PyExecutor};
use pyo3::prelude::*;
use tracing::error;

use crate::app::format_traceback;

/// The bridge object and the threads around it.
pub struct Bridge {
    bridge: Py<PyAny>,
    outcomes: OutcomeSlot,
}

impl Bridge {
    /// Makes `ardiq._bridge.Bridge(app, worker_id, on_outcomes, on_progress)`.
    pub fn new(py: Python<'_>, app: &Py<PyAny>, worker_id: &str) -> PyResult<Self> {
        let outcomes = OutcomeSlot::default();
        let bridge = py
            .import("ardiq._bridge")?
            .getattr("Bridge")?
            .call1((
                app.bind(py),
                worker_id,
                outcomes.callback(py)?,
                outcomes.progress_callback(py)?,
            ))?
            .unbind();
        Ok(Bridge { bridge, outcomes })
    }

    /// Starts the loop thread; it runs until [`Bridge::stop`]. Returns the thread and a
    /// receiver that gets `()` once the lifespan has started.
    pub fn spawn_loop(&self) -> std::io::Result<(LoopThread, mpsc::Receiver<()>)> {
        let bridge = Python::attach(|py| self.bridge.clone_ref(py));
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("ardiq-loop".into())
            .spawn(move || {
                Python::attach(|py| {
                    let started = Py::new(
                        py,
                        Started {
                            tx: Mutex::new(Some(tx)),
                        },
                    )
                    .map_err(|e| format_traceback(py, &e))?;
                    bridge
                        .call_method1(py, "run", (started,))
                        .map(drop)
                        .map_err(|e| format_traceback(py, &e))
                })
            })?;
        Ok((LoopThread { handle }, rx))
    }

    /// Connects the engine to the running event loop (`Bridge.attach_inbox`) and returns
    /// the executor the engine drives.
    pub fn connect_inbox(&self) -> std::io::Result<(Arc<PyExecutor>, InboxLink)> {
        Python::attach(|py| {
            executor::connect(py, &self.bridge, &self.outcomes)
                .map_err(|e| std::io::Error::other(format_traceback(py, &e)))
        })
    }

    /// The Python `Bridge` object (the health pulse posts onto its event loop).
    pub fn object(&self) -> Py<PyAny> {
        Python::attach(|py| self.bridge.clone_ref(py))
    }

    /// Asks the loop to end (`hard`: cancel running attempts first, reporting nothing).
    pub fn stop(&self, hard: bool) {
        Python::attach(|py| {
            if let Err(e) = self.bridge.call_method1(py, "stop", (hard,)) {
                error!(
                    "could not stop the event loop: {}",
                    format_traceback(py, &e)
                );
            }
        });
    }
}

/// The loop thread.
pub struct LoopThread {
    handle: JoinHandle<Result<(), String>>,
}

impl LoopThread {
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Joins it; `Err` carries the traceback of what `Bridge.run` raised. With a
    /// `timeout`, gives up (leaving the thread) when it has not ended by then.
    pub fn join(self, timeout: Option<Duration>) -> Option<Result<(), String>> {
        if let Some(t) = timeout {
            let deadline = Instant::now() + t;
            while !self.handle.is_finished() {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Some(
            self.handle
                .join()
                .unwrap_or_else(|_| Err("the event loop thread panicked".into())),
        )
    }
}

/// `started()`: the lifespan has started; the engine may begin.
#[pyclass(frozen)]
struct Started {
    tx: Mutex<Option<mpsc::Sender<()>>>,
}

#[pymethods]
impl Started {
    fn __call__(&self) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    }
}

/// `emit(levelno, logger, message)`: the Python logging handler's way into `tracing`.
#[pyfunction]
pub fn emit_log(levelno: i32, logger: &str, message: &str) {
    crate::logging::forward_python(levelno, logger, message);
}
