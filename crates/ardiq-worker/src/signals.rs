//! SIGINT/SIGTERM for a worker process. Python's own handlers are off (see `embed.rs`),
//! so these are the only ones.
//!
//! Signals are counted from the very start of the process: one that arrives while the
//! app is still importing or its lifespan is starting is not lost, it is replayed onto
//! the engine's [`StopHandle`] once the engine runs (which then drains at once). The
//! first signal drains; the second, with the engine running, makes it return at once;
//! a second one before the engine runs, or a third one at any time, ends the process on
//! the spot (running tasks are left for reclaim, nothing is acknowledged).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ardiq_core::StopHandle;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tracing::{info, warn};

#[derive(Clone, Default)]
pub struct Stopper(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    count: u32,
    engine: Option<StopHandle>,
}

impl Stopper {
    /// How many stop requests arrived so far.
    pub fn requested(&self) -> u32 {
        self.0.lock().map(|s| s.count).unwrap_or(0)
    }

    /// Connects the running engine: stop requests that came early are replayed.
    pub fn attach(&self, handle: StopHandle) {
        if let Ok(mut s) = self.0.lock() {
            for _ in 0..s.count.min(2) {
                handle.stop();
            }
            s.engine = Some(handle);
        }
    }

    /// Records a stop request; returns (count so far, whether an engine took it).
    pub fn request(&self) -> (u32, bool) {
        let Ok(mut s) = self.0.lock() else {
            return (0, false);
        };
        s.count += 1;
        match &s.engine {
            Some(h) => {
                h.stop();
                (s.count, true)
            }
            None => (s.count, false),
        }
    }
}

/// Registers the handlers now (call inside the tokio runtime) and returns the task that
/// acts on them.
pub fn listen(stopper: Stopper) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    Ok(async move {
        while let Some(sig) = signals.next().await {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            let (count, engine) = stopper.request();
            if count >= 3 || (count >= 2 && !engine) {
                warn!(
                    signal = name,
                    "exiting now; running tasks are left for reclaim"
                );
                crate::embed::exit(0, false);
            }
            if count == 1 {
                info!(
                    signal = name,
                    "stopping: no new work, running tasks finish (signal again to exit at once)"
                );
            } else {
                warn!(
                    signal = name,
                    "stopping at once; running tasks are left for reclaim"
                );
            }
        }
    })
}

/// For a supervised worker: stop gracefully if the supervisor goes away (the worker is
/// then re-parented), so a killed supervisor does not leave workers behind.
pub async fn watch_parent(stopper: Stopper) {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            warn!("the supervisor is gone; stopping");
            stopper.request();
            return;
        }
    }
}
