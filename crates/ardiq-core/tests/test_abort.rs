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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_that_overtakes_the_delivery_finishes_it_unrun() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "aborttoo_early");
    cfg.concurrency = 1;
    cfg.prefetch = 1;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    // The one slot busy: the engine fetches nothing while the request comes.
    enqueue(&mut conn, &keys, &[Task::new("busy", "sleep", "800")]).await;
    eventually(Duration::from_secs(5), "busy started", || async {
        exec.calls_of("busy") == 1
    })
    .await;
    enqueue(&mut conn, &keys, &[Task::new("late", "echo", "x")]).await;
    // Delivered elsewhere when the abort comes (so it is signalled, not finalized): to
    // the engine, a request for a task it does not hold.
    let [(eid, fields)]: [_; 1] = read_as(&mut conn, &keys, 0, "elsewhere", 1)
        .await
        .try_into()
        .unwrap();
    assert_eq!(abort_task(&mut conn, &keys, "late").await, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Now the delivery reaches the engine.
    let stream = keys.stream(0).to_owned();
    let _: () = redis::pipe()
        .cmd("XACK")
        .arg(&stream)
        .arg("ardiq")
        .arg(&eid)
        .ignore()
        .cmd("XDEL")
        .arg(&stream)
        .arg(&eid)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut add = redis::cmd("XADD");
    add.arg(&stream).arg("*");
    for (k, v) in &fields {
        add.arg(k).arg(&v[..]);
    }
    let new: String = add.query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(keys.job("late"))
        .arg("e")
        .arg(&new)
        .query_async(&mut conn)
        .await
        .unwrap();

    let r = wait_result(&mut conn, &keys, "late", Duration::from_secs(5)).await;
    assert!(r.aborted && r.started_ms == 0, "{r:?}");
    assert_eq!(exec.calls_of("late"), 0, "never started");
    running.stop(Duration::from_secs(5)).await;
}
