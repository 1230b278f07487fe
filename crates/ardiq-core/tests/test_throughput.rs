//! Bulk processing: every task finished exactly once, outcomes batched.

mod support;

use std::time::{Duration, Instant};

use ardiq_core::{Keys, StopReason};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_each_finished_exactly_once_in_burst() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "bulk");
    cfg.concurrency = 16;
    cfg.prefetch = 32;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let tasks = echo_tasks("t", 1000);
    assert!(enqueue(&mut conn, &keys, &tasks)
        .await
        .iter()
        .all(|&r| r == 1));

    let exec = TestExecutor::new();
    let t0 = Instant::now();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(60))
        .await;
    let elapsed = t0.elapsed();

    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(report.counters.ok, 1000);
    assert_eq!(report.counters.stale, 0);
    assert_eq!(exec.total_calls(), 1000);
    for t in &tasks {
        assert_eq!(exec.calls_of(&t.id), 1, "{} ran more than once", t.id);
        let r = result(&mut conn, &keys, &t.id)
            .await
            .expect("result stored");
        assert!(r.ok);
        assert_eq!(r.value, t.payload);
        assert_eq!(r.tries, 1);
        assert!(r.started_ms > 0 && r.finished_ms >= r.started_ms);
    }
    // Finished entries are deleted and nothing is pending.
    let len: i64 = redis::cmd("XLEN")
        .arg(keys.stream(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 0);
    let jobs: Vec<String> = redis::cmd("KEYS")
        .arg(keys.job("*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(jobs.is_empty());
    // The executor got batches, not only single deliveries.
    let batches = exec.batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|&b| b > 1),
        "expected batched starts, got {batches:?}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_on_empty_queue_exits_after_one_read() {
    let server = RedisServer::start();
    let mut cfg = config(&server, "empty");
    cfg.burst = true;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(exec.total_calls(), 0);
    // The fetch created the group on the (new) stream.
    let mut conn = server.conn().await;
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("ardiq:{empty}:stream:default")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(raw(&groups).contains("ardiq"));
}
