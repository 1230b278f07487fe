//! Reclaim: take over entries whose worker stopped renewing them.
//!
//! Per lane, `XAUTOCLAIM` hands this consumer the entries idle longer than the lease,
//! following the cursor Redis returns from one poll to the next (a restart from `0-0`
//! every poll would rescan the head of the pending list forever and starve its tail).
//! The claimed entries go to the `reclaim` script, which re-queues each as a fresh entry
//! (`r` + 1) or dead-letters it as `worker lost` at the delivery cap. The re-queued copies
//! come back through the normal fetch, to whichever worker reads them first.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tracing::{info, warn};

use crate::backoff::LogThrottle;
use crate::connection::is_nogroup;
use crate::context::Ctx;
use crate::entry::{malformed_task_id, parse_entry, Parsed};
use crate::keys::GROUP;
use crate::reply;
use crate::report::Counter;
use crate::scripts;

/// Entries per XAUTOCLAIM page.
const PAGE: usize = 100;
/// Pages per lane in one poll when each comes back full: drains a backlog quickly
/// without letting one poll run unbounded.
const MAX_PAGES: usize = 10;

/// Cursor `0-0`: the start of the pending list, and Redis's "scan complete" answer.
const START: &str = "0-0";

/// The poll interval: a quarter of the lease, at most a second.
pub fn interval(idle_timeout_ms: u64) -> Duration {
    Duration::from_millis((idle_timeout_ms / 4).clamp(10, 1000))
}

/// Polls until aborted by the engine.
pub async fn run(ctx: Arc<Ctx>) {
    let mut cursors: Vec<String> = vec![START.to_owned(); ctx.keys.lanes().len()];
    let mut throttle = LogThrottle::default();
    let every = interval(ctx.config.idle_timeout_ms);
    loop {
        tokio::time::sleep(every).await;
        match round(&ctx, &mut cursors).await {
            Ok(_) => {
                if throttle.success() {
                    info!("reclaim works again");
                }
            }
            Err(e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, suppressed, "reclaim failed, retrying");
                }
            }
        }
    }
}

/// What one reclaim round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Entries taken over (re-queued, dead-lettered or finalized as aborted).
    pub claimed: usize,
    /// Some lane stopped at the page limit with full pages: more may be reclaimable.
    pub more: bool,
}

/// One round over every lane: up to [`MAX_PAGES`] pages per lane while they come back
/// full. A lane that fails does not stop the others; the first error is returned after
/// all were tried.
pub async fn round(ctx: &Ctx, cursors: &mut [String]) -> Result<Round, redis::RedisError> {
    let mut done = Round::default();
    let mut first_error = None;
    for (lane, cursor) in cursors.iter_mut().enumerate() {
        let mut pages = 0;
        loop {
            match poll_lane(ctx, lane, cursor).await {
                Ok((claimed, full)) => {
                    done.claimed += claimed;
                    pages += 1;
                    if !full {
                        break;
                    }
                    if pages >= MAX_PAGES {
                        done.more = true;
                        break;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Burst mode's check before it declares the queue drained: a full round from the start
/// of every lane's pending list. Entries a dead worker left behind (idle past the lease)
/// are taken over now rather than left pending after the burst ends; entries a live
/// worker keeps renewing are never idle that long, so they do not hold the burst up.
pub async fn burst_round(ctx: &Ctx) -> Result<Round, redis::RedisError> {
    let mut cursors: Vec<String> = vec![START.to_owned(); ctx.keys.lanes().len()];
    round(ctx, &mut cursors).await
}

/// One XAUTOCLAIM page on one lane plus its `reclaim` call. Returns how many entries it
/// claimed and whether the page was full (more may be waiting right behind it).
pub async fn poll_lane(
    ctx: &Ctx,
    lane: usize,
    cursor: &mut String,
) -> Result<(usize, bool), redis::RedisError> {
    let stream = ctx.keys.stream(lane);
    let mut conn = ctx.conn.clone();
    let value: Value = match redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(GROUP)
        .arg(ctx.worker())
        .arg(ctx.config.idle_timeout_ms)
        .arg(cursor.as_str())
        .arg("COUNT")
        .arg(PAGE)
        .query_async(&mut conn)
        .await
    {
        Ok(v) => v,
        // No group yet (or Redis lost its data): nothing to reclaim; fetch recreates it.
        Err(e) if is_nogroup(&e) => {
            *cursor = START.to_owned();
            return Ok((0, false));
        }
        Err(e) => return Err(e),
    };
    let parts = reply::array(&value).unwrap_or_default();
    let next = parts
        .first()
        .and_then(reply::string)
        .unwrap_or_else(|| START.to_owned());
    let lane_name = &ctx.keys.lanes()[lane];
    let claimed: Vec<(String, String)> = parts
        .get(1)
        .and_then(reply::array)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| parse_entry(lane_name, e))
        .map(|p| match p {
            Parsed::Task(d) => (d.entry_id, d.task_id),
            Parsed::Malformed { entry_id, .. } => {
                let id = malformed_task_id(&entry_id);
                (entry_id, id)
            }
        })
        .collect();
    let full = claimed.len() >= PAGE;
    if !claimed.is_empty() {
        reclaim(ctx, lane, &claimed).await?;
    }
    // Only move the cursor once the claimed page is handled: if `reclaim` failed, the
    // same entries (now ours and idle) come back on the next poll.
    *cursor = next;
    Ok((claimed.len(), full && cursor.as_str() != START))
}

async fn reclaim(
    ctx: &Ctx,
    lane: usize,
    claimed: &[(String, String)],
) -> Result<(), redis::RedisError> {
    let keys = &ctx.keys;
    let lane_name = &keys.lanes()[lane];
    let mut inv = scripts::RECLAIM.prepare_invoke();
    inv.key(keys.dead_index())
        .key(keys.history())
        .key(keys.stats());
    for (_, id) in claimed {
        inv.key(keys.stream(lane))
            .key(keys.job(id))
            .key(keys.wait(id))
            .key(keys.result(id))
            .key(keys.dead(id))
            .key(keys.attempts(id));
    }
    inv.arg(keys.prefix())
        .arg(GROUP)
        .arg(ctx.worker())
        .arg(ctx.config.result_ttl_ms)
        .arg(ctx.config.max_deliveries)
        .arg(claimed.len())
        .arg(ctx.config.history);
    for (eid, id) in claimed {
        inv.arg(eid).arg(id).arg(lane_name);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    let counts = reply::array(&value).unwrap_or_default();
    let n = |i: usize| counts.get(i).and_then(reply::int).unwrap_or(0).max(0) as u64;
    let (requeued, buried, aborted) = (n(0), n(1), n(2));
    ctx.counters.add(Counter::Reclaimed, requeued);
    ctx.counters.add(Counter::ReclaimDead, buried);
    ctx.counters.add(Counter::ReclaimAborted, aborted);
    if requeued + buried + aborted > 0 {
        warn!(lane = %lane_name, worker = %ctx.worker(), requeued, dead = buried, aborted,
            "reclaimed entries of a worker that stopped renewing them");
    }
    Ok(())
}
