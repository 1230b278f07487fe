//! Delayed promotion and retries with a delay.

mod support;

use std::time::Duration;

use ardiq_core::Keys;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_task_runs_when_due_not_before() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "delay");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t0 = now_ms();
    enqueue(&mut conn, &keys, &[Task::new("d1", "echo", "x").delay(400)]).await;
    let status: Option<String> = redis::cmd("HGET")
        .arg(keys.job("d1"))
        .arg("s")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("d"), "scheduled, not queued");
    let r = wait_result(&mut conn, &keys, "d1", Duration::from_secs(5)).await;
    assert!(r.ok);
    let started = exec.starts.lock().unwrap()["d1"][0];
    assert!(
        started >= t0 + 400,
        "started {}ms early",
        t0 + 400 - started
    );
    // Promotion checks at least every 100 ms and sleeps until the due time when sooner.
    assert!(
        started <= t0 + 400 + 250,
        "started {}ms late",
        started - t0 - 400
    );
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.promoted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_delay_then_success() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "retry");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("r1", "flaky", "300"),
            Task::new("r0", "flaky", "0"),
        ],
    )
    .await;

    let r = wait_result(&mut conn, &keys, "r1", Duration::from_secs(5)).await;
    assert!(r.ok);
    assert_eq!(r.tries, 2);
    assert_eq!(r.value, b"300");
    let starts = exec.starts.lock().unwrap()["r1"].clone();
    assert_eq!(starts.len(), 2);
    assert!(
        starts[1] - starts[0] >= 300,
        "retried after {}ms",
        starts[1] - starts[0]
    );
    // The second delivery carries the attempt count.
    let second = exec
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.task_id == "r1")
        .nth(1)
        .cloned()
        .unwrap();
    assert_eq!(second.tries, 1);

    // Delay 0 re-queues at once.
    let r0 = wait_result(&mut conn, &keys, "r0", Duration::from_secs(5)).await;
    assert_eq!(r0.tries, 2);
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.retried, 2);
    assert_eq!(report.counters.ok, 2);
    assert!(dead_letter(&mut conn, &keys, "r1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_waits_for_past_due_scheduled_tasks() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "burstdelay");
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("p1", "echo", "x").delay(150)]).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(
        exec.calls_of("p1"),
        1,
        "a past-due scheduled task counts as queued in burst"
    );
    assert_eq!(report.counters.ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_waits_for_the_retries_it_scheduled() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "burstretry");
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("b1", "flaky", "300")]).await;
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    // A task that failed and will run again is still in flight: burst runs it.
    assert_eq!(exec.calls_of("b1"), 2);
    assert_eq!(report.counters.retried, 1);
    assert_eq!(report.counters.ok, 1);
}
