//! Upkeep of the task history (PROTOCOL.md, History).
//!
//! `finish` and `reclaim` write the history as they record outcomes: one `P history`
//! entry per completed task (capped by `XADD MAXLEN ~`), the failed attempts of each
//! task, and per call one `HINCRBY P stats <kind>:<minute>` per kind. What ages out is
//! removed here, about once a minute, next to the heartbeat's pruning: history entries
//! older than `history_ttl_ms` (`XTRIM MINID ~`) and the counters of older minutes (one
//! `HKEYS` sweep: a day of counters is a few thousand fields at most).

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tracing::{debug, warn};

use crate::context::Ctx;

/// How often a worker trims (every worker that keeps history does; it is idempotent).
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Most `P stats` fields in one `HDEL`.
const HDEL_CHUNK: usize = 1000;

/// When the history was last trimmed, and whether this worker may trim at all.
#[derive(Debug)]
pub(crate) struct Upkeep {
    trimmed: Option<Instant>,
    allowed: bool,
}

impl Upkeep {
    pub(crate) fn new(ctx: &Ctx) -> Self {
        Upkeep {
            trimmed: None,
            // A worker with `history` = 0 writes none of it (PROTOCOL.md).
            allowed: ctx.config.history > 0,
        }
    }

    /// Trims when the last trim is [`TRIM_EVERY`] old (or never ran). Failures are
    /// retried at the next beat; a refusal by the ACL is said once and trimming stops.
    pub(crate) async fn run_if_due(&mut self, ctx: &Ctx, conn: &mut ConnectionManager, now: i64) {
        if !self.allowed || self.trimmed.is_some_and(|at| at.elapsed() < TRIM_EVERY) {
            return;
        }
        match trim(ctx, conn, now - ctx.config.history_ttl_ms).await {
            Ok((entries, fields)) => {
                self.trimmed = Some(Instant::now());
                if entries + fields > 0 {
                    debug!(entries, counters = fields, "trimmed old task history");
                }
            }
            Err(e) if e.to_string().contains("NOPERM") => {
                warn!(error = %e, "cannot trim the task history (allow `xtrim`, `hkeys` and \
                    `hdel` to the worker's ACL user, README Security); it is kept as written");
                self.allowed = false;
            }
            Err(e) => debug!(error = %e, "trimming the task history failed"),
        }
    }
}

/// Removes history entries before `cutoff_ms` and the counters of minutes before it;
/// returns how many of each went.
async fn trim(
    ctx: &Ctx,
    conn: &mut ConnectionManager,
    cutoff_ms: i64,
) -> Result<(u64, u64), redis::RedisError> {
    let keys = &ctx.keys;
    let entries: u64 = redis::cmd("XTRIM")
        .arg(keys.history())
        .arg("MINID")
        .arg("~")
        .arg(cutoff_ms.max(0))
        .query_async(conn)
        .await?;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.stats())
        .query_async(conn)
        .await?;
    let stale = stale_fields(&fields, cutoff_ms.div_euclid(60_000));
    let mut removed = 0;
    for chunk in stale.chunks(HDEL_CHUNK) {
        let n: u64 = redis::cmd("HDEL")
            .arg(keys.stats())
            .arg(chunk)
            .query_async(conn)
            .await?;
        removed += n;
    }
    Ok((entries, removed))
}

/// The `<kind>:<minute>` fields whose minute is before `cutoff_minute`. A field that does
/// not end in a minute is not ours to judge and is left alone.
fn stale_fields(fields: &[String], cutoff_minute: i64) -> Vec<&str> {
    fields
        .iter()
        .filter(|f| {
            f.rsplit_once(':')
                .and_then(|(_, m)| m.parse::<i64>().ok())
                .is_some_and(|m| m < cutoff_minute)
        })
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_older_minutes_are_stale() {
        let fields: Vec<String> = [
            "ok:99", "ok:100", "fail:98", "lost:101", "odd", "x:y", "abort:-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(stale_fields(&fields, 100), ["ok:99", "fail:98", "abort:-1"]);
        assert!(stale_fields(&fields, -5).is_empty());
    }
}
