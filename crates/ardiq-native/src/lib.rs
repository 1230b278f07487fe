//! `ardiq_native`: the ArdiQ engine for `await app.run()`.
//!
//! The `ardiq` binary embeds Python and runs the engine beside it; this module is the
//! other way round: Python imports the engine, and the engine runs on a thread of its own
//! while task bodies run on the caller's event loop. Both use the same engine
//! (`ardiq-core`) and the same hand-over to asyncio (`ardiq-python`), so fetch, finish,
//! leases, reclaim, promotion, crons, aborts and burst have one implementation.
//!
//! Python's side is `ardiq.worker.native` (python/ardiq/worker/native.py); it checks
//! [`BRIDGE_VERSION`] before it trusts this module.

mod engine;
mod logging;

use pyo3::prelude::*;

/// The version of the contract between this module and `ardiq.worker.native`: the calls,
/// their arguments and the tuples that cross. The package refuses a module of another
/// version (it falls back to its own loop, or says why with `engine="native"`).
pub const BRIDGE_VERSION: u32 = 2;

/// A mutex's guard, poisoned or not: every state behind our mutexes stays consistent
/// across a panic (plain pushes and takes), so a panic elsewhere must not stop the run.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[pymodule]
fn ardiq_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BRIDGE_VERSION", BRIDGE_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::NativeEngine>()?;
    Ok(())
}
