//! An executor that queues ahead (`Executor::queues_ahead`): it is handed up to
//! `concurrency` more deliveries than it runs, and a stopping engine recalls the ones it
//! has not started and hands them back with its own buffer.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ardiq_core::{Config, Delivery, Executor, Keys, OutcomeSink, StopReason};
use support::*;

/// Runs at most `slots` deliveries (held until `finish_running`), queues the rest.
struct Queueing {
    slots: usize,
    running: Mutex<Vec<Delivery>>,
    queued: Mutex<VecDeque<Delivery>>,
    sink: Mutex<Option<OutcomeSink>>,
    handed: Mutex<usize>,
    withdrawn: Mutex<Vec<String>>,
    /// Entry ids in start order.
    started: Mutex<Vec<String>>,
}

impl Queueing {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Queueing {
            slots,
            running: Mutex::new(Vec::new()),
            queued: Mutex::new(VecDeque::new()),
            sink: Mutex::new(None),
            handed: Mutex::new(0),
            withdrawn: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
        })
    }

    fn handed(&self) -> usize {
        *self.handed.lock().unwrap()
    }

    fn running_ids(&self) -> Vec<String> {
        let running = self.running.lock().unwrap();
        running.iter().map(|d| d.task_id.clone()).collect()
    }

    /// Finishes every running delivery, then starts queued ones into the freed slots.
    fn finish_running(&self) {
        let done: Vec<Delivery> = std::mem::take(&mut *self.running.lock().unwrap());
        let sink = self.sink.lock().unwrap().clone().expect("started");
        for d in done {
            sink.send_one(d.ok(b"done".to_vec(), now_ms()));
        }
        self.fill();
    }

    fn fill(&self) {
        let mut running = self.running.lock().unwrap();
        let mut queued = self.queued.lock().unwrap();
        while running.len() < self.slots {
            match queued.pop_front() {
                Some(d) => {
                    self.started.lock().unwrap().push(d.entry_id.clone());
                    running.push(d);
                }
                None => break,
            }
        }
    }
}

impl Executor for Queueing {
    fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink) {
        *self.sink.lock().unwrap() = Some(outcomes.clone());
        *self.handed.lock().unwrap() += batch.len();
        self.queued.lock().unwrap().extend(batch);
        self.fill();
    }

    fn abort(&self, _task_id: &str) {}

    fn queues_ahead(&self) -> bool {
        true
    }

    fn recall(&self) -> Vec<Delivery> {
        self.queued.lock().unwrap().drain(..).collect()
    }

    fn withdraw(&self, lane: &str, entry_id: &str) -> bool {
        let mut queued = self.queued.lock().unwrap();
        let Some(i) = queued
            .iter()
            .position(|d| d.lane == lane && d.entry_id == entry_id)
        else {
            return false;
        };
        let d = queued.remove(i).unwrap();
        self.withdrawn.lock().unwrap().push(d.task_id);
        true
    }
}

/// An engine (consumer `w1`, concurrency 2) over `n` held tasks of queue `queue`, once it
/// has handed its queueing executor four deliveries: two running, two queued.
async fn four_handed_over(
    server: &RedisServer,
    queue: &str,
    n: usize,
    tune: impl FnOnce(&mut Config),
) -> (Keys, Arc<Queueing>, Running) {
    let mut conn = server.conn().await;
    let mut cfg = config(server, queue);
    cfg.worker_id = "w1".into();
    cfg.concurrency = 2;
    tune(&mut cfg);
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let tasks: Vec<Task> = (0..n)
        .map(|i| Task::new(format!("{queue}{i}"), "hold", "x"))
        .collect();
    enqueue(&mut conn, &keys, &tasks).await;
    let exec = Queueing::new(2);
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "four handed over", || {
        let exec = exec.clone();
        async move { exec.handed() == 4 }
    })
    .await;
    (keys, exec, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hands_over_concurrency_ahead_and_recalls_the_queued_on_stop() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // Two running and two queued in the executor (concurrency ahead), the rest buffered.
    let (keys, exec, running) = four_handed_over(&server, "ahead", 10, |c| c.prefetch = 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exec.handed(), 4, "never more than concurrency ahead");

    // A freed slot is refilled from the executor's own queue, and the engine tops the
    // queue up again.
    let first = exec.running_ids();
    exec.finish_running();
    for id in &first {
        assert!(
            wait_result(&mut conn, &keys, id, Duration::from_secs(5))
                .await
                .ok
        );
    }
    eventually(Duration::from_secs(5), "queue topped up", || {
        let exec = exec.clone();
        async move { exec.handed() == 6 }
    })
    .await;

    // Stop: the two queued deliveries come back with the buffer; the running two finish.
    running.stop.stop();
    eventually(
        Duration::from_secs(2),
        "queued and buffered handed back",
        || {
            let mut conn = conn.clone();
            let keys = keys.clone();
            async move { pending_by_consumer(&mut conn, &keys, 0).await.get("w1") == Some(&2) }
        },
    )
    .await;
    let second = exec.running_ids();
    exec.finish_running();
    let report = running.join(Duration::from_secs(5)).await;
    assert_eq!(report.reason, StopReason::Signal);
    assert_eq!(report.counters.ok, 4);
    // Six, or more when the blocking read still in flight picked up a handed-back entry
    // (it is then handed back again).
    assert!(report.counters.handed_back >= 6, "{:?}", report.counters);
    for id in &second {
        assert!(result(&mut conn, &keys, id).await.unwrap().ok);
    }
    let other = read_as(&mut conn, &keys, 0, "w2", 100).await;
    assert_eq!(
        other.len(),
        6,
        "every delivery not started is readable elsewhere"
    );
    for (_, f) in &other {
        assert_eq!(f["t"], b"0", "handback counts no attempt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_delivery_whose_lease_is_lost_is_withdrawn_unstarted() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let (keys, exec, running) = four_handed_over(&server, "withdraw", 4, |c| {
        c.prefetch = 4;
        c.idle_timeout_ms = 600; // renewal rounds every 200 ms
    })
    .await;

    // Another worker takes one of the two queued entries (as a reclaim would).
    let stolen = exec.queued.lock().unwrap()[0].clone();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(keys.stream(0))
        .arg("ardiq")
        .arg("thief")
        .arg(0)
        .arg(&stolen.entry_id)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "stolen entry withdrawn", || {
        let exec = exec.clone();
        async move { !exec.withdrawn.lock().unwrap().is_empty() }
    })
    .await;
    assert_eq!(
        *exec.withdrawn.lock().unwrap(),
        vec![stolen.task_id.clone()]
    );

    exec.finish_running();
    exec.finish_running();
    let report = running.stop(Duration::from_secs(5)).await;
    assert!(report.counters.lost_leases >= 1, "{:?}", report.counters);
    assert!(
        !exec.started.lock().unwrap().contains(&stolen.entry_id),
        "the stolen entry never started here"
    );
}
