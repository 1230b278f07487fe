//! Failures: dead letters, expired tasks, malformed entries.

mod support;

use std::time::Duration;

use ardiq_core::{Keys, StopReason};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_goes_to_dead_letters() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "fail");
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("f1", "fail", "args"),
            Task::new("u1", "nope", "a"),
        ],
    )
    .await;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(report.counters.failed, 2);

    let r = result(&mut conn, &keys, "f1").await.unwrap();
    assert!(!r.ok && !r.aborted);
    assert_eq!(r.text(), "boom");
    let dl = dead_letter(&mut conn, &keys, "f1")
        .await
        .expect("dead letter");
    assert_eq!(dl["err"], b"boom");
    assert_eq!(dl["fn"], b"fail");
    assert_eq!(dl["p"], b"args");
    assert_eq!(dl["l"], b"default");
    assert_eq!(dl["t"], b"1");
    let dl = dead_letter(&mut conn, &keys, "u1")
        .await
        .expect("dead letter");
    assert_eq!(dl["err"], b"unknown task 'nope'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_task_is_finished_without_running() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "expire");
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("x1", "echo", "a").expire_in(50),
            Task::new("x2", "echo", "b").expire_in(60_000),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(exec.calls_of("x1"), 0, "expired task must not run");
    assert_eq!(exec.calls_of("x2"), 1);
    assert_eq!(report.counters.expired, 1);
    let r = result(&mut conn, &keys, "x1").await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.text(), "expired");
    assert_eq!(r.started_ms, 0);
    assert_eq!(r.tries, 0);
    assert!(
        dead_letter(&mut conn, &keys, "x1").await.is_none(),
        "expired is not a dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entry_is_dead_lettered_and_the_worker_goes_on() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "bad");
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let eid: String = redis::cmd("XADD")
        .arg(keys.stream(0))
        .arg("*")
        .arg("fn")
        .arg("echo")
        .arg("t")
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .unwrap();
    let eid2: String = redis::cmd("XADD")
        .arg(keys.stream(0))
        .arg("*")
        .arg("junk")
        .arg("\u{0}\u{ff}")
        .query_async(&mut conn)
        .await
        .unwrap();
    enqueue(&mut conn, &keys, &[Task::new("good", "echo", "x")]).await;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    assert_eq!(report.counters.malformed, 2);
    assert_eq!(exec.calls_of("good"), 1);
    for e in [&eid, &eid2] {
        let id = format!("entry:{e}");
        let dl = dead_letter(&mut conn, &keys, &id)
            .await
            .expect("malformed entry dead-lettered");
        assert!(String::from_utf8_lossy(&dl["err"]).starts_with("malformed entry"));
        let r = result(&mut conn, &keys, &id).await.unwrap();
        assert!(!r.ok);
    }
    let len: i64 = redis::cmd("XLEN")
        .arg(keys.stream(0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 0, "malformed entries are acked and deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_script_rejects_does_not_wedge_the_others() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "poison");
    cfg.concurrency = 16;
    cfg.prefetch = 32;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let mut tasks = echo_tasks("ok", 20);
    tasks.insert(10, Task::new("poison", "flaky", "0"));
    enqueue(&mut conn, &keys, &tasks).await;
    // Corrupt the job record: `finish` fails with WRONGTYPE on this task's retry.
    let _: () = redis::cmd("DEL")
        .arg(keys.job("poison"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(keys.job("poison"))
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .unwrap();
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    for i in 0..20 {
        assert!(
            result(&mut conn, &keys, &format!("ok{i}")).await.is_some(),
            "ok{i} finished"
        );
    }
    // The rejected outcome's entry is left pending for reclaim, not acked.
    let pending: i64 = {
        let v: redis::Value = redis::cmd("XPENDING")
            .arg(keys.stream(0))
            .arg("ardiq")
            .query_async(&mut conn)
            .await
            .unwrap();
        let redis::Value::Array(parts) = v else {
            panic!()
        };
        redis::from_redis_value(parts[0].clone()).unwrap()
    };
    assert_eq!(pending, 1);
}
