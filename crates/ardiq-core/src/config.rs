//! What one worker process is told to do: the queue, its lanes, its limits and its crons.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cron::CronSchedule;
use crate::error::{EngineError, Result};
use crate::sign::SigningKey;

/// The settings of one engine (one consumer in each lane's group).
///
/// Build it with [`Config::new`] and adjust the public fields; [`crate::Engine::new`]
/// validates it. Defaults follow the Python app's defaults (API.md section 1).
#[derive(Clone)]
pub struct Config {
    /// `redis://`, `rediss://` (needs the `tls` feature) or `unix://`, optionally with an
    /// ACL user and password. Never logged as given: see [`mask_url`].
    pub redis_url: String,
    /// The queue name; every key lives under `ardiq:{<queue>}:`.
    pub queue: String,
    /// Lane (priority) names, lowest first, as the app's `priorities`. Read highest first.
    pub lanes: Vec<String>,
    /// Lane weights, same order as `lanes` (`None`: strict priorities, highest lane
    /// first). With weights each fetch shares its free slots among the lanes by smooth
    /// weighted round-robin, and the buffer starts entries in arrival order.
    pub weights: Option<Vec<u32>>,
    /// This worker's consumer name in every lane's group. Must be unique per process:
    /// two processes sharing one name would renew and ack each other's entries.
    pub worker_id: String,
    /// Task bodies running at once.
    pub concurrency: usize,
    /// Entries held at once (running + buffered). At least `concurrency`; default twice it.
    pub prefetch: usize,
    /// The lease: an entry not renewed for this long is reclaimed by another worker.
    pub idle_timeout_ms: u64,
    /// How long the blocking read waits for new entries before the loop looks around.
    pub poll_block_ms: u64,
    /// Result lifetime: > 0 keep that long, 0 keep none, < 0 keep forever.
    pub result_ttl_ms: i64,
    /// Deliveries of one attempt before it is dead-lettered as `worker lost`.
    pub max_deliveries: u32,
    /// Exit once the queue is drained instead of waiting for more work.
    pub burst: bool,
    /// After a stop request, how long running tasks may take before the engine returns
    /// without them (they stay pending and are reclaimed). `None`: wait for them.
    pub drain_timeout: Option<Duration>,
    /// How often the worker's heartbeat (`ZADD P workers`) is refreshed.
    pub heartbeat_interval: Duration,
    /// Response timeout for every command except the blocking read, so a wedged server
    /// turns into a retry instead of a hung worker.
    pub command_timeout: Duration,
    /// Cron jobs this worker fires (ignored in burst mode).
    pub crons: Vec<CronEntry>,
    /// How many tasks the app registered (crons included). The engine only reports it,
    /// in the `worker starting` line: which tasks exist is the executor's business.
    pub tasks: usize,
    /// Seals the cron occurrences this worker enqueues (`None`: payloads go unsigned).
    /// Workers check the tags in Python, before decoding; see [`crate::sign`].
    pub signing_key: Option<SigningKey>,
    /// A sealed payload's not-after is its due time plus this (PROTOCOL.md, Signed
    /// payloads); the engine uses it for the cron occurrences it seals.
    pub signature_ttl_ms: i64,
    /// An entry whose payload is longer is refused before anything reaches the executor
    /// (the task fails with "payload too large").
    pub max_payload_bytes: usize,
    /// Completed tasks kept in `P history`, about (`XADD MAXLEN ~`); 0 writes no history,
    /// attempts or stats (PROTOCOL.md, History).
    pub history: u64,
    /// History entries and `P stats` fields older than this are trimmed, about once a
    /// minute.
    pub history_ttl_ms: i64,
    /// Recycling (`ardiq run --max-tasks`): the engine starts at most this many tasks,
    /// then drains as on a stop request and returns [`crate::StopReason::Recycle`], for
    /// its supervisor to start a fresh process. `None`: no limit (and no cost).
    pub max_tasks: Option<u64>,
    /// Task name -> its rate limit and concurrency cap (PROTOCOL.md, Limits). Empty: the
    /// engine never calls `admit` or `unpark`, so a worker without limits pays nothing.
    pub limits: HashMap<String, TaskLimit>,
}

/// One task's flow control, enforced in Redis by the `admit` script across every worker.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskLimit {
    /// Starts allowed per millisecond (0: no rate limit).
    pub rate_per_ms: f64,
    /// Starts that may be spent at once (at least 1 with a rate limit).
    pub burst: f64,
    /// Attempts running at once across all workers (0: no cap).
    pub max_concurrency: u32,
}

impl Config {
    /// A configuration with the app's defaults: one lane `default`, concurrency 16,
    /// prefetch 32, a 60 s lease, 500 ms blocking reads, 5 min results, 5 deliveries.
    pub fn new(redis_url: impl Into<String>, queue: impl Into<String>) -> Self {
        Config {
            redis_url: redis_url.into(),
            queue: queue.into(),
            lanes: vec!["default".to_owned()],
            weights: None,
            worker_id: default_worker_id(),
            concurrency: 16,
            prefetch: 32,
            idle_timeout_ms: 60_000,
            poll_block_ms: 500,
            result_ttl_ms: 300_000,
            max_deliveries: 5,
            burst: false,
            drain_timeout: None,
            heartbeat_interval: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            crons: Vec::new(),
            tasks: 0,
            signing_key: None,
            signature_ttl_ms: crate::sign::DEFAULT_TTL_MS,
            max_payload_bytes: 16 * 1024 * 1024,
            history: 0,
            history_ttl_ms: 86_400_000,
            max_tasks: None,
            limits: HashMap::new(),
        }
    }

    /// Checks the settings that would otherwise fail deep inside the loop.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(EngineError::Config(m.to_owned()));
        if self.queue.is_empty() {
            return bad("queue name is empty");
        }
        if self.lanes.is_empty() {
            return bad("at least one lane is needed");
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.is_empty() {
                return bad("a lane name is empty");
            }
            if self.lanes[..i].contains(lane) {
                return Err(EngineError::Config(format!(
                    "lane `{lane}` is listed twice"
                )));
            }
        }
        if let Some(w) = &self.weights {
            if w.len() != self.lanes.len() || w.contains(&0) {
                return bad("lane weights must be positive, one per lane");
            }
        }
        if self.worker_id.is_empty() {
            return bad("worker id is empty");
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        if self.prefetch < self.concurrency {
            return bad("prefetch must be at least concurrency");
        }
        if self.idle_timeout_ms < 30 {
            return bad("idle_timeout_ms must be at least 30");
        }
        if self.poll_block_ms == 0 {
            return bad("poll_block_ms must be at least 1 (0 would block forever)");
        }
        if self.max_payload_bytes == 0 || self.signature_ttl_ms <= 0 {
            return bad("max_payload_bytes and signature_ttl_ms must be positive");
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries must be at least 1");
        }
        if self.max_tasks == Some(0) {
            return bad("max_tasks must be at least 1");
        }
        if self.history_ttl_ms <= 0 {
            return bad("history_ttl_ms must be positive");
        }
        if self.heartbeat_interval.is_zero() || self.command_timeout.is_zero() {
            return bad("heartbeat_interval and command_timeout must be positive");
        }
        for (name, l) in &self.limits {
            let rate_ok = l.rate_per_ms == 0.0
                || (l.rate_per_ms.is_finite()
                    && l.rate_per_ms > 0.0
                    && l.burst >= 1.0
                    && l.burst.is_finite());
            if !rate_ok || (l.rate_per_ms == 0.0 && l.max_concurrency == 0) {
                return Err(EngineError::Config(format!(
                    "task `{name}` has an invalid limit: {l:?}"
                )));
            }
        }
        for c in &self.crons {
            if c.name.is_empty() || c.fn_name.is_empty() {
                return bad("a cron entry has an empty name or task name");
            }
            if !self.lanes.contains(&c.lane) {
                return Err(EngineError::Config(format!(
                    "cron `{}` uses lane `{}`, which is not one of {:?}",
                    c.name, c.lane, self.lanes
                )));
            }
        }
        Ok(())
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn masked_url(&self) -> String {
        mask_url(&self.redis_url)
    }
}

impl fmt::Debug for Config {
    // Hand-written so the password in the URL and the cron payloads never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &self.masked_url())
            .field("queue", &self.queue)
            .field("lanes", &self.lanes)
            .field("weights", &self.weights)
            .field("worker_id", &self.worker_id)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("poll_block_ms", &self.poll_block_ms)
            .field("result_ttl_ms", &self.result_ttl_ms)
            .field("max_deliveries", &self.max_deliveries)
            .field("burst", &self.burst)
            .field("drain_timeout", &self.drain_timeout)
            .field("crons", &self.crons)
            .field("tasks", &self.tasks)
            .field("signing_key", &self.signing_key)
            .field("signature_ttl_ms", &self.signature_ttl_ms)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("history", &self.history)
            .field("history_ttl_ms", &self.history_ttl_ms)
            .field("max_tasks", &self.max_tasks)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One cron job: at each occurrence of `schedule`, task `fn_name` is enqueued in `lane`
/// with `payload` under the id `cron:<name>:<occurrence ms>`.
#[derive(Clone)]
pub struct CronEntry {
    /// The cron's name: part of each occurrence's task id and the key in `P crons`.
    pub name: String,
    /// The task name written to the entry's `fn` field (usually the same as `name`).
    pub fn_name: String,
    /// The lane the occurrences are queued in.
    pub lane: String,
    /// The serialized `[args, kwargs, headers]`, opaque to the engine.
    pub payload: Vec<u8>,
    /// When it fires. Computed by the caller (the binary parses the Python spec) or by
    /// [`crate::cron::CronSpec`].
    pub schedule: Arc<dyn CronSchedule>,
}

impl fmt::Debug for CronEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronEntry")
            .field("name", &self.name)
            .field("fn_name", &self.fn_name)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

/// A random consumer name, unique enough per process (`<host pid>-<random hex>`).
fn default_worker_id() -> String {
    format!("w{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// `redis://user:secret@host` becomes `redis://user:***@host`; anything without a
/// password comes back as it was. Works on malformed URLs too, so errors can quote them.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    // The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let Some(at) = authority.rfind('@') else {
        return mask_query(url);
    };
    let userinfo = &authority[..at];
    let masked_info = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://secret@host` is a password alone in some clients' reading.
        None if !userinfo.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    let out = format!(
        "{}{}@{}{}",
        &url[..scheme_end + 3],
        masked_info,
        &authority[at + 1..],
        &rest[auth_end..]
    );
    mask_query(&out)
}

/// `unix:///run/redis.sock?pass=secret` carries the password as a query parameter.
fn mask_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let params: Vec<String> = url[q + 1..]
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{}?{}", &url[..q], params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_limits_that_cannot_work() {
        let mut c = Config::new("redis://localhost", "q");
        let limit = |rate_per_ms, burst, max_concurrency| TaskLimit {
            rate_per_ms,
            burst,
            max_concurrency,
        };
        c.limits.insert("a".into(), limit(0.02, 20.0, 0));
        c.limits.insert("b".into(), limit(0.0, 0.0, 2));
        assert!(c.validate().is_ok());
        for bad in [
            limit(0.0, 0.0, 0),
            limit(-1.0, 1.0, 0),
            limit(f64::NAN, 1.0, 0),
            limit(0.01, 0.5, 0),
            limit(0.01, f64::INFINITY, 0),
        ] {
            c.limits.insert("c".into(), bad.clone());
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("redis://localhost:6379/0"),
            "redis://localhost:6379/0"
        );
        assert_eq!(mask_url("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(mask_url("rediss://alice:s3cr@t@h"), "rediss://alice:***@h");
        assert_eq!(mask_url("redis://alice@h"), "redis://***@h");
        assert_eq!(
            mask_url("unix:///tmp/r.sock?db=1&pass=x"),
            "unix:///tmp/r.sock?db=1&pass=***"
        );
        assert_eq!(mask_url("garbage"), "garbage");
    }

    #[test]
    fn validates() {
        let mut c = Config::new("redis://127.0.0.1:1", "q");
        assert!(c.validate().is_ok());
        c.prefetch = 1;
        assert!(c.validate().is_err());
        c.prefetch = 32;
        c.lanes = vec!["a".into(), "a".into()];
        assert!(c.validate().is_err());
        c.lanes.clear();
        assert!(c.validate().is_err());
        c.lanes = vec!["a".into()];
        c.history = 0;
        assert!(c.validate().is_ok(), "history 0 turns it off");
        c.history_ttl_ms = 0;
        assert!(c.validate().is_err());
    }
}
