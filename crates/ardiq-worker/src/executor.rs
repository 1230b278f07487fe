//! The Python executor: the engine's [`Executor`] backed by `ardiq._bridge.Bridge`.
//!
//! Three threads meet here, and the GIL is taken once per batch on each path:
//!
//! * **The loop thread** (`ardiq-loop`) runs `Bridge.run`: the asyncio event loop with
//!   the app's lifespan around it. Task bodies run there (`def` bodies on the runtime's
//!   thread pool). Outcomes finished in one loop iteration come back in one call to
//!   [`Outcomes`], which pushes them into the engine's channel (never blocks).
//! * **The feeder thread** (`ardiq-feeder`) takes the batches and abort requests the
//!   engine hands [`PyExecutor`], merges whatever queued up meanwhile, and passes them to
//!   `Bridge.submit` / `Bridge.abort` under one GIL acquisition. The engine's `start`
//!   and `abort` therefore never wait for the GIL: a task body that holds it for a long
//!   time slows task starts, not the engine (leases keep being renewed).
//! * **tokio's threads** run the engine and never touch Python.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ardiq_core::{Delivery, Executor, Outcome, OutcomeKind, OutcomeSink};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tracing::error;

use crate::app::format_traceback;

enum Msg {
    Start(Vec<Delivery>),
    Abort(String),
    /// Process what is queued, then end the thread.
    Close,
}

/// The engine's side: hands work to the feeder thread and returns at once.
pub struct PyExecutor {
    tx: mpsc::Sender<Msg>,
    sink: Arc<OnceLock<OutcomeSink>>,
}

impl Executor for PyExecutor {
    fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink) {
        // Set before the first delivery reaches Python, so every outcome finds it.
        self.sink.get_or_init(|| outcomes.clone());
        let _ = self.tx.send(Msg::Start(batch));
    }

    fn abort(&self, task_id: &str) {
        let _ = self.tx.send(Msg::Abort(task_id.to_owned()));
    }
}

/// The bridge object and the threads around it.
pub struct Bridge {
    bridge: Py<PyAny>,
    sink: Arc<OnceLock<OutcomeSink>>,
}

impl Bridge {
    /// Makes `ardiq._bridge.Bridge(app, worker_id, on_outcomes)`.
    pub fn new(py: Python<'_>, app: &Py<PyAny>, worker_id: &str) -> PyResult<Self> {
        let sink = Arc::new(OnceLock::new());
        let callback = Py::new(py, Outcomes { sink: sink.clone() })?;
        let bridge = py
            .import("ardiq._bridge")?
            .getattr("Bridge")?
            .call1((app.bind(py), worker_id, callback))?
            .unbind();
        Ok(Bridge { bridge, sink })
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

    /// Starts the feeder thread and returns the executor the engine drives.
    pub fn spawn_feeder(&self) -> std::io::Result<(Arc<PyExecutor>, Feeder)> {
        let bridge = Python::attach(|py| self.bridge.clone_ref(py));
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("ardiq-feeder".into())
            .spawn(move || feed(rx, bridge))?;
        let executor = Arc::new(PyExecutor {
            tx: tx.clone(),
            sink: self.sink.clone(),
        });
        Ok((executor, Feeder { tx, handle }))
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

/// The feeder thread.
pub struct Feeder {
    tx: mpsc::Sender<Msg>,
    handle: JoinHandle<()>,
}

impl Feeder {
    /// Lets it hand over what is queued, then joins it.
    pub fn close(self) {
        let _ = self.tx.send(Msg::Close);
        let _ = self.handle.join();
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

fn feed(rx: mpsc::Receiver<Msg>, bridge: Py<PyAny>) {
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else { break };
        let mut starts: Vec<Delivery> = Vec::new();
        let mut aborts: Vec<String> = Vec::new();
        for msg in std::iter::once(first).chain(rx.try_iter()) {
            match msg {
                Msg::Start(batch) => starts.extend(batch),
                Msg::Abort(id) => aborts.push(id),
                Msg::Close => open = false,
            }
        }
        if starts.is_empty() && aborts.is_empty() {
            continue;
        }
        Python::attach(|py| {
            let result = (|| -> PyResult<()> {
                if !starts.is_empty() {
                    let items = starts
                        .iter()
                        .map(|d| delivery_tuple(py, d))
                        .collect::<PyResult<Vec<_>>>()?;
                    bridge.call_method1(py, "submit", (PyList::new(py, items)?,))?;
                }
                if !aborts.is_empty() {
                    bridge.call_method1(py, "abort", (aborts,))?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                error!(
                    "could not hand tasks to Python: {}",
                    format_traceback(py, &e)
                );
            }
        });
    }
}

/// `(entry_id, lane, task_id, name, payload, tries, enqueue_ms, expire_ms)`.
fn delivery_tuple<'py>(py: Python<'py>, d: &Delivery) -> PyResult<Bound<'py, PyTuple>> {
    (
        d.entry_id.as_str(),
        d.lane.as_str(),
        d.task_id.as_str(),
        d.fn_name.as_str(),
        PyBytes::new(py, &d.payload),
        d.tries,
        d.enqueued_ms,
        d.expire_ms,
    )
        .into_pyobject(py)
}

/// `on_outcomes(list)`: called on the loop thread once per iteration that finished
/// something.
#[pyclass(frozen)]
struct Outcomes {
    sink: Arc<OnceLock<OutcomeSink>>,
}

type OutcomeTuple<'py> = (
    String,
    String,
    String,
    Bound<'py, PyBytes>,
    u32,
    i64,
    i64,
    String,
    i64,
);

#[pymethods]
impl Outcomes {
    fn __call__(&self, batch: &Bound<'_, PyList>) -> PyResult<()> {
        let mut out = Vec::with_capacity(batch.len());
        for item in batch.iter() {
            let (entry_id, task_id, kind, value, tries, enqueued_ms, started_ms, lane, delay): OutcomeTuple<'_> =
                item.extract()?;
            let kind = match kind.as_str() {
                "ok" => OutcomeKind::Ok,
                "fail" => OutcomeKind::Fail,
                "expired" => OutcomeKind::Expired,
                "retry" => OutcomeKind::Retry,
                "abort" => OutcomeKind::Abort,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "unknown outcome kind {other:?}"
                    )))
                }
            };
            out.push(Outcome {
                entry_id,
                task_id,
                kind,
                value: value.as_bytes().to_vec(),
                tries,
                enqueued_ms,
                started_ms,
                lane,
                retry_delay_ms: delay.max(0) as u64,
            });
        }
        match self.sink.get() {
            Some(sink) => {
                sink.send(out);
            }
            None => error!(
                count = out.len(),
                "outcomes arrived before any task was started"
            ),
        }
        Ok(())
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
