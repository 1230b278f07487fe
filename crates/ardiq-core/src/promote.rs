//! Delayed promotion: moving due tasks (delays, schedules, retry backoffs) from
//! `P delayed` to their lanes' streams.
//!
//! A script must name every key it touches, and the job hashes of the due ids are not
//! known in advance, so `promote` runs in two steps: without ids it reports the due ids
//! (and the server time and the next due time); called with those ids and their job
//! keys it moves them. Every worker does this; the script makes concurrent promotions
//! of one id harmless.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tracing::{info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::context::Ctx;
use crate::error::{EngineError, Result};
use crate::reply;
use crate::report::Counter;
use crate::scripts;

/// Ids per promotion call.
const BATCH: usize = 100;
/// The longest sleep between checks (PROTOCOL.md: at least every 100 ms).
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Promotion calls in one round before yielding (bounds a round over a huge backlog).
const MAX_CALLS: usize = 50;

/// One `promote` reply.
#[derive(Debug, Clone, Default)]
pub struct Promoted {
    /// Tasks moved by this call.
    pub moved: u64,
    /// The server's clock, ms.
    pub server_now_ms: i64,
    /// The earliest due time still in the set, or `None` when it is empty.
    pub next_due_ms: Option<i64>,
    /// Due ids not moved yet.
    pub due: Vec<String>,
}

/// Which set a two-step move empties: `P delayed` (`promote`) or `P parked` (`unpark`,
/// PROTOCOL.md, Limits). Both scripts take the same arguments and reply alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// `promote`: delays, schedules and retry backoffs.
    Promote,
    /// `unpark`: entries parked by a rate limit or a concurrency cap.
    Unpark,
}

/// Calls `promote` or `unpark` with `ids` (empty: just report what is due).
pub async fn call(ctx: &Ctx, mover: Mover, ids: &[String]) -> Result<Promoted> {
    let keys = &ctx.keys;
    let (mut inv, set, script) = match mover {
        Mover::Promote => (scripts::PROMOTE.prepare_invoke(), keys.delayed(), "promote"),
        Mover::Unpark => (scripts::UNPARK.prepare_invoke(), keys.parked(), "unpark"),
    };
    inv.key(set);
    for lane in 0..keys.lanes().len() {
        inv.key(keys.stream(lane));
    }
    for id in ids {
        inv.key(keys.job(id));
    }
    inv.arg(keys.lanes().len());
    for lane in keys.lanes() {
        inv.arg(lane);
    }
    inv.arg(BATCH);
    for id in ids {
        inv.arg(id);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    let parts = reply::array(&value).unwrap_or_default();
    let bad = || EngineError::Protocol {
        script,
        detail: "expected {promoted, now, next_due, ids}".to_owned(),
    };
    if parts.len() < 4 {
        return Err(bad());
    }
    let out = Promoted {
        moved: reply::int(&parts[0]).ok_or_else(bad)?.max(0) as u64,
        server_now_ms: reply::int(&parts[1]).ok_or_else(bad)?,
        next_due_ms: reply::int(&parts[2]).filter(|&n| n >= 0),
        due: reply::array(&parts[3])
            .unwrap_or_default()
            .iter()
            .filter_map(reply::string)
            .collect(),
    };
    ctx.observe_server_time(out.server_now_ms);
    if out.moved > 0 && mover == Mover::Promote {
        ctx.counters.add(Counter::Promoted, out.moved);
    }
    Ok(out)
}

/// What a full round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Due ids left that this worker cannot move (their lane is not one of ours).
    pub stuck: usize,
    /// The last reply (server time, next due time).
    pub last: Promoted,
}

/// Checks, then promotes what is due, until nothing due is left that this worker can
/// move.
pub async fn round(ctx: &Ctx) -> Result<Round> {
    round_of(ctx, Mover::Promote).await
}

/// [`round`] for either set.
pub async fn round_of(ctx: &Ctx, mover: Mover) -> Result<Round> {
    let mut r = call(ctx, mover, &[]).await?;
    for _ in 0..MAX_CALLS {
        if r.due.is_empty() {
            break;
        }
        let ids = std::mem::take(&mut r.due);
        r = call(ctx, mover, &ids).await?;
        // Nothing moved: the remaining due ids belong to lanes we do not serve. Leave them
        // to the workers that do instead of spinning on them.
        if r.moved == 0 {
            break;
        }
    }
    Ok(Round {
        stuck: r.due.len(),
        last: r,
    })
}

/// The sleep before the next check: until the next due time, at most 100 ms.
pub fn next_sleep(round: &Round) -> Duration {
    let last = &round.last;
    match last.next_due_ms {
        Some(due) if round.stuck == 0 && due > last.server_now_ms => {
            Duration::from_millis((due - last.server_now_ms) as u64)
                .clamp(Duration::from_millis(1), MAX_SLEEP)
        }
        _ => MAX_SLEEP,
    }
}

/// Promotes until aborted by the engine.
pub async fn run(ctx: Arc<Ctx>) {
    run_mover(ctx, Mover::Promote).await
}

/// Promotes (or unparks) until aborted by the engine.
pub async fn run_mover(ctx: Arc<Ctx>, mover: Mover) {
    let mut backoff = Backoff::redis();
    let mut throttle = LogThrottle::default();
    let what = match mover {
        Mover::Promote => "delayed promotion",
        Mover::Unpark => "unparking limited tasks",
    };
    loop {
        let sleep = match round_of(&ctx, mover).await {
            Ok(r) => {
                backoff.reset();
                if throttle.success() {
                    info!("{what} works again");
                }
                next_sleep(&r)
            }
            Err(e) => {
                if let Some(suppressed) = throttle.failure() {
                    warn!(error = %e, suppressed, "{what} failed, retrying");
                }
                backoff.next_delay()
            }
        };
        tokio::time::sleep(sleep).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_due_but_at_most_100ms() {
        let mut r = Round::default();
        r.last.server_now_ms = 1000;
        assert_eq!(next_sleep(&r), MAX_SLEEP);
        r.last.next_due_ms = Some(1030);
        assert_eq!(next_sleep(&r), Duration::from_millis(30));
        r.last.next_due_ms = Some(5000);
        assert_eq!(next_sleep(&r), MAX_SLEEP);
        r.last.next_due_ms = Some(900);
        assert_eq!(next_sleep(&r), MAX_SLEEP);
        r.last.next_due_ms = Some(1030);
        r.stuck = 1;
        assert_eq!(next_sleep(&r), MAX_SLEEP);
    }
}
