//! Live state for health probes and metrics, beside the [`crate::Counters`]: where the
//! engine is in its life ([`Phase`]), whether Redis answers, a heartbeat of the
//! dispatcher loop, held-entry gauges, and the task run-time and queue wait-time
//! histograms. Everything is a relaxed atomic: readers (an HTTP handler, a watchdog) want
//! a recent value, not synchronization, and the engine's hot path pays one store.
//!
//! The values are read as they are ([`Histogram::snapshot`], [`crate::Counters`]): the
//! binary's `/metrics` encodes them in the Prometheus text format.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};

use tokio::sync::Notify;

use crate::context::{local_now_ms, Ctx};
use crate::executor::{Outcome, OutcomeKind};
use crate::state::Held;

/// Where a run is. Moves forward only: `Starting` → `Serving` → `Draining` → `Stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Connecting to Redis and subscribing; no work taken yet.
    Starting = 0,
    /// Connected and subscribed: the dispatcher takes work.
    Serving = 1,
    /// A stop was requested: no new work, running tasks finish.
    Draining = 2,
    /// `run` returned.
    Stopped = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }

    /// Lower-case name, for probe bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

/// Bucket upper bounds, seconds: from a fast `async def` (ms) to a slow batch job
/// (minutes). Shared by both histograms so dashboards can compare them.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A fixed-bucket histogram of durations (non-cumulative counts per bucket, summed when
/// rendered). Lock-free: one `fetch_add` per bucket, count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `buckets[i]` counts observations in `(BUCKETS[i-1], BUCKETS[i]]`; the last slot
    /// counts those above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    /// Microseconds, so the sum stays an integer atomic.
    sum_us: AtomicU64,
}

/// A copy of a histogram at one moment: cumulative counts per bound, then `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per entry of [`BUCKETS`].
    pub cumulative: Vec<u64>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one duration in milliseconds (negative values, from clock skew, count as 0).
    pub fn observe_ms(&self, ms: i64) {
        let ms = ms.max(0) as u64;
        let secs = ms as f64 / 1000.0;
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(ms.saturating_mul(1000), Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = BUCKETS
            .iter()
            .enumerate()
            .map(|(i, _)| {
                running += self.buckets[i].load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The live state of one run. Owned by [`crate::Counters`], so whoever holds the counters
/// (a metrics endpoint, a watchdog) sees it too.
#[derive(Debug)]
pub struct Live {
    phase: AtomicU8,
    /// Wakes [`Live::phase_changed`] waiters (systemd notification).
    phase_notify: Notify,
    /// The last fetch or blocking read succeeded (`false` after a failure until one
    /// succeeds again).
    redis_ok: AtomicBool,
    /// Local epoch ms of the dispatcher's latest loop iteration. The loop wakes at least
    /// every `poll_block_ms` (or its backoff) while serving, so a stale value means it is
    /// wedged.
    dispatcher_beat_ms: AtomicI64,
    /// Held entries, as of the dispatcher's latest iteration.
    running: AtomicU64,
    in_flight: AtomicU64,
    buffered: AtomicU64,
    /// From start to outcome, per attempt that ran.
    pub run_time: Histogram,
    /// From the moment the entry entered its stream (enqueue, promotion or re-queue) to
    /// the start of the attempt.
    pub wait_time: Histogram,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            phase: AtomicU8::new(Phase::Starting as u8),
            phase_notify: Notify::new(),
            redis_ok: AtomicBool::new(false),
            dispatcher_beat_ms: AtomicI64::new(local_now_ms()),
            running: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            run_time: Histogram::default(),
            wait_time: Histogram::default(),
        }
    }
}

/// Gauges of held entries at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldGauges {
    /// Using a concurrency slot.
    pub running: u64,
    /// Started and not yet acknowledged (running plus outcomes being finished).
    pub in_flight: u64,
    /// Prefetched, waiting to start.
    pub buffered: u64,
}

impl Live {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Moves to `phase` (never backwards) and wakes waiters.
    pub(crate) fn set_phase(&self, phase: Phase) {
        let prev = self.phase.fetch_max(phase as u8, Ordering::Relaxed);
        if prev != phase as u8 {
            self.phase_notify.notify_waiters();
        }
    }

    /// Resolves after the next phase change (check [`Live::phase`] before waiting: a
    /// change that happened earlier does not wake this).
    pub async fn phase_changed(&self) {
        self.phase_notify.notified().await;
    }

    /// Waits until the phase is at least `phase`.
    pub async fn wait_for_phase(&self, phase: Phase) {
        loop {
            let notified = self.phase_notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change in between is not missed.
            notified.as_mut().enable();
            if self.phase() >= phase {
                return;
            }
            notified.await;
        }
    }

    /// Did the latest fetch or blocking read reach Redis?
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    pub(crate) fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Milliseconds since the dispatcher's latest loop iteration.
    pub fn dispatcher_idle_ms(&self) -> i64 {
        local_now_ms() - self.dispatcher_beat_ms.load(Ordering::Relaxed)
    }

    /// The dispatcher's heartbeat, with the held gauges of this moment.
    pub(crate) fn beat(&self, gauges: HeldGauges) {
        self.dispatcher_beat_ms
            .store(local_now_ms(), Ordering::Relaxed);
        self.running.store(gauges.running, Ordering::Relaxed);
        self.in_flight.store(gauges.in_flight, Ordering::Relaxed);
        self.buffered.store(gauges.buffered, Ordering::Relaxed);
    }

    /// Held entries as of the dispatcher's latest iteration.
    pub fn held(&self) -> HeldGauges {
        HeldGauges {
            running: self.running.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
        }
    }

    /// Records the timings of an outcome `finish` accepted. `clock_offset_ms` is the
    /// Redis server's clock minus ours: entry ids carry server time, `started_ms` ours.
    pub(crate) fn observe(&self, o: &Outcome, clock_offset_ms: i64) {
        if o.started_ms <= 0 || o.kind == OutcomeKind::Expired {
            return; // never ran (expired, malformed, aborted in the buffer)
        }
        self.run_time.observe_ms(local_now_ms() - o.started_ms);
        if let Some(entered) = entry_ms(&o.entry_id) {
            self.wait_time
                .observe_ms(o.started_ms + clock_offset_ms - entered);
        }
    }
}

/// The dispatcher's heartbeat (called at the top of each of its loop iterations).
pub(crate) fn beat(ctx: &Ctx) {
    let gauges = held_gauges(&ctx.held(), ctx.config.concurrency);
    ctx.counters.live().beat(gauges);
}

/// The gauges of what is held. An executor that queues ahead is handed up to
/// `concurrency` more than it runs: those count as waiting (like the buffer), not as
/// running.
fn held_gauges(held: &Held, concurrency: usize) -> HeldGauges {
    let handed = held.running();
    let running = handed.min(concurrency);
    let queued = handed - running;
    HeldGauges {
        running: running as u64,
        in_flight: (held.in_flight() - queued) as u64,
        buffered: (held.buffered() + queued) as u64,
    }
}

/// Records the timings of an outcome `finish` accepted.
pub(crate) fn observe(ctx: &Ctx, o: &Outcome) {
    ctx.counters
        .live()
        .observe(o, ctx.now_ms() - local_now_ms());
}

/// The server time (ms) in a stream entry id `<ms>-<seq>`.
pub fn entry_ms(entry_id: &str) -> Option<i64> {
    entry_id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_queued_ahead_count_as_waiting_not_running() {
        let mut held = Held::default();
        for i in 0..7 {
            let d = crate::state::test_delivery(&format!("{i}-0"), &format!("t{i}"));
            if i < 6 {
                held.mark_running(0, &d); // six handed to the executor
            } else {
                held.push(0, d); // one in the engine's buffer
            }
        }
        let g = super::held_gauges(&held, 4);
        assert_eq!((g.running, g.in_flight, g.buffered), (4, 4, 3));
        let g = super::held_gauges(&held, 8);
        assert_eq!((g.running, g.in_flight, g.buffered), (6, 6, 1));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe_ms(3); // 0.005
        h.observe_ms(5); // 0.005 (bounds are inclusive)
        h.observe_ms(700); // 1.0
        h.observe_ms(1_000_000); // above every bound
        h.observe_ms(-4); // clock skew: 0
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative[0], 3);
        assert_eq!(s.cumulative[6], 3); // 0.5
        assert_eq!(s.cumulative[7], 4); // 1.0
        assert_eq!(*s.cumulative.last().unwrap(), 4);
        assert!((s.sum - 1000.708).abs() < 1e-9);
    }

    #[test]
    fn phase_only_moves_forward() {
        let l = Live::default();
        assert_eq!(l.phase(), Phase::Starting);
        l.set_phase(Phase::Draining);
        l.set_phase(Phase::Serving);
        assert_eq!(l.phase(), Phase::Draining);
        assert_eq!(Phase::Draining.as_str(), "draining");
    }

    #[tokio::test]
    async fn waits_for_a_phase() {
        let l = std::sync::Arc::new(Live::default());
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.wait_for_phase(Phase::Serving).await });
        tokio::task::yield_now().await;
        l.set_phase(Phase::Serving);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // Already there: returns at once.
        l.wait_for_phase(Phase::Starting).await;
    }

    #[test]
    fn observes_outcomes_that_ran() {
        let l = Live::default();
        let now = local_now_ms();
        let mut o = Outcome {
            entry_id: format!("{}-0", now - 1500),
            task_id: "t".into(),
            kind: OutcomeKind::Ok,
            value: vec![],
            tries: 1,
            enqueued_ms: 0,
            started_ms: now - 200,
            lane: "default".into(),
            retry_delay_ms: 0,
            retry_payload: vec![],
        };
        l.observe(&o, 0);
        let run = l.run_time.snapshot();
        let wait = l.wait_time.snapshot();
        assert_eq!((run.count, wait.count), (1, 1));
        assert!((0.19..1.0).contains(&run.sum), "{}", run.sum);
        assert!((1.2..1.4).contains(&wait.sum), "{}", wait.sum);
        o.started_ms = 0;
        l.observe(&o, 0);
        assert_eq!(l.run_time.snapshot().count, 1);
        assert_eq!(entry_ms("17-3"), Some(17));
        assert_eq!(entry_ms("entry"), None);
    }
}
