//! Who serves a queue: the heartbeats in `P workers`, and the consumers that hold
//! entries without one.

use std::collections::{HashMap, HashSet};

use super::{Client, OpsError};
use crate::keys::Keys;

/// A worker is alive while its heartbeat (`P workers`, refreshed every 5 s) is at most
/// this old: three missed beats.
pub const WORKER_ALIVE_MS: i64 = 15_000;

/// The most heartbeats [`Client::queue_stats`] lists, newest first.
pub const WORKERS_LISTED: usize = 1000;

impl Client {
    /// The newest heartbeats, `(worker id, epoch ms)`, at most [`WORKERS_LISTED`].
    pub(super) async fn heartbeats(&mut self, keys: &Keys) -> Result<Vec<(String, f64)>, OpsError> {
        // The newest beats only: however many dead workers the set still holds (they are
        // forgotten after minutes, see `heartbeat`), a read stays bounded.
        self.query(
            redis::cmd("ZRANGE")
                .arg(keys.workers())
                .arg("+inf")
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(WORKERS_LISTED)
                .arg("WITHSCORES"),
        )
        .await
    }
}

/// The ids whose heartbeat is at most [`WORKER_ALIVE_MS`] old at `now`.
pub(super) fn alive(beats: &[(String, f64)], now: i64) -> HashSet<&str> {
    beats
        .iter()
        .filter(|(_, ms)| now - (*ms as i64) <= WORKER_ALIVE_MS)
        .map(|(id, _)| id.as_str())
        .collect()
}

/// Every worker with a heartbeat, then the consumers in `held_by` (pending entries per
/// consumer) without one; alive first, then by id.
pub(super) fn list(
    beats: &[(String, f64)],
    now: i64,
    alive: &HashSet<&str>,
    mut held_by: HashMap<String, u64>,
) -> Vec<WorkerInfo> {
    let mut workers: Vec<WorkerInfo> = beats
        .iter()
        .map(|(id, ms)| WorkerInfo {
            id: id.clone(),
            last_beat_ms: *ms as i64,
            age_ms: now - *ms as i64,
            alive: alive.contains(id.as_str()),
            pending: held_by.remove(id).unwrap_or(0),
        })
        .collect();
    // Consumers holding entries without a heartbeat: crashed before beating, or their
    // heartbeat was removed. Listed so that nothing pending is unexplained.
    let mut orphans: Vec<_> = held_by.into_iter().filter(|(_, n)| *n > 0).collect();
    orphans.sort();
    workers.extend(orphans.into_iter().map(|(id, n)| WorkerInfo {
        id,
        last_beat_ms: 0,
        age_ms: -1,
        alive: false,
        pending: n,
    }));
    workers.sort_by(|a, b| b.alive.cmp(&a.alive).then(a.id.cmp(&b.id)));
    workers
}

/// A worker's heartbeat.
#[derive(Debug, Clone, Default)]
pub struct WorkerInfo {
    /// Its consumer name.
    pub id: String,
    /// Its latest heartbeat, epoch ms (0: none).
    pub last_beat_ms: i64,
    /// How old that heartbeat is, ms (-1: none).
    pub age_ms: i64,
    /// Heartbeat at most [`WORKER_ALIVE_MS`] old.
    pub alive: bool,
    /// Entries it holds, all lanes.
    pub pending: u64,
}
