//! Flow control (PROTOCOL.md, Limits): the entries of tasks with a rate limit or a
//! concurrency cap go through one `admit` call per delivered batch before they are
//! buffered. Parked entries were acked and moved out of their stream by the script: the
//! worker forgets them (they hold no prefetch or concurrency slot), and `unpark` (run next
//! to promotion, see [`crate::promote::Mover`]) brings them back when their token or slot
//! is due. An engine whose configuration has no limit never calls either script.

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::context::Ctx;
use crate::entry::Parsed;
use crate::error::Result;
use crate::keys::GROUP;
use crate::reply;
use crate::scripts;
use crate::shutdown::StopLevel;

/// Keeps the entries that may run now, in order; drops those `admit` parked. Entries of
/// unlimited tasks (and malformed ones) pass untouched, without a call when the batch has
/// none of a limited task. A failed call is retried with backoff (the entries stay
/// leased to this worker meanwhile; after a stall longer than the lease the start check
/// catches one another worker took over); once the worker is stopping they are kept
/// unadmitted, and the drain hands them back unrun.
pub async fn admit(
    ctx: &Ctx,
    entries: Vec<(usize, Parsed)>,
    stop: &watch::Receiver<StopLevel>,
) -> Vec<(usize, Parsed)> {
    let limits = &ctx.config.limits;
    let chosen: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, (_, p))| match p {
            Parsed::Task(d) if limits.contains_key(&d.fn_name) => Some(i),
            _ => None,
        })
        .collect();
    if chosen.is_empty() {
        return entries;
    }
    let mut backoff = Backoff::redis();
    let verdicts = loop {
        match call(ctx, &entries, &chosen).await {
            Ok(v) => break v,
            Err(e) => {
                if *stop.borrow() != StopLevel::Running {
                    return entries;
                }
                warn!(error = %e, "admitting limited tasks failed, retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    let mut parked = vec![false; entries.len()];
    for (&i, &v) in chosen.iter().zip(&verdicts) {
        parked[i] = v == 0;
    }
    let n = parked.iter().filter(|p| **p).count();
    if n > 0 {
        debug!(count = n, worker = %ctx.worker(), "parked by a limit");
    }
    entries
        .into_iter()
        .zip(parked)
        .filter_map(|(e, p)| (!p).then_some(e))
        .collect()
}

/// One `admit` call for the chosen entries: 1 admitted, 0 parked, per entry.
async fn call(ctx: &Ctx, entries: &[(usize, Parsed)], chosen: &[usize]) -> Result<Vec<i64>> {
    let keys = &ctx.keys;
    let mut inv = scripts::ADMIT.prepare_invoke();
    for lane in 0..keys.lanes().len() {
        inv.key(keys.stream(lane));
    }
    inv.key(keys.parked());
    inv.arg(GROUP).arg(keys.lanes().len());
    for &i in chosen {
        let (lane, Parsed::Task(d)) = &entries[i] else {
            continue; // chosen holds tasks only
        };
        let Some(limit) = ctx.config.limits.get(&d.fn_name) else {
            continue;
        };
        inv.key(keys.limit(&d.fn_name, d.limit_key.as_deref()))
            .key(keys.job(&d.task_id));
        inv.arg(*lane)
            .arg(&d.entry_id)
            .arg(&d.task_id)
            .arg(if d.holds_token { "1" } else { "0" })
            .arg(format!("{:?}", limit.rate_per_ms))
            .arg(format!("{:?}", limit.burst))
            .arg(limit.max_concurrency)
            .arg(d.limit_key.as_deref().unwrap_or(""));
    }
    let mut conn = ctx.conn.clone();
    let value: redis::Value = inv.invoke_async(&mut conn).await?;
    let verdicts: Vec<i64> = reply::array(&value)
        .unwrap_or_default()
        .iter()
        .map(|v| reply::int(v).unwrap_or(1))
        .collect();
    if verdicts.len() != chosen.len() {
        return Err(crate::error::EngineError::Protocol {
            script: "admit",
            detail: format!("expected {} verdicts, got {}", chosen.len(), verdicts.len()),
        });
    }
    Ok(verdicts)
}
