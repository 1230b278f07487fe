//! Liveness: is anything wedged? Two heartbeats, both atomic timestamps:
//! * the engine's dispatcher stamps one at every loop iteration (`ardiq_core::Live`); it
//!   wakes at least every `poll_block_ms` (or its Redis backoff) while serving;
//! * the pulse (`pulse.rs`) has the Python event loop stamp the other.
//!
//! A stale stamp (older than `--liveness-threshold`) makes `/livez` fail and holds back
//! the systemd watchdog. A Redis outage does neither: the dispatcher keeps turning (it
//! retries with backoff) and the loop is idle but fine; that is what `/readyz` reports.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use ardiq_core::{Live, Phase};

/// Epoch ms on the local clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The dispatcher is given at least this long, whatever the threshold: while Redis is
/// down it legitimately sleeps through its backoff (up to 5 s) after a command that may
/// take its timeout (5 s). A low threshold still catches a blocked event loop quickly.
const DISPATCHER_FLOOR_MS: i64 = 12_000;

/// The Python side of liveness, and the threshold both heartbeats are held to.
#[derive(Debug)]
pub struct Liveness {
    threshold_ms: i64,
    /// Epoch ms of the latest pulse callback the event loop ran.
    loop_beat_ms: AtomicI64,
    /// Cleared if the pulse cannot reach the event loop at all (a bridge without the
    /// loop it expects): the loop is then not judged, rather than judged dead.
    loop_watched: AtomicBool,
}

impl Liveness {
    pub fn new(threshold: Duration) -> Self {
        Liveness {
            threshold_ms: threshold.as_millis() as i64,
            loop_beat_ms: AtomicI64::new(now_ms()),
            loop_watched: AtomicBool::new(true),
        }
    }

    /// How often the pulse should reach the loop: four times per threshold.
    pub(super) fn pulse_every(&self) -> Duration {
        Duration::from_millis((self.threshold_ms / 4).clamp(20, 1000) as u64)
    }

    /// The event loop ran just now.
    pub(super) fn stamp(&self) {
        self.loop_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The event loop cannot be watched: judge the dispatcher only.
    pub(super) fn unwatch_loop(&self) {
        self.loop_watched.store(false, Ordering::Relaxed);
    }

    /// `Ok` when both the event loop and (while serving) the dispatcher turned within the
    /// threshold; else what is stuck.
    pub fn check(&self, live: &Live) -> Result<(), String> {
        let loop_idle = now_ms() - self.loop_beat_ms.load(Ordering::Relaxed);
        if loop_idle > self.threshold_ms && self.loop_watched.load(Ordering::Relaxed) {
            return Err(format!(
                "the Python event loop has not run for {:.1}s (a task blocks it?)",
                loop_idle as f64 / 1000.0
            ));
        }
        let phase = live.phase();
        let dispatcher_idle = live.dispatcher_idle_ms();
        let limit = self.threshold_ms.max(DISPATCHER_FLOOR_MS);
        if phase == Phase::Serving && dispatcher_idle > limit {
            return Err(format!(
                "the dispatcher has not run for {:.1}s",
                dispatcher_idle as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_on_a_stale_loop() {
        let l = Liveness::new(Duration::from_millis(50));
        let live = Live::default();
        assert!(l.check(&live).is_ok());
        l.loop_beat_ms.store(now_ms() - 1000, Ordering::Relaxed);
        let why = l.check(&live).unwrap_err();
        assert!(why.contains("event loop"), "{why}");
        l.stamp();
        assert!(l.check(&live).is_ok());
    }

    #[test]
    fn an_unwatched_loop_is_not_judged() {
        let l = Liveness::new(Duration::from_millis(50));
        l.loop_beat_ms.store(now_ms() - 1000, Ordering::Relaxed);
        l.unwatch_loop();
        assert!(l.check(&Live::default()).is_ok());
    }
}
