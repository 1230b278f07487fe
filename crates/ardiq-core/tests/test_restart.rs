//! Redis going away: the engine reconnects and keeps serving.

mod support;

use std::time::Duration;

use ardiq_core::Keys;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart_with_data_loss() {
    let mut server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "restart");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    enqueue(&mut conn, &keys, &echo_tasks("before", 5)).await;
    for i in 0..5 {
        wait_result(
            &mut conn,
            &keys,
            &format!("before{i}"),
            Duration::from_secs(5),
        )
        .await;
    }

    // Crash without persistence: everything is gone, groups included.
    tokio::task::block_in_place(|| server.restart());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = server.conn().await;
    enqueue(&mut conn, &keys, &echo_tasks("after", 5)).await;
    for i in 0..5 {
        let r = wait_result(
            &mut conn,
            &keys,
            &format!("after{i}"),
            Duration::from_secs(15),
        )
        .await;
        assert!(r.ok);
    }
    // The group was recreated by `fetch`.
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys.stream(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(raw(&groups).contains("ardiq"));
    let report = running.stop(Duration::from_secs(10)).await;
    assert_eq!(report.counters.ok, 10);
    assert_eq!(exec.total_calls(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_when_redis_comes_up_late() {
    let mut server = RedisServer::start();
    let cfg = config(&server, "late");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    server.kill();
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.restart());
    let mut conn = server.conn().await;
    enqueue(&mut conn, &keys, &echo_tasks("late", 3)).await;
    for i in 0..3 {
        wait_result(
            &mut conn,
            &keys,
            &format!("late{i}"),
            Duration::from_secs(15),
        )
        .await;
    }
    running.stop(Duration::from_secs(5)).await;
}
