//! Cron: each occurrence fires once across workers.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ardiq_core::{CronEntry, Every, Keys};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_fires_once_per_occurrence_with_two_engines() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut base = config(&server, "cron");
    base.crons = vec![CronEntry {
        name: "tick".into(),
        fn_name: "echo".into(),
        lane: "default".into(),
        payload: b"c".to_vec(),
        schedule: Arc::new(Every::new(1000).unwrap()),
    }];
    let keys = Keys::new(&base.queue, &base.lanes);
    let (ea, eb) = (TestExecutor::new(), TestExecutor::new());
    let mut ca = base.clone();
    ca.worker_id = "a".into();
    let mut cb = base;
    cb.worker_id = "b".into();
    let start = now_ms();
    let (ra, rb) = (spawn_engine(ca, ea.clone()), spawn_engine(cb, eb.clone()));
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (a, b) = (
        ra.stop(Duration::from_secs(5)).await,
        rb.stop(Duration::from_secs(5)).await,
    );

    let mut runs: HashMap<String, u32> = HashMap::new();
    for e in [&ea, &eb] {
        for (id, n) in e.calls.lock().unwrap().iter() {
            *runs.entry(id.clone()).or_default() += n;
        }
    }
    assert!(
        runs.len() >= 3,
        "expected 3+ occurrences in 3.3 s, got {runs:?}"
    );
    for (id, n) in &runs {
        assert_eq!(*n, 1, "{id} ran {n} times");
        let occ: i64 = id
            .strip_prefix("cron:tick:")
            .expect("occurrence id")
            .parse()
            .unwrap();
        assert_eq!(occ % 1000, 0, "occurrences align to the schedule");
        assert!(occ > start, "no backfill of occurrences before the start");
        assert!(result(&mut conn, &keys, id).await.unwrap().ok);
    }
    assert_eq!(
        (a.counters.crons_fired + b.counters.crons_fired) as usize,
        runs.len()
    );
    let last: i64 = redis::cmd("HGET")
        .arg(keys.crons())
        .arg("tick")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(runs.contains_key(&format!("cron:tick:{last}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_mode_fires_no_crons() {
    let server = RedisServer::start();
    let mut cfg = config(&server, "cronburst");
    cfg.burst = true;
    cfg.crons = vec![CronEntry {
        name: "tick".into(),
        fn_name: "echo".into(),
        lane: "default".into(),
        payload: vec![],
        // A closure works as a schedule too: every 10 ms.
        schedule: Arc::new(|t: i64| Some((t / 10 + 1) * 10)),
    }];
    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(5))
        .await;
    assert_eq!(report.counters.crons_fired, 0);
    assert_eq!(exec.total_calls(), 0);
}
