//! The worker's heartbeat: `ZADD P workers <now> <worker id>` every few seconds, so tools
//! can list live workers. `retire` removes it when the worker leaves.

use std::sync::Arc;

use tracing::debug;

use crate::context::Ctx;

/// Beats until aborted by the engine. Failures are not worth more than a debug line:
/// the other loops already report an unreachable Redis.
pub async fn run(ctx: Arc<Ctx>) {
    loop {
        let mut conn = ctx.conn.clone();
        let r: Result<i64, _> = redis::cmd("ZADD")
            .arg(ctx.keys.workers())
            .arg(ctx.now_ms())
            .arg(ctx.worker())
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            debug!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(ctx.config.heartbeat_interval).await;
    }
}
