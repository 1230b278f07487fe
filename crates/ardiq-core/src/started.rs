//! Marking suspects as started, right before they run.
//!
//! A suspect is a delivery whose entry was reclaimed before (`r` >= 1): its task may be
//! what killed a worker. `reclaim` raises `r` (and applies the delivery cap) for a
//! suspect only when its job carries the `started` mark for that entry, so tasks that
//! were merely prefetched by a dying worker are never blamed for its death. First
//! deliveries (`r` = 0) need no mark and start at once: the mark costs a round trip only
//! after a reclaim.
//!
//! The dispatcher hands a batch of suspects here; one `started` call marks them all,
//! then the ones this worker still holds go to the executor. One it no longer holds (its
//! lease was lost meanwhile) is not run here: its new owner runs it.
//!
//! The same check guards every start after a stall (`Ctx::lease_may_have_lapsed`): a
//! worker that was stopped past its lease finds out here, before running a body, which
//! of its entries another worker has reclaimed meanwhile.

use std::sync::Arc;

use redis::Value;
use tracing::{info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::connection::is_transient;
use crate::context::Ctx;
use crate::executor::{Delivery, LiveJob};
use crate::keys::GROUP;
use crate::reply;
use crate::scripts;

/// Is this delivery a suspect (reclaimed at least once)?
pub fn is_suspect(d: &Delivery) -> bool {
    d.reclaims >= 1
}

/// Is this delivery on its last chance: a suspect whose next counted loss reaches the
/// delivery cap (`r + 1 >= cap`)? A worker runs at most one of these at a time, so when
/// a task kills its worker every time, no other last-chance task was running next to it
/// at the fatal delivery: only the killer reaches the cap. (Tasks running next to it
/// earlier, while they were not on their last chance, are counted; that is what the
/// cap's margin is for.)
pub fn is_last_chance(d: &Delivery, cap: u32) -> bool {
    is_suspect(d) && d.reclaims.saturating_add(1) >= cap
}

/// Marks `batch` (lane index, delivery) as started, retrying Redis trouble with backoff,
/// then starts the ones still held. Runs on its own task; the deliveries already count
/// as running, so their concurrency slots and leases are kept meanwhile.
pub async fn mark_then_start(ctx: Arc<Ctx>, batch: Vec<(usize, Delivery)>) {
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    let held = loop {
        match mark(&ctx, &batch).await {
            Ok(held) => {
                if throttle.success() {
                    info!("marking started tasks works again");
                }
                break held;
            }
            Err(e) if is_transient(&e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, suppressed, tasks = batch.len(),
                        "could not mark reclaimed tasks as started, retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                // A script error would fail the same way again: run them unmarked (a
                // crash then re-queues them without counting, which only delays the cap).
                warn!(error = %e, tasks = batch.len(),
                    "could not mark reclaimed tasks as started; running them unmarked");
                break vec![(true, None); batch.len()];
            }
        }
    };
    let mut start = Vec::with_capacity(batch.len());
    {
        let mut state = ctx.held();
        for ((lane, mut d), (keep, live_job)) in batch.into_iter().zip(held) {
            if keep {
                d.live_job = live_job;
                start.push(d);
            } else {
                warn!(id = %d.task_id, name = %d.fn_name, worker = %ctx.worker(),
                    entry = %d.entry_id, "reclaimed elsewhere before it started; not run here");
                state.abandon(&(lane, d.entry_id));
            }
        }
    }
    if !start.is_empty() {
        ctx.executor.start(start, &ctx.sink);
    }
    ctx.wake.notify_one();
}

/// One `started` call: per delivery, whether this consumer still holds it, and what its
/// live job record says (its `e` and `n`).
async fn mark(
    ctx: &Ctx,
    batch: &[(usize, Delivery)],
) -> Result<Vec<(bool, Option<LiveJob>)>, redis::RedisError> {
    let keys = &ctx.keys;
    let mut inv = scripts::STARTED.prepare_invoke();
    for (lane, d) in batch {
        inv.key(keys.stream(*lane)).key(keys.job(&d.task_id));
    }
    inv.arg(GROUP).arg(ctx.worker());
    for (_, d) in batch {
        inv.arg(&d.entry_id);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    let items = reply::array(&value).unwrap_or_default();
    Ok((0..batch.len())
        .map(|i| items.get(i).map_or((true, None), parse_mark))
        .collect())
}

/// `{held, job e, job n}` for one entry.
fn parse_mark(item: &Value) -> (bool, Option<LiveJob>) {
    let parts = reply::array(item).unwrap_or_default();
    let held = parts.first().and_then(reply::int).unwrap_or(1) != 0;
    let text = |i: usize| parts.get(i).and_then(reply::string).unwrap_or_default();
    let live_job = LiveJob {
        entry_id: text(1),
        nonce: text(2),
    };
    (held, Some(live_job))
}
