//! Progress reported by running tasks (PROTOCOL.md, "Progress").
//!
//! The executor throttles what a body reports (at most one report per attempt every
//! 0.5 s, the latest value replacing a waiting one: the Python runtime does this) and
//! hands each report to [`OutcomeSink::progress`](crate::OutcomeSink::progress), which
//! never blocks. The engine keeps only the latest report of each attempt on a [`Board`]
//! and writes them with the `progress` script from a task of its own, all of one round
//! pipelined on the multiplexed connection.
//!
//! Order with the outcome: an executor reports an attempt's last value *before* its
//! outcome, and the finisher calls [`settle`] before each `finish` call: it waits for a
//! write in flight and writes what is left on the board. So the last value lands before
//! `finish` gives it the result's TTL (or deletes it on retry). The board also remembers
//! which attempts reported until their outcome arrives, and the finisher tells `finish`
//! which outcomes those are: the others have no record, and `finish` spends nothing on
//! them. Tasks that never report cost nothing: the finisher's checks are atomic loads.
//!
//! Progress is best effort: a write Redis refuses is logged and dropped, never retried
//! (the next report, or the outcome, supersedes it).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::backoff::LogThrottle;
use crate::context::Ctx;
use crate::scripts;

/// Most writes in one round: the rest wait for the next (at once after this one).
const MAX_ROUND: usize = 500;

/// One progress report of a running attempt, as the `progress` script takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressReport {
    /// The reporting attempt's stream entry id (the script writes only while the job's
    /// `e` names it).
    pub entry_id: String,
    /// The attempt's lane.
    pub lane: String,
    /// The task id.
    pub task_id: String,
    /// Attempts made, the reporting one included.
    pub tries: u32,
    /// The value as JSON text: a number from 0 to 100 or an object (checked by the
    /// executor, as is the size of the whole record: at most 64 KiB).
    pub value: String,
    /// The message as JSON text: a string or `null`.
    pub message: String,
}

/// An attempt: (lane, entry id).
type Attempt = (String, String);

#[derive(Debug, Default)]
struct Reports {
    /// The latest unwritten report of each attempt.
    pending: HashMap<Attempt, ProgressReport>,
    /// Attempts that reported, until their outcome arrives (`finish` then keeps their
    /// record with the result, or deletes it on retry).
    reported: HashSet<Attempt>,
}

/// What running attempts reported and the engine has not finished with.
#[derive(Debug, Default)]
pub(crate) struct Board {
    reports: Mutex<Reports>,
    /// The number of attempts in `reports.reported`, readable without the lock.
    any_reported: AtomicUsize,
    /// Reports pushed and not yet written (or dropped): pending plus in flight. Zero
    /// means the finisher has nothing to wait for.
    unsettled: AtomicUsize,
    /// Wakes the writer: the board went from empty to not empty.
    ready: Notify,
    /// Held by whoever writes a round, from taking it off the board until Redis
    /// answered: a settle waits for a round in flight.
    gate: tokio::sync::Mutex<()>,
}

impl Board {
    /// Keeps `report`, replacing a waiting one of the same attempt; wakes the writer.
    pub(crate) fn push(&self, report: ProgressReport) {
        let first = {
            let mut r = self.lock();
            let first = r.pending.is_empty();
            let key = (report.lane.clone(), report.entry_id.clone());
            if r.reported.insert(key.clone()) {
                self.any_reported.store(r.reported.len(), Ordering::SeqCst);
            }
            if r.pending.insert(key, report).is_none() {
                self.unsettled.fetch_add(1, Ordering::SeqCst);
            }
            first
        };
        if first {
            self.ready.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Did any attempt report progress whose outcome has not arrived? (One atomic load:
    /// the finisher's whole cost when no task reports.)
    pub(crate) fn any_reported(&self) -> bool {
        self.any_reported.load(Ordering::SeqCst) > 0
    }

    /// Did the attempt `(lane, entry_id)` report progress? Forgets it: its outcome
    /// arrived.
    pub(crate) fn take_reported(&self, lane: &str, entry_id: &str) -> bool {
        let mut r = self.lock();
        let found = r.reported.remove(&(lane.to_owned(), entry_id.to_owned()));
        self.any_reported.store(r.reported.len(), Ordering::SeqCst);
        found
    }

    /// Nothing waiting and nothing in flight.
    pub(crate) fn is_settled(&self) -> bool {
        self.unsettled.load(Ordering::SeqCst) == 0
    }

    /// Up to `max` waiting reports (they count as in flight until [`Board::done`]).
    fn take(&self, max: usize) -> Vec<ProgressReport> {
        let mut r = self.lock();
        let pending = &mut r.pending;
        if pending.len() <= max {
            return pending.drain().map(|(_, r)| r).collect();
        }
        let keys: Vec<_> = pending.keys().take(max).cloned().collect();
        keys.into_iter()
            .filter_map(|k| pending.remove(&k))
            .collect()
    }

    /// `n` reports taken by [`Board::take`] are written (or dropped).
    fn done(&self, n: usize) {
        self.unsettled.fetch_sub(n, Ordering::SeqCst);
    }

    fn has_waiting(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

/// The writer: runs until aborted by the engine.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let board = ctx.sink.board().clone();
    let mut throttle = LogThrottle::default();
    loop {
        board.ready.notified().await;
        while board.has_waiting() {
            write_round(&ctx, &board, &mut throttle).await;
        }
    }
}

/// Writes everything reported so far, after a round in flight: called by the finisher
/// before each `finish` call, so the outcomes it sends come after their last progress.
pub(crate) async fn settle(ctx: &Ctx, throttle: &mut LogThrottle) {
    let board = ctx.sink.board();
    // Bounded, so that tasks reporting faster than Redis takes it cannot hold outcomes
    // up: enough rounds for everything reported before this call (one may be in flight).
    let mut rounds = board.unsettled.load(Ordering::SeqCst) / MAX_ROUND + 2;
    while !board.is_settled() && rounds > 0 {
        rounds -= 1;
        write_round(ctx, board, throttle).await;
    }
}

/// Takes one round off the board and writes it, holding the gate throughout.
async fn write_round(ctx: &Ctx, board: &Board, throttle: &mut LogThrottle) {
    let _gate = board.gate.lock().await;
    let round = board.take(MAX_ROUND);
    if round.is_empty() {
        return; // another writer's round, now landed
    }
    let n = round.len();
    let keys = &ctx.keys;
    let calls = round.iter().map(|r| {
        let mut inv = scripts::PROGRESS.prepare_invoke();
        inv.key(keys.job(&r.task_id))
            .key(keys.progress(&r.task_id))
            .arg(&r.entry_id)
            .arg(&r.value)
            .arg(&r.message)
            .arg(r.tries);
        let mut conn = ctx.conn.clone();
        async move { inv.invoke_async::<i64>(&mut conn).await }
    });
    let results = futures::future::join_all(calls).await;
    board.done(n);
    let (mut stale, mut failed) = (0usize, 0usize);
    let mut first_error = None;
    for result in results {
        match result {
            Ok(1) => {}
            Ok(_) => stale += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if stale > 0 {
        debug!(worker = %ctx.worker(), stale, "progress of finished or stale attempts not written");
    }
    match first_error {
        Some(e) => {
            if let Some(suppressed) = throttle.failure() {
                warn!(worker = %ctx.worker(), error = %e, failed, suppressed,
                    "progress could not be written; dropped");
            }
        }
        None => {
            throttle.success();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(entry_id: &str, value: &str) -> ProgressReport {
        ProgressReport {
            entry_id: entry_id.into(),
            lane: "default".into(),
            task_id: format!("t-{entry_id}"),
            tries: 1,
            value: value.into(),
            message: "null".into(),
        }
    }

    #[test]
    fn the_latest_report_of_an_attempt_replaces_a_waiting_one() {
        let board = Board::default();
        board.push(report("1-0", "10"));
        board.push(report("1-0", "20"));
        board.push(report("2-0", "5"));
        assert!(!board.is_settled());
        let mut round = board.take(10);
        round.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
        let values: Vec<_> = round.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, ["20", "5"]);
        // Taken is still in flight until written.
        assert!(!board.is_settled());
        board.done(round.len());
        assert!(board.is_settled());
    }

    #[test]
    fn a_round_takes_at_most_max_and_leaves_the_rest_waiting() {
        let board = Board::default();
        for i in 0..5 {
            board.push(report(&format!("{i}-0"), "1"));
        }
        let round = board.take(3);
        assert_eq!(round.len(), 3);
        assert!(board.has_waiting());
        let rest = board.take(3);
        assert_eq!(rest.len(), 2);
        assert!(!board.has_waiting());
        board.done(5);
        assert!(board.is_settled());
    }

    #[test]
    fn an_attempt_stays_reported_until_its_outcome_takes_it() {
        let board = Board::default();
        assert!(!board.any_reported());
        board.push(report("1-0", "10"));
        board.push(report("1-0", "20"));
        board.push(report("2-0", "5"));
        // Written or not, the attempts reported: their outcomes must say so.
        board.done(board.take(10).len());
        assert!(board.any_reported());
        assert!(!board.take_reported("default", "3-0"));
        assert!(board.take_reported("default", "1-0"));
        assert!(!board.take_reported("default", "1-0"), "taken once");
        assert!(board.any_reported());
        assert!(board.take_reported("default", "2-0"));
        assert!(!board.any_reported());
    }

    #[test]
    fn the_same_attempt_in_another_lane_is_another_attempt() {
        let board = Board::default();
        board.push(report("1-0", "1"));
        let mut other = report("1-0", "2");
        other.lane = "high".into();
        board.push(other);
        assert_eq!(board.take(10).len(), 2);
    }

    #[tokio::test]
    async fn only_the_first_report_on_an_empty_board_wakes_the_writer() {
        let board = Arc::new(Board::default());
        board.push(report("1-0", "1"));
        board.push(report("2-0", "1"));
        // One stored permit: the first wait returns at once, the second would block.
        board.ready.notified().await;
        let second =
            tokio::time::timeout(std::time::Duration::from_millis(20), board.ready.notified())
                .await;
        assert!(second.is_err());
    }
}
