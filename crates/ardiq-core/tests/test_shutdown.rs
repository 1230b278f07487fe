//! Stopping: graceful drain with handback, forced stop, drain deadline.

mod support;

use std::time::{Duration, Instant};

use ardiq_core::{Keys, StopReason};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_back_buffer_and_finishes_running() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "drain");
    cfg.worker_id = "w1".into();
    cfg.concurrency = 2;
    cfg.prefetch = 10;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let tasks: Vec<Task> = (0..10)
        .map(|i| Task::new(format!("g{i}"), "sleep", "700"))
        .collect();
    enqueue(&mut conn, &keys, &tasks).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "two running, ten held", || {
        let exec = exec.clone();
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            exec.total_calls() == 2
                && pending_by_consumer(&mut conn, &keys, 0).await.get("w1") == Some(&10)
        }
    })
    .await;

    running.stop.stop();
    // The buffer goes back at once: only the two running entries stay pending, and the
    // other eight are readable by any other worker right away.
    eventually(Duration::from_millis(400), "buffer handed back", || {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move { pending_by_consumer(&mut conn, &keys, 0).await.get("w1") == Some(&2) }
    })
    .await;
    let other = read_as(&mut conn, &keys, 0, "w2", 100).await;
    assert_eq!(other.len(), 8);
    for (_, f) in &other {
        assert_eq!(f["t"], b"0", "handback counts no attempt");
        assert_eq!(f["r"], b"0");
    }

    let report = running.join(Duration::from_secs(5)).await;
    assert_eq!(report.reason, StopReason::Signal);
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.counters.ok, 2);
    assert_eq!(report.counters.handed_back, 8);
    assert_eq!(exec.total_calls(), 2);
    let started: Vec<String> = exec.order.lock().unwrap().clone();
    for id in &started {
        assert!(result(&mut conn, &keys, id).await.unwrap().ok);
    }
    // Retired: w1 left the group, its heartbeat is gone.
    let pending = pending_by_consumer(&mut conn, &keys, 0).await;
    assert_eq!(pending.get("w1"), None);
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.stream(0))
        .arg("ardiq")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!raw(&consumers).contains("w1"), "{consumers:?}");
    let hb: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.workers())
        .arg("w1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(hb.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_keeps_its_lease_while_draining() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "lease");
    cfg.idle_timeout_ms = 300;
    cfg.concurrency = 1;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("long", "sleep", "1200")]).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg.clone(), exec.clone());
    eventually(Duration::from_secs(5), "started", || async {
        exec.calls_of("long") == 1
    })
    .await;
    // A second engine that would reclaim anything idle for 300 ms.
    let mut other_cfg = cfg;
    other_cfg.worker_id = "other".into();
    let other_exec = TestExecutor::new();
    let other = spawn_engine(other_cfg, other_exec.clone());
    running.stop.stop();
    let report = running.join(Duration::from_secs(5)).await;
    assert_eq!(report.reason, StopReason::Signal);
    assert_eq!(report.counters.ok, 1);
    assert_eq!(report.counters.stale, 0, "the lease was renewed throughout");
    assert_eq!(other_exec.calls_of("long"), 0);
    assert!(result(&mut conn, &keys, "long").await.unwrap().ok);
    let o = other.stop(Duration::from_secs(5)).await;
    assert_eq!(o.counters.reclaimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stop_returns_at_once_leaving_running_for_reclaim() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "force");
    cfg.worker_id = "w1".into();
    cfg.concurrency = 1;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("slow", "sleep", "10000")]).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "started", || async {
        exec.calls_of("slow") == 1
    })
    .await;
    running.stop.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    running.stop.stop();
    let report = running.join(Duration::from_secs(2)).await;
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(report.reason, StopReason::Forced);
    assert_eq!(report.abandoned, 1);
    // Not acked: still pending under w1, for reclaim.
    assert_eq!(
        pending_by_consumer(&mut conn, &keys, 0).await.get("w1"),
        Some(&1)
    );
    assert!(result(&mut conn, &keys, "slow").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_returns_with_tasks_left() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "deadline");
    cfg.drain_timeout = Some(Duration::from_millis(300));
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("slow", "sleep", "10000")]).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "started", || async {
        exec.calls_of("slow") == 1
    })
    .await;
    let t0 = Instant::now();
    let report = running.stop(Duration::from_secs(3)).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(report.reason, StopReason::DrainTimeout);
    assert_eq!(report.abandoned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_before_redis_is_reachable_returns() {
    let mut server = RedisServer::start();
    let cfg = config(&server, "unreachable");
    server.kill();
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.handle.is_finished(),
        "keeps retrying while redis is down"
    );
    let report = running.stop(Duration::from_secs(2)).await;
    assert_eq!(report.reason, StopReason::Signal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_switched_on_while_serving_returns_once_drained() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "burst-switch");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    let tasks: Vec<Task> = (0..5)
        .map(|i| Task::new(format!("b{i}"), "echo", "x"))
        .collect();
    enqueue(&mut conn, &keys, &tasks).await;
    eventually(Duration::from_secs(5), "five done", || {
        let exec = exec.clone();
        async move { exec.total_calls() == 5 }
    })
    .await;
    // Not in burst mode: it keeps serving an empty queue...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!running.handle.is_finished());
    // ...until burst is switched on: then it drains and returns, as a burst run does.
    running.stop.set_burst(true);
    let report = running.join(Duration::from_secs(5)).await;
    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(report.counters.ok, 5);
}
