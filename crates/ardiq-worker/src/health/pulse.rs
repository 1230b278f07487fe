//! The pulse thread (`ardiq-pulse`): posts a tiny callback onto the Python event loop
//! (`call_soon_threadsafe`) four times per liveness threshold, and the callback stamps
//! the loop's heartbeat. An `async def` body that blocks the loop (a `time.sleep`, a CPU
//! loop) stops the stamps, while the pulse thread itself keeps going.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tracing::warn;

use super::liveness::Liveness;

/// `__call__` stamps the loop heartbeat; posted onto the event loop by the pulse thread.
#[pyclass(frozen)]
struct Beat {
    liveness: Arc<Liveness>,
}

#[pymethods]
impl Beat {
    fn __call__(&self) {
        self.liveness.stamp();
    }
}

/// The running pulse thread.
pub(super) struct Pulse {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Pulse {
    pub(super) fn spawn(bridge: Py<PyAny>, liveness: Arc<Liveness>) -> std::io::Result<Pulse> {
        let every = liveness.pulse_every();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("ardiq-pulse".into())
            .spawn(move || {
                let beat = match Python::attach(|py| {
                    Py::new(
                        py,
                        Beat {
                            liveness: liveness.clone(),
                        },
                    )
                }) {
                    Ok(b) => b,
                    Err(_) => return,
                };
                while !flag.load(Ordering::Relaxed) {
                    let posted = Python::attach(|py| -> PyResult<bool> {
                        // The bridge's loop (private to `ardiq._bridge`, set while it runs).
                        let event_loop = bridge.bind(py).getattr("_loop")?;
                        if event_loop.is_none() {
                            return Ok(true); // not started yet
                        }
                        if event_loop.call_method0("is_closed")?.is_truthy()? {
                            return Ok(false);
                        }
                        event_loop.call_method1("call_soon_threadsafe", (beat.bind(py),))?;
                        Ok(true)
                    });
                    match posted {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            warn!(error = %e, "cannot watch the Python event loop; /livez and \
                                the watchdog judge the dispatcher only");
                            liveness.unwatch_loop();
                            return;
                        }
                    }
                    std::thread::park_timeout(every);
                }
            })?;
        Ok(Pulse { stop, handle })
    }

    /// Stops the thread and joins it (it may enter Python, so it must end before the
    /// interpreter does); gives up after a moment if the GIL is wedged.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        }
    }
}
