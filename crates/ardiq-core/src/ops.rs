//! What operators' tools read and change: queue statistics, dead letters, purge, one
//! job, and the checks behind a health probe. The `ardiq` commands `info`, `dlq`,
//! `purge`, `job` and `check`, and the metrics endpoint, are thin layers over this.
//!
//! Reads are plain commands (XLEN, XPENDING, XRANGE, ZCARD, ...): they change
//! nothing, so they need no script. Every change goes through a protocol script
//! (`replay`, `delete_dead`, `purge`), as the engine's do. Nothing here runs a task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client as RedisClient, RedisError, Value};
use thiserror::Error;

use crate::config::mask_url;
use crate::connection::is_auth_error;
use crate::keys::{Keys, GROUP};
use crate::metrics::entry_ms;
use crate::reply;
use crate::scripts;

mod browse;
pub use browse::{
    HeldEntry, HistoryEntry, HistoryPage, Payload, ScheduledPage, ScheduledTask, Throughput,
    HISTORY_SCAN, STAT_KINDS,
};

/// A worker is alive while its heartbeat (`P workers`, refreshed every 5 s) is at most
/// this old: three missed beats.
pub const WORKER_ALIVE_MS: i64 = 15_000;

/// The most heartbeats [`Client::queue_stats`] lists, newest first.
pub const WORKERS_LISTED: usize = 1000;

/// Ids per `purge` call: keeps each call (which blocks Redis while it runs) short.
const PURGE_CHUNK: usize = 200;

/// Why a tool could not do its job. Each kind maps to its own exit code in the binary.
#[derive(Debug, Error)]
pub enum OpsError {
    /// The URL does not parse. Never contains the password.
    #[error("invalid redis url `{url}`: {reason}")]
    Url {
        /// The URL with any password masked.
        url: String,
        /// What the client library said.
        reason: String,
    },
    /// Nothing answered (refused, timed out, name not resolved).
    #[error("redis at `{url}` is unreachable: {reason}")]
    Unreachable {
        /// The URL with any password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Redis answered but refused: bad credentials, or the ACL user lacks a permission.
    #[error("redis at `{url}` refused: {reason}")]
    Denied {
        /// The URL with any password masked.
        url: String,
        /// What the server said.
        reason: String,
    },
    /// Any other failed command.
    #[error("redis: {0}")]
    Redis(String),
}

/// One connection for a tool, with a timeout on everything.
pub struct Client {
    client: RedisClient,
    conn: MultiplexedConnection,
    url: String,
    timeout: Duration,
}

impl Client {
    /// Connects (and authenticates) within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Client, OpsError> {
        let masked = mask_url(url);
        // The same URL reading as the engine's (TLS parameters included).
        let client = crate::connection::open_client(url).map_err(|reason| OpsError::Url {
            url: masked.clone(),
            reason,
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(&masked, e))?;
        Ok(Client {
            client,
            conn,
            url: masked,
            timeout,
        })
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.url
    }

    fn err(&self, e: RedisError) -> OpsError {
        classify(&self.url, e)
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, OpsError> {
        match cmd.query_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The server's clock, epoch ms.
    pub async fn server_ms(&mut self) -> Result<i64, OpsError> {
        let (secs, micros): (i64, i64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<(), OpsError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// Every queue that has keys in this database, sorted (a `SCAN`, for tools).
    pub async fn discover_queues(&mut self) -> Result<Vec<String>, OpsError> {
        let keys = self.scan("ardiq:{*}:*").await?;
        let mut queues: Vec<String> = keys
            .iter()
            .filter_map(|k| queue_of_key(k).map(str::to_owned))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        queues.sort();
        Ok(queues)
    }

    /// The lanes of `queue` that have a stream, sorted by name (a `SCAN`). The app's own
    /// order (its `priorities`) is unknown to Redis; pass `--lanes` or the app for it.
    pub async fn discover_lanes(&mut self, queue: &str) -> Result<Vec<String>, OpsError> {
        let prefix = format!("ardiq:{{{queue}}}:stream:");
        let keys = self.scan(&format!("{}*", glob_escape(&prefix))).await?;
        let mut lanes: Vec<String> = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        lanes.sort();
        lanes.dedup();
        Ok(lanes)
    }

    async fn scan(&mut self, pattern: &str) -> Result<Vec<String>, OpsError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Counts and workers of one queue.
    pub async fn queue_stats(&mut self, keys: &Keys) -> Result<QueueStats, OpsError> {
        let now = self.server_ms().await?;
        let scheduled: u64 = self.query(redis::cmd("ZCARD").arg(keys.delayed())).await?;
        let dead: u64 = self
            .query(redis::cmd("ZCARD").arg(keys.dead_index()))
            .await?;
        // The newest beats only: however many dead workers the set still holds (they are
        // forgotten after minutes, see `heartbeat`), a read stays bounded.
        let beats: Vec<(String, f64)> = self
            .query(
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
            .await?;
        let alive: HashSet<&str> = beats
            .iter()
            .filter(|(_, ms)| now - (*ms as i64) <= WORKER_ALIVE_MS)
            .map(|(id, _)| id.as_str())
            .collect();
        let mut lanes = Vec::new();
        let mut held_by: HashMap<String, u64> = HashMap::new();
        for (i, lane) in keys.lanes().iter().enumerate() {
            let stats = self.lane_stats(keys.stream(i), lane, now, &alive).await?;
            for (consumer, n) in &stats.consumers {
                *held_by.entry(consumer.clone()).or_default() += n;
            }
            lanes.push(stats);
        }
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
        Ok(QueueStats {
            queue: queue_of_prefix(keys.prefix()).to_owned(),
            server_ms: now,
            lanes,
            scheduled,
            dead,
            workers,
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
    async fn pending_summary(&mut self, stream: &str) -> Result<Option<PendingSummary>, OpsError> {
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

    /// The newest dead letters first: `(total, letters[offset..offset + limit])`.
    pub async fn dead_letters(
        &mut self,
        keys: &Keys,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<DeadLetter>), OpsError> {
        let total: u64 = self
            .query(redis::cmd("ZCARD").arg(keys.dead_index()))
            .await?;
        if limit == 0 {
            return Ok((total, Vec::new()));
        }
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(keys.dead_index())
                    .arg(offset)
                    .arg(offset + limit - 1),
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = self.dead_letter(keys, &id).await? {
                out.push(d);
            }
        }
        Ok((total, out))
    }

    /// One dead letter, if there is one under `id`.
    pub async fn dead_letter(
        &mut self,
        keys: &Keys,
        id: &str,
    ) -> Result<Option<DeadLetter>, OpsError> {
        let fields: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys.dead(id))
                    .arg(&["fn", "l", "err", "t", "enq", "fail"]),
            )
            .await?;
        let Some(fn_name) = fields[0].clone() else {
            return Ok(None);
        };
        let num = |i: usize| -> i64 {
            fields[i]
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok(Some(DeadLetter {
            id: id.to_owned(),
            fn_name,
            lane: fields[1].clone().unwrap_or_default(),
            error: fields[2].clone().unwrap_or_default(),
            tries: num(3),
            enqueued_ms: num(4),
            failed_ms: num(5),
        }))
    }

    /// Every dead-letter id, oldest first.
    pub async fn dead_ids(&mut self, keys: &Keys) -> Result<Vec<String>, OpsError> {
        self.query(redis::cmd("ZRANGE").arg(keys.dead_index()).arg(0).arg(-1))
            .await
    }

    /// `replay`: 1 re-queued, 0 no such dead letter, -1 a live task holds the id, -2 its
    /// lane is not one of `keys`' lanes, -3 its payload is sealed and `signing` holds no
    /// key, -4 its seal does not verify under `signing` (or is a version 1 seal).
    ///
    /// A replay is a new enqueue: a sealed payload is opened and sealed again with a new
    /// nonce and a not-after `ttl_ms` from now (PROTOCOL.md, Signed payloads).
    pub async fn replay(
        &mut self,
        keys: &Keys,
        id: &str,
        signing: &[crate::SigningKey],
        ttl_ms: i64,
    ) -> Result<i64, OpsError> {
        let fields: Vec<Option<Vec<u8>>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys.dead(id))
                    .arg(&["fn", "l", "p"]),
            )
            .await?;
        let text = |i: usize| {
            String::from_utf8_lossy(fields[i].as_deref().unwrap_or_default()).into_owned()
        };
        let payload = fields[2].clone().unwrap_or_default();
        let (resealed, nonce) = if crate::sign::is_sealed(&payload) {
            let Some(key) = signing.first() else {
                return Ok(-3);
            };
            let (fn_name, lane) = (text(0), text(1));
            let binding = crate::sign::Binding {
                queue: keys.queue(),
                lane: &lane,
                task_id: id,
                fn_name: &fn_name,
            };
            let Ok(opened) = crate::sign::open(signing, &binding, &payload) else {
                return Ok(-4);
            };
            let nonce = crate::sign::new_nonce();
            let now = crate::context::local_now_ms();
            let sealed = key.seal(&binding, &nonce, now.saturating_add(ttl_ms), &opened.body);
            (sealed, crate::sign::nonce_hex(&nonce))
        } else {
            (Vec::new(), String::new())
        };
        let mut inv = scripts::REPLAY.prepare_invoke();
        inv.key(keys.dead_index())
            .key(keys.dead(id))
            .key(keys.job(id))
            .key(keys.result(id));
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(id)
            .arg(&resealed[..])
            .arg(&nonce)
            .arg(keys.lanes().len());
        for lane in keys.lanes() {
            inv.arg(lane);
        }
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// `delete_dead`: 1 deleted, 0 no such dead letter.
    pub async fn delete_dead(&mut self, keys: &Keys, id: &str) -> Result<i64, OpsError> {
        let mut inv = scripts::DELETE_DEAD.prepare_invoke();
        inv.key(keys.dead_index()).key(keys.dead(id)).arg(id);
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Drops every queued and scheduled task (finalized as aborted, error `purged`).
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
        let delayed: Vec<String> = self
            .query(redis::cmd("ZRANGE").arg(keys.delayed()).arg(0).arg(-1))
            .await?;
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

    /// Everything known about one task: its status, attempts and timings.
    pub async fn job(&mut self, keys: &Keys, id: &str) -> Result<JobInfo, OpsError> {
        let mut inv = scripts::INSPECT.prepare_invoke();
        inv.key(keys.job(id)).key(keys.result(id));
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(GROUP).arg(keys.lanes().len());
        for lane in keys.lanes() {
            inv.arg(lane);
        }
        let reply: Value = match inv.invoke_async(&mut self.conn).await {
            Ok(v) => v,
            Err(e) => return Err(self.err(e)),
        };
        let parts = reply::array(&reply).unwrap_or_default();
        let status = parts
            .first()
            .and_then(reply::string)
            .unwrap_or_else(|| "not_found".to_owned());
        let mut info = JobInfo {
            id: id.to_owned(),
            status,
            ..JobInfo::default()
        };
        if parts.len() >= 7 {
            info.name = parts.get(1).and_then(reply::string);
            info.enqueued_ms = parts.get(3).and_then(reply::int);
            info.tries = parts.get(4).and_then(reply::int);
            info.scheduled_ms = parts.get(5).and_then(reply::int).filter(|ms| *ms > 0);
            info.lane = parts.get(6).and_then(reply::string);
        }
        if matches!(info.status.as_str(), "queued" | "running") {
            let (entry, abort): (Option<String>, Option<String>) = self
                .query(redis::cmd("HMGET").arg(keys.job(id)).arg("e").arg("a"))
                .await?;
            info.abort_requested = abort.as_deref() == Some("1");
            let stream = info
                .lane
                .as_deref()
                .and_then(|l| keys.lane_index(l))
                .map(|i| keys.stream(i).to_owned());
            if let (Some(eid), Some(stream)) = (&entry, stream) {
                let p: Value = self
                    .query(
                        redis::cmd("XPENDING")
                            .arg(&stream)
                            .arg(GROUP)
                            .arg(eid)
                            .arg(eid)
                            .arg(1),
                    )
                    .await
                    .unwrap_or(Value::Nil);
                let row = reply::array(&p)
                    .and_then(|a| a.first())
                    .and_then(reply::array)
                    .unwrap_or_default();
                if row.len() >= 4 {
                    info.holder = Some(Holder {
                        worker: reply::string(&row[1]).unwrap_or_default(),
                        idle_ms: reply::int(&row[2]).unwrap_or(0),
                        deliveries: reply::int(&row[3]).unwrap_or(0),
                    });
                }
            }
            info.entry = entry;
        }
        let blob: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(keys.result(id))).await?;
        info.result = blob.as_deref().and_then(ResultRecord::decode);
        info.dead = self.dead_letter(keys, id).await?;
        if info.dead.is_some() && matches!(info.status.as_str(), "complete" | "not_found") {
            info.status = "dead".to_owned();
        }
        if let Some(r) = &info.result {
            info.tries = info.tries.or(Some(r.tries));
            info.enqueued_ms = info.enqueued_ms.or(Some(r.enqueued_ms).filter(|v| *v > 0));
        }
        if let Some(d) = &info.dead {
            info.name = info.name.take().or_else(|| Some(d.fn_name.clone()));
            info.lane = info.lane.take().or_else(|| Some(d.lane.clone()));
            info.tries = info.tries.or(Some(d.tries));
        }
        Ok(info)
    }

    /// Loads this build's function library with `FUNCTION LOAD REPLACE` (an
    /// administrator's right); returns its name. Loading it again changes nothing.
    pub async fn install_functions(&mut self) -> Result<String, OpsError> {
        let (name, text) = scripts::library();
        let _: Value = self
            .query(redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(text))
            .await?;
        Ok(name.clone())
    }

    /// The ArdiQ function libraries Redis holds (this build's and other versions'), sorted.
    pub async fn function_libraries(&mut self) -> Result<Vec<String>, OpsError> {
        let pattern = format!("{}*", scripts::LIBRARY_PREFIX);
        let reply: Value = self
            .query(
                redis::cmd("FUNCTION")
                    .arg("LIST")
                    .arg("LIBRARYNAME")
                    .arg(pattern),
            )
            .await?;
        let mut names: Vec<String> = reply::array(&reply)
            .unwrap_or_default()
            .iter()
            .filter_map(|lib| {
                let pairs = reply::pairs(lib)?;
                pairs
                    .into_iter()
                    .find(|(k, _)| reply::bytes(k) == Some(b"library_name".as_slice()))
                    .and_then(|(_, v)| reply::string(v))
            })
            .filter(|n| n.starts_with(scripts::LIBRARY_PREFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// What `ardiq check` verifies, in order: the server answers; the scripts run on the
    /// queue's keys (`queue_size`, which also settles [`scripts::mode`]: in functions
    /// mode no script-loading right is needed); each lane's stream is readable and has the group;
    /// the worker's writes are allowed (no-op `ZADD XX` on `P workers`, `XACK 0-0` on
    /// each stream); the abort channel can be subscribed. Changes nothing.
    ///
    /// Returns the lanes whose group is missing (empty: all good); permission problems
    /// come back as [`OpsError::Denied`].
    pub async fn check(&mut self, keys: &Keys) -> Result<Vec<String>, OpsError> {
        self.ping().await?;
        let mut inv = scripts::QUEUE_SIZE.prepare_invoke();
        inv.key(keys.delayed());
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(GROUP);
        let _: i64 = match inv.invoke_async(&mut self.conn).await {
            Ok(v) => v,
            Err(e) => return Err(self.err(e)),
        };
        let mut missing = Vec::new();
        for (i, lane) in keys.lanes().iter().enumerate() {
            let has_group = self.pending_summary(keys.stream(i)).await?.is_some();
            if !has_group {
                missing.push(lane.clone());
            }
            let _: i64 = self
                .query(redis::cmd("XACK").arg(keys.stream(i)).arg(GROUP).arg("0-0"))
                .await?;
        }
        let _: i64 = self
            .query(
                redis::cmd("ZADD")
                    .arg(keys.workers())
                    .arg("XX")
                    .arg(0)
                    .arg("\u{0}ardiq-check"),
            )
            .await?;
        let subscribed = tokio::time::timeout(self.timeout, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            // Dropped, not unsubscribed: the worker's ACL user has no UNSUBSCRIBE.
            pubsub.subscribe(keys.abort_channel()).await
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.err(e)),
            Err(_) => {
                return Err(OpsError::Unreachable {
                    url: self.url.clone(),
                    reason: "subscribing timed out".to_owned(),
                })
            }
        }
        Ok(missing)
    }
}

fn is_denied(e: &RedisError) -> bool {
    is_auth_error(e) || e.to_string().contains("NOPERM")
}

fn classify(url: &str, e: RedisError) -> OpsError {
    let reason = e.to_string();
    if is_denied(&e) {
        OpsError::Denied {
            url: url.to_owned(),
            reason,
        }
    } else if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        OpsError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    } else {
        OpsError::Redis(reason)
    }
}

/// `ardiq:{q}:...` → `q`.
fn queue_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ardiq:{")?;
    let end = rest.find("}:")?;
    Some(&rest[..end])
}

fn queue_of_prefix(prefix: &str) -> &str {
    queue_of_key(prefix).unwrap_or(prefix)
}

/// Escapes the glob characters of `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    /// Dead letters kept.
    pub dead: u64,
    /// Workers with a heartbeat (and consumers holding entries without one), alive
    /// first.
    pub workers: Vec<WorkerInfo>,
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

/// What `XPENDING <stream> <group>` says.
struct PendingSummary {
    count: u64,
    /// The highest pending entry id.
    max_id: Option<String>,
    consumers: Vec<(String, u64)>,
}

/// One dead letter (its payload is left out: arguments may hold secrets).
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// The task id.
    pub id: String,
    /// The task name.
    pub fn_name: String,
    /// Its lane.
    pub lane: String,
    /// Why it died.
    pub error: String,
    /// Attempts made.
    pub tries: i64,
    /// Enqueued at, epoch ms.
    pub enqueued_ms: i64,
    /// Failed at, epoch ms.
    pub failed_ms: i64,
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

/// Who holds a delivered task.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    /// The consumer (worker id).
    pub worker: String,
    /// Since its lease was last renewed, ms.
    pub idle_ms: i64,
    /// Times this entry was delivered.
    pub deliveries: i64,
}

/// One task, as `ardiq job` shows it.
#[derive(Debug, Clone, Default)]
pub struct JobInfo {
    /// The task id.
    pub id: String,
    /// `queued`, `scheduled`, `running`, `complete`, `dead` or `not_found`.
    pub status: String,
    /// The task name.
    pub name: Option<String>,
    /// Its lane.
    pub lane: Option<String>,
    /// Attempts made so far.
    pub tries: Option<i64>,
    /// Enqueued at, epoch ms.
    pub enqueued_ms: Option<i64>,
    /// Due at, epoch ms (scheduled tasks).
    pub scheduled_ms: Option<i64>,
    /// Its stream entry (queued or running).
    pub entry: Option<String>,
    /// The worker holding it (running).
    pub holder: Option<Holder>,
    /// An abort was requested and its worker has not finished it yet.
    pub abort_requested: bool,
    /// The result record, while it is kept.
    pub result: Option<ResultRecord>,
    /// The dead letter, if it has one.
    pub dead: Option<DeadLetter>,
}

/// The result record `[version, ok, value, tries, enqueued, started, finished, aborted]`
/// (version 1 or 2: PROTOCOL.md, "Result record").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRecord {
    /// It succeeded.
    pub ok: bool,
    /// On failure, what went wrong (the value of a success is the app's bytes, not shown).
    pub error: Option<String>,
    /// Attempts made.
    pub tries: i64,
    /// Epoch ms (0: unknown / never started).
    pub enqueued_ms: i64,
    /// Epoch ms, 0 when it never started.
    pub started_ms: i64,
    /// Epoch ms.
    pub finished_ms: i64,
    /// It was aborted (or purged).
    pub aborted: bool,
}

impl ResultRecord {
    /// Decodes the msgpack record; `None` for anything else.
    pub fn decode(blob: &[u8]) -> Option<ResultRecord> {
        let mut r = msgpack::Reader::new(blob);
        let n = r.array_len()?;
        if n < 8 || !matches!(r.int()?, 1 | 2) {
            return None;
        }
        let ok = r.bool()?;
        let value = r.bytes()?;
        let rec = ResultRecord {
            ok,
            error: (!ok).then(|| String::from_utf8_lossy(value).into_owned()),
            tries: r.int()?,
            enqueued_ms: r.int()?,
            started_ms: r.int()?,
            finished_ms: r.int()?,
            aborted: r.bool()?,
        };
        Some(rec)
    }
}

/// Just enough msgpack to read a result record (what Lua's `cmsgpack` writes).
mod msgpack {
    pub struct Reader<'a> {
        buf: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(buf: &'a [u8]) -> Self {
            Reader { buf }
        }

        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.buf.len() < n {
                return None;
            }
            let (head, rest) = self.buf.split_at(n);
            self.buf = rest;
            Some(head)
        }

        fn be(&mut self, n: usize) -> Option<u64> {
            Some(
                self.take(n)?
                    .iter()
                    .fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            )
        }

        fn byte(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }

        pub fn array_len(&mut self) -> Option<usize> {
            match self.byte()? {
                b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
                0xdc => Some(self.be(2)? as usize),
                0xdd => Some(self.be(4)? as usize),
                _ => None,
            }
        }

        pub fn bool(&mut self) -> Option<bool> {
            match self.byte()? {
                0xc2 => Some(false),
                0xc3 => Some(true),
                _ => None,
            }
        }

        pub fn int(&mut self) -> Option<i64> {
            let b = self.byte()?;
            Some(match b {
                0x00..=0x7f => i64::from(b),
                0xe0..=0xff => i64::from(b as i8),
                0xcc => self.be(1)? as i64,
                0xcd => self.be(2)? as i64,
                0xce => self.be(4)? as i64,
                0xcf => self.be(8)? as i64,
                0xd0 => self.be(1)? as u8 as i8 as i64,
                0xd1 => self.be(2)? as u16 as i16 as i64,
                0xd2 => self.be(4)? as u32 as i32 as i64,
                0xd3 => self.be(8)? as i64,
                // cmsgpack writes a whole number it holds as a double as a float.
                0xca => f32::from_bits(self.be(4)? as u32) as i64,
                0xcb => f64::from_bits(self.be(8)?) as i64,
                _ => return None,
            })
        }

        /// A str or bin.
        pub fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = match self.byte()? {
                b @ 0xa0..=0xbf => usize::from(b & 0x1f),
                0xd9 | 0xc4 => self.be(1)? as usize,
                0xda | 0xc5 => self.be(2)? as usize,
                0xdb | 0xc6 => self.be(4)? as usize,
                _ => return None,
            };
            self.take(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_result_records() {
        // [1, false, "boom", 3, 1700000000000, 0, 1700000000500, true]
        let mut blob = vec![0x98, 0x01, 0xc2, 0xa4];
        blob.extend_from_slice(b"boom");
        blob.push(0x03);
        blob.push(0xcf);
        blob.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        blob.push(0x00);
        blob.push(0xd3);
        blob.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
        blob.push(0xc3);
        let r = ResultRecord::decode(&blob).unwrap();
        assert_eq!(
            r,
            ResultRecord {
                ok: false,
                error: Some("boom".into()),
                tries: 3,
                enqueued_ms: 1_700_000_000_000,
                started_ms: 0,
                finished_ms: 1_700_000_000_500,
                aborted: true,
            }
        );
        assert!(ResultRecord::decode(b"\x93\x01\xc3").is_none());
        assert!(ResultRecord::decode(b"").is_none());
        let mut ok = vec![0x98, 0x01, 0xc3, 0xc4, 0x01, 0x05, 0x01, 0xcd, 0x01, 0x00];
        ok.extend_from_slice(&[0xce, 0, 0, 1, 0, 0xcb]);
        ok.extend_from_slice(&12.0f64.to_bits().to_be_bytes());
        ok.push(0xc2);
        let r = ResultRecord::decode(&ok).unwrap();
        assert!(r.ok && r.error.is_none() && !r.aborted);
        assert_eq!(
            (r.tries, r.enqueued_ms, r.started_ms, r.finished_ms),
            (1, 256, 256, 12)
        );
    }

    #[test]
    fn reads_queue_names() {
        assert_eq!(queue_of_key("ardiq:{emails}:stream:low"), Some("emails"));
        assert_eq!(queue_of_key("ardiq:{a}b}:dead"), Some("a}b"));
        assert_eq!(queue_of_key("other:{x}:y"), None);
        assert_eq!(queue_of_prefix("ardiq:{q}:"), "q");
        assert_eq!(glob_escape("ardiq:{a*b}:"), "ardiq:{a\\*b}:");
    }
}
