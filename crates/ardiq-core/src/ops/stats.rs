//! Counts of one queue: per lane what waits, what is delivered and how much of that live
//! workers hold; scheduled and dead counts; the workers (see `workers`).

use std::collections::{HashMap, HashSet};

use redis::{RedisError, Value};

use super::discover::queue_of_prefix;
use super::workers::{self, WorkerInfo};
use super::{Client, OpsError};
use crate::keys::{Keys, GROUP};
use crate::metrics::entry_ms;
use crate::reply;

impl Client {
    /// Counts and workers of one queue.
    pub async fn queue_stats(&mut self, keys: &Keys) -> Result<QueueStats, OpsError> {
        let now = self.server_ms().await?;
        let scheduled: u64 = self.query(redis::cmd("ZCARD").arg(keys.delayed())).await?;
        let parked: u64 = self.query(redis::cmd("ZCARD").arg(keys.parked())).await?;
        let dead: u64 = self
            .query(redis::cmd("ZCARD").arg(keys.dead_index()))
            .await?;
        let beats = self.heartbeats(keys).await?;
        let alive = workers::alive(&beats, now);
        let mut lanes = Vec::new();
        let mut held_by: HashMap<String, u64> = HashMap::new();
        for (i, lane) in keys.lanes().iter().enumerate() {
            let stats = self.lane_stats(keys.stream(i), lane, now, &alive).await?;
            for (consumer, n) in &stats.consumers {
                *held_by.entry(consumer.clone()).or_default() += n;
            }
            lanes.push(stats);
        }
        let workers = workers::list(&beats, now, &alive, held_by);
        let paused = self
            .paused(keys)
            .await?
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        Ok(QueueStats {
            queue: queue_of_prefix(keys.prefix()).to_owned(),
            server_ms: now,
            lanes,
            scheduled,
            parked,
            dead,
            workers,
            paused,
        })
    }

    async fn lane_stats(
        &mut self,
        stream: &str,
        lane: &str,
        now: i64,
        alive: &HashSet<&str>,
    ) -> Result<LaneStats, OpsError> {
        let len: u64 = self.query(redis::cmd("XLEN").arg(stream)).await?;
        let mut out = LaneStats {
            lane: lane.to_owned(),
            group: false,
            waiting: len,
            pending: 0,
            running: 0,
            oldest_waiting_age_ms: None,
            consumers: Vec::new(),
        };
        // The XPENDING summary: count, lowest and highest pending id, per-consumer counts.
        // (XPENDING rather than XINFO: the worker's least-privilege ACL user has it, and
        // the metrics endpoint reads with the worker's credentials.)
        let summary = match self.pending_summary(stream).await? {
            Some(s) => s,
            None => return Ok(out), // no stream or no group: never served
        };
        out.group = true;
        out.pending = summary.count;
        for (name, n) in summary.consumers {
            if alive.contains(name.as_str()) {
                out.running += n;
            }
            out.consumers.push((name, n));
        }
        // Every entry is deleted when finished (and re-added when handed back or
        // reclaimed), so the stream holds exactly the pending entries and, after the
        // highest pending one, the waiting ones.
        out.waiting = len.saturating_sub(out.pending);
        let highest_pending = summary.max_id;
        if out.waiting > 0 {
            let start = match &highest_pending {
                Some(id) => format!("({id}"),
                None => "-".to_owned(),
            };
            let first: Value = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(stream)
                        .arg(start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(1),
                )
                .await?;
            let id = reply::array(&first)
                .and_then(|a| a.first())
                .and_then(reply::array)
                .and_then(|e| e.first())
                .and_then(reply::string);
            out.oldest_waiting_age_ms =
                id.as_deref().and_then(entry_ms).map(|ms| (now - ms).max(0));
        }
        Ok(out)
    }

    /// `XPENDING <stream> ardiq`; `None` when the stream or the group does not exist.
    pub(super) async fn pending_summary(
        &mut self,
        stream: &str,
    ) -> Result<Option<PendingSummary>, OpsError> {
        let reply: Result<Value, RedisError> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .query_async(&mut self.conn)
            .await;
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP") => {
                return Ok(None)
            }
            Err(e) => return Err(self.err(e)),
        };
        let parts = reply::array(&reply).unwrap_or_default();
        let mut summary = PendingSummary {
            count: parts.first().and_then(reply::int).unwrap_or(0).max(0) as u64,
            max_id: parts.get(2).and_then(reply::string),
            consumers: Vec::new(),
        };
        if let Some(consumers) = parts.get(3).and_then(reply::array) {
            for c in consumers {
                let pair = reply::array(c).unwrap_or_default();
                if let (Some(name), Some(n)) = (
                    pair.first().and_then(reply::string),
                    pair.get(1).and_then(reply::int),
                ) {
                    summary.consumers.push((name, n.max(0) as u64));
                }
            }
        }
        Ok(Some(summary))
    }
}

/// Counts and workers of one queue.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// The queue name.
    pub queue: String,
    /// The server's clock when read, epoch ms.
    pub server_ms: i64,
    /// One per lane, in the order of the keys' lanes.
    pub lanes: Vec<LaneStats>,
    /// Tasks in `P delayed` (delay, schedule, retry backoff).
    pub scheduled: u64,
    /// Tasks in `P parked`: queued, waiting for a rate-limit token or a concurrency slot
    /// (PROTOCOL.md, Limits).
    pub parked: u64,
    /// Dead letters kept.
    pub dead: u64,
    /// Workers with a heartbeat (and consumers holding entries without one), alive
    /// first.
    pub workers: Vec<WorkerInfo>,
    /// The fields of `P paused`, sorted: paused lanes, and `*` when the whole queue is.
    pub paused: Vec<String>,
}

impl QueueStats {
    /// Is the whole queue paused?
    pub fn queue_paused(&self) -> bool {
        self.paused.iter().any(|p| p == super::PAUSE_ALL)
    }

    /// Is `lane` paused (by itself or with the queue)?
    pub fn lane_paused(&self, lane: &str) -> bool {
        self.paused
            .iter()
            .any(|p| p == lane || p == super::PAUSE_ALL)
    }
}

/// One lane of a queue.
#[derive(Debug, Clone, Default)]
pub struct LaneStats {
    /// The lane name.
    pub lane: String,
    /// The consumer group exists (a worker served this lane at least once).
    pub group: bool,
    /// Queued, not yet delivered.
    pub waiting: u64,
    /// Delivered, not yet finished (running, prefetched, or held by a dead worker).
    pub pending: u64,
    /// Pending and held by a live worker.
    pub running: u64,
    /// Age of the oldest waiting entry (since it entered the stream), ms.
    pub oldest_waiting_age_ms: Option<i64>,
    /// Pending entries per consumer.
    pub consumers: Vec<(String, u64)>,
}

impl LaneStats {
    /// Waiting plus pending: everything not yet finished in this lane.
    pub fn depth(&self) -> u64 {
        self.waiting + self.pending
    }
}

/// What `XPENDING <stream> <group>` says.
pub(super) struct PendingSummary {
    count: u64,
    /// The highest pending entry id.
    max_id: Option<String>,
    consumers: Vec<(String, u64)>,
}
