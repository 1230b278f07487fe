//! Pausing: which lanes this worker must not take from.
//!
//! `P paused` (PROTOCOL.md, Pausing) names paused lanes, and `*` for the whole queue. It
//! is read once before the first fetch and then once a second ([`POLL`]), never per
//! fetch, so a queue nobody pauses costs one `HKEYS` a second. The dispatcher leaves
//! paused lanes out of `fetch` and of the blocking read and starts nothing buffered of
//! them; this task hands such buffered entries back (`handback`) so any worker can take
//! them once the lane is resumed. Running tasks finish; reclaim and promotion go on
//! (their entries wait in the stream).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::context::Ctx;
use crate::report::Counter;
use crate::shutdown;

/// How often `P paused` is read.
pub const POLL: Duration = Duration::from_secs(1);

/// The field of `P paused` that pauses the whole queue.
pub const ALL: &str = "*";

/// The paused lanes as last read, shared by the poller and the dispatcher.
#[derive(Debug, Default)]
pub struct PauseState {
    /// Is any lane paused? Read on every dispatcher turn: with nothing paused, nothing
    /// else here is looked at.
    any: AtomicBool,
    /// Raised at every change, so the dispatcher looks at the streams again.
    generation: AtomicU64,
    /// Per lane (lowest-first numbering): paused?
    lanes: Mutex<Vec<bool>>,
}

impl PauseState {
    /// Is any lane paused?
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Changes so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Per lane (lowest-first): paused?
    pub fn snapshot(&self) -> Vec<bool> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores a new reading; `true` when it changed.
    fn set(&self, paused: Vec<bool>) -> bool {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if *lanes == paused || (lanes.is_empty() && !paused.contains(&true)) {
            return false;
        }
        self.any.store(paused.contains(&true), Ordering::Release);
        *lanes = paused;
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// Which lanes (lowest-first) the fields of `P paused` pause.
pub fn paused_lanes(lanes: &[String], fields: &[String]) -> Vec<bool> {
    let all = fields.iter().any(|f| f == ALL);
    lanes.iter().map(|l| all || fields.contains(l)).collect()
}

/// Polls `P paused` until aborted by the engine.
pub async fn run(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(POLL).await;
        if let Err(e) = refresh(&ctx).await {
            debug!(error = %e, "reading paused lanes failed");
        }
    }
}

/// Reads `P paused` once; on a change wakes the dispatcher; hands back what the buffer
/// holds of paused lanes.
pub async fn refresh(ctx: &Ctx) -> Result<(), redis::RedisError> {
    let mut conn = ctx.conn.clone();
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(ctx.keys.paused())
        .query_async(&mut conn)
        .await?;
    let paused = paused_lanes(ctx.keys.lanes(), &fields);
    let before = ctx.pause.snapshot();
    let newly_paused = paused
        .iter()
        .enumerate()
        .any(|(i, &p)| p && !before.get(i).copied().unwrap_or(false));
    if ctx.pause.set(paused.clone()) {
        let names = |want: bool| -> Vec<&str> {
            ctx.keys
                .lanes()
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    paused[*i] == want && before.get(*i).copied().unwrap_or(false) != want
                })
                .map(|(_, l)| l.as_str())
                .collect()
        };
        let (now_paused, resumed) = (names(true), names(false));
        if !now_paused.is_empty() {
            info!(worker = %ctx.worker(), lanes = ?now_paused, "lanes paused");
        }
        if !resumed.is_empty() {
            info!(worker = %ctx.worker(), lanes = ?resumed, "lanes resumed");
        }
        ctx.wake.notify_one();
    }
    if newly_paused {
        // Deliveries the executor queued ahead and has not started come back to the
        // buffer (the dispatcher starts the other lanes' again at once), so those of a
        // newly paused lane are handed back below instead of starting.
        recall_queued(ctx);
    }
    if paused.contains(&true) {
        hand_back(ctx, &paused).await;
    }
    Ok(())
}

/// Moves the deliveries the executor queued but has not started back to the buffer.
fn recall_queued(ctx: &Ctx) {
    let recalled = ctx.executor.recall();
    if recalled.is_empty() {
        return;
    }
    let mut held = ctx.held();
    for d in recalled {
        if let Some(lane) = ctx.keys.lane_index(&d.lane) {
            held.abandon(&(lane, d.entry_id.clone()));
            held.push(lane, d);
        }
    }
    drop(held);
    ctx.wake.notify_one();
}

/// Returns the buffered entries of paused lanes to their streams.
async fn hand_back(ctx: &Ctx, paused: &[bool]) {
    let entries = ctx.held().take_lanes(paused);
    if entries.is_empty() {
        return;
    }
    match shutdown::handback(ctx, &entries).await {
        Ok(n) => {
            ctx.counters.add(Counter::HandedBack, n);
            info!(worker = %ctx.worker(), handed_back = n,
                "handed back prefetched tasks of paused lanes");
            ctx.wake.notify_one();
        }
        Err(e) => {
            // Still held and renewed: the next poll tries again.
            warn!(error = %e, "could not hand back tasks of paused lanes; retrying");
            let mut held = ctx.held();
            for (lane, d) in entries {
                held.push(lane, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_pause_lanes_or_everything() {
        let lanes = ["low".to_owned(), "high".to_owned()];
        assert_eq!(paused_lanes(&lanes, &[]), [false, false]);
        assert_eq!(
            paused_lanes(&lanes, &["high".into(), "gone".into()]),
            [false, true]
        );
        assert_eq!(paused_lanes(&lanes, &[ALL.into()]), [true, true]);
    }

    #[test]
    fn state_counts_changes() {
        let s = PauseState::default();
        assert!(!s.any());
        assert!(!s.set(vec![false, false]), "nothing paused is no change");
        assert!(s.set(vec![false, true]));
        assert!(s.any() && s.generation() == 1);
        assert!(!s.set(vec![false, true]));
        assert!(s.set(vec![false, false]));
        assert!(!s.any() && s.generation() == 2);
    }
}
