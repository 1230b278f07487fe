//! What a run did: live counters (for a metrics endpoint) and the final report.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::executor::OutcomeKind;
use crate::metrics::Live;

/// Why [`crate::Engine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop was requested and every running task finished (graceful drain).
    Signal,
    /// Burst mode: the queue was drained.
    Burst,
    /// A second stop request: returned at once, running tasks left for reclaim.
    Forced,
    /// The drain deadline passed with tasks still running (left for reclaim).
    DrainTimeout,
    /// A recycle request ([`crate::StopHandle::recycle`]: `--max-tasks`, `--max-memory`)
    /// and every running task finished, as after a graceful stop.
    Recycle,
}

impl StopReason {
    /// The `reason=` value for the "worker stopped" log line.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Signal => "signal",
            StopReason::Burst => "burst",
            StopReason::Forced => "forced",
            StopReason::DrainTimeout => "drain_timeout",
            StopReason::Recycle => "recycle",
        }
    }
}

/// Counters updated while the engine runs. Shared (`Arc`) so a metrics endpoint can read
/// them live; all relaxed atomics, since they are statistics, not synchronization.
#[derive(Debug, Default)]
pub struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    aborted: AtomicU64,
    retried: AtomicU64,
    stale: AtomicU64,
    malformed: AtomicU64,
    reclaimed: AtomicU64,
    reclaim_dead: AtomicU64,
    reclaim_aborted: AtomicU64,
    handed_back: AtomicU64,
    lost_leases: AtomicU64,
    promoted: AtomicU64,
    crons_fired: AtomicU64,
    delivered: AtomicU64,
    /// Phase, Redis status, dispatcher heartbeat, gauges and histograms (health/metrics).
    live: Live,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Finished with kind `ok`.
    pub ok: u64,
    /// Finished with kind `fail` (dead-lettered), malformed entries included.
    pub failed: u64,
    /// Finished with kind `expired`.
    pub expired: u64,
    /// Finished with kind `abort` (including retries turned into aborts).
    pub aborted: u64,
    /// Finished with kind `retry` (re-queued or delayed).
    pub retried: u64,
    /// Outcomes `finish` rejected as stale (the entry was reclaimed meanwhile).
    pub stale: u64,
    /// Malformed entries dead-lettered by this worker (also counted in `failed`).
    pub malformed: u64,
    /// Entries of stalled workers this worker re-queued.
    pub reclaimed: u64,
    /// Entries this worker dead-lettered as `worker lost` (or malformed) at reclaim.
    pub dead: u64,
    /// Entries finalized as aborted at reclaim.
    pub reclaim_aborted: u64,
    /// Buffered entries handed back at stop.
    pub handed_back: u64,
    /// Held entries `renew` reported lost.
    pub lost_leases: u64,
    /// Delayed tasks this worker moved to their streams.
    pub promoted: u64,
    /// Cron occurrences this worker enqueued (first caller wins).
    pub crons_fired: u64,
    /// Entries read from the streams.
    pub delivered: u64,
}

impl Counters {
    pub(crate) fn finished(&self, kind: OutcomeKind) {
        let c = match kind {
            OutcomeKind::Ok => &self.ok,
            OutcomeKind::Fail => &self.failed,
            OutcomeKind::Expired => &self.expired,
            OutcomeKind::Retry => &self.retried,
            OutcomeKind::Abort => &self.aborted,
            // Refused entries count with the malformed ones: neither could run.
            OutcomeKind::Drop => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, which: Counter, n: u64) {
        let c = match which {
            Counter::Stale => &self.stale,
            Counter::Malformed => &self.malformed,
            Counter::Reclaimed => &self.reclaimed,
            Counter::ReclaimDead => &self.reclaim_dead,
            Counter::ReclaimAborted => &self.reclaim_aborted,
            Counter::HandedBack => &self.handed_back,
            Counter::LostLeases => &self.lost_leases,
            Counter::Promoted => &self.promoted,
            Counter::CronsFired => &self.crons_fired,
            Counter::Delivered => &self.delivered,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The run's live state: phase, Redis status, heartbeats, gauges, histograms.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            ok: g(&self.ok),
            failed: g(&self.failed),
            expired: g(&self.expired),
            aborted: g(&self.aborted),
            retried: g(&self.retried),
            stale: g(&self.stale),
            malformed: g(&self.malformed),
            reclaimed: g(&self.reclaimed),
            dead: g(&self.reclaim_dead),
            reclaim_aborted: g(&self.reclaim_aborted),
            handed_back: g(&self.handed_back),
            lost_leases: g(&self.lost_leases),
            promoted: g(&self.promoted),
            crons_fired: g(&self.crons_fired),
            delivered: g(&self.delivered),
        }
    }
}

/// Counters other than outcome kinds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Stale,
    Malformed,
    Reclaimed,
    ReclaimDead,
    ReclaimAborted,
    HandedBack,
    LostLeases,
    Promoted,
    CronsFired,
    Delivered,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Why the run ended.
    pub reason: StopReason,
    /// Tasks still running when it returned (non-zero only for `Forced`/`DrainTimeout`).
    pub abandoned: usize,
    /// The counters at the end.
    pub counters: CountersSnapshot,
}
