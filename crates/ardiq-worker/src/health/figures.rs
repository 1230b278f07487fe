//! The queue's figures for `/metrics` (depths, scheduled, dead letters, live workers),
//! read from Redis at most once per [`FRESH_FOR`].
//!
//! A read is a round of commands (about two per lane plus four), and `/metrics` needs no
//! authentication: without the cache a scrape storm was a Redis command storm. Scrapes
//! that arrive while a read is in flight wait for it and share its answer, so however
//! many come, Redis sees at most one round per interval. A failed read is kept as long
//! (`ardiq_queue_up 0`), so scrapes during an outage do not queue up behind connection
//! attempts either.

use std::time::{Duration, Instant};

use ardiq_core::ops::{Client, QueueStats};
use ardiq_core::Keys;
use tokio::sync::Mutex;

/// How long a read is served again. Well below any scrape interval, so figures stay
/// current for Prometheus, while a storm costs one round per second.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(1);

pub(super) struct QueueFigures {
    keys: Keys,
    redis_url: String,
    command_timeout: Duration,
    /// Held across a read: the single flight.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The metrics connection, made on first read and dropped after an error.
    client: Option<Client>,
    /// The latest read (`None` inside: it failed) and when it ended.
    last: Option<(Instant, Option<QueueStats>)>,
}

impl QueueFigures {
    pub(super) fn new(keys: Keys, redis_url: String, command_timeout: Duration) -> Self {
        QueueFigures {
            keys,
            redis_url,
            command_timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// The figures (`None`: Redis could not tell), at most [`FRESH_FOR`] old.
    pub(super) async fn get(&self) -> Option<QueueStats> {
        let mut state = self.state.lock().await;
        if let Some((at, figures)) = &state.last {
            if at.elapsed() < FRESH_FOR {
                return figures.clone();
            }
        }
        let figures = self.read(&mut state.client).await;
        state.last = Some((Instant::now(), figures.clone()));
        figures
    }

    async fn read(&self, client: &mut Option<Client>) -> Option<QueueStats> {
        if client.is_none() {
            *client = Client::connect(&self.redis_url, self.command_timeout)
                .await
                .ok();
        }
        let c = client.as_mut()?;
        let read = tokio::time::timeout(self.command_timeout * 2, c.queue_stats(&self.keys)).await;
        match read {
            Ok(Ok(figures)) => Some(figures),
            _ => {
                *client = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_read_is_kept_for_the_interval() {
        // Nothing listens on port 1: the first read fails at once, the second is not tried.
        let figures = QueueFigures::new(
            Keys::new("q", &["default".into()]),
            "redis://127.0.0.1:1".into(),
            Duration::from_millis(200),
        );
        assert!(figures.get().await.is_none());
        let first = figures.state.lock().await.last.as_ref().unwrap().0;
        assert!(figures.get().await.is_none());
        assert_eq!(figures.state.lock().await.last.as_ref().unwrap().0, first);
    }
}
