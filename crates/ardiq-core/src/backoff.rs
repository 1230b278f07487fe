//! Retry pacing for Redis trouble: jittered exponential backoff, and a log throttle so a
//! Redis outage produces one line per interval instead of one per failed call.

use std::time::{Duration, Instant};

use rand::Rng;

/// Exponential backoff with "equal jitter": each delay is drawn from `[d/2, d]` where `d`
/// doubles from `base` up to `max`. Jitter spreads the reconnects of many workers after a
/// Redis restart; the lower bound keeps one worker from hammering a server that is down.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start near `base` and never exceed `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The pacing every Redis retry loop in the engine uses: 50 ms up to 5 s.
    pub fn redis() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The delay before the next attempt; each call counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The current upper bound, before jitter.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Decides whether a repeated failure is worth a log line: the first failure logs, then
/// at most one line per `interval` (saying how many were suppressed), and a recovery
/// logs once.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl LogThrottle {
    /// One line per `interval` at most.
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last: None,
            suppressed: 0,
            failing: false,
        }
    }

    /// Call on each failure. `Some(n)` means: log now, `n` failures were not logged since
    /// the last line. `None`: stay quiet.
    pub fn failure(&mut self) -> Option<u64> {
        self.failing = true;
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Call on success. `true` once after a run of failures: log the recovery.
    pub fn success(&mut self) -> bool {
        let was = self.failing;
        self.failing = false;
        self.last = None;
        self.suppressed = 0;
        was
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1600);
        let mut b = Backoff::new(base, max);
        let mut ceiling = base;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(max);
        }
        // Thousands of attempts never overflow and stay at the cap.
        for _ in 0..5000 {
            assert!(b.next_delay() <= max);
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn throttle_logs_once_per_interval() {
        let mut t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.failure(), Some(0));
        assert_eq!(t.failure(), None);
        assert_eq!(t.failure(), None);
        assert!(t.success());
        assert!(!t.success());
        assert_eq!(t.failure(), Some(0));
        let mut fast = LogThrottle::new(Duration::ZERO);
        assert_eq!(fast.failure(), Some(0));
        assert_eq!(fast.failure(), Some(0));
    }
}
