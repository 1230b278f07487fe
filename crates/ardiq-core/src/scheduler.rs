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
use crate::config::{Config, CronEntry};
use crate::context::Ctx;
use crate::keys::Keys;
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
                match fired {
                    Fired::Enqueued => {
                        ctx.counters.add(Counter::CronsFired, 1);
                        debug!(cron = %cron.name, occurrence, "cron occurrence enqueued");
                    }
                    Fired::Paused => {
                        debug!(cron = %cron.name, occurrence, "cron paused, occurrence skipped");
                    }
                    Fired::Already => {}
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

/// What the `cron` script did with an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Enqueued now.
    Enqueued,
    /// Another worker fired it (or a later one) already.
    Already,
    /// The cron is paused (`P crons:paused`): skipped, not recorded.
    Paused,
}

async fn fire(ctx: &Ctx, cron: &CronEntry, occurrence: i64) -> Result<Fired, redis::RedisError> {
    let id = occurrence_id(&cron.name, occurrence);
    let mut conn = ctx.conn.clone();
    invoke(
        &mut conn,
        &ctx.keys,
        &ctx.config,
        cron,
        &id,
        occurrence,
        occurrence,
    )
    .await
}

/// Runs the `cron` script for `cron` under the task id `id`: a scheduled `occurrence`, or
/// (`occurrence` 0) a run triggered now, sealed as due at `due_ms`. Shared by the
/// scheduler and `ardiq cron trigger`.
pub async fn invoke<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    config: &Config,
    cron: &CronEntry,
    id: &str,
    occurrence: i64,
    due_ms: i64,
) -> Result<Fired, redis::RedisError> {
    let lane = keys.lane_index(&cron.lane).unwrap_or(0);
    // Workers that hold the signing key refuse unsigned payloads: seal each occurrence,
    // with a nonce of its own that the job record keeps (a replayed occurrence finds none).
    let (payload, nonce) = match &config.signing_key {
        Some(key) => {
            let nonce = sign::new_nonce();
            let binding = sign::Binding {
                queue: &config.queue,
                lane: &keys.lanes()[lane],
                task_id: id,
                fn_name: &cron.fn_name,
            };
            let not_after = due_ms.saturating_add(config.signature_ttl_ms);
            let sealed = key.seal(&binding, &nonce, not_after, &cron.payload);
            (sealed, sign::nonce_hex(&nonce))
        }
        None => (cron.payload.clone(), String::new()),
    };
    let mut inv = scripts::CRON.prepare_invoke();
    inv.key(keys.crons())
        .key(keys.stream(lane))
        .key(keys.job(id))
        .key(keys.result(id))
        .key(keys.crons_paused());
    inv.arg(&cron.name)
        .arg(occurrence)
        .arg(id)
        .arg(&cron.fn_name)
        .arg(&payload[..])
        .arg(&keys.lanes()[lane])
        .arg(&nonce);
    let value: redis::Value = inv.invoke_async(conn).await?;
    Ok(match reply::int(&value) {
        Some(1) => Fired::Enqueued,
        Some(2) => Fired::Paused,
        _ => Fired::Already,
    })
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
