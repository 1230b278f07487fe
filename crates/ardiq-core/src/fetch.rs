//! Reading new entries: the `fetch` script, and the blocking read that waits for work.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tracing::{info, warn};

use crate::backoff::LogThrottle;
use crate::connection::{is_nogroup, Redis};
use crate::context::Ctx;
use crate::entry::{parse_entry, parse_fields, Parsed};
use crate::error::{EngineError, Result};
use crate::keys::{Keys, GROUP};
use crate::reply;
use crate::scripts;

/// Reads up to `count` new entries from `lanes` (lowest-first indexes, in read order:
/// the lanes not paused), each lane up to its quota first when `quotas` (one per entry
/// of `lanes`) is given. Returns them with their lane index (lowest-first numbering).
///
/// With one lane that is a plain `XREADGROUP`; the `fetch` script (which orders lanes
/// and creates a missing group) runs only with several lanes or after `NOGROUP`. The
/// script costs Redis about as much again as the read itself: every entry is copied
/// into Lua and back out.
pub async fn fetch(
    ctx: &Ctx,
    count: usize,
    lanes: &[usize],
    quotas: Option<&[usize]>,
) -> Result<Vec<(usize, Parsed)>> {
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    if ctx.keys.lanes().len() == 1 {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(ctx.worker())
            .arg("COUNT")
            .arg(count);
        cmd.arg("STREAMS").arg(ctx.keys.stream(0)).arg(">");
        let mut conn = ctx.conn.clone();
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(value) => {
                return Ok(match parse_read_reply(&ctx.keys, &value) {
                    ReadOutcome::Entries(entries) => entries,
                    _ => Vec::new(),
                })
            }
            Err(e) if is_nogroup(&e) => {} // the script creates the group
            Err(e) => return Err(e.into()),
        }
    }
    fetch_script(ctx, count, lanes, quotas).await
}

/// The `fetch` script over `order` (lowest-first indexes, read order), with optional
/// per-lane quotas; it creates missing groups.
async fn fetch_script(
    ctx: &Ctx,
    count: usize,
    order: &[usize],
    quotas: Option<&[usize]>,
) -> Result<Vec<(usize, Parsed)>> {
    let keys = &ctx.keys;
    let mut inv = scripts::FETCH.prepare_invoke();
    for &lane in order {
        inv.key(keys.stream(lane));
    }
    inv.arg(GROUP).arg(ctx.worker()).arg(count);
    for q in quotas.unwrap_or_default() {
        inv.arg(*q);
    }
    let mut conn = ctx.conn.clone();
    let value: Value = inv.invoke_async(&mut conn).await?;
    parse_fetch_reply(keys, order, &value)
}

/// Shares `count` slots among the `active` lanes (indexes into `weights` and `credit`)
/// by smooth weighted round-robin: per slot every active lane gains its weight, the one
/// with the most credit takes the slot and pays the active lanes' total (ties: the
/// first in `active`, the higher lane). `credit` carries over between calls, so many
/// small fetches add up to the weights' shares. Returns one quota per active lane.
pub fn quotas(weights: &[u32], credit: &mut [i64], active: &[usize], count: usize) -> Vec<usize> {
    let total: i64 = active.iter().map(|&i| i64::from(weights[i])).sum();
    let mut out = vec![0; active.len()];
    for _ in 0..count {
        let mut best = 0;
        for (j, &i) in active.iter().enumerate() {
            credit[i] += i64::from(weights[i]);
            if credit[i] > credit[active[best]] {
                best = j;
            }
        }
        credit[active[best]] -= total;
        out[best] += 1;
    }
    out
}

/// The reply is flat: KEYS index (1-based), entry id, fields, repeated.
fn parse_fetch_reply(keys: &Keys, order: &[usize], value: &Value) -> Result<Vec<(usize, Parsed)>> {
    let bad = |detail: &str| EngineError::Protocol {
        script: "fetch",
        detail: detail.to_owned(),
    };
    let items = reply::array(value).ok_or_else(|| bad("not an array"))?;
    if items.len() % 3 != 0 {
        return Err(bad("length is not a multiple of 3"));
    }
    let mut out = Vec::with_capacity(items.len() / 3);
    for chunk in items.chunks_exact(3) {
        let lane = reply::int(&chunk[0])
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| order.get(i).copied())
            .ok_or_else(|| bad("lane index out of range"))?;
        let eid = reply::string(&chunk[1]).ok_or_else(|| bad("entry id is not a string"))?;
        out.push((lane, parse_fields(eid, &keys.lanes()[lane], &chunk[2])));
    }
    Ok(out)
}

/// What one blocking read produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Entries (at most one) delivered to this consumer.
    Entries(Vec<(usize, Parsed)>),
    /// The block timed out with nothing new.
    Empty,
    /// A lane's group is missing: `fetch` creates it, then read again.
    NoGroup,
    /// Redis trouble; the caller waits (backoff) before the next read.
    Failed,
}

/// Owns the dedicated connection for `XREADGROUP ... BLOCK`.
pub struct BlockingReader {
    redis: Redis,
    conn: Option<MultiplexedConnection>,
    throttle: LogThrottle,
}

impl BlockingReader {
    /// A reader that connects on first use.
    pub fn new(redis: Redis) -> Self {
        BlockingReader {
            redis,
            conn: None,
            throttle: LogThrottle::default(),
        }
    }

    /// Blocks up to `block_ms` for one new entry on any lane (highest listed first).
    /// Never returns an error: failures are logged (throttled) and reported as `Failed`.
    pub async fn read(
        &mut self,
        keys: &Keys,
        lanes: &[usize],
        worker: &str,
        block_ms: u64,
        grace: Duration,
    ) -> ReadOutcome {
        match self.try_read(keys, lanes, worker, block_ms, grace).await {
            Ok(out) => {
                if self.throttle.success() {
                    info!(url = %self.redis.masked_url(), "blocking read reconnected");
                }
                out
            }
            Err(e) if is_nogroup(&e) => ReadOutcome::NoGroup,
            Err(e) => {
                // The connection may be half-dead: start over with a fresh one.
                self.conn = None;
                if let Some(suppressed) = self.throttle.failure() {
                    warn!(url = %self.redis.masked_url(), error = %e, suppressed,
                        "blocking read failed, retrying");
                }
                ReadOutcome::Failed
            }
        }
    }

    async fn try_read(
        &mut self,
        keys: &Keys,
        order: &[usize],
        worker: &str,
        block_ms: u64,
        grace: Duration,
    ) -> Result<ReadOutcome, RedisError> {
        if self.conn.is_none() {
            self.conn = Some(self.redis.blocking().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(ReadOutcome::Failed);
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(worker).arg("COUNT").arg(1);
        cmd.arg("BLOCK").arg(block_ms).arg("STREAMS");
        for &lane in order {
            cmd.arg(keys.stream(lane));
        }
        for _ in order {
            cmd.arg(">");
        }
        // The connection has no response timeout (it must stay silent for `block_ms`),
        // so bound the wait here: a server that vanished without closing the socket must
        // not wedge the reader.
        let limit = Duration::from_millis(block_ms) + grace;
        let value: Value = match tokio::time::timeout(limit, cmd.query_async(conn)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "blocking read got no reply in time",
                )))
            }
        };
        Ok(parse_read_reply(keys, &value))
    }
}

/// XREADGROUP replies `nil`, `[[stream, entries]...]` (RESP2) or `{stream: entries}`.
fn parse_read_reply(keys: &Keys, value: &Value) -> ReadOutcome {
    let streams: Vec<(&Value, &Value)> = match value {
        Value::Nil => return ReadOutcome::Empty,
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        other => reply::array(other)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                let pair = reply::array(s)?;
                Some((pair.first()?, pair.get(1)?))
            })
            .collect(),
    };
    let mut out = Vec::new();
    for (name, entries) in streams {
        let Some(name) = reply::string(name) else {
            continue;
        };
        let Some(lane) = (0..keys.lanes().len()).find(|&i| keys.stream(i) == name) else {
            continue;
        };
        for e in reply::array(entries).unwrap_or_default() {
            if let Some(p) = parse_entry(&keys.lanes()[lane], e) {
                out.push((lane, p));
            }
        }
    }
    if out.is_empty() {
        ReadOutcome::Empty
    } else {
        ReadOutcome::Entries(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn maps_fetch_reply_to_lanes() {
        let keys = Keys::new("q", &["low".into(), "high".into()]);
        let order: Vec<usize> = keys.read_order().collect();
        let fields = Value::Array(vec![bs("id"), bs("a"), bs("fn"), bs("f"), bs("p"), bs("")]);
        let reply = Value::Array(vec![
            Value::Int(1),
            bs("1-0"),
            fields.clone(),
            Value::Int(2),
            bs("2-0"),
            Value::Array(vec![]),
        ]);
        let got = parse_fetch_reply(&keys, &order, &reply).unwrap();
        assert_eq!(got[0].0, 1, "KEYS[1] is the highest lane");
        assert!(matches!(got[0].1, Parsed::Task(ref d) if d.lane == "high"));
        assert_eq!(got[1].0, 0);
        assert!(matches!(got[1].1, Parsed::Malformed { .. }));
        let bad = Value::Array(vec![Value::Int(3), bs("1-0"), fields]);
        assert!(parse_fetch_reply(&keys, &order, &bad).is_err());
    }

    #[test]
    fn quotas_follow_the_weights_across_calls() {
        // Lowest first: low 1, default 3, high 6; read order high, default, low.
        let weights = [1, 3, 6];
        let mut credit = [0i64; 3];
        let active = [2, 1, 0];
        let mut got = [0usize; 3];
        for count in [1, 7, 3, 2, 5, 32, 1, 1, 9, 19, 4, 16] {
            let q = quotas(&weights, &mut credit, &active, count);
            assert_eq!(q.iter().sum::<usize>(), count);
            for (j, &i) in active.iter().enumerate() {
                got[i] += q[j];
            }
        }
        // 100 slots in all: exactly 10 / 30 / 60 (smooth WRR is exact per cycle).
        assert_eq!(got, [10, 30, 60]);
        // A paused lane is left out: the others share its slots by their weights.
        let mut credit = [0i64; 3];
        let q = quotas(&weights, &mut credit, &[1, 0], 8);
        assert_eq!(q, [6, 2]);
    }

    #[test]
    fn parses_blocking_reply() {
        let keys = Keys::new("q", &["low".into(), "high".into()]);
        assert!(matches!(
            parse_read_reply(&keys, &Value::Nil),
            ReadOutcome::Empty
        ));
        let entry = Value::Array(vec![
            bs("5-0"),
            Value::Array(vec![bs("id"), bs("a"), bs("fn"), bs("f"), bs("p"), bs("x")]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bs("ardiq:{q}:stream:low"),
            Value::Array(vec![entry]),
        ])]);
        match parse_read_reply(&keys, &reply) {
            ReadOutcome::Entries(v) => assert_eq!(v[0].0, 0),
            other => panic!("{other:?}"),
        }
    }
}
