//! What this worker holds: entries delivered to it and not yet acknowledged.
//!
//! One small structure behind a `std` mutex, shared by the dispatcher (fills the buffer,
//! starts tasks), the finisher (retires outcomes), the lease renewer (reads the held set,
//! drops lost entries) and the abort listener. The lock is only ever held for a few map
//! operations and never across an `.await`, so a plain mutex is the cheapest correct tool.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::executor::Delivery;

/// An entry's identity inside this worker: lane index (lowest-first) and entry id. Entry
/// ids are only unique within one stream, hence the pair.
pub type EntryKey = (usize, String);

/// A running delivery, kept for logging and for routing aborts.
#[derive(Debug, Clone)]
pub struct RunningTask {
    /// The task id (aborts arrive by task id).
    pub task_id: String,
    /// The task name, for log lines.
    pub fn_name: String,
    /// The attempt number of this run.
    pub attempt: u32,
}

/// Deliveries held by this worker. Every held entry is pending in Redis under our name
/// and is renewed until it is finished or handed back.
#[derive(Debug, Default)]
pub struct Held {
    /// Waiting to start, ordered highest lane first, then in arrival order. The key is
    /// `(usize::MAX - lane, arrival sequence)` so the first key is the next to start.
    buffer: BTreeMap<(usize, u64), (usize, Delivery)>,
    /// Arrival counter for FIFO order within a lane.
    seq: u64,
    /// Start in arrival order whatever the lane (lane weights: the fetch already shared
    /// the slots by weight, and a low lane's entries must not wait behind every later
    /// high one).
    fifo: bool,
    /// Handed to the executor, outcome not yet reported.
    running: HashMap<EntryKey, RunningTask>,
    /// Outcome known, `finish` not yet acknowledged: still pending, still renewed, no
    /// longer using a concurrency slot.
    finishing: HashMap<EntryKey, RunningTask>,
    /// Running entries on their last chance (one more counted loss dead-letters them):
    /// at most one runs at a time, so a task that kills its worker cannot take another
    /// last-chance task down with it (see `started`).
    last_chance: HashSet<EntryKey>,
}

impl Held {
    /// An empty set; `fifo`: start buffered entries in arrival order (lane weights).
    pub fn new(fifo: bool) -> Self {
        Held {
            fifo,
            ..Held::default()
        }
    }

    /// Adds a fetched delivery to the buffer.
    pub fn push(&mut self, lane: usize, d: Delivery) {
        self.seq += 1;
        let rank = if self.fifo { 0 } else { usize::MAX - lane };
        self.buffer.insert((rank, self.seq), (lane, d));
    }

    /// Takes the buffered deliveries of the lanes flagged in `lanes` (lowest-first).
    pub fn take_lanes(&mut self, lanes: &[bool]) -> Vec<(usize, Delivery)> {
        let keys: Vec<(usize, u64)> = self
            .buffer
            .iter()
            .filter(|(_, (lane, _))| lanes.get(*lane).copied().unwrap_or(false))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| self.buffer.remove(k)).collect()
    }

    /// Takes up to `n` deliveries in start order (highest lane, then oldest).
    pub fn pop(&mut self, n: usize) -> Vec<(usize, Delivery)> {
        let mut out = Vec::with_capacity(n.min(self.buffer.len()));
        while out.len() < n {
            match self.buffer.pop_first() {
                Some((_, item)) => out.push(item),
                None => break,
            }
        }
        out
    }

    /// Takes every buffered delivery (for handback).
    pub fn drain_buffer(&mut self) -> Vec<(usize, Delivery)> {
        std::mem::take(&mut self.buffer).into_values().collect()
    }

    /// Removes a buffered entry (its lease was lost). `true` if it was buffered.
    pub fn remove_buffered(&mut self, key: &EntryKey) -> bool {
        let found = self
            .buffer
            .iter()
            .find(|(_, (lane, d))| *lane == key.0 && d.entry_id == key.1)
            .map(|(k, _)| *k);
        found.and_then(|k| self.buffer.remove(&k)).is_some()
    }

    /// Removes the buffered delivery of `task_id` (it was aborted before starting).
    pub fn take_buffered_task(&mut self, task_id: &str) -> Option<(usize, Delivery)> {
        let k = *self
            .buffer
            .iter()
            .find(|(_, (_, d))| d.task_id == task_id)?
            .0;
        self.buffer.remove(&k)
    }

    /// Records that `d` was handed to the executor.
    pub fn mark_running(&mut self, lane: usize, d: &Delivery) {
        self.running.insert(
            (lane, d.entry_id.clone()),
            RunningTask {
                task_id: d.task_id.clone(),
                fn_name: d.fn_name.clone(),
                attempt: d.attempt(),
            },
        );
    }

    /// Records an entry the engine finishes without running it (expired, malformed,
    /// aborted in the buffer).
    pub fn mark_finishing(&mut self, key: EntryKey, task: RunningTask) {
        self.finishing.insert(key, task);
    }

    /// Records a delivery the engine finishes itself without running it (refused,
    /// expired, aborted before it started).
    pub fn mark_unrun(&mut self, lane: usize, d: &Delivery) {
        self.mark_finishing(
            (lane, d.entry_id.clone()),
            RunningTask {
                task_id: d.task_id.clone(),
                fn_name: d.fn_name.clone(),
                attempt: d.attempt(),
            },
        );
    }

    /// A running entry that will never reach the executor (the `started` mark found it
    /// held by another consumer): forget it without an outcome.
    pub fn abandon(&mut self, key: &EntryKey) {
        self.running.remove(key);
        self.last_chance.remove(key);
    }

    /// Records that a running entry is on its last chance.
    pub fn mark_last_chance(&mut self, key: EntryKey) {
        self.last_chance.insert(key);
    }

    /// Is a last-chance entry running here?
    pub fn last_chance_running(&self) -> bool {
        !self.last_chance.is_empty()
    }

    /// An outcome arrived: the entry leaves `running` (freeing a concurrency slot) and
    /// waits in `finishing` for its ack. Returns what ran, when known.
    pub fn outcome_arrived(&mut self, key: &EntryKey) -> Option<RunningTask> {
        if let Some(t) = self.finishing.get(key) {
            return Some(t.clone());
        }
        let task = self.running.remove(key)?;
        self.last_chance.remove(key);
        self.finishing.insert(key.clone(), task.clone());
        Some(task)
    }

    /// The `finish` call for this entry returned: it is no longer held.
    pub fn finished(&mut self, key: &EntryKey) {
        self.finishing.remove(key);
    }

    /// The lane of a running (or finishing) entry, found by entry and task id.
    pub fn lane_of(&self, entry_id: &str, task_id: &str) -> Option<usize> {
        self.running
            .iter()
            .chain(self.finishing.iter())
            .find(|((_, e), t)| e == entry_id && t.task_id == task_id)
            .map(|((lane, _), _)| *lane)
    }

    /// Is `task_id` running here?
    pub fn is_running_task(&self, task_id: &str) -> bool {
        self.running.values().any(|t| t.task_id == task_id)
    }

    /// The running task of an entry, if it runs.
    pub fn running_task(&self, key: &EntryKey) -> Option<&RunningTask> {
        self.running.get(key)
    }

    /// Every held entry (buffered, running, finishing), for the lease renewal.
    pub fn held_keys(&self) -> Vec<EntryKey> {
        let buffered = self.buffer.values().map(|(l, d)| (*l, d.entry_id.clone()));
        buffered
            .chain(self.running.keys().cloned())
            .chain(self.finishing.keys().cloned())
            .collect()
    }

    /// Buffered entries.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Tasks using a concurrency slot.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Running or finishing: entries whose body started and that are not yet acked.
    pub fn in_flight(&self) -> usize {
        self.running.len() + self.finishing.len()
    }

    /// Entries whose outcome arrived and whose ack is in flight.
    pub fn finishing(&self) -> usize {
        self.finishing.len()
    }

    /// Everything held.
    pub fn total(&self) -> usize {
        self.buffer.len() + self.running.len() + self.finishing.len()
    }
}

/// A delivery for unit tests: entry `eid` of task `task`, first attempt.
#[cfg(test)]
pub(crate) fn test_delivery(eid: &str, task: &str) -> Delivery {
    Delivery {
        entry_id: eid.into(),
        lane: "default".into(),
        task_id: task.into(),
        fn_name: "f".into(),
        payload: vec![],
        tries: 0,
        enqueued_ms: 0,
        expire_ms: 0,
        reclaims: 0,
        live_job: None,
        limit_key: None,
        holds_token: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_starts_highest_lane_first_then_fifo() {
        let mut h = Held::default();
        h.push(0, test_delivery("1-0", "low1"));
        h.push(2, test_delivery("1-0", "top1"));
        h.push(1, test_delivery("1-0", "mid1"));
        h.push(2, test_delivery("2-0", "top2"));
        h.push(0, test_delivery("2-0", "low2"));
        let order: Vec<_> = h.pop(10).into_iter().map(|(_, d)| d.task_id).collect();
        assert_eq!(order, ["top1", "top2", "mid1", "low1", "low2"]);
    }

    #[test]
    fn fifo_buffer_ignores_lanes_and_lanes_can_be_taken_out() {
        let mut h = Held::new(true);
        h.push(0, test_delivery("1-0", "low1"));
        h.push(2, test_delivery("1-0", "top1"));
        h.push(1, test_delivery("1-0", "mid1"));
        h.push(0, test_delivery("2-0", "low2"));
        let taken: Vec<_> = h
            .take_lanes(&[true, false, false])
            .into_iter()
            .map(|(_, d)| d.task_id)
            .collect();
        assert_eq!(taken, ["low1", "low2"]);
        let order: Vec<_> = h.pop(10).into_iter().map(|(_, d)| d.task_id).collect();
        assert_eq!(order, ["top1", "mid1"]);
    }

    #[test]
    fn tracks_lifecycle() {
        let mut h = Held::default();
        h.push(0, test_delivery("1-0", "a"));
        h.push(0, test_delivery("2-0", "b"));
        h.push(1, test_delivery("1-0", "c"));
        assert_eq!(h.total(), 3);
        assert!(h.remove_buffered(&(1, "1-0".into())));
        assert!(!h.remove_buffered(&(1, "1-0".into())));
        let (lane, a) = h.pop(1).remove(0);
        h.mark_running(lane, &a);
        assert!(h.is_running_task("a"));
        assert_eq!((h.buffered(), h.running(), h.total()), (1, 1, 2));
        let key = (lane, a.entry_id.clone());
        assert_eq!(h.lane_of(&a.entry_id, "a"), Some(lane));
        assert_eq!(h.lane_of(&a.entry_id, "other"), None);
        assert_eq!(h.outcome_arrived(&key).unwrap().task_id, "a");
        assert_eq!((h.running(), h.in_flight(), h.total()), (0, 1, 2));
        assert_eq!(h.held_keys().len(), 2);
        h.finished(&key);
        assert_eq!(h.total(), 1);
        assert_eq!(h.take_buffered_task("b").unwrap().1.entry_id, "2-0");
        assert!(h.outcome_arrived(&(0, "nope".into())).is_none());
        assert_eq!(h.drain_buffer().len(), 0);
    }
}
