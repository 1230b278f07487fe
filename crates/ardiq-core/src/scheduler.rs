//! Firing cron occurrences: one task per cron entry sleeps until its next occurrence and
//! calls the `cron` script, which enqueues the occurrence once across all workers.
//!
//! A worker starts from the first occurrence after its start and, after any delay (a
//! Redis outage, a suspended process), from the first occurrence after "now": missed
//! occurrences are skipped, never backfilled.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::config::CronEntry;
use crate::context::Ctx;
use crate::reply;
use crate::report::Counter;
use crate::scripts;
use crate::sign;

/// The task id of one occurrence: the same on every worker.
pub fn occurrence_id(name: &str, occurrence_ms: i64) -> String {
    format!("cron:{name}:{occurrence_ms}")
}

/// Fires `cron` until aborted by the engine or until its schedule ends.
pub async fn run(ctx: Arc<Ctx>, cron: CronEntry) {
    let mut next = cron.schedule.next_after(ctx.now_ms());
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    while let Some(occurrence) = next {
        let wait = occurrence - ctx.now_ms();
        if wait > 0 {
            // Re-check the clock after waking: the server offset may have moved.
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            continue;
        }
        match fire(&ctx, &cron, occurrence).await {
            Ok(fired) => {
                backoff.reset();
                if throttle.success() {
                    info!(cron = %cron.name, "cron firing works again");
                }
                if fired {
                    ctx.counters.add(Counter::CronsFired, 1);
                    debug!(cron = %cron.name, occurrence, "cron occurrence enqueued");
                }
                // Strictly after both: skips occurrences missed while this one was late.
                next = cron.schedule.next_after(occurrence.max(ctx.now_ms()));
            }
            Err(e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(cron = %cron.name, error = %e, suppressed, "cron firing failed, retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
                // Keep trying this occurrence only while it is the latest one due.
                if let Some(after) = cron.schedule.next_after(occurrence) {
                    if after <= ctx.now_ms() {
                        next = cron.schedule.next_after(ctx.now_ms());
                    }
                }
            }
        }
    }
    info!(cron = %cron.name, "cron schedule has no further occurrences");
}

async fn fire(ctx: &Ctx, cron: &CronEntry, occurrence: i64) -> Result<bool, redis::RedisError> {
    let keys = &ctx.keys;
    let lane = keys.lane_index(&cron.lane).unwrap_or(0);
    let id = occurrence_id(&cron.name, occurrence);
    // Workers that hold the signing key refuse unsigned payloads: seal each occurrence,
    // with a nonce of its own that the job record keeps (a replayed occurrence finds none).
    let (payload, nonce) = match &ctx.config.signing_key {
        Some(key) => {
            let nonce = sign::new_nonce();
            let binding = sign::Binding {
                queue: &ctx.config.queue,
                lane: &keys.lanes()[lane],
                task_id: &id,
                fn_name: &cron.fn_name,
            };
            let not_after = occurrence.saturating_add(ctx.config.signature_ttl_ms);
            let sealed = key.seal(&binding, &nonce, not_after, &cron.payload);
            (sealed, sign::nonce_hex(&nonce))
        }
        None => (cron.payload.clone(), String::new()),
    };
    let mut inv = scripts::CRON.prepare_invoke();
    inv.key(keys.crons())
        .key(keys.stream(lane))
        .key(keys.job(&id))
        .key(keys.result(&id));
    inv.arg(&cron.name)
        .arg(occurrence)
        .arg(&id)
        .arg(&cron.fn_name)
        .arg(&payload[..])
        .arg(&keys.lanes()[lane])
        .arg(&nonce);
    let mut conn = ctx.conn.clone();
    let value: redis::Value = inv.invoke_async(&mut conn).await?;
    Ok(reply::int(&value) == Some(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_name_the_occurrence() {
        assert_eq!(
            super::occurrence_id("report", 1_700_000_000_000),
            "cron:report:1700000000000"
        );
    }
}
