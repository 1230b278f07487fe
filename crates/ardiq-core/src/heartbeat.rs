//! The worker's heartbeat: `ZADD P workers <now> <worker id>` every few seconds, so tools
//! can list live workers. `retire` removes it when the worker leaves.
//!
//! A worker that never retires (killed, its host lost) would stay in `P workers` for
//! good, and every read of the set (tools, `/metrics`) would grow with the dead. So each
//! worker also forgets, about once a minute, every heartbeat older than
//! [`FORGET_AFTER_MS`]: long dead by any measure (a worker counts as alive for 15 s).
//! At the same pace it trims the task history ([`crate::history`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::context::Ctx;
use crate::history::Upkeep;

/// Heartbeats this old are removed. Far beyond the 15 s a worker counts as alive, so a
/// worker cut off from Redis for a while, or a clock off by minutes, is not forgotten
/// while it may come back; a forgotten worker that beats again is simply listed again.
pub const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;

/// How often a worker prunes (every worker does; the command is cheap and idempotent).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Beats until aborted by the engine. Failures are not worth more than a debug line:
/// the other loops already report an unreachable Redis.
pub async fn run(ctx: Arc<Ctx>) {
    let mut pruned: Option<Instant> = None;
    let mut may_prune = true;
    let mut history = Upkeep::new(&ctx);
    loop {
        let mut conn = ctx.conn.clone();
        let now = ctx.now_ms();
        let r: Result<i64, _> = redis::cmd("ZADD")
            .arg(ctx.keys.workers())
            .arg(now)
            .arg(ctx.worker())
            .query_async(&mut conn)
            .await;
        let beat = r.is_ok();
        if let Err(e) = r {
            debug!(error = %e, "heartbeat failed");
        } else if may_prune && pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            let r: Result<i64, _> = redis::cmd("ZREMRANGEBYSCORE")
                .arg(ctx.keys.workers())
                .arg("-inf")
                .arg(format!("({}", now - FORGET_AFTER_MS))
                .query_async(&mut conn)
                .await;
            match r {
                Ok(n) => {
                    pruned = Some(Instant::now());
                    if n > 0 {
                        debug!(removed = n, "forgot the heartbeats of long-gone workers");
                    }
                }
                // An ACL user set up before pruning existed: say so once, go on beating.
                Err(e) if e.to_string().contains("NOPERM") => {
                    warn!(error = %e, "cannot forget long-gone workers' heartbeats (allow \
                        `zremrangebyscore` to the worker's ACL user); they stay listed");
                    may_prune = false;
                }
                Err(e) => debug!(error = %e, "pruning heartbeats failed"),
            }
        }
        if beat {
            history.run_if_due(&ctx, &mut conn, now).await;
        }
        tokio::time::sleep(ctx.config.heartbeat_interval).await;
    }
}
