//! One log line per interval for an event that can repeat in a storm (a failing
//! `accept`, refused connections): the first occurrence is logged at once, later ones are
//! counted and reported with the next line allowed.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// When the latest line went out (`None`: never).
    last: Option<Instant>,
    /// Occurrences since that line that were not logged.
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence. `Some(n)` when a line may go out now, `n` being how many
    /// occurrences were kept quiet since the previous line.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_kept_quiet() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.hit_at(start), Some(0));
        for i in 1..=249 {
            assert_eq!(t.hit_at(start + Duration::from_millis(i * 30)), None);
        }
        assert_eq!(t.hit_at(start + Duration::from_secs(10)), Some(249));
        assert_eq!(t.hit_at(start + Duration::from_secs(11)), None);
        assert_eq!(t.hit_at(start + Duration::from_secs(30)), Some(1));
    }
}
