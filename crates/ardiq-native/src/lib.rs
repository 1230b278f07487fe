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
    m.add_function(wrap_pyfunction!(cron_occurrences, m)?)?;
    Ok(())
}

/// The engine's occurrences of cron `spec` (read in time zone `tz`, `""`: UTC) after
/// `after_ms` up to `until_ms`, at most `limit`: what the differential test
/// (tests/test_cron_tz.py) compares with `ardiq.cron`. Not part of the bridge.
#[pyfunction]
#[pyo3(name = "_cron_occurrences")]
fn cron_occurrences(
    spec: &str,
    tz: &str,
    after_ms: i64,
    until_ms: i64,
    limit: usize,
) -> PyResult<Vec<i64>> {
    use ardiq_core::{CronSchedule, CronSpec};
    let parsed = CronSpec::parse(spec).and_then(|c| match tz {
        "" => Ok(c),
        zone => c.in_time_zone(zone),
    });
    let schedule = parsed.map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let mut out = Vec::new();
    let mut at = after_ms;
    while out.len() < limit {
        match schedule.next_after(at) {
            Some(next) if next <= until_ms => {
                out.push(next);
                at = next;
            }
            _ => break,
        }
    }
    Ok(out)
}
