//! Importing `MODULE:ATTR` and turning the app's settings (with the command line's
//! overrides) into the engine's [`Config`].

use ardiq_core::Config;
pub use ardiq_python::format_traceback;
use ardiq_python::settings::read_config;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

use crate::cli::RunArgs;
use crate::failure::{code, Failure};

/// The imported app and what the engine needs from it.
pub struct Loaded {
    pub app: Py<PyAny>,
    pub config: Config,
    pub tasks: usize,
}

/// Imports the bridge module (`ardiq._bridge`): fails when `ardiq` is not installed in
/// the Python environment the worker runs in.
pub fn bridge(py: Python<'_>) -> Result<Bound<'_, PyModule>, Failure> {
    py.import("ardiq._bridge").map_err(|e| {
        let exe = py
            .import("sys")
            .and_then(|s| s.getattr("executable"))
            .map(|e| e.to_string())
            .unwrap_or_default();
        Failure::new(
            code::USAGE,
            format!(
                "cannot import `ardiq` in the Python environment of `{exe}`: {}",
                e.value(py)
            ),
        )
        .hint("install ardiq into that environment, or pick another one with `--python`")
    })
}

/// Imports the app and reads its settings. `worker_suffix` (for supervised children)
/// keeps consumer names unique when the app sets an explicit `worker_id`.
pub fn load(
    py: Python<'_>,
    args: &RunArgs,
    worker_suffix: Option<&str>,
    verbose: bool,
) -> Result<Loaded, Failure> {
    let bridge = bridge(py)?;
    provide_secrets(py).map_err(|e| internal(py, e))?;
    let app = match bridge.call_method1("load_app", (args.target.as_str(),)) {
        Ok(app) => app,
        Err(e) => return Err(import_failure(py, &bridge, &args.target, e, verbose)),
    };
    let mut worker_id: String = app
        .getattr("worker_id")
        .and_then(|w| w.extract())
        .map_err(|e| internal(py, e))?;
    if let Some(suffix) = worker_suffix {
        worker_id = format!("{worker_id}-{suffix}");
    }
    let overrides = PyDict::new(py);
    (|| -> PyResult<()> {
        overrides.set_item("redis_url", args.redis_url.as_deref())?;
        overrides.set_item("concurrency", args.concurrency)?;
        overrides.set_item("prefetch", args.prefetch)?;
        overrides.set_item("shutdown_timeout_s", args.shutdown_timeout)?;
        overrides.set_item("burst", args.burst)?;
        overrides.set_item("history", args.history)?;
        overrides.set_item("history_ttl_s", args.history_ttl)?;
        overrides.set_item("max_tasks_per_child", args.max_tasks_per_child)?;
        overrides.set_item("max_memory_per_child", args.max_memory_per_child)?;
        Ok(())
    })()
    .map_err(|e| internal(py, e))?;
    let settings = match bridge.call_method1("configure", (&app, overrides, worker_id)) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.value(py).to_string();
            return Err(Failure::new(
                code::USAGE,
                format!("invalid settings: {msg}"),
            ));
        }
    };
    let config = read_config(&settings).map_err(|e| internal(py, e))?;
    let tasks = settings
        .getattr("tasks")
        .and_then(|t| t.extract())
        .unwrap_or(0);
    Ok(Loaded {
        app: app.unbind(),
        config,
        tasks,
    })
}

/// Hands the secrets taken out of the environment (see `secrets`) to the package, before
/// the app's module is imported (`Ardiq()` reads them when it is built).
fn provide_secrets(py: Python<'_>) -> PyResult<()> {
    let values = PyDict::new(py);
    for (name, value) in crate::secrets::pairs() {
        values.set_item(name, value)?;
    }
    py.import("ardiq._secrets")?
        .call_method1("provide", (values,))?;
    Ok(())
}

/// One line for "not an app" cases; the traceback when the module itself raised.
fn import_failure(
    py: Python<'_>,
    bridge: &Bound<'_, PyModule>,
    target: &str,
    err: PyErr,
    verbose: bool,
) -> Failure {
    let traceback = format_traceback(py, &err);
    let is_target_error = bridge
        .getattr("TargetError")
        .map(|cls| err.get_type(py).is(&cls))
        .unwrap_or(false);
    if is_target_error {
        let f = Failure::new(code::USAGE, err.value(py).to_string());
        return if verbose { f.detail(traceback) } else { f };
    }
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Failure::new(
        code::USAGE,
        format!("importing `{target}` raised {kind} (traceback above)"),
    )
    .detail(traceback)
}

fn internal(py: Python<'_>, err: PyErr) -> Failure {
    Failure::new(code::RUNTIME, "internal error reading the app's settings")
        .detail(format_traceback(py, &err))
}
