//! `purge`: dropping every queued and scheduled task of a queue, one script call per
//! chunk of ids.

use std::collections::HashSet;

use redis::Value;

use super::workers::WORKER_ALIVE_MS;
use super::{Client, OpsError};
use crate::keys::{Keys, GROUP};
use crate::reply;
use crate::scripts;

/// Ids per `purge` call: keeps each call (which blocks Redis while it runs) short.
const PURGE_CHUNK: usize = 200;

impl Client {
    /// Delivered tasks whose worker is alive are skipped unless `force`; those of dead
    /// workers are purged (they would only be reclaimed and run again).
    pub async fn purge(
        &mut self,
        keys: &Keys,
        result_ttl_ms: i64,
        force: bool,
    ) -> Result<PurgeReport, OpsError> {
        let mut ids: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for i in 0..keys.lanes().len() {
            for id in self.stream_task_ids(keys.stream(i)).await? {
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
        }
        let mut delayed: Vec<String> = self
            .query(redis::cmd("ZRANGE").arg(keys.delayed()).arg(0).arg(-1))
            .await?;
        // Tasks parked by a limit (PROTOCOL.md, Limits) are queued too.
        let parked: Vec<String> = self
            .query(redis::cmd("ZRANGE").arg(keys.parked()).arg(0).arg(-1))
            .await?;
        delayed.extend(parked);
        for id in delayed {
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        let mut report = PurgeReport::default();
        for chunk in ids.chunks(PURGE_CHUNK) {
            let alive_after = self.server_ms().await? - WORKER_ALIVE_MS;
            let mut inv = scripts::PURGE.prepare_invoke();
            inv.key(keys.delayed()).key(keys.workers());
            for i in 0..keys.lanes().len() {
                inv.key(keys.stream(i));
            }
            inv.key(keys.parked());
            for id in chunk {
                inv.key(keys.job(id))
                    .key(keys.wait(id))
                    .key(keys.result(id));
            }
            inv.arg(keys.prefix())
                .arg(GROUP)
                .arg(result_ttl_ms)
                .arg(alive_after)
                .arg(if force { "1" } else { "0" })
                .arg(keys.lanes().len());
            for lane in keys.lanes() {
                inv.arg(lane);
            }
            for id in chunk {
                inv.arg(id);
            }
            let counts: Vec<u64> = match inv.invoke_async(&mut self.conn).await {
                Ok(v) => v,
                Err(e) => return Err(self.err(e)),
            };
            let c = |i: usize| counts.get(i).copied().unwrap_or(0);
            report.queued += c(0);
            report.scheduled += c(1);
            report.delivered += c(2);
            report.skipped += c(3);
        }
        Ok(report)
    }

    /// The task ids of every entry of a stream (waiting and pending), in order.
    async fn stream_task_ids(&mut self, stream: &str) -> Result<Vec<String>, OpsError> {
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page: Value = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(stream)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            let entries = reply::array(&page).unwrap_or_default();
            let mut last = None;
            for e in entries {
                let parts = reply::array(e).unwrap_or_default();
                last = parts.first().and_then(reply::string);
                let id = parts
                    .get(1)
                    .and_then(reply::pairs)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(k, _)| reply::bytes(k) == Some(b"id"))
                    .and_then(|(_, v)| reply::string(v));
                out.extend(id);
            }
            match last {
                Some(id) if entries.len() == 1000 => start = format!("({id}"),
                _ => return Ok(out),
            }
        }
    }
}

/// What `purge` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Undelivered tasks dropped.
    pub queued: u64,
    /// Scheduled tasks dropped.
    pub scheduled: u64,
    /// Delivered tasks dropped (held by a dead worker, or any with `force`).
    pub delivered: u64,
    /// Delivered tasks left alone (held by a live worker).
    pub skipped: u64,
}
