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

/// The ids `exec` ran that start with `prefix`.
fn ran(exec: &TestExecutor, prefix: &str) -> Vec<String> {
    let calls = exec.calls.lock().unwrap();
    calls
        .keys()
        .filter(|id| id.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cron_skips_its_occurrences_and_a_trigger_runs_anyway() {
    let server = RedisServer::start();
    let mut cfg = config(&server, "cronpause");
    let entry = |name: &str| CronEntry {
        name: name.into(),
        fn_name: "echo".into(),
        lane: "default".into(),
        payload: b"c".to_vec(),
        schedule: Arc::new(Every::new(200).unwrap()),
    };
    cfg.crons = vec![entry("tick"), entry("tock")];
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let mut ops = ardiq_core::ops::Client::connect(&server.url(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(ops.pause_cron(&keys, "tick").await.unwrap());
    assert!(!ops.pause_cron(&keys, "tick").await.unwrap());
    let exec = TestExecutor::new();
    let run = spawn_engine(cfg.clone(), exec.clone());
    // `tock` shares tick's schedule: five of its occurrences mean tick's were skipped.
    let deadline = now_ms() + 10_000;
    while ran(&exec, "cron:tock:").len() < 5 {
        assert!(now_ms() < deadline, "tock did not fire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ran(&exec, "cron:tick:"), Vec::<String>::new());
    let id = ops.trigger_cron(&keys, &cfg, &cfg.crons[0]).await.unwrap();
    assert!(id.starts_with("cron:tick:now:"), "{id}");
    while ran(&exec, "cron:tick:") != vec![id.clone()] {
        assert!(now_ms() < deadline, "the trigger did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let paused = ops.cron_paused(&keys).await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].0, "tick");
    // A trigger is no occurrence: `P crons` has none for tick.
    let fired = ops.cron_fired(&keys).await.unwrap();
    assert!(fired.iter().all(|(n, _)| n != "tick"), "{fired:?}");
    assert!(ops.resume_cron(&keys, "tick").await.unwrap());
    let resumed = now_ms();
    while ran(&exec, "cron:tick:").len() < 3 {
        assert!(now_ms() < deadline, "tick did not fire after resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop(Duration::from_secs(5)).await;
    for id in ran(&exec, "cron:tick:") {
        if let Some(occ) = id
            .strip_prefix("cron:tick:")
            .and_then(|o| o.parse::<i64>().ok())
        {
            // From the next occurrence on (one may have been due as it resumed).
            assert!(
                occ >= resumed - 200,
                "{id} is a backfill (resumed at {resumed})"
            );
        }
    }
}
