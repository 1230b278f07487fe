//! Several engines on one queue.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use ardiq_core::Keys;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_a_queue_without_duplicates() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut base = config(&server, "shared");
    base.concurrency = 8;
    base.prefetch = 16;
    let keys = Keys::new(&base.queue, &base.lanes);
    let (ea, eb) = (TestExecutor::new(), TestExecutor::new());
    let mut ca = base.clone();
    ca.worker_id = "a".into();
    let mut cb = base.clone();
    cb.worker_id = "b".into();
    let (ra, rb) = (spawn_engine(ca, ea.clone()), spawn_engine(cb, eb.clone()));
    // Enqueue while both are blocked waiting, in several chunks, so both get work.
    let tasks: Vec<Task> = (0..600)
        .map(|i| Task::new(format!("s{i}"), "sleep", "1"))
        .collect();
    for chunk in tasks.chunks(50) {
        enqueue(&mut conn, &keys, chunk).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in &tasks {
        wait_result(&mut conn, &keys, &t.id, Duration::from_secs(20)).await;
    }
    let (a, b) = (
        ra.stop(Duration::from_secs(5)).await,
        rb.stop(Duration::from_secs(5)).await,
    );
    assert_eq!(a.counters.ok + b.counters.ok, 600);
    assert!(
        a.counters.ok > 0 && b.counters.ok > 0,
        "both engines worked: {} / {}",
        a.counters.ok,
        b.counters.ok
    );
    let seen_a: HashSet<String> = ea.calls.lock().unwrap().keys().cloned().collect();
    let seen_b: HashSet<String> = eb.calls.lock().unwrap().keys().cloned().collect();
    assert!(seen_a.is_disjoint(&seen_b));
    assert_eq!(ea.total_calls() + eb.total_calls(), 600);
    // Both retired: no heartbeat left, no consumers left in the group.
    let workers: i64 = redis::cmd("ZCARD")
        .arg(keys.workers())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(workers, 0);
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(keys.stream(0))
        .arg("ardiq")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
}
