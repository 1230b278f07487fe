//! State shared by the engine's tasks for one run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};

use crate::config::Config;
use crate::executor::{Executor, Outcome, OutcomeSink};
use crate::keys::Keys;
use crate::pause::PauseState;
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
    /// The lanes `P paused` names, as last read (see [`crate::pause`]).
    pub pause: PauseState,
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
    /// When the latest retry this worker scheduled falls due. A burst run waits for it:
    /// a task that failed and will run again is still in flight.
    retry_due: LatestDeadline,
    /// When the latest lease renewal round that succeeded began.
    renewed_at: Mutex<Instant>,
    /// Abort requests for task ids this worker did not hold when they came, and when:
    /// a request can overtake the fetch reply that delivers the task to us.
    early_aborts: Mutex<HashMap<String, Instant>>,
}

/// How long an abort request for a task not held here is remembered.
const EARLY_ABORT_TTL: Duration = Duration::from_secs(30);

impl Ctx {
    pub fn new(
        config: Config,
        conn: ConnectionManager,
        counters: Arc<Counters>,
        executor: Arc<dyn Executor>,
        tx: mpsc::UnboundedSender<Vec<Outcome>>,
    ) -> Self {
        let keys = Keys::new(&config.queue, &config.lanes);
        let fifo = config.weights.is_some();
        Ctx {
            config,
            keys,
            conn,
            held: Mutex::new(Held::new(fifo)),
            pause: PauseState::default(),
            counters,
            wake: Notify::new(),
            sink: OutcomeSink::new(tx),
            executor,
            clock_offset_ms: AtomicI64::new(0),
            retry_due: LatestDeadline::default(),
            renewed_at: Mutex::new(Instant::now()),
            early_aborts: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers an abort request for a task not held here (for [`EARLY_ABORT_TTL`]).
    pub fn note_early_abort(&self, task_id: &str) {
        let mut early = self.early_aborts.lock().unwrap_or_else(|p| p.into_inner());
        early.retain(|_, at| at.elapsed() < EARLY_ABORT_TTL);
        early.insert(task_id.to_owned(), Instant::now());
    }

    /// Was an abort of `task_id` requested lately while it was not held here? Forgets it.
    pub fn take_early_abort(&self, task_id: &str) -> bool {
        let mut early = self.early_aborts.lock().unwrap_or_else(|p| p.into_inner());
        if early.is_empty() {
            return false;
        }
        early
            .remove(task_id)
            .is_some_and(|at| at.elapsed() < EARLY_ABORT_TTL)
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

    /// Notes a retry this worker scheduled, due `delay_ms` after its `finish` call
    /// returned.
    pub fn retry_scheduled(&self, delay_ms: u64) {
        self.retry_due
            .push(Instant::now() + Duration::from_millis(delay_ms));
    }

    /// How long until the latest retry this worker scheduled is due (zero if it is).
    pub fn retry_wait_ms(&self) -> u64 {
        self.retry_due.left_ms(Instant::now())
    }

    /// Notes a renewal round that succeeded, begun at `began`: every entry held then had
    /// its lease extended.
    pub fn leases_renewed(&self, began: Instant) {
        *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner()) = began;
        self.executor
            .leases_valid_until(began + self.lease_margin());
    }

    /// Could the lease of an entry held here have run out? Rounds run every third of the
    /// lease; when the last good one is two thirds of a lease old (the process was
    /// stopped, Redis was unreachable), another worker may have reclaimed what this one
    /// holds, and an entry must not start before this worker checked it still owns it.
    pub fn lease_may_have_lapsed(&self) -> bool {
        let renewed_at = *self.renewed_at.lock().unwrap_or_else(|p| p.into_inner());
        renewed_at.elapsed() > self.lease_margin()
    }

    /// How long after a renewal round began the leases it renewed are relied on.
    fn lease_margin(&self) -> Duration {
        Duration::from_millis(self.config.idle_timeout_ms * 2 / 3)
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

/// The latest of the deadlines pushed, on the monotonic clock.
///
/// Retry deadlines are kept here rather than on the estimated server clock: `finish` set
/// the task's due time on the server's clock before its reply came back, so the local
/// moment of that reply plus the delay is never earlier. An estimate made through the
/// clock offset is: the offset moves (by the latency of the reply that taught it) between
/// recording a due time and checking it, and a burst run that saw its retry due too early
/// found nothing due on the server and exited with the retry still scheduled.
#[derive(Default)]
struct LatestDeadline(Mutex<Option<Instant>>);

impl LatestDeadline {
    fn push(&self, at: Instant) {
        let mut latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if latest.is_none_or(|l| at > l) {
            *latest = Some(at);
        }
    }

    fn left(&self, now: Instant) -> Duration {
        let latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        latest.map_or(Duration::ZERO, |l| l.saturating_duration_since(now))
    }

    /// [`left`](Self::left) in whole milliseconds, rounded up: a retry due in 0.4 ms is
    /// not due yet (the server set its due time whole milliseconds after the finish
    /// call), and a burst run that looked then found nothing due and exited.
    fn left_ms(&self, now: Instant) -> u64 {
        self.left(now).as_micros().div_ceil(1000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_deadline_wins_and_time_runs_it_out() {
        let d = LatestDeadline::default();
        let t0 = Instant::now();
        assert_eq!(d.left(t0), Duration::ZERO);
        d.push(t0 + Duration::from_millis(300));
        d.push(t0 + Duration::from_millis(100)); // an earlier one does not shorten it
        assert_eq!(d.left(t0), Duration::from_millis(300));
        assert_eq!(
            d.left(t0 + Duration::from_millis(250)),
            Duration::from_millis(50)
        );
        assert_eq!(d.left(t0 + Duration::from_millis(400)), Duration::ZERO);
        assert_eq!(d.left_ms(t0 + Duration::from_micros(299_600)), 1);
        assert_eq!(d.left_ms(t0 + Duration::from_millis(300)), 0);
    }
}
