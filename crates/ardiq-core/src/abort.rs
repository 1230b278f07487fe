//! Abort requests: listening on `P abort` and acting on the ids this worker holds.
//!
//! The `abort` script finalizes undelivered tasks itself; for a delivered one it flags the
//! job and publishes the id. The worker holding it then either cancels the running body
//! (through [`crate::Executor::abort`]; the executor reports the outcome) or, if the
//! entry is still in the buffer, drops it and finishes it as `abort` without running it.
//! A request for a task not held here is remembered for a while: it may have overtaken the
//! fetch reply that delivers the task, whose arrival then checks the job's flag.
//! An abort published while this connection was down is missed; the flag on the job still
//! turns a later retry into an abort, and a reclaim into an aborted result.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::connection::Redis;
use crate::context::Ctx;
use crate::state::RunningTask;

/// How often an idle subscription is pinged, to notice a dead connection.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Listens until aborted by the engine. `subscribed` fires after the first successful
/// subscription: the engine waits for it before its first fetch (PROTOCOL.md).
pub async fn run(ctx: Arc<Ctx>, redis: Redis, subscribed: oneshot::Sender<()>) {
    let mut subscribed = Some(subscribed);
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    let channel = ctx.keys.abort_channel();
    loop {
        let result = async {
            let (mut sink, stream) = redis.pubsub().await?.split();
            sink.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        }
        .await;
        let (mut sink, mut stream) = match result {
            Ok(parts) => parts,
            Err(e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, suppressed, "abort subscription failed, retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        if throttle.success() {
            info!("abort subscription restored");
        }
        if let Some(tx) = subscribed.take() {
            let _ = tx.send(());
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => handle(&ctx, msg.get_payload_bytes()),
                    None => break, // connection closed: resubscribe
                },
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(
                        ctx.config.command_timeout,
                        sink.ping::<redis::Value>(),
                    ).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        if let Some(suppressed) = throttle.failure() {
            warn!(suppressed, "abort subscription lost, reconnecting");
        }
    }
}

/// Acts on one abort request.
pub fn handle(ctx: &Ctx, payload: &[u8]) {
    let task_id = String::from_utf8_lossy(payload);
    let worker = ctx.worker();
    let (buffered, running) = {
        let mut held = ctx.held();
        match held.take_buffered_task(&task_id) {
            Some((lane, d)) => {
                held.mark_finishing(
                    (lane, d.entry_id.clone()),
                    RunningTask {
                        task_id: d.task_id.clone(),
                        fn_name: d.fn_name.clone(),
                        attempt: d.attempt(),
                    },
                );
                (Some(d), false)
            }
            None => (None, held.is_running_task(&task_id)),
        }
    };
    if let Some(d) = buffered {
        warn!(id = %d.task_id, name = %d.fn_name, worker, try = d.attempt(),
            "aborted before it started");
        // Not an attempt: `tries` stays at the attempts made so far.
        let mut outcome = d.aborted(0);
        outcome.tries = d.tries;
        ctx.sink.send_one(outcome);
        ctx.wake.notify_one();
    } else if running {
        warn!(id = %task_id, worker, "aborting mid-flight");
        ctx.executor.abort(&task_id);
    } else {
        // Not held (yet): the request may have overtaken the fetch reply that delivers
        // the task here. Its delivery then checks the job's flag (see `flagged`).
        ctx.note_early_abort(&task_id);
    }
}

/// Of `task_ids` (deliveries whose abort request came before them), those whose job is
/// flagged for abort (a fresh enqueue under the same id is not). Best effort: should Redis
/// fail now, none is taken as flagged; a retry or reclaim of the task still finds the flag.
pub async fn flagged(ctx: &Ctx, task_ids: &[String]) -> HashSet<String> {
    let mut pipe = redis::pipe();
    for id in task_ids {
        pipe.cmd("HGET").arg(ctx.keys.job(id)).arg("a");
    }
    let mut conn = ctx.conn.clone();
    let flags: Vec<Option<String>> = match pipe.query_async(&mut conn).await {
        Ok(flags) => flags,
        Err(e) => {
            warn!(error = %e, "could not check the abort flag of early-aborted tasks");
            return HashSet::new();
        }
    };
    task_ids
        .iter()
        .zip(flags)
        .filter(|(_, f)| f.as_deref() == Some("1"))
        .map(|(id, _)| id.clone())
        .collect()
}
