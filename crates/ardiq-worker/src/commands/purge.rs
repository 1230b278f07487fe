//! `ardiq purge --yes`: drops every queued and scheduled task of a queue without running
//! it (each is finalized as aborted, error `purged`, so waiters wake). Tasks that live
//! workers hold are left alone unless `--force`; those of dead workers go too (they would
//! only be reclaimed and run). One protocol script (`purge`) per chunk of ids, each id
//! checked again inside it.

use serde::Serialize;

use crate::cli::PurgeArgs;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops;

/// The app's default `result_ttl_ms`.
pub const DEFAULT_RESULT_TTL_MS: i64 = 300_000;

/// `purge --json`: what was dropped, and what live workers hold and was left.
#[derive(Serialize)]
struct PurgeJson<'a> {
    queue: &'a str,
    queued: u64,
    scheduled: u64,
    delivered: u64,
    skipped: u64,
}

pub fn run(args: PurgeArgs) -> i32 {
    let code = match purge(&args) {
        Ok(()) => code::OK,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn purge(args: &PurgeArgs) -> Result<(), Failure> {
    let target = ops::resolve(&args.queue)?;
    let queue = ops::need_queue(&target)?;
    if !args.yes {
        return Err(Failure::new(
            code::USAGE,
            format!("`purge` drops every queued and scheduled task of `{queue}`; nothing done"),
        )
        .hint("add `--yes` to do it (see `ardiq info` first)"));
    }
    let ttl = args
        .result_ttl_ms
        .or(target.result_ttl_ms)
        .unwrap_or(DEFAULT_RESULT_TTL_MS);
    let rt = ops::runtime()?;
    let report = rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let keys = ops::keys(&mut client, &queue, target.lanes.as_deref()).await?;
        client
            .purge(&keys, ttl, args.force)
            .await
            .map_err(ops::failure)
    })?;
    if args.queue.json {
        ops::print_json(&PurgeJson {
            queue: &queue,
            queued: report.queued,
            scheduled: report.scheduled,
            delivered: report.delivered,
            skipped: report.skipped,
        });
    } else {
        println!(
            "purged {} task(s) of queue `{}`: {} queued, {} scheduled, {} delivered to workers that are gone",
            report.queued + report.scheduled + report.delivered,
            printable(&queue),
            report.queued,
            report.scheduled,
            report.delivered
        );
        if report.skipped > 0 {
            println!(
                "left {} task(s) that live workers hold (`--force` drops them too)",
                report.skipped
            );
        }
    }
    Ok(())
}
