//! Finishing: outcomes in, one `finish` call per batch out.
//!
//! The finisher waits for the first outcome, then takes every other outcome already
//! queued (without waiting: batching comes from load, never from a timer) and sends them
//! all in one script call. Under load that is many acks per round trip; when idle each
//! outcome goes out at once.

use std::sync::Arc;

use redis::Value;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::connection::is_transient;
use crate::context::Ctx;
use crate::executor::{Outcome, OutcomeKind};
use crate::keys::GROUP;
use crate::progress;
use crate::reply;
use crate::report::Counter;
use crate::scripts;
use crate::state::{EntryKey, RunningTask};

/// Most outcomes in one script call: keeps a single call (which blocks Redis while it
/// runs) short even after a burst of completions.
const MAX_BATCH: usize = 500;

/// Runs until aborted by the engine (the channel never closes while the engine holds a
/// sender). Every outcome is retried until Redis takes it: dropping one would leave its
/// entry pending until another worker reclaims it and runs the task again.
pub async fn run(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Vec<Outcome>>) {
    let mut pending: Vec<Outcome> = Vec::new();
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    let mut progress_throttle = LogThrottle::default();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(batch) => pending.extend(batch),
                None => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(batch) => pending.extend(batch),
                Err(_) => break,
            }
        }
        let take = pending.len().min(MAX_BATCH);
        let batch: Vec<Outcome> = pending.drain(..take).collect();
        let batch = arrived(&ctx, batch);
        if batch.is_empty() {
            continue;
        }
        // An attempt's last progress was reported before its outcome: it lands first.
        if !ctx.sink.board().is_settled() {
            progress::settle(&ctx, &mut progress_throttle).await;
        }
        finish_batch(&ctx, &batch, &mut backoff, &mut throttle).await;
    }
}

/// Finishes `batch`, retrying transient failures until Redis takes it. A batch the
/// server rejects (a script error: some key of the wrong type, say) is split, so one
/// poisoned outcome cannot wedge every other: each is then tried alone, and one that
/// still fails is logged and released. Its entry stays pending, is reclaimed once its
/// lease runs out, and ends in the dead letters at the delivery cap.
async fn finish_batch(
    ctx: &Ctx,
    batch: &[Arrived],
    backoff: &mut Backoff,
    throttle: &mut LogThrottle,
) {
    loop {
        match call_finish(ctx, batch).await {
            Ok(results) => {
                backoff.reset();
                if throttle.success() {
                    info!("finishing outcomes again");
                }
                record(ctx, batch, &results);
                return;
            }
            Err(e) if is_transient(&e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, outcomes = batch.len(), suppressed, "finish failed, retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) if batch.len() > 1 => {
                warn!(error = %e, outcomes = batch.len(), "finish rejected a batch; finishing one by one");
                for one in batch {
                    Box::pin(finish_batch(
                        ctx,
                        std::slice::from_ref(one),
                        backoff,
                        throttle,
                    ))
                    .await;
                }
                return;
            }
            Err(e) => {
                let a = &batch[0];
                let name = a.task.as_ref().map_or("?", |t| t.fn_name.as_str());
                error!(id = %a.outcome.task_id, name, worker = %ctx.worker(), try = a.outcome.tries,
                    error = %e, "finish rejected this outcome; leaving the entry for reclaim");
                ctx.held().finished(&a.key);
                ctx.wake.notify_one();
                return;
            }
        }
    }
}

/// An outcome with what the engine knows about its entry.
struct Arrived {
    outcome: Outcome,
    key: EntryKey,
    task: Option<RunningTask>,
    /// The attempt reported progress (`finish` keeps its record with the result).
    progress: bool,
}

/// Moves each outcome's entry from running to finishing (its concurrency slot frees now,
/// before the round trip) and drops outcomes for lanes this worker does not know.
fn arrived(ctx: &Ctx, batch: Vec<Outcome>) -> Vec<Arrived> {
    let mut out = Vec::with_capacity(batch.len());
    let board = ctx.sink.board();
    let any_progress = board.any_reported();
    {
        let mut held = ctx.held();
        for outcome in batch {
            // The lane should be the delivery's; if an executor garbled it, the entry id
            // still finds what we hold, so the task is not left "running" forever.
            let lane = ctx
                .keys
                .lane_index(&outcome.lane)
                .or_else(|| held.lane_of(&outcome.entry_id, &outcome.task_id));
            let Some(lane) = lane else {
                error!(id = %outcome.task_id, lane = %outcome.lane, worker = %ctx.worker(),
                    "outcome names an unknown lane and entry; dropped");
                continue;
            };
            let mut outcome = outcome;
            outcome.lane.clone_from(&ctx.keys.lanes()[lane]);
            let key = (lane, outcome.entry_id.clone());
            let task = held.outcome_arrived(&key);
            let progress = any_progress && board.take_reported(&outcome.lane, &outcome.entry_id);
            out.push(Arrived {
                outcome,
                key,
                task,
                progress,
            });
        }
    }
    ctx.wake.notify_one();
    out
}

async fn call_finish(ctx: &Ctx, batch: &[Arrived]) -> Result<Vec<i64>, redis::RedisError> {
    let keys = &ctx.keys;
    let mut inv = scripts::FINISH.prepare_invoke();
    inv.key(keys.delayed())
        .key(keys.dead_index())
        .key(keys.history())
        .key(keys.stats());
    for a in batch {
        let id = &a.outcome.task_id;
        inv.key(keys.stream(a.key.0))
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
        .arg(batch.len())
        .arg(ctx.config.history);
    for a in batch {
        let o = &a.outcome;
        inv.arg(&o.entry_id)
            .arg(&o.task_id)
            .arg(o.kind.as_str())
            .arg(&o.value[..])
            .arg(o.tries)
            .arg(o.enqueued_ms)
            .arg(o.started_ms)
            .arg(&o.lane)
            .arg(o.retry_delay_ms)
            .arg(&o.retry_payload[..]);
    }
    if batch.iter().any(|a| a.progress) {
        let reported: Vec<String> = (1..=batch.len())
            .zip(batch)
            .filter(|(_, a)| a.progress)
            .map(|(i, _)| i.to_string())
            .collect();
        inv.arg(reported.join(" "));
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    let items = reply::array(&value).unwrap_or_default();
    Ok((0..batch.len())
        .map(|i| items.get(i).and_then(reply::int).unwrap_or(0))
        .collect())
}

/// Counts and logs each result, and releases the entries.
fn record(ctx: &Ctx, batch: &[Arrived], results: &[i64]) {
    let now = ctx.now_ms();
    let worker = ctx.worker();
    for (a, &r) in batch.iter().zip(results) {
        let o = &a.outcome;
        let name = a.task.as_ref().map_or("?", |t| t.fn_name.as_str());
        if r == 0 {
            ctx.counters.add(Counter::Stale, 1);
            warn!(id = %o.task_id, name, worker, try = o.tries, kind = %o.kind,
                entry = %o.entry_id,
                "outcome is stale (the entry was reclaimed or finished elsewhere); dropped");
            continue;
        }
        ctx.counters.finished(o.kind);
        crate::metrics::observe(ctx, o);
        let duration_ms = if o.started_ms > 0 {
            now - o.started_ms
        } else {
            0
        };
        // Decisions are logged where they are made (the executor for bodies it ran, the
        // engine for expired, malformed and buffered-abort entries); here only at debug.
        if o.kind == OutcomeKind::Retry {
            ctx.retry_scheduled(o.retry_delay_ms);
        }
        debug!(id = %o.task_id, name, worker, try = o.tries, kind = %o.kind, duration_ms,
            "outcome recorded");
    }
    {
        let mut held = ctx.held();
        for a in batch {
            held.finished(&a.key);
        }
    }
    ctx.wake.notify_one();
}
