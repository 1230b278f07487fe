//! Lanes: the highest lane is started first, FIFO within a lane.

mod support;

use std::time::Duration;

use ardiq_core::{Keys, StopReason};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_lane_runs_first() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "lanes");
    cfg.lanes = vec!["low".into(), "mid".into(), "high".into()];
    cfg.concurrency = 1;
    cfg.prefetch = 1;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(Task::new(format!("low{i}"), "echo", "x").lane("low"));
        tasks.push(Task::new(format!("mid{i}"), "echo", "x").lane("mid"));
        tasks.push(Task::new(format!("high{i}"), "echo", "x").lane("high"));
    }
    enqueue(&mut conn, &keys, &tasks).await;

    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(20))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    let order = exec.order.lock().unwrap().clone();
    let expected: Vec<String> = ["high", "mid", "low"]
        .iter()
        .flat_map(|l| (0..5).map(move |i| format!("{l}{i}")))
        .collect();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_orders_a_mixed_prefetch_by_lane() {
    // With a large prefetch one fetch takes everything; the buffer still starts the
    // highest lane first.
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "lanes2");
    cfg.lanes = vec!["low".into(), "high".into()];
    cfg.concurrency = 1;
    cfg.prefetch = 50;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let mut tasks = Vec::new();
    for i in 0..10 {
        tasks.push(Task::new(format!("low{i}"), "echo", "x").lane("low"));
    }
    for i in 0..10 {
        tasks.push(Task::new(format!("high{i}"), "echo", "x").lane("high"));
    }
    enqueue(&mut conn, &keys, &tasks).await;
    let exec = TestExecutor::new();
    spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(20))
        .await;
    let order = exec.order.lock().unwrap().clone();
    assert!(
        order[..10].iter().all(|id| id.starts_with("high")),
        "{order:?}"
    );
    assert_eq!(order[10], "low0");
}
