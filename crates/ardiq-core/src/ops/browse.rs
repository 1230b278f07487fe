//! Paged reads for the dashboard (and any tool that lists a queue a page at a time): the
//! throughput counters, the history, the scheduled tasks, what each worker holds, a
//! task's payload, and the `run_now` action.
//!
//! Every read is bounded by its page: no call walks a whole stream or set, so a page costs
//! the same with 100,000 queued tasks as with ten. History, counters and attempts are
//! written by the workers (PROTOCOL.md, "History"); a queue whose workers keep none simply
//! reads empty here.

use redis::Value;

use super::{Client, OpsError};
use crate::keys::{Keys, GROUP};
use crate::reply;
use crate::scripts;

/// The kinds `finish` counts in `P stats` (PROTOCOL.md, "History"), in display order.
pub const STAT_KINDS: [&str; 6] = ["ok", "fail", "retry", "expired", "abort", "lost"];

/// The most entries one history page reads from the stream, whatever the filter: a
/// filtered page that found fewer matches says where to go on (`next`).
pub const HISTORY_SCAN: usize = 2_000;

impl Clone for Client {
    /// Another handle on the same connection (the multiplexed connection is shared, so
    /// concurrent callers pipeline over one socket).
    fn clone(&self) -> Self {
        Client {
            client: self.client.clone(),
            conn: self.conn.clone(),
            url: self.url.clone(),
            timeout: self.timeout,
        }
    }
}

/// Per-minute counters of one queue: `counts[k][i]` is how many tasks of kind
/// `STAT_KINDS[k]` finished in minute `first_minute + i` (epoch ms div 60000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throughput {
    /// The server's clock when read, epoch ms.
    pub server_ms: i64,
    /// The oldest minute of the window.
    pub first_minute: i64,
    /// One row per kind of [`STAT_KINDS`], one column per minute, oldest first.
    pub counts: Vec<Vec<u64>>,
}

/// One task a worker completed (an entry of `P history`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The stream entry id (the page cursor).
    pub entry: String,
    /// The task id.
    pub id: String,
    /// The task name.
    pub fn_name: String,
    /// Its lane.
    pub lane: String,
    /// `ok`, `fail`, `expired`, `abort` or `lost`.
    pub kind: String,
    /// Attempts made.
    pub tries: i64,
    /// Enqueued, started (0: never) and finished, epoch ms.
    pub enqueued_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// The worker that finished it.
    pub worker: String,
    /// The failure text (cut by the worker), for every kind but `ok`.
    pub error: Option<String>,
}

/// One page of history, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `before` for the next (older) page; `None` when the stream has no more.
    pub next: Option<String>,
}

/// A task waiting in `P delayed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduledTask {
    pub id: String,
    /// Due at, epoch ms.
    pub due_ms: i64,
    /// From its job hash (`None` when the hash is gone).
    pub fn_name: Option<String>,
    pub lane: Option<String>,
    /// Attempts already made: above 0 means a retry waiting out its backoff.
    pub tries: i64,
    pub enqueued_ms: Option<i64>,
}

/// One page of scheduled tasks, soonest first.
#[derive(Debug, Clone, Default)]
pub struct ScheduledPage {
    /// Tasks in `P delayed`.
    pub total: u64,
    pub tasks: Vec<ScheduledTask>,
    /// Pass as `after` for the next page (`<due ms>:<id>`); `None` at the end.
    pub next: Option<String>,
}

/// An entry a worker holds (delivered, not finished).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldEntry {
    pub lane: String,
    /// The stream entry id.
    pub entry: String,
    /// The task id and name (`None` when the entry is gone from the stream).
    pub id: Option<String>,
    pub fn_name: Option<String>,
    /// Since its lease was last renewed, ms.
    pub idle_ms: i64,
    /// Times this entry was delivered.
    pub deliveries: i64,
}

/// Where a task's payload was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The live task's (job hash or stream entry), or the dead letter's.
    Kept(Vec<u8>),
    /// The task is complete (or unknown): its payload is not kept.
    Gone,
}

impl Client {
    /// The counters of `P stats` for the `minutes` minutes up to and including the
    /// current one (one `HMGET`).
    pub async fn throughput(&mut self, keys: &Keys, minutes: u32) -> Result<Throughput, OpsError> {
        let now = self.server_ms().await?;
        let minutes = i64::from(minutes.max(1));
        let last = now.div_euclid(60_000);
        let first = last - minutes + 1;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(stats_key(keys));
        for kind in STAT_KINDS {
            for m in first..=last {
                cmd.arg(format!("{kind}:{m}"));
            }
        }
        let values: Vec<Option<String>> = self.query(&cmd).await?;
        let counts = values
            .chunks(minutes as usize)
            .map(|row| {
                row.iter()
                    .map(|v| v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0))
                    .collect()
            })
            .collect();
        Ok(Throughput {
            server_ms: now,
            first_minute: first,
            counts,
        })
    }

    /// The newest completed tasks before the entry `before` (exclusive; `None`: from the
    /// newest), at most `limit`, only those whose kind is in `kinds` (empty: all). Reads at
    /// most [`HISTORY_SCAN`] entries (one `XREVRANGE`).
    pub async fn history(
        &mut self,
        keys: &Keys,
        kinds: &[String],
        before: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, OpsError> {
        let mut page = HistoryPage::default();
        if limit == 0 {
            return Ok(page);
        }
        let end = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        let count = if kinds.is_empty() {
            limit
        } else {
            HISTORY_SCAN.max(limit)
        };
        let reply: Value = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(history_key(keys))
                    .arg(&end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let rows = reply::array(&reply).unwrap_or_default();
        let mut last_read = None;
        for row in rows {
            let Some(entry) = parse_history(row) else {
                continue;
            };
            last_read = Some(entry.entry.clone());
            if kinds.is_empty() || kinds.contains(&entry.kind) {
                page.entries.push(entry);
                if page.entries.len() == limit {
                    break;
                }
            }
        }
        // More may follow unless the read came back short of what it asked for.
        let exhausted = rows.len() < count && page.entries.len() < limit;
        page.next = if exhausted { None } else { last_read };
        Ok(page)
    }

    /// Scheduled tasks (delayed, scheduled and retries waiting) soonest first, after the
    /// cursor `after` (`<due ms>:<id>`, as [`ScheduledPage::next`] gives it; `None`: from
    /// the start). A handful of commands whatever the set's size: `ZRANK` (or `ZCOUNT` when
    /// the cursor's task has left the set) to find the page, `ZRANGE` by index, one
    /// `HMGET` per task.
    pub async fn scheduled(
        &mut self,
        keys: &Keys,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScheduledPage, OpsError> {
        let delayed = keys.delayed();
        let total: u64 = self.query(redis::cmd("ZCARD").arg(&delayed)).await?;
        let mut page = ScheduledPage {
            total,
            ..ScheduledPage::default()
        };
        if limit == 0 {
            return Ok(page);
        }
        let start: u64 = match after.and_then(parse_cursor) {
            None => 0,
            Some((due, id)) => {
                let rank: Option<u64> = self
                    .query(redis::cmd("ZRANK").arg(&delayed).arg(id))
                    .await?;
                match rank {
                    Some(r) => r + 1,
                    // Promoted or run since: start after every task due up to its time.
                    None => {
                        self.query(redis::cmd("ZCOUNT").arg(&delayed).arg("-inf").arg(due))
                            .await?
                    }
                }
            }
        };
        let rows: Vec<(String, f64)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(&delayed)
                    .arg(start)
                    .arg(start + limit as u64 - 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let mut pipe = redis::pipe();
        for (id, _) in &rows {
            pipe.cmd("HMGET")
                .arg(keys.job(id))
                .arg(&["fn", "l", "t", "enq"]);
        }
        let fields: Vec<Vec<Option<String>>> = if rows.is_empty() {
            Vec::new()
        } else {
            self.query_pipe(&pipe).await?
        };
        for ((id, due), f) in rows.iter().zip(fields) {
            let get = |i: usize| f.get(i).cloned().flatten();
            page.tasks.push(ScheduledTask {
                id: id.clone(),
                due_ms: *due as i64,
                fn_name: get(0),
                lane: get(1),
                tries: get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                enqueued_ms: get(3).and_then(|s| s.parse().ok()),
            });
        }
        if rows.len() == limit && start + (limit as u64) < total {
            page.next = page.tasks.last().map(|t| format!("{}:{}", t.due_ms, t.id));
        }
        Ok(page)
    }

    /// Up to `limit` entries `consumer` holds, lane by lane in the keys' order (one
    /// `XPENDING ... COUNT` per lane, then one `XRANGE` per entry for its task id and
    /// name, pipelined).
    pub async fn held_by(
        &mut self,
        keys: &Keys,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<HeldEntry>, OpsError> {
        let mut held = Vec::new();
        let mut streams = Vec::new();
        for (i, lane) in keys.lanes().iter().enumerate() {
            if held.len() >= limit {
                break;
            }
            let reply: Result<Value, OpsError> = self
                .query(
                    redis::cmd("XPENDING")
                        .arg(keys.stream(i))
                        .arg(GROUP)
                        .arg("-")
                        .arg("+")
                        .arg(limit - held.len())
                        .arg(consumer),
                )
                .await;
            let reply = match reply {
                Ok(v) => v,
                Err(OpsError::Redis(e)) if e.contains("NOGROUP") => continue,
                Err(e) => return Err(e),
            };
            for row in reply::array(&reply).unwrap_or_default() {
                let row = reply::array(row).unwrap_or_default();
                let Some(entry) = row.first().and_then(reply::string) else {
                    continue;
                };
                held.push(HeldEntry {
                    lane: lane.clone(),
                    entry,
                    idle_ms: row.get(2).and_then(reply::int).unwrap_or(0),
                    deliveries: row.get(3).and_then(reply::int).unwrap_or(0),
                    ..HeldEntry::default()
                });
                streams.push(i);
            }
        }
        if held.is_empty() {
            return Ok(held);
        }
        let mut pipe = redis::pipe();
        for (h, i) in held.iter().zip(&streams) {
            pipe.cmd("XRANGE")
                .arg(keys.stream(*i))
                .arg(&h.entry)
                .arg(&h.entry);
        }
        let entries: Vec<Value> = self.query_pipe(&pipe).await?;
        for (h, e) in held.iter_mut().zip(&entries) {
            let fields = reply::array(e)
                .and_then(|a| a.first())
                .and_then(reply::array)
                .and_then(|row| row.get(1))
                .and_then(reply::pairs)
                .unwrap_or_default();
            let field = |name: &[u8]| {
                fields
                    .iter()
                    .find(|(k, _)| reply::bytes(k) == Some(name))
                    .and_then(|(_, v)| reply::string(v))
            };
            h.id = field(b"id");
            h.fn_name = field(b"fn");
        }
        Ok(held)
    }

    /// The payload of task `id`: the live task's (`inspect`), else its dead letter's.
    pub async fn payload(&mut self, keys: &Keys, id: &str) -> Result<Payload, OpsError> {
        let reply = self.inspect(keys, id).await?;
        let parts = reply::array(&reply).unwrap_or_default();
        if let Some(p) = parts.get(2).and_then(reply::bytes) {
            return Ok(Payload::Kept(p.to_vec()));
        }
        let dead: Option<Vec<u8>> = self
            .query(redis::cmd("HGET").arg(keys.dead(id)).arg("p"))
            .await?;
        Ok(dead.map_or(Payload::Gone, Payload::Kept))
    }

    /// `run_now`: 1 moved to its stream, 0 not scheduled (any more), -2 its lane is not
    /// one of `keys`' lanes.
    pub async fn run_now(&mut self, keys: &Keys, id: &str) -> Result<i64, OpsError> {
        let mut inv = scripts::RUN_NOW.prepare_invoke();
        inv.key(keys.delayed()).key(keys.job(id));
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(id).arg(keys.lanes().len());
        for lane in keys.lanes() {
            inv.arg(lane);
        }
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// `P crons`: each cron's name and the last occurrence it fired (epoch ms), sorted by
    /// name. One `HGETALL`: the hash has one field per cron the app defines.
    pub async fn cron_fired(&mut self, keys: &Keys) -> Result<Vec<(String, i64)>, OpsError> {
        let map: Vec<(String, String)> =
            self.query(redis::cmd("HGETALL").arg(keys.crons())).await?;
        let mut out: Vec<(String, i64)> = map
            .into_iter()
            .map(|(name, ms)| (name, ms.parse().unwrap_or(0)))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, OpsError> {
        match pipe.query_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }
}

fn stats_key(keys: &Keys) -> String {
    format!("{}stats", keys.prefix())
}

fn history_key(keys: &Keys) -> String {
    format!("{}history", keys.prefix())
}

/// `<due ms>:<id>` (the id may hold colons).
fn parse_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (due, id) = cursor.split_once(':')?;
    Some((due.parse().ok()?, id))
}

/// One `XREVRANGE` row as a history entry; `None` for a row of another shape.
fn parse_history(row: &Value) -> Option<HistoryEntry> {
    let row = reply::array(row)?;
    let entry = row.first().and_then(reply::string)?;
    let fields = row.get(1).and_then(reply::pairs)?;
    let text = |name: &[u8]| {
        fields
            .iter()
            .find(|(k, _)| reply::bytes(k) == Some(name))
            .and_then(|(_, v)| reply::string(v))
    };
    let num = |name: &[u8]| text(name).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(HistoryEntry {
        id: text(b"id").unwrap_or_default(),
        fn_name: text(b"fn").unwrap_or_default(),
        lane: text(b"l").unwrap_or_default(),
        kind: text(b"k").unwrap_or_default(),
        tries: num(b"t"),
        enqueued_ms: num(b"enq"),
        started_ms: num(b"st"),
        finished_ms: num(b"fin"),
        worker: text(b"w").unwrap_or_default(),
        error: text(b"err"),
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cursors() {
        assert_eq!(parse_cursor("1700:a:b"), Some((1700, "a:b")));
        assert_eq!(parse_cursor("soon:a"), None);
        assert_eq!(parse_cursor("1700"), None);
    }

    #[test]
    fn reads_history_rows() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let row = Value::Array(vec![
            bulk("1700000000000-0"),
            Value::Array(
                [
                    ("id", "t1"),
                    ("fn", "<b>x</b>"),
                    ("l", "default"),
                    ("k", "fail"),
                    ("t", "2"),
                    ("enq", "1"),
                    ("st", "2"),
                    ("fin", "3"),
                    ("w", "w1"),
                    ("err", "boom"),
                ]
                .iter()
                .flat_map(|(k, v)| [bulk(k), bulk(v)])
                .collect(),
            ),
        ]);
        let e = parse_history(&row).unwrap();
        assert_eq!(e.entry, "1700000000000-0");
        assert_eq!((e.id.as_str(), e.fn_name.as_str()), ("t1", "<b>x</b>"));
        assert_eq!((e.kind.as_str(), e.tries), ("fail", 2));
        assert_eq!((e.enqueued_ms, e.started_ms, e.finished_ms), (1, 2, 3));
        assert_eq!(e.error.as_deref(), Some("boom"));
        assert!(parse_history(&bulk("x")).is_none());
    }
}
