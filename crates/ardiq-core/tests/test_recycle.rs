//! Recycling (`Config::max_tasks`, `StopHandle::recycle`): the run starts exactly
//! `max_tasks` tasks and fetches no more, then drains as on a stop and returns `Recycle`.

mod support;

use std::time::Duration;

use ardiq_core::{Engine, Keys, Phase, Recycle, StopReason};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_exactly_max_tasks_then_returns_recycle() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "recycle");
    cfg.worker_id = "w1".into();
    cfg.concurrency = 2;
    cfg.prefetch = 10;
    cfg.max_tasks = Some(5);
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &echo_tasks("r", 12)).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg.clone(), exec.clone());
    // Nobody asks it to stop: it returns by itself.
    let report = running.join(Duration::from_secs(10)).await;
    assert_eq!(report.reason, StopReason::Recycle);
    assert_eq!(report.counters.ok, 5);
    assert_eq!(exec.total_calls(), 5);
    // It took no more than it could start: nothing to hand back, the other seven were
    // never delivered to it and are there for the next worker, no attempt counted.
    assert_eq!(report.counters.handed_back, 0);
    assert_eq!(report.counters.delivered, 5);
    let rest = read_as(&mut conn, &keys, 0, "w2", 100).await;
    assert_eq!(rest.len(), 7);
    for (_, f) in &rest {
        assert_eq!(f["t"], b"0");
    }
    assert_eq!(
        pending_by_consumer(&mut conn, &keys, 0).await.get("w1"),
        None
    );

    cfg.max_tasks = Some(0);
    assert!(Engine::new(cfg).is_err(), "max_tasks 0 is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycle_request_drains_like_a_stop() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "recycle-mem");
    cfg.worker_id = "w1".into();
    cfg.concurrency = 2;
    cfg.prefetch = 6;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let tasks: Vec<Task> = (0..6)
        .map(|i| Task::new(format!("m{i}"), "sleep", "400"))
        .collect();
    enqueue(&mut conn, &keys, &tasks).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "two running, six held", || {
        let exec = exec.clone();
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            exec.total_calls() == 2
                && pending_by_consumer(&mut conn, &keys, 0).await.get("w1") == Some(&6)
        }
    })
    .await;
    let why = Recycle::MaxMemory {
        limit: 100 << 20,
        resident: 120 << 20,
    };
    running.stop.recycle(why);
    // A signal during the drain is still a first one: it does not force.
    let counters = running.counters.clone();
    eventually(Duration::from_secs(5), "draining", || {
        let counters = counters.clone();
        async move { counters.live().phase() == Phase::Draining }
    })
    .await;
    running.stop.stop();
    let report = running.join(Duration::from_secs(5)).await;
    assert_eq!(report.reason, StopReason::Recycle);
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.counters.ok, 2);
    assert_eq!(report.counters.handed_back, 4);
    assert_eq!(exec.total_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_drains_before_its_budget_is_a_burst() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "recycle-burst");
    cfg.burst = true;
    cfg.max_tasks = Some(5);
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &echo_tasks("b", 3)).await;
    let report = spawn_engine(cfg.clone(), TestExecutor::new())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(report.counters.ok, 3);
    // Exactly the budget queued: the budget is spent as the queue drains, and the
    // recycle comes first (its replacement then finds the queue drained).
    enqueue(&mut conn, &keys, &echo_tasks("c", 5)).await;
    let report = spawn_engine(cfg, TestExecutor::new())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Recycle);
    assert_eq!(report.counters.ok, 5);
}
