//! State shared by the engine's tasks for one run.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};

use crate::config::Config;
use crate::executor::{Executor, Outcome, OutcomeSink};
use crate::keys::Keys;
use crate::report::Counters;
use crate::state::Held;

/// Everything the engine's tasks share. One per run, behind an `Arc`.
pub struct Ctx {
    /// The validated configuration.
    pub config: Config,
    /// Key names.
    pub keys: Keys,
    /// The multiplexed connection (cloning it is cheap and shares the socket).
    pub conn: ConnectionManager,
    /// Entries this worker holds.
    held: Mutex<Held>,
    /// Statistics.
    pub counters: Arc<Counters>,
    /// Wakes the dispatcher: a concurrency slot freed, an entry was dropped, ...
    pub wake: Notify,
    /// Where outcomes go: the executor's sink, also used by the engine for the entries it
    /// finishes itself, so the finisher has a single input.
    pub sink: OutcomeSink,
    /// The executor, for `start` (dispatcher) and `abort` (abort listener).
    pub executor: Arc<dyn Executor>,
    /// Redis server time minus local time, ms, as last seen by `promote`. Expiry checks
    /// and cron timing use the server's clock, like the scripts do.
    clock_offset_ms: AtomicI64,
}

impl Ctx {
    pub fn new(
        config: Config,
        conn: ConnectionManager,
        counters: Arc<Counters>,
        executor: Arc<dyn Executor>,
        tx: mpsc::UnboundedSender<Vec<Outcome>>,
    ) -> Self {
        let keys = Keys::new(&config.queue, &config.lanes);
        Ctx {
            config,
            keys,
            conn,
            held: Mutex::new(Held::default()),
            counters,
            wake: Notify::new(),
            sink: OutcomeSink::new(tx),
            executor,
            clock_offset_ms: AtomicI64::new(0),
        }
    }

    /// The held entries. Never hold the guard across an `.await` (it is a `std` mutex);
    /// a poisoned lock is recovered because `Held` stays consistent between statements.
    pub fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now on the Redis server's clock, ms (best estimate).
    pub fn now_ms(&self) -> i64 {
        local_now_ms() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Records the server's time as reported by a script.
    pub fn observe_server_time(&self, server_ms: i64) {
        self.clock_offset_ms
            .store(server_ms - local_now_ms(), Ordering::Relaxed);
    }

    /// The consumer name.
    pub fn worker(&self) -> &str {
        &self.config.worker_id
    }
}

/// The local clock, epoch ms.
pub fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
