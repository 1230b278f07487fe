//! How a run is asked to end.
//!
//! A stop has two levels, matching what a worker does on signals: the first request
//! drains (stop fetching, hand the buffer back, let running tasks finish while keeping
//! their leases, retire); a second one, or `stop_now`, returns at once and leaves running
//! entries pending for another worker to reclaim. Nothing is acknowledged early on either
//! path, so nothing is lost.
//!
//! The level lives in a `watch` channel: every part of the engine can wait for a change
//! without polling, and a signal handler can call [`StopHandle::stop`] from any thread.
//!
//! The handle also carries the burst switch: `app.burst = True` on a running in-code
//! worker makes it return once the queue is drained, as the setting read at start does.
//!
//! And the recycle request (`ardiq run --max-tasks / --max-memory`): a third way out,
//! apart from the stop level on purpose. A recycling worker drains exactly as on a first
//! signal, but a signal arriving meanwhile must still count as the *first* one (drain),
//! not escalate to an immediate stop; and the run reports why it ended
//! ([`crate::StopReason::Recycle`]) so that the supervisor replaces the process.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use redis::Value;
use tokio::sync::watch;

use crate::context::Ctx;
use crate::executor::Delivery;
use crate::keys::GROUP;
use crate::reply;
use crate::scripts;

/// How far a stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Serving.
    Running,
    /// Draining: no new work, running tasks finish.
    Graceful,
    /// Return now.
    Immediate,
}

/// Asks a running engine to stop. Cheap to clone, `Send + Sync`, safe to call from a
/// signal-handling task or any thread, and before `run` starts (the run then drains at
/// once).
#[derive(Debug, Clone)]
pub struct StopHandle {
    tx: watch::Sender<StopLevel>,
    burst: Arc<AtomicBool>,
    /// Set once, by the first recycle request.
    recycle: Arc<OnceLock<Recycle>>,
}

/// Why a worker recycles itself: it stops taking work, drains as on a first signal, and
/// the run returns [`crate::StopReason::Recycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    /// It started the `max_tasks` tasks it was allowed ([`crate::Config::max_tasks`]).
    MaxTasks(u64),
    /// Its resident memory went over the limit (both in bytes).
    MaxMemory {
        /// The limit it was given.
        limit: u64,
        /// What it measured.
        resident: u64,
    },
}

impl fmt::Display for Recycle {
    /// `max_tasks=500`, `max_memory=200MB rss=231MB`: the parenthesis of the "worker
    /// stopped" line's `reason=recycle (...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MB: u64 = 1024 * 1024;
        match self {
            Recycle::MaxTasks(n) => write!(f, "max_tasks={n}"),
            Recycle::MaxMemory { limit, resident } => {
                write!(f, "max_memory={}MB rss={}MB", limit / MB, resident / MB)
            }
        }
    }
}

impl StopHandle {
    pub(crate) fn with_burst(burst: bool) -> (Self, watch::Receiver<StopLevel>) {
        let (tx, rx) = watch::channel(StopLevel::Running);
        let burst = Arc::new(AtomicBool::new(burst));
        let recycle = Arc::new(OnceLock::new());
        (StopHandle { tx, burst, recycle }, rx)
    }

    /// Asks the run to recycle: stop taking work, drain as on a first [`stop`](Self::stop),
    /// and return [`crate::StopReason::Recycle`]. The first request's reason is kept;
    /// later ones change nothing. A stop requested first wins (the run reports it).
    pub fn recycle(&self, why: Recycle) {
        if self.recycle.set(why).is_ok() {
            // Wakes whatever waits on the level, so the dispatcher looks at once.
            self.tx.send_modify(|_| {});
        }
    }

    /// The recycle request, if one came.
    pub fn recycling(&self) -> Option<Recycle> {
        self.recycle.get().copied()
    }

    /// Turns burst mode on or off while the run serves: on, it returns once the queue is
    /// drained. (Crons are scheduled or not by the mode the run started in.)
    pub fn set_burst(&self, on: bool) {
        self.burst.store(on, Ordering::SeqCst);
        // Wakes whatever waits on the level, so the dispatcher looks at once.
        self.tx.send_modify(|_| {});
    }

    /// Is burst mode on?
    pub fn burst(&self) -> bool {
        self.burst.load(Ordering::SeqCst)
    }

    /// First call: graceful stop. Second call: stop at once (the "second signal").
    pub fn stop(&self) {
        self.tx.send_modify(|l| {
            *l = match *l {
                StopLevel::Running => StopLevel::Graceful,
                _ => StopLevel::Immediate,
            }
        });
    }

    /// Stop at once, leaving running tasks for reclaim.
    pub fn stop_now(&self) {
        self.tx.send_replace(StopLevel::Immediate);
    }

    /// The current level.
    pub fn level(&self) -> StopLevel {
        *self.tx.borrow()
    }
}

/// Returns buffered (never started) entries to their streams as fresh entries, so any
/// worker can take them at once instead of waiting out the lease. Returns how many the
/// script re-queued.
pub(crate) async fn handback(
    ctx: &Ctx,
    entries: &[(usize, Delivery)],
) -> Result<u64, redis::RedisError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let keys = &ctx.keys;
    let mut inv = scripts::HANDBACK.prepare_invoke();
    for (lane, d) in entries {
        inv.key(keys.stream(*lane)).key(keys.job(&d.task_id));
    }
    inv.arg(GROUP).arg(ctx.worker());
    for (_, d) in entries {
        inv.arg(&d.entry_id);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    Ok(reply::int(&value).unwrap_or(0).max(0) as u64)
}

/// Leaves every lane's group where this consumer owns nothing pending, and drops the
/// heartbeat. Entries still pending (a forced stop) keep the consumer for reclaim.
pub(crate) async fn retire(ctx: &Ctx) -> Result<i64, redis::RedisError> {
    let keys = &ctx.keys;
    let mut inv = scripts::RETIRE.prepare_invoke();
    inv.key(keys.workers());
    for lane in 0..keys.lanes().len() {
        inv.key(keys.stream(lane));
    }
    inv.arg(GROUP).arg(ctx.worker());
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    Ok(reply::int(&value).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn escalates() {
        let (h, mut rx) = StopHandle::with_burst(false);
        assert_eq!(h.level(), StopLevel::Running);
        h.stop();
        rx.wait_for(|l| *l >= StopLevel::Graceful).await.unwrap();
        assert_eq!(h.level(), StopLevel::Graceful);
        h.clone().stop();
        rx.wait_for(|l| *l >= StopLevel::Immediate).await.unwrap();
        h.stop();
        assert_eq!(h.level(), StopLevel::Immediate);
    }

    #[tokio::test]
    async fn recycle_keeps_the_first_reason_and_wakes() {
        let (h, mut rx) = StopHandle::with_burst(false);
        assert_eq!(h.recycling(), None);
        rx.mark_unchanged();
        h.recycle(Recycle::MaxTasks(500));
        assert!(rx.has_changed().unwrap(), "a recycle wakes the dispatcher");
        h.clone().recycle(Recycle::MaxMemory {
            limit: 1 << 20,
            resident: 2 << 20,
        });
        assert_eq!(h.recycling(), Some(Recycle::MaxTasks(500)));
        // Not a stop: a first signal still only drains.
        assert_eq!(h.level(), StopLevel::Running);
        h.stop();
        assert_eq!(h.level(), StopLevel::Graceful);
        assert_eq!(Recycle::MaxTasks(500).to_string(), "max_tasks=500");
        let mem = Recycle::MaxMemory {
            limit: 200 << 20,
            resident: 231 << 20,
        };
        assert_eq!(mem.to_string(), "max_memory=200MB rss=231MB");
    }
}
