//! The task retry delay: one rule for every executor. The Python runtime applies it to
//! Python tasks (`ardiq.runtime.retry_delay_ms`); `tests/vectors/backoff.json` holds both
//! sides to the same answers.

/// How long a failed attempt waits before the next, in ms: the delay the task asked for
/// (a `Retry` with a delay; negative counts as 0), else the task's `backoff_ms` when set
/// (> 0), else tries² seconds. `tries` counts the failed attempt (1 after the first).
pub fn retry_delay_ms(tries: u32, requested_ms: Option<i64>, backoff_ms: u64) -> u64 {
    if let Some(requested) = requested_ms {
        return requested.max(0) as u64;
    }
    if backoff_ms > 0 {
        return backoff_ms;
    }
    let tries = u64::from(tries);
    tries.saturating_mul(tries).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_then_backoff_then_squares() {
        assert_eq!(retry_delay_ms(3, Some(40), 500), 40);
        assert_eq!(retry_delay_ms(3, Some(-5), 500), 0);
        assert_eq!(retry_delay_ms(3, None, 500), 500);
        assert_eq!(retry_delay_ms(3, None, 0), 9000);
        assert_eq!(retry_delay_ms(u32::MAX, None, 0), u64::MAX);
    }
}
