//! Lease renewal: keeps every held entry (running and buffered) from looking idle to
//! other workers' XAUTOCLAIM.
//!
//! It runs on its own tokio task, not in the dispatcher, so nothing the executor does
//! (a Python body holding the GIL for minutes, a slow `start`) can starve it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tracing::{info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::context::Ctx;
use crate::keys::GROUP;
use crate::reply;
use crate::report::Counter;
use crate::scripts;
use crate::state::EntryKey;

/// Entries per `renew` call: bounds the time one call blocks the server.
const CHUNK: usize = 500;

/// Renews every `idle_timeout_ms / 3`; a failed round is retried sooner (with backoff)
/// since the lease keeps running out meanwhile. Runs until aborted by the engine.
pub async fn run(ctx: Arc<Ctx>) {
    let interval = Duration::from_millis((ctx.config.idle_timeout_ms / 3).max(10));
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    loop {
        let began = Instant::now();
        let delay = match renew_all(&ctx).await {
            Ok(()) => {
                ctx.leases_renewed(began);
                backoff.reset();
                if throttle.success() {
                    info!("lease renewal works again");
                }
                interval
            }
            Err(e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, suppressed, "lease renewal failed, retrying");
                }
                backoff.next_delay().min(interval)
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// One round over everything held now.
pub async fn renew_all(ctx: &Ctx) -> Result<(), redis::RedisError> {
    let held = ctx.held().held_keys();
    for chunk in held.chunks(CHUNK) {
        let lost = renew(ctx, chunk).await?;
        if !lost.is_empty() {
            drop_lost(ctx, &lost);
        }
    }
    Ok(())
}

/// One `renew` call; returns the entries lost, each with its lane (entry ids repeat
/// across streams: a bare id would also drop a healthy entry of another lane).
async fn renew(ctx: &Ctx, entries: &[EntryKey]) -> Result<Vec<EntryKey>, redis::RedisError> {
    let keys = &ctx.keys;
    let mut inv = scripts::RENEW.prepare_invoke();
    // KEYS in lowest-first order, so an entry's lane index + 1 is its KEYS index.
    for lane in 0..keys.lanes().len() {
        inv.key(keys.stream(lane));
    }
    inv.arg(GROUP).arg(ctx.worker());
    for (lane, eid) in entries {
        inv.arg(lane + 1).arg(eid);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    Ok(parse_lost(&value, keys.lanes().len()))
}

/// The script's flat (lane index 1-based, entry id) pairs; pairs naming no lane of ours
/// are ignored.
fn parse_lost(value: &Value, lanes: usize) -> Vec<EntryKey> {
    let items = reply::array(value).unwrap_or_default();
    items
        .chunks_exact(2)
        .filter_map(|pair| {
            let lane = usize::try_from(reply::int(&pair[0])?)
                .ok()?
                .checked_sub(1)?;
            (lane < lanes).then_some((lane, reply::string(&pair[1])?))
        })
        .collect()
}

/// A lost buffered entry is dropped (its new owner runs it), and so is one the executor
/// queued but has not started; a lost running one keeps running, and its outcome will be
/// rejected as stale.
fn drop_lost(ctx: &Ctx, lost: &[EntryKey]) {
    let mut dropped = 0;
    {
        let mut held = ctx.held();
        for key in lost {
            let eid = &key.1;
            if held.remove_buffered(key) {
                dropped += 1;
                ctx.counters.add(Counter::LostLeases, 1);
                warn!(entry = %eid, worker = %ctx.worker(),
                    "lease lost on a buffered entry; dropped from the buffer");
            } else if held.running_task(key).is_some()
                && ctx.executor.withdraw(&ctx.keys.lanes()[key.0], eid)
            {
                held.abandon(key);
                dropped += 1;
                ctx.counters.add(Counter::LostLeases, 1);
                warn!(entry = %eid, worker = %ctx.worker(),
                    "lease lost on a queued entry; withdrawn before it started");
            } else if let Some(t) = held.running_task(key) {
                ctx.counters.add(Counter::LostLeases, 1);
                warn!(id = %t.task_id, name = %t.fn_name, worker = %ctx.worker(),
                    try = t.attempt, "lease lost on a running task; its outcome will be stale");
            }
            // Finishing entries are normal here: their ack raced this renewal.
        }
    }
    if dropped > 0 {
        ctx.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn lost_entries_keep_their_lane() {
        // `123-0` lost in lane 2 (index 1) must not name `123-0` of lane 1 (index 0).
        let reply = Value::Array(vec![Value::Int(2), bs("123-0"), Value::Int(9), bs("1-0")]);
        assert_eq!(parse_lost(&reply, 2), vec![(1, "123-0".to_owned())]);
        assert!(parse_lost(&Value::Array(vec![Value::Int(1)]), 2).is_empty());
    }
}
