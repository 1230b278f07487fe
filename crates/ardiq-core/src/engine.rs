//! The engine: one consumer in each lane's group, driving an [`Executor`].
//!
//! `run` connects, starts the background tasks (finisher, lease renewal, abort listener,
//! reclaim, promotion, crons, heartbeat), then runs the dispatcher in the calling task:
//! fetch into the buffer, start what fits, block for new work when there is none. The
//! dispatcher never waits on a timer where an event will do: finished outcomes, lost
//! leases and aborts wake it through a `Notify`, new entries through the blocking read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::abort;
use crate::backoff::{Backoff, LogThrottle};
use crate::config::Config;
use crate::connection::Redis;
use crate::context::Ctx;
use crate::entry::{is_expired, malformed_task_id, Parsed};
use crate::error::Result;
use crate::executor::{Delivery, Executor, Outcome, OutcomeKind};
use crate::fetch::{self, BlockingReader, ReadOutcome};
use crate::finish;
use crate::heartbeat;
use crate::lease;
use crate::limits;
use crate::metrics::{self, Phase};
use crate::pause;
use crate::progress;
use crate::promote::{self, Mover};
use crate::reclaim;
use crate::report::{Counter, Counters, RunReport, StopReason};
use crate::scheduler;
use crate::shutdown::{self, Recycle, StopHandle, StopLevel};
use crate::started;
use crate::state::RunningTask;

/// A worker engine for one queue. Create it, take a [`StopHandle`] (and the counters if a
/// metrics endpoint wants them), then [`run`](Engine::run) it.
pub struct Engine {
    config: Config,
    redis: Redis,
    stop: StopHandle,
    stop_rx: watch::Receiver<StopLevel>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Validates the configuration and parses the URL. Does not connect.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let redis = Redis::open(&config.redis_url, config.command_timeout)?;
        let (stop, stop_rx) = StopHandle::with_burst(config.burst);
        Ok(Engine {
            config,
            redis,
            stop,
            stop_rx,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Asks the run to stop (first call: drain; second: at once).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Live counters, readable while the engine runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves the queue until stopped (or, in burst mode, until it is drained).
    ///
    /// Redis trouble never ends the run: every loop retries with jittered backoff. Errors
    /// are returned only for what cannot be fixed by waiting (bad credentials). When this
    /// returns, every background task of the engine has been stopped; outcomes the
    /// executor reports afterwards are dropped (their entries stay pending for reclaim).
    pub async fn run(self, executor: Arc<dyn Executor>) -> Result<RunReport> {
        let config = &self.config;
        // One line that says what this worker serves, with or without a banner (`ardiq
        // run --quiet` and JSON logs print none).
        info!(worker = %config.worker_id, queue = %config.queue, lanes = ?config.lanes,
            url = %self.redis.masked_url(), concurrency = config.concurrency,
            prefetch = config.prefetch, burst = config.burst, tasks = config.tasks,
            crons = config.crons.len(), "worker starting");
        let mut stop_rx = self.stop_rx.clone();
        let Some(conn) = self.redis.connect_with_retry(&mut stop_rx).await? else {
            return Ok(self.finish_report(StopReason::Signal, 0));
        };
        warn_if_evicting(&conn).await;
        let (tx, rx) = mpsc::unbounded_channel::<Vec<Outcome>>();
        let ctx = Arc::new(Ctx::new(
            config.clone(),
            conn,
            self.counters.clone(),
            executor,
            tx,
        ));

        // Tasks that live until the very end: outcomes must be finished and leases
        // renewed while running tasks drain.
        let mut core = Tasks::default();
        core.spawn(finish::run(ctx.clone(), rx));
        core.spawn(progress::run(ctx.clone()));
        core.spawn(lease::run(ctx.clone()));
        let (sub_tx, sub_rx) = oneshot::channel();
        core.spawn(abort::run(ctx.clone(), self.redis.clone(), sub_tx));

        // Subscribe before the first fetch, or an abort published in between is missed.
        tokio::select! {
            _ = sub_rx => {}
            _ = stop_rx.wait_for(|l| *l != StopLevel::Running) => {
                return Ok(self.finish_report(StopReason::Signal, 0));
            }
        }

        // Paused lanes are known before the first fetch (best effort: the poller retries).
        if let Err(e) = pause::refresh(&ctx).await {
            warn!(error = %e, "could not read the paused lanes; reading them again in a second");
        }

        // Tasks that only make sense while taking work.
        let mut serving = Tasks::default();
        serving.spawn(pause::run(ctx.clone()));
        serving.spawn(reclaim::run(ctx.clone()));
        serving.spawn(promote::run(ctx.clone()));
        if !config.limits.is_empty() {
            serving.spawn(promote::run_mover(ctx.clone(), Mover::Unpark));
        }
        serving.spawn(heartbeat::run(ctx.clone()));
        if !config.burst {
            for cron in &config.crons {
                serving.spawn(scheduler::run(ctx.clone(), cron.clone()));
            }
        }

        let mut d = Dispatcher::new(ctx.clone(), self.redis.clone(), stop_rx, self.stop.clone());
        self.counters.live().set_phase(Phase::Serving);
        let reason = d.serve().await;
        self.counters.live().set_phase(Phase::Draining);
        drop(serving);
        let (reason, abandoned) = match reason {
            StopReason::Signal => d.drain().await,
            // Drained as on a first signal; a second signal meanwhile still forces.
            StopReason::Recycle => match d.drain().await {
                (StopReason::Signal, n) => (StopReason::Recycle, n),
                other => other,
            },
            StopReason::Forced => (StopReason::Forced, ctx.held().in_flight()),
            other => (other, 0),
        };
        // Whatever the reason, deliveries the executor queued and never started stay
        // unstarted: a forced stop leaves them pending for reclaim, like the buffer.
        d.take_back_queued();
        // A forced stop or a missed deadline returns at once: no more round trips. (The
        // script would keep a consumer that owns pending entries anyway.)
        if matches!(
            reason,
            StopReason::Signal | StopReason::Burst | StopReason::Recycle
        ) {
            retire(&ctx).await;
        }
        drop(core);
        Ok(self.finish_report(reason, abandoned))
    }

    fn finish_report(&self, reason: StopReason, abandoned: usize) -> RunReport {
        self.counters.live().set_phase(Phase::Stopped);
        let counters = self.counters.snapshot();
        // `reason=recycle (max_tasks=500)`: why, for whoever reads the log after the
        // supervisor replaced the process.
        let reason_text = match (reason, self.stop.recycling()) {
            (StopReason::Recycle, Some(why)) => format!("recycle ({why})"),
            _ => reason.as_str().to_owned(),
        };
        info!(worker = %self.config.worker_id, reason = %reason_text, abandoned,
            ok = counters.ok, failed = counters.failed, retried = counters.retried,
            "worker stopped");
        RunReport {
            reason,
            abandoned,
            counters,
        }
    }
}

/// Background tasks aborted together when dropped, so no early return can leak one.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(f));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A Redis that may evict keys under memory pressure can drop queued tasks, job records
/// and pending entries: say so at start. A user not allowed to run CONFIG (a
/// least-privilege ACL) gets no check: it is advice, not a condition to start.
async fn warn_if_evicting(conn: &redis::aio::ConnectionManager) {
    let mut conn = conn.clone();
    let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    if let Ok(pair) = reply {
        if let Some(policy) = pair.get(1).filter(|p| p.as_str() != "noeviction") {
            warn!(policy = %policy,
                "Redis maxmemory-policy is {policy}: Redis may evict queued tasks; use noeviction");
        }
    }
}

/// Best effort: a few tries, bounded in time. A consumer left behind is harmless (it owns
/// nothing) and the heartbeat ages out.
async fn retire(ctx: &Ctx) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    for _ in 0..5 {
        match shutdown::retire(ctx).await {
            Ok(_) => return,
            Err(e) => {
                warn!(error = %e, "retire failed");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// A blocking read running on its own task. It is never cancelled midway: a reply
/// dropped on the floor could carry an entry now pending under our name that nobody
/// would run until its lease ran out.
type ReadTask = JoinHandle<(BlockingReader, ReadOutcome)>;

/// The fetch/start loop.
struct Dispatcher {
    ctx: Arc<Ctx>,
    /// To build a fresh reader should a read task ever die.
    redis: Redis,
    stop_rx: watch::Receiver<StopLevel>,
    /// Its burst switch, read at every turn (an in-code worker's `app.burst` may flip).
    stop: StopHandle,
    /// The reader when idle; `None` while its read runs in `read_task`.
    reader: Option<BlockingReader>,
    read_task: Option<ReadTask>,
    /// The streams may hold entries for us: the last fetch filled every free slot, or a
    /// read woke us. When false, only a blocking read (or a timer in burst mode) helps.
    maybe_more: bool,
    /// Not before this instant (after a failure): fetch / blocking read.
    fetch_retry_at: Option<Instant>,
    read_retry_at: Option<Instant>,
    fetch_backoff: Backoff,
    read_backoff: Backoff,
    fetch_throttle: LogThrottle,
    /// `started` calls in flight for reclaimed deliveries (see [`started`]).
    marking: Vec<JoinHandle<()>>,
    /// Tasks this run may still start (`Config::max_tasks`); `None`: no limit. It fetches
    /// no more than it may start; at 0 it starts nothing more and recycles once the tasks
    /// it started have finished.
    budget: Option<u64>,
    /// Every lane in read order (highest first): what is read when nothing is paused.
    all_lanes: Vec<usize>,
    /// The pause generation last seen: a change means the streams may hold work for us.
    pause_generation: u64,
    /// Lane weights' running credit per lane (smooth weighted round-robin, carried from
    /// one fetch to the next; see [`fetch::quotas`]).
    credit: Vec<i64>,
    /// `admit` parked an entry of the last batch accepted (a burst run is not drained).
    parked: bool,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for t in &self.marking {
            t.abort();
        }
    }
}

impl Dispatcher {
    fn new(
        ctx: Arc<Ctx>,
        redis: Redis,
        stop_rx: watch::Receiver<StopLevel>,
        stop: StopHandle,
    ) -> Self {
        let budget = ctx.config.max_tasks;
        let all_lanes = ctx.keys.read_order().collect();
        let credit = vec![0; ctx.keys.lanes().len()];
        Dispatcher {
            ctx,
            budget,
            stop_rx,
            stop,
            reader: Some(BlockingReader::new(redis.clone())),
            redis,
            read_task: None,
            maybe_more: true,
            fetch_retry_at: None,
            read_retry_at: None,
            fetch_backoff: Backoff::redis(),
            read_backoff: Backoff::redis(),
            fetch_throttle: LogThrottle::default(),
            marking: Vec::new(),
            all_lanes,
            pause_generation: 0,
            credit,
            parked: false,
        }
    }

    /// The lanes to read (read order), leaving out paused ones.
    fn active_lanes(&self) -> Vec<usize> {
        if !self.ctx.pause.any() {
            return self.all_lanes.clone();
        }
        let paused = self.ctx.pause.snapshot();
        self.all_lanes
            .iter()
            .copied()
            .filter(|&l| !paused.get(l).copied().unwrap_or(false))
            .collect()
    }

    fn level(&self) -> StopLevel {
        *self.stop_rx.borrow()
    }

    /// Slots this worker may still fill: prefetch minus the entries buffered or running,
    /// minus one for a blocking read in flight (it may deliver one entry). Entries whose
    /// outcome is in and whose ack is on its way do not count: their work is done, and
    /// counting them would hold every fetch back a round trip behind each finish batch.
    /// Unless acks fall a whole prefetch behind (Redis slow to take them): then fetching
    /// waits for them.
    fn free(&self) -> usize {
        let prefetch = self.ctx.config.prefetch;
        let held = self.ctx.held();
        if held.finishing() >= prefetch {
            return 0;
        }
        let reserved = held.buffered() + held.running() + usize::from(self.read_task.is_some());
        let free = prefetch.saturating_sub(reserved);
        match self.budget {
            None => free,
            // Near the end of its budget a recycling worker takes only what it may still
            // start: anything more would only be handed back.
            Some(left) => {
                let room = left.saturating_sub(
                    (held.buffered() + usize::from(self.read_task.is_some())) as u64,
                );
                free.min(usize::try_from(room).unwrap_or(usize::MAX))
            }
        }
    }

    /// Takes work until a stop request (returns `Signal`) or, in burst mode, until the
    /// queue is drained (`Burst`). An immediate stop returns `Forced`.
    async fn serve(&mut self) -> StopReason {
        let tick = Duration::from_millis(self.ctx.config.poll_block_ms);
        loop {
            let burst = self.stop.burst();
            metrics::beat(&self.ctx);
            let generation = self.ctx.pause.generation();
            if generation != self.pause_generation {
                // Lanes were paused or resumed: a resumed one may hold work.
                self.pause_generation = generation;
                self.maybe_more = true;
            }
            match self.level() {
                StopLevel::Running => {}
                StopLevel::Graceful => return StopReason::Signal,
                StopLevel::Immediate => return StopReason::Forced,
            }
            if self.budget == Some(0) && self.ctx.held().running() == 0 {
                // The budget is spent and every task it paid for has its outcome, so none
                // waits unstarted in the executor's queue, where the drain would take it
                // back: the process runs exactly `max_tasks` tasks.
                if let Some(n) = self.ctx.config.max_tasks {
                    self.stop.recycle(Recycle::MaxTasks(n));
                }
            }
            if let Some(why) = self.stop.recycling() {
                info!(worker = %self.ctx.worker(), reason = %why,
                    "recycling: no new work, running tasks finish, then a fresh process takes over");
                return StopReason::Recycle;
            }
            let now = Instant::now();
            // What is buffered starts before the fetch's round trip: a task the blocking
            // read just delivered to an idle worker must not wait for it.
            self.start_ready();
            let free = self.free();
            if free > 0 && self.maybe_more && self.fetch_retry_at.is_none_or(|t| now >= t) {
                self.fetch(free).await;
                self.start_ready();
            }
            let idle = self.ctx.held().total() == 0 && self.read_task.is_none();
            if burst
                && idle
                && !self.maybe_more
                && self.fetch_retry_at.is_none()
                && self.burst_drained().await
            {
                return StopReason::Burst;
            }
            if !burst
                && self.free() > 0
                && !self.maybe_more
                && self.read_task.is_none()
                && self.read_retry_at.is_none_or(|t| now >= t)
            {
                // With every lane paused there is nothing to wait on but the poller (it
                // wakes us on a change) and the tick.
                self.spawn_read();
            }
            // Wait for something to change.
            let wake_at = [self.fetch_retry_at, self.read_retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| now + tick);
            let ctx = self.ctx.clone();
            tokio::select! {
                _ = ctx.wake.notified() => {
                    // Slots freed or entries dropped: the last fetch may have been cut
                    // short by the limit, so look again (in burst mode always: there is
                    // no blocking read to tell us).
                    if burst { self.maybe_more = true; }
                }
                r = wait_read(&mut self.read_task) => self.on_read(r).await,
                _ = self.stop_rx.changed() => {}
                _ = tokio::time::sleep_until(wake_at) => {
                    if self.fetch_retry_at.is_some_and(|t| Instant::now() >= t) {
                        self.fetch_retry_at = None;
                    }
                    if self.read_retry_at.is_some_and(|t| Instant::now() >= t) {
                        self.read_retry_at = None;
                    }
                    if burst { self.maybe_more = true; }
                }
            }
        }
    }

    /// One `fetch` call for `count` entries, over the lanes not paused, shared by the
    /// lane weights when there are some.
    async fn fetch(&mut self, count: usize) {
        let paused = self.ctx.pause.any();
        let owned;
        let lanes: &[usize] = if paused {
            owned = self.active_lanes();
            &owned
        } else {
            &self.all_lanes
        };
        let quotas = self
            .ctx
            .config
            .weights
            .as_ref()
            .map(|w| fetch::quotas(w, &mut self.credit, lanes, count));
        let result = fetch::fetch(&self.ctx, count, lanes, quotas.as_deref()).await;
        match result {
            Ok(entries) => {
                self.ctx.counters.live().set_redis_ok(true);
                self.fetch_backoff.reset();
                self.fetch_retry_at = None;
                if self.fetch_throttle.success() {
                    info!("fetching works again");
                }
                self.maybe_more = entries.len() >= count;
                self.accept(entries).await;
            }
            Err(e) => {
                self.ctx.counters.live().set_redis_ok(false);
                if let Some(suppressed) = self.fetch_throttle.failure() {
                    warn!(error = %e, suppressed, "fetch failed, retrying");
                }
                self.fetch_retry_at = Some(Instant::now() + self.fetch_backoff.next_delay());
            }
        }
    }

    /// Puts fetched entries in the buffer; malformed ones go straight to `finish`, and so
    /// do deliveries whose abort request overtook them (their job is flagged), as aborted
    /// without running.
    async fn accept(&mut self, entries: Vec<(usize, Parsed)>) {
        if entries.is_empty() {
            return;
        }
        // Limited tasks are admitted (or parked: no longer ours) before anything else
        // (PROTOCOL.md, Limits). Without limits this is one emptiness check.
        let entries = if self.ctx.config.limits.is_empty() {
            entries
        } else {
            let delivered = entries.len();
            let admitted = limits::admit(&self.ctx, entries, &self.stop_rx).await;
            self.parked = admitted.len() < delivered;
            if admitted.is_empty() {
                return;
            }
            admitted
        };
        self.ctx
            .counters
            .add(Counter::Delivered, entries.len() as u64);
        // A round trip only when an abort request came for a task not held at the time.
        let early: Vec<String> = entries
            .iter()
            .filter_map(|(_, p)| match p {
                Parsed::Task(d) if self.ctx.take_early_abort(&d.task_id) => Some(d.task_id.clone()),
                _ => None,
            })
            .collect();
        let flagged = if early.is_empty() {
            HashSet::new()
        } else {
            abort::flagged(&self.ctx, &early).await
        };
        let mut bad = Vec::new();
        let limit = self.ctx.config.max_payload_bytes;
        let mut aborted = Vec::new();
        {
            let mut held = self.ctx.held();
            for (lane, parsed) in entries {
                match parsed {
                    // Refused here, before the executor (and its deserializer) sees a byte.
                    Parsed::Task(d) if d.payload.len() > limit => {
                        held.mark_unrun(lane, &d);
                        let mut o = d.fail(payload_too_large(d.payload.len(), limit), 0);
                        o.tries = d.tries;
                        bad.push(o);
                    }
                    Parsed::Task(d) if flagged.contains(&d.task_id) => {
                        held.mark_unrun(lane, &d);
                        // Not an attempt: `tries` stays at the attempts made so far.
                        let mut outcome = d.aborted(0);
                        outcome.tries = d.tries;
                        aborted.push(outcome);
                    }
                    Parsed::Task(d) => held.push(lane, d),
                    Parsed::Malformed {
                        reason,
                        entry_id,
                        lane: lane_name,
                        tries,
                        enqueued_ms,
                    } => {
                        let task_id = malformed_task_id(&entry_id);
                        held.mark_finishing(
                            (lane, entry_id.clone()),
                            RunningTask {
                                task_id: task_id.clone(),
                                fn_name: "?".to_owned(),
                                attempt: tries,
                            },
                        );
                        bad.push(Outcome {
                            entry_id,
                            task_id,
                            kind: OutcomeKind::Fail,
                            value: reason.as_bytes().to_vec(),
                            tries,
                            enqueued_ms,
                            started_ms: 0,
                            lane: lane_name,
                            retry_delay_ms: 0,
                            retry_payload: Vec::new(),
                        });
                    }
                }
            }
        }
        for o in &bad {
            error!(id = %o.task_id, worker = %self.ctx.worker(), lane = %o.lane,
                reason = %String::from_utf8_lossy(&o.value), "entry refused; dead-lettered");
        }
        self.ctx.counters.add(Counter::Malformed, bad.len() as u64);
        self.ctx.sink.send(bad);
        for o in &aborted {
            warn!(id = %o.task_id, worker = %self.ctx.worker(), lane = %o.lane,
                "aborted before it started (the request came before the delivery)");
        }
        self.ctx.sink.send(aborted);
    }

    /// Starts buffered deliveries while concurrency allows, in one executor batch.
    /// Expired ones are finished here without running.
    fn start_ready(&mut self) {
        let ctx = &self.ctx;
        let now = ctx.now_ms();
        let mut batch: Vec<Delivery> = Vec::new();
        let mut checked: Vec<(usize, Delivery)> = Vec::new();
        let mut deferred: Vec<(usize, Delivery)> = Vec::new();
        let mut expired: Vec<Outcome> = Vec::new();
        let cap = ctx.config.max_deliveries;
        // After a stall longer than the renewal period (SIGSTOP, a frozen VM), another
        // worker may own what this one is about to start: every start checks ownership
        // first, like a suspect's, so a reclaimed body does not run a second time here.
        let check_ownership = ctx.lease_may_have_lapsed();
        // A signing worker checks every delivery against its live job record (PROTOCOL.md,
        // Signed payloads): the same `started` call reports the job's `e` and `n`.
        let signing = ctx.config.signing_key.is_some();
        let concurrency = ctx.config.concurrency;
        // Buffered entries of paused lanes wait (the pause poller hands them back).
        let paused = ctx.pause.any().then(|| ctx.pause.snapshot());
        // Up to concurrency more than run, within prefetch (entries awaiting their ack
        // do not count against it, so fetching goes on meanwhile).
        let ahead = if ctx.executor.queues_ahead() {
            concurrency.min(ctx.config.prefetch.saturating_sub(concurrency))
        } else {
            0
        };
        // Off (`None`) it is never looked at again; on, every delivery started or
        // expired here spends one.
        let mut budget = self.budget;
        {
            let mut held = ctx.held();
            while held.running() < concurrency + ahead && budget != Some(0) {
                let Some((lane, d)) = held.pop(1).pop() else {
                    break;
                };
                if paused
                    .as_ref()
                    .is_some_and(|p| p.get(lane).copied().unwrap_or(false))
                {
                    deferred.push((lane, d));
                    continue;
                }
                let marked_start = check_ownership || started::is_suspect(&d);
                let checked_start = marked_start || signing;
                if marked_start && held.running() >= concurrency {
                    // Marked as started only when a slot is free to start it at once:
                    // a mark on an entry that then waits in the executor's queue would
                    // blame it for a worker death it had no part in.
                    deferred.push((lane, d));
                    break;
                }
                if is_expired(&d, now) {
                    held.mark_finishing(
                        (lane, d.entry_id.clone()),
                        RunningTask {
                            task_id: d.task_id.clone(),
                            fn_name: d.fn_name.clone(),
                            attempt: d.tries,
                        },
                    );
                    // Never started: `tries` stays at the attempts already made.
                    warn!(id = %d.task_id, name = %d.fn_name, worker = %ctx.worker(),
                        try = d.attempt(), "task expired before it started");
                    let mut o = d.outcome(OutcomeKind::Expired, b"expired".to_vec(), 0, 0);
                    o.tries = d.tries;
                    expired.push(o);
                    if let Some(left) = &mut budget {
                        *left -= 1;
                    }
                } else if started::is_last_chance(&d, cap) && held.last_chance_running() {
                    // One last-chance task at a time: it waits for the running one.
                    deferred.push((lane, d));
                } else {
                    if started::is_last_chance(&d, cap) {
                        held.mark_last_chance((lane, d.entry_id.clone()));
                    }
                    held.mark_running(lane, &d);
                    if let Some(left) = &mut budget {
                        *left -= 1;
                    }
                    if checked_start {
                        checked.push((lane, d));
                    } else {
                        batch.push(d);
                    }
                }
            }
        }
        if !deferred.is_empty() {
            let mut held = ctx.held();
            for (lane, d) in deferred {
                held.push(lane, d);
            }
        }
        // Spent: `serve` recycles once what it started has finished.
        self.budget = budget;
        ctx.sink.send(expired);
        if !batch.is_empty() {
            ctx.executor.start(batch, &ctx.sink);
        }
        if !checked.is_empty() {
            // Suspects, or any entry after a stall: ownership checked and marked as
            // started (one round trip for the batch), then run if still held. The
            // marking task is the dispatcher's, aborted if the engine returns.
            self.marking.retain(|t| !t.is_finished());
            self.marking
                .push(tokio::spawn(started::mark_then_start(ctx.clone(), checked)));
        }
    }

    fn spawn_read(&mut self) {
        let lanes = self.active_lanes();
        if lanes.is_empty() {
            return;
        }
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let ctx = self.ctx.clone();
        self.read_task = Some(tokio::spawn(async move {
            let out = reader
                .read(
                    &ctx.keys,
                    &lanes,
                    ctx.worker(),
                    ctx.config.poll_block_ms,
                    ctx.config.command_timeout,
                )
                .await;
            (reader, out)
        }));
    }

    /// A blocking read came back; in every case the next step is a fetch (which also
    /// creates missing groups), except after a failure, which waits out a backoff.
    async fn on_read(&mut self, r: Option<(BlockingReader, ReadOutcome)>) {
        self.read_task = None;
        let Some((reader, outcome)) = r else {
            // The read task died (it cannot panic by design; be safe anyway).
            self.reader = Some(BlockingReader::new(self.redis.clone()));
            return;
        };
        self.reader = Some(reader);
        match outcome {
            ReadOutcome::Entries(entries) => {
                self.ctx.counters.live().set_redis_ok(true);
                self.read_backoff.reset();
                self.maybe_more = true;
                // After a stop these land in the buffer too; the drain loop hands the
                // buffer back.
                self.accept(entries).await;
            }
            ReadOutcome::Empty | ReadOutcome::NoGroup => {
                self.ctx.counters.live().set_redis_ok(true);
                self.read_backoff.reset();
                self.maybe_more = true;
            }
            ReadOutcome::Failed => {
                self.ctx.counters.live().set_redis_ok(false);
                self.read_retry_at = Some(Instant::now() + self.read_backoff.next_delay());
                // Fetch too: it goes over the shared connection, which may be fine.
                self.maybe_more = true;
            }
        }
    }

    /// Burst mode, nothing held: a promotion round (past-due scheduled tasks count as
    /// queued), then one more fetch (finishes may have re-queued work too), then a reclaim
    /// round (see [`reclaim::burst_round`]). Drained only if that fetch finds nothing and
    /// nothing is reclaimable. Promotion comes first: anything due has then been
    /// moved into a stream, by us or by another worker's promoter, before the fetch looks.
    async fn burst_drained(&mut self) -> bool {
        // A retry we scheduled is still in flight: wait for it to fall due (a tick at
        // most, then the serve loop comes back here).
        let wait = self.ctx.retry_wait_ms();
        if wait > 0 {
            let tick = self.ctx.config.poll_block_ms.max(1);
            tokio::time::sleep(Duration::from_millis(wait.min(tick))).await;
            if self.ctx.retry_wait_ms() > 0 {
                return false;
            }
        }
        if let Err(e) = promote::round(&self.ctx).await {
            warn!(error = %e, "delayed promotion failed, retrying");
            self.fetch_retry_at = Some(Instant::now() + self.fetch_backoff.next_delay());
            return false;
        }
        if !self.ctx.config.limits.is_empty() {
            // Parked tasks are queued, waiting for a token or a slot: not drained yet.
            // Before the fetch, so what the unpark loop moved meanwhile is fetched below.
            match promote::round_of(&self.ctx, Mover::Unpark).await {
                Ok(r) if r.last.next_due_ms.is_none() && r.last.moved == 0 => {}
                Ok(r) => {
                    if r.last.moved == 0 {
                        tokio::time::sleep(promote::next_sleep(&r)).await;
                    }
                    self.maybe_more = true;
                    return false;
                }
                Err(e) => {
                    warn!(error = %e, "unparking failed, retrying");
                    self.fetch_retry_at = Some(Instant::now() + self.fetch_backoff.next_delay());
                    return false;
                }
            }
        }
        self.parked = false;
        let free = self.free();
        self.fetch(free).await;
        if self.fetch_retry_at.is_some() || self.ctx.held().total() != 0 || self.parked {
            return false;
        }
        // Nothing waiting and nothing due: the last thing that can still be ours is what
        // a dead worker left pending past its lease. Take it over before calling the
        // queue drained, or it would sit there after every burst worker exited.
        match reclaim::burst_round(&self.ctx).await {
            Ok(round) if round.claimed == 0 && !round.more => {
                if self.ctx.pause.any() {
                    log_paused_backlog(&self.ctx).await;
                }
                true
            }
            Ok(round) => {
                info!(worker = %self.ctx.worker(), claimed = round.claimed,
                    "burst: took over entries of a lost worker before finishing");
                // Re-queued copies are in the streams now: fetch them next.
                self.maybe_more = true;
                false
            }
            Err(e) => {
                warn!(error = %e, "reclaim failed, retrying");
                self.fetch_retry_at = Some(Instant::now() + self.fetch_backoff.next_delay());
                false
            }
        }
    }

    /// Moves the deliveries the executor queued but has not started back to the buffer
    /// (a stopping worker hands them back with the rest).
    fn take_back_queued(&self) {
        let recalled = self.ctx.executor.recall();
        if recalled.is_empty() {
            return;
        }
        let mut held = self.ctx.held();
        for d in recalled {
            if let Some(lane) = self.ctx.keys.lane_index(&d.lane) {
                held.abandon(&(lane, d.entry_id.clone()));
                held.push(lane, d);
            }
        }
    }

    /// Graceful stop: hand the buffer back, let running tasks finish (their leases are
    /// still renewed), and wait for the last ack. Returns `Signal` when everything
    /// finished, `Forced` on a second stop, `DrainTimeout` at the deadline; with the
    /// number of tasks left running.
    async fn drain(&mut self) -> (StopReason, usize) {
        let ctx = self.ctx.clone();
        let deadline = ctx.config.drain_timeout.map(|d| Instant::now() + d);
        let running = ctx.held().in_flight();
        info!(worker = %ctx.worker(), running, buffered = ctx.held().buffered(),
            "stopping: handing back the buffer, waiting for running tasks");
        let mut backoff = Backoff::redis();
        loop {
            metrics::beat(&ctx);
            if self.level() == StopLevel::Immediate {
                return (StopReason::Forced, ctx.held().in_flight());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let left = ctx.held().in_flight();
                warn!(worker = %ctx.worker(), running = left,
                    "drain deadline passed; leaving running tasks for reclaim");
                return (StopReason::DrainTimeout, left);
            }
            let mut retry_at = None;
            self.take_back_queued();
            let buffered = ctx.held().drain_buffer();
            if !buffered.is_empty() {
                match shutdown::handback(&ctx, &buffered).await {
                    Ok(n) => {
                        backoff.reset();
                        ctx.counters.add(Counter::HandedBack, n);
                        info!(worker = %ctx.worker(), handed_back = n, "buffer handed back");
                    }
                    Err(e) => {
                        warn!(error = %e, "handback failed, retrying");
                        let mut held = ctx.held();
                        for (lane, d) in buffered {
                            held.push(lane, d);
                        }
                        retry_at = Some(Instant::now() + backoff.next_delay());
                    }
                }
            }
            if ctx.held().total() == 0 && self.read_task.is_none() {
                return (StopReason::Signal, 0);
            }
            let wake_at = [deadline, retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = ctx.wake.notified() => {}
                r = wait_read(&mut self.read_task) => self.on_read(r).await,
                _ = self.stop_rx.changed() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }
}

/// A burst run ends with lanes paused: say how many entries they hold (`XLEN`, so
/// entries other workers hold count too). They are left for a worker after the resume.
async fn log_paused_backlog(ctx: &Ctx) {
    let paused = ctx.pause.snapshot();
    let mut conn = ctx.conn.clone();
    let mut waiting = 0i64;
    let mut lanes = Vec::new();
    for (i, lane) in ctx.keys.lanes().iter().enumerate() {
        if paused.get(i).copied().unwrap_or(false) {
            lanes.push(lane.as_str());
            let n: Result<i64, _> = redis::cmd("XLEN")
                .arg(ctx.keys.stream(i))
                .query_async(&mut conn)
                .await;
            waiting += n.unwrap_or(0);
        }
    }
    info!(worker = %ctx.worker(), waiting, lanes = ?lanes,
        "burst: done; entries wait in paused lanes");
}

/// The failure text of an entry whose payload is over `max_payload_bytes`.
fn payload_too_large(len: usize, limit: usize) -> String {
    format!("payload too large: {len} bytes, over the limit of {limit} (max_payload_bytes)")
}

/// The result of the read in flight, or never (when none is).
async fn wait_read(task: &mut Option<ReadTask>) -> Option<(BlockingReader, ReadOutcome)> {
    match task {
        Some(t) => t.await.ok(),
        None => std::future::pending().await,
    }
}
