//! The engine's Python side, written once for both ways of running a worker: the `ardiq`
//! binary (an embedded interpreter, its event loop on a thread of its own) and the
//! `ardiq_native` extension (`await app.run()`, on the caller's event loop).
//!
//! * [`executor`]: the engine's [`Executor`](ardiq_core::Executor) backed by
//!   `ardiq._bridge.Bridge`, and the hand-over between tokio's threads and the loop;
//! * [`settings`]: a `WorkerSettings` (python/ardiq/worker_settings.py) as the engine's
//!   [`Config`](ardiq_core::Config);
//! * [`format_traceback`]: an exception as Python prints it.

pub mod executor;
pub mod settings;

use pyo3::prelude::*;

/// The exception as Python prints it (`traceback.format_exception`).
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    py.import("ardiq._bridge")
        .and_then(|b| b.call_method1("format_exception", (err.value(py), err.traceback(py))))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}
