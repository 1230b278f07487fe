//! The boundary between the engine and whatever runs task bodies.
//!
//! The engine owns Redis: it fetches, leases, finishes. An [`Executor`] owns the bodies:
//! it is handed [`Delivery`] batches and reports [`Outcome`] batches back through an
//! [`OutcomeSink`]. Both directions move *batches* so that an executor backed by an
//! embedded Python interpreter can take the GIL once per batch rather than once per task:
//! `start` receives every task the engine can start right now in one call, and the sink
//! accepts a `Vec` of outcomes in one send.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::progress::{Board, ProgressReport};

/// One delivered attempt of a task, ready to run.
///
/// Everything here comes from the stream entry; the payload is the app serializer's
/// bytes of `[args, kwargs, headers]` and is opaque to the engine.
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream entry id: names this attempt. Copy it into the outcome.
    pub entry_id: String,
    /// The lane (priority) name the entry was read from.
    pub lane: String,
    /// The task id (`P job:<id>`).
    pub task_id: String,
    /// The task name (`fn` field).
    pub fn_name: String,
    /// Serialized `[args, kwargs, headers]`.
    pub payload: Vec<u8>,
    /// Attempts already made before this one (`t`; 0 on the first delivery).
    pub tries: u32,
    /// When the task was first enqueued, epoch ms.
    pub enqueued_ms: i64,
    /// Expire-at, epoch ms (0 = never). The engine drops expired deliveries itself, so an
    /// executor only sees it for information.
    pub expire_ms: i64,
    /// How many times this attempt was reclaimed from a stalled worker (`r`).
    pub reclaims: u32,
    /// What the live job record said of this task at the start check (`started`): set
    /// for every delivery of a signing worker, which runs it only when the job still
    /// names this entry and holds the nonce sealed in its payload (PROTOCOL.md, Signed
    /// payloads). `None` when no check was made.
    pub live_job: Option<LiveJob>,
    /// The entry's limit key (`lk`, PROTOCOL.md, Limits): a signing executor checks it
    /// against the one sealed in the payload's headers (`ardiq.lk`).
    pub limit_key: Option<String>,
    /// `ad` = 1: the entry already holds its rate token (it was parked and came back).
    pub holds_token: bool,
}

/// The job record's view of a task, read just before it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveJob {
    /// The job's `e`: the entry it expects to run (empty: no job, or not queued).
    pub entry_id: String,
    /// The job's `n`: the enqueue's nonce, hex (empty: none).
    pub nonce: String,
}

impl Delivery {
    /// The attempt number of this run, counting it (what a task sees as `tries`).
    pub fn attempt(&self) -> u32 {
        self.tries.saturating_add(1)
    }

    /// An outcome of this delivery: `tries` counts this attempt, the lane, ids and
    /// enqueue time are copied. `started_ms` is when the body started (0: never).
    pub fn outcome(
        &self,
        kind: OutcomeKind,
        value: Vec<u8>,
        started_ms: i64,
        retry_delay_ms: u64,
    ) -> Outcome {
        Outcome {
            entry_id: self.entry_id.clone(),
            task_id: self.task_id.clone(),
            kind,
            value,
            tries: self.attempt(),
            enqueued_ms: self.enqueued_ms,
            started_ms,
            lane: self.lane.clone(),
            retry_delay_ms,
            retry_payload: Vec::new(),
        }
    }

    /// Success; `value` is the serialized return value.
    pub fn ok(&self, value: Vec<u8>, started_ms: i64) -> Outcome {
        self.outcome(OutcomeKind::Ok, value, started_ms, 0)
    }

    /// Final failure (dead-lettered); `error` is UTF-8 text saying what went wrong.
    pub fn fail(&self, error: impl Into<String>, started_ms: i64) -> Outcome {
        self.outcome(OutcomeKind::Fail, error.into().into_bytes(), started_ms, 0)
    }

    /// Run again after `delay_ms` (0: re-queue at once). `error` says why this attempt
    /// failed; it is not stored, but keeps the outcome self-describing in logs of tests.
    pub fn retry(&self, error: impl Into<String>, delay_ms: u64, started_ms: i64) -> Outcome {
        self.outcome(
            OutcomeKind::Retry,
            error.into().into_bytes(),
            started_ms,
            delay_ms,
        )
    }

    /// Aborted before or while running.
    pub fn aborted(&self, started_ms: i64) -> Outcome {
        self.outcome(OutcomeKind::Abort, b"aborted".to_vec(), started_ms, 0)
    }

    /// Refused without touching its task: an entry no live job holds (a replay, a moved
    /// or duplicated entry). Kept as the dead letter `entry:<entry id>` with `reason`.
    pub fn dropped(&self, reason: impl Into<String>) -> Outcome {
        let mut o = self.outcome(OutcomeKind::Drop, reason.into().into_bytes(), 0, 0);
        o.task_id = format!("entry:{}", self.entry_id);
        o.tries = self.tries;
        o
    }
}

impl fmt::Debug for Delivery {
    // The payload is user data: never in a log line, only its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("entry_id", &self.entry_id)
            .field("lane", &self.lane)
            .field("task_id", &self.task_id)
            .field("fn_name", &self.fn_name)
            .field("payload_len", &self.payload.len())
            .field("tries", &self.tries)
            .field("enqueued_ms", &self.enqueued_ms)
            .field("expire_ms", &self.expire_ms)
            .field("reclaims", &self.reclaims)
            .field("live_job", &self.live_job)
            .field("limit_key", &self.limit_key)
            .field("holds_token", &self.holds_token)
            .finish()
    }
}

/// How an attempt ended; the `kind` argument of the `finish` script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The body returned; `value` is the serialized return value.
    Ok,
    /// Failed for good: result + dead letter; `value` is the error text.
    Fail,
    /// Not started before its expire-at; `value` is the error text. Not a dead letter.
    Expired,
    /// Run again after `retry_delay_ms` (becomes an abort if one was requested).
    Retry,
    /// Aborted before or while running.
    Abort,
    /// Refused without touching its task (see [`Delivery::dropped`]); `value` is why.
    Drop,
}

impl OutcomeKind {
    /// The protocol's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Fail => "fail",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Retry => "retry",
            OutcomeKind::Abort => "abort",
            OutcomeKind::Drop => "drop",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The end of one attempt, reported by the executor (or by the engine itself for
/// expired, malformed and aborted-in-buffer deliveries).
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The delivery's entry id.
    pub entry_id: String,
    /// The delivery's task id.
    pub task_id: String,
    /// How it ended.
    pub kind: OutcomeKind,
    /// `Ok`: serialized return value; otherwise UTF-8 error text.
    pub value: Vec<u8>,
    /// Attempts made, this one included.
    pub tries: u32,
    /// Enqueue time, ms (copied from the delivery).
    pub enqueued_ms: i64,
    /// When the body started, ms (0: it never started).
    pub started_ms: i64,
    /// The delivery's lane name (copy it from the delivery; the helpers do).
    pub lane: String,
    /// For `Retry`: how long to wait before the next attempt (0: re-queue at once).
    pub retry_delay_ms: u64,
    /// For `Retry`: the payload the next attempt runs with (empty: the entry's own). A
    /// signing executor re-seals it with a fresh not-after.
    pub retry_payload: Vec<u8>,
}

impl fmt::Debug for Outcome {
    // The value is a user result or an exception text: never in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("entry_id", &self.entry_id)
            .field("task_id", &self.task_id)
            .field("kind", &self.kind)
            .field("value_len", &self.value.len())
            .field("tries", &self.tries)
            .field("started_ms", &self.started_ms)
            .field("lane", &self.lane)
            .field("retry_delay_ms", &self.retry_delay_ms)
            .field("retry_payload_len", &self.retry_payload.len())
            .finish()
    }
}

/// Where an executor reports outcomes. Cheap to clone; usable from any thread (`send`
/// never blocks and never waits for Redis), so a Python thread can call it while holding
/// the GIL without stalling anything.
#[derive(Clone, Debug)]
pub struct OutcomeSink {
    tx: mpsc::UnboundedSender<Vec<Outcome>>,
    board: Arc<Board>,
}

impl OutcomeSink {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Vec<Outcome>>) -> Self {
        OutcomeSink {
            tx,
            board: Arc::default(),
        }
    }

    /// Reports a running attempt's progress (PROTOCOL.md, "Progress"). The executor
    /// throttles (at most one report per attempt every 0.5 s) and reports an attempt's
    /// last value *before* its outcome: the engine then writes it before `finish`. Only
    /// the latest unwritten report of each attempt is kept. Never blocks.
    pub fn progress(&self, report: ProgressReport) {
        self.board.push(report);
    }

    pub(crate) fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Reports a batch of outcomes. Returns `false` when the engine has already returned
    /// (the outcomes are dropped; their entries stay pending and will be reclaimed).
    pub fn send(&self, outcomes: Vec<Outcome>) -> bool {
        outcomes.is_empty() || self.tx.send(outcomes).is_ok()
    }

    /// Reports one outcome.
    pub fn send_one(&self, outcome: Outcome) -> bool {
        self.send(vec![outcome])
    }
}

/// Runs task bodies for the engine.
///
/// # Contract
///
/// * [`start`](Executor::start) is called from the engine's async loop with every
///   delivery that can start now (never more than `concurrency` running in total). It
///   must **return quickly and never block**: hand the batch to your own threads / event
///   loop and return. (The lease renewals run on other tokio tasks, but a blocked caller
///   still delays fetching and finishing.) A Python executor takes the GIL once, schedules
///   the whole batch on its event loop, and releases it.
/// * For every delivery it was handed, the executor reports **exactly one** [`Outcome`]
///   through the sink, in any order and any grouping; reporting several at once is
///   cheaper (one `finish` round trip serves all outcomes the engine has when it sends).
///   Use the helpers on [`Delivery`] (`ok`, `fail`, `retry`, `aborted`) to build them.
///   An outcome for an entry the engine no longer holds (its lease was lost) is dropped
///   by the `finish` script as stale; that is normal after a long stall.
/// * The executor decides between `Retry` and `Fail` (it knows `max_retries`); `tries`
///   in the outcome counts this attempt. `Retry` delays: `Retry.delay_ms`, else the
///   task's `backoff_ms`, else `tries²` seconds (PROTOCOL.md, Retries).
/// * [`abort`](Executor::abort) asks to cancel the running delivery of `task_id` (an
///   abort was requested on `P abort`). It must not block either. The delivery still
///   needs its one outcome, normally `Abort` (a body that finished first may report its
///   real outcome instead). Unknown ids are ignored.
/// * Expired, malformed and buffered-then-aborted deliveries never reach the executor:
///   the engine finishes them itself.
/// * An executor that [`queues_ahead`](Executor::queues_ahead) is handed up to
///   `min(concurrency, prefetch - concurrency)` deliveries beyond `concurrency`. It runs
///   at most `concurrency` at once and starts a queued one the moment a running one
///   ends, with no round trip through the engine. [`recall`](Executor::recall) takes the
///   queued ones back (a stopping worker hands them back to the queue).
pub trait Executor: Send + Sync + 'static {
    /// Starts running `batch`; report each one's outcome through `outcomes`.
    fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink);

    /// Cancels the running task `task_id` if this executor runs it.
    fn abort(&self, task_id: &str);

    /// Does this executor limit its own concurrency and queue deliveries beyond it?
    fn queues_ahead(&self) -> bool {
        false
    }

    /// The deliveries handed over and not started yet; they will not start here.
    fn recall(&self) -> Vec<Delivery> {
        Vec::new()
    }

    /// Takes back one queued, not started delivery (its lease was lost: another worker
    /// owns it now), named by lane and entry id. `true` if it was queued; it will not
    /// start here.
    fn withdraw(&self, _lane: &str, _entry_id: &str) -> bool {
        false
    }

    /// Queued deliveries may start until `until`: the leases of everything held were
    /// renewed, and are safe to rely on until then. Past it (the process stalled, Redis
    /// was unreachable), none starts before the next renewal round, which finds out
    /// which of them another worker reclaimed meanwhile.
    fn leases_valid_until(&self, _until: std::time::Instant) {}
}
