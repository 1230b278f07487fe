//! Aborts arriving over `P abort`.

mod support;

use std::time::Duration;

use ardiq_core::Keys;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_is_cancelled() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "abort");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    enqueue(&mut conn, &keys, &[Task::new("a1", "sleep", "10000")]).await;
    eventually(Duration::from_secs(5), "started", || async {
        exec.calls_of("a1") == 1
    })
    .await;
    assert_eq!(
        abort_task(&mut conn, &keys, "a1").await,
        2,
        "delivered: signalled"
    );
    let r = wait_result(&mut conn, &keys, "a1", Duration::from_secs(3)).await;
    assert!(r.aborted && !r.ok);
    assert_eq!(r.text(), "aborted");
    assert_eq!(exec.abort_requests.lock().unwrap().as_slice(), ["a1"]);
    assert!(dead_letter(&mut conn, &keys, "a1").await.is_none());
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.aborted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_task_is_dropped_without_running() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "abortbuf");
    cfg.concurrency = 1;
    cfg.prefetch = 4;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("first", "sleep", "800"),
            Task::new("second", "echo", "x"),
        ],
    )
    .await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "first started", || async {
        exec.calls_of("first") == 1
    })
    .await;
    assert_eq!(
        abort_task(&mut conn, &keys, "second").await,
        2,
        "prefetched counts as delivered"
    );
    let r = wait_result(&mut conn, &keys, "second", Duration::from_secs(3)).await;
    assert!(r.aborted);
    assert_eq!(r.started_ms, 0);
    let first = wait_result(&mut conn, &keys, "first", Duration::from_secs(3)).await;
    assert!(first.ok);
    assert_eq!(exec.calls_of("second"), 0);
    assert!(exec.abort_requests.lock().unwrap().is_empty());
    running.stop(Duration::from_secs(5)).await;
}
