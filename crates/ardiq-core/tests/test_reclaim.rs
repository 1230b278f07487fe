//! Reclaim: entries of a worker that stopped renewing are taken over; the delivery cap
//! dead-letters a task whose workers keep dying; stale outcomes are dropped.

mod support;

use std::time::Duration;

use ardiq_core::{scripts, Keys, StopReason};
use redis::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumers_entries_are_reclaimed_and_run() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "stall");
    cfg.idle_timeout_ms = 400;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &echo_tasks("s", 3)).await;
    let stolen = read_as(&mut conn, &keys, 0, "ghost", 10).await;
    assert_eq!(stolen.len(), 3);

    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    for i in 0..3 {
        let r = wait_result(&mut conn, &keys, &format!("s{i}"), Duration::from_secs(5)).await;
        assert!(r.ok);
        assert_eq!(r.tries, 1, "a reclaim does not count an attempt");
    }
    for d in exec.deliveries.lock().unwrap().iter() {
        assert_eq!(d.reclaims, 1, "the re-queued entry carries r + 1");
        assert_eq!(d.tries, 0);
    }
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.reclaimed, 3);
    assert_eq!(
        pending_by_consumer(&mut conn, &keys, 0).await.get("ghost"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_cap_dead_letters_worker_lost() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "cap");
    cfg.idle_timeout_ms = 300;
    cfg.max_deliveries = 3;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    // An attempt already delivered twice to workers that died (r = 2), now held by a
    // third that stalls: its reclaim is the third delivery, which reaches the cap.
    let now = now_ms();
    let eid: String = redis::cmd("XADD")
        .arg(keys.stream(0))
        .arg("*")
        .arg(&["id", "c1", "fn", "echo", "p", "x", "t", "1", "enq"])
        .arg(now)
        .arg(&["x", "0", "r", "2"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(keys.job("c1"))
        .arg(&[
            "fn", "echo", "l", "default", "s", "q", "t", "1", "x", "0", "enq",
        ])
        .arg(now)
        .arg("e")
        .arg(&eid)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(read_as(&mut conn, &keys, 0, "ghost", 10).await.len(), 1);
    // The ghost started it (a suspect is marked before it runs), then died.
    assert_eq!(
        mark_started(&mut conn, &keys, "ghost", &[(&eid, "c1")]).await,
        vec![1]
    );

    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    let r = wait_result(&mut conn, &keys, "c1", Duration::from_secs(5)).await;
    assert!(!r.ok);
    assert_eq!(r.text(), "worker lost (delivered 3 times)");
    let dl = dead_letter(&mut conn, &keys, "c1")
        .await
        .expect("dead letter");
    assert_eq!(dl["err"], b"worker lost (delivered 3 times)");
    assert_eq!(dl["t"], b"2");
    assert_eq!(exec.calls_of("c1"), 0);
    // The result is visible as soon as `reclaim` ran in Redis; the engine counts the dead
    // letter when the script's reply reaches it, a moment later (longer on a loaded
    // machine). Stopping first could cancel the reclaim pass before it counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_killing_its_workers_is_dead_lettered_after_the_cap() {
    // The cap reached step by step: each delivery goes to a consumer that dies (never
    // acks). The first two takeovers are done by hand exactly as the engine does them
    // (XAUTOCLAIM + `reclaim`), so no engine fetches the re-queued copy first; the last
    // one is the engine's.
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "killer");
    cfg.idle_timeout_ms = 200;
    cfg.max_deliveries = 3;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &[Task::new("k1", "echo", "x")]).await;
    assert_eq!(read_as(&mut conn, &keys, 0, "dies-1", 1).await.len(), 1);
    for n in 2..=3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let claimed: Value = redis::cmd("XAUTOCLAIM")
            .arg(keys.stream(0))
            .arg("ardiq")
            .arg("reaper")
            .arg(200)
            .arg("0-0")
            .query_async(&mut conn)
            .await
            .unwrap();
        let Value::Array(parts) = claimed else {
            panic!()
        };
        let Value::Array(entries) = &parts[1] else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
        let Value::Array(e) = &entries[0] else {
            panic!()
        };
        let eid: String = redis::from_redis_value(e[0].clone()).unwrap();
        let mut inv = scripts::RECLAIM.prepare_invoke();
        inv.key(keys.dead_index())
            .key(keys.history())
            .key(keys.stats())
            .key(keys.stream(0))
            .key(keys.job("k1"))
            .key(keys.wait("k1"))
            .key(keys.result("k1"))
            .key(keys.dead("k1"))
            .key(keys.attempts("k1"));
        inv.arg(keys.prefix())
            .arg("ardiq")
            .arg("reaper")
            .arg(300_000)
            .arg(3)
            .arg(1)
            .arg(0); // history off
        inv.arg(&eid).arg("k1").arg("default");
        let counts: Vec<i64> = inv.invoke_async(&mut conn).await.unwrap();
        assert_eq!(counts, vec![1, 0, 0], "delivery {} re-queued", n - 1);
        let consumer = format!("dies-{n}");
        let again = read_as(&mut conn, &keys, 0, &consumer, 1).await;
        assert_eq!(again[0].1["r"], (n - 1).to_string().as_bytes());
        // A suspect: the worker marks it before running it (then dies running it).
        let marked = mark_started(&mut conn, &keys, &consumer, &[(&again[0].0, "k1")]).await;
        assert_eq!(marked, vec![1]);
    }
    // Third delivery's worker died too: the engine's reclaim reaches the cap.
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    let r = wait_result(&mut conn, &keys, "k1", Duration::from_secs(5)).await;
    assert_eq!(r.text(), "worker lost (delivered 3 times)");
    assert_eq!(exec.calls_of("k1"), 0);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_outcome_is_dropped_and_does_not_overwrite() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "stale");
    // One slot, no spare prefetch: once the task runs the engine fetches nothing more,
    // so the re-queued copy is left for the "thief" below.
    cfg.concurrency = 1;
    cfg.prefetch = 1;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    enqueue(&mut conn, &keys, &[Task::new("st", "sleep", "800")]).await;
    eventually(Duration::from_secs(5), "task started", || async {
        exec.calls_of("st") == 1
    })
    .await;

    // Another worker decides the entry is abandoned and takes it over.
    let claimed: Value = redis::cmd("XAUTOCLAIM")
        .arg(keys.stream(0))
        .arg("ardiq")
        .arg("thief")
        .arg(0)
        .arg("0-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let Value::Array(parts) = claimed else {
        panic!()
    };
    let Value::Array(entries) = &parts[1] else {
        panic!()
    };
    let Value::Array(e) = &entries[0] else {
        panic!()
    };
    let old_eid: String = redis::from_redis_value(e[0].clone()).unwrap();
    let mut inv = scripts::RECLAIM.prepare_invoke();
    inv.key(keys.dead_index())
        .key(keys.history())
        .key(keys.stats())
        .key(keys.stream(0))
        .key(keys.job("st"))
        .key(keys.wait("st"))
        .key(keys.result("st"))
        .key(keys.dead("st"))
        .key(keys.attempts("st"));
    inv.arg(keys.prefix())
        .arg("ardiq")
        .arg("thief")
        .arg(300_000)
        .arg(5)
        .arg(1)
        .arg(0); // history off
    inv.arg(&old_eid).arg("st").arg("default");
    let counts: Vec<i64> = inv.invoke_async(&mut conn).await.unwrap();
    assert_eq!(counts, vec![1, 0, 0]);
    // The thief runs the re-queued copy and finishes it first.
    let copy = read_as(&mut conn, &keys, 0, "thief", 1).await;
    assert_eq!(copy.len(), 1);
    let mut fin = scripts::FINISH.prepare_invoke();
    fin.key(keys.delayed())
        .key(keys.dead_index())
        .key(keys.history())
        .key(keys.stats())
        .key(keys.stream(0))
        .key(keys.job("st"))
        .key(keys.wait("st"))
        .key(keys.result("st"))
        .key(keys.dead("st"))
        .key(keys.attempts("st"));
    fin.arg(keys.prefix())
        .arg("ardiq")
        .arg("thief")
        .arg(300_000)
        .arg(1)
        .arg(0); // history off
    fin.arg(&copy[0].0)
        .arg("st")
        .arg("ok")
        .arg("thief")
        .arg(1)
        .arg(0)
        .arg(now_ms())
        .arg("default")
        .arg(0)
        .arg("");
    let done: Vec<i64> = fin.invoke_async(&mut conn).await.unwrap();
    assert_eq!(done, vec![1]);

    // The engine's outcome for the old entry arrives later: stale, dropped.
    eventually(Duration::from_secs(5), "stale outcome counted", || async {
        running.counters.snapshot().stale == 1
    })
    .await;
    let r = result(&mut conn, &keys, "st").await.unwrap();
    assert_eq!(
        r.text(),
        "thief",
        "the stale outcome must not overwrite the result"
    );
    let report = running.stop(Duration::from_secs(5)).await;
    assert_eq!(report.counters.ok, 0);
    assert!(report.counters.lost_leases <= 1);
}

/// The `started` script, as a worker calls it before running suspects.
async fn mark_started(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    consumer: &str,
    entries: &[(&str, &str)],
) -> Vec<i64> {
    let mut inv = scripts::STARTED.prepare_invoke();
    for (_, id) in entries {
        inv.key(keys.stream(0)).key(keys.job(id));
    }
    inv.arg("ardiq").arg(consumer);
    for (eid, _) in entries {
        inv.arg(*eid);
    }
    // Per entry {held, job e, job n}: the held flags are what these tests look at.
    let reply: Vec<(i64, String, String)> = inv.invoke_async(conn).await.unwrap();
    reply.into_iter().map(|(held, _, _)| held).collect()
}

/// XAUTOCLAIM everything idle as `consumer`, then `reclaim` it with `cap`: the counts.
async fn reclaim_all(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    consumer: &str,
    ids: &[&str],
    cap: u32,
) -> Vec<i64> {
    let claimed: Value = redis::cmd("XAUTOCLAIM")
        .arg(keys.stream(0))
        .arg("ardiq")
        .arg(consumer)
        .arg(0)
        .arg("0-0")
        .query_async(conn)
        .await
        .unwrap();
    let Value::Array(parts) = claimed else {
        panic!()
    };
    let Value::Array(entries) = &parts[1] else {
        panic!()
    };
    let mut pairs = Vec::new();
    for e in entries {
        let Value::Array(e) = e else { panic!() };
        let eid: String = redis::from_redis_value(e[0].clone()).unwrap();
        let fields: std::collections::HashMap<String, String> =
            redis::from_redis_value(e[1].clone()).unwrap();
        assert!(ids.contains(&fields["id"].as_str()));
        pairs.push((eid, fields["id"].clone()));
    }
    let mut inv = scripts::RECLAIM.prepare_invoke();
    inv.key(keys.dead_index())
        .key(keys.history())
        .key(keys.stats());
    for (_, id) in &pairs {
        inv.key(keys.stream(0))
            .key(keys.job(id))
            .key(keys.wait(id))
            .key(keys.result(id))
            .key(keys.dead(id))
            .key(keys.attempts(id));
    }
    inv.arg(keys.prefix())
        .arg("ardiq")
        .arg(consumer)
        .arg(300_000)
        .arg(cap)
        .arg(pairs.len())
        .arg(0); // history off
    for (eid, id) in &pairs {
        inv.arg(eid).arg(id).arg("default");
    }
    inv.invoke_async(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_suspects_are_not_blamed_for_a_workers_death() {
    // Two tasks, each already reclaimed once (r = 1), delivered to a worker that dies:
    // it had started `guilty` (marked) but only prefetched `innocent` (unmarked). The
    // reclaim counts a delivery for the guilty one only; at a cap of 2 it is dead.
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "blame");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("guilty", "echo", "g"),
            Task::new("innocent", "echo", "i"),
        ],
    )
    .await;
    // First delivery (r = 0) to a worker that dies holding both: both counted, r = 1.
    assert_eq!(read_as(&mut conn, &keys, 0, "first", 10).await.len(), 2);
    assert_eq!(
        reclaim_all(&mut conn, &keys, "reaper", &["guilty", "innocent"], 2).await,
        vec![2, 0, 0]
    );
    let second = read_as(&mut conn, &keys, 0, "second", 10).await;
    assert_eq!(second.len(), 2);
    for (_, f) in &second {
        assert_eq!(f["r"], b"1");
    }
    let guilty = second.iter().find(|(_, f)| f["id"] == b"guilty").unwrap();
    assert_eq!(
        mark_started(&mut conn, &keys, "second", &[(&guilty.0, "guilty")]).await,
        vec![1]
    );
    // A consumer that does not hold an entry cannot mark it.
    assert_eq!(
        mark_started(&mut conn, &keys, "stranger", &[(&guilty.0, "guilty")]).await,
        vec![0]
    );
    assert_eq!(
        reclaim_all(&mut conn, &keys, "reaper", &["guilty", "innocent"], 2).await,
        vec![1, 1, 0],
        "guilty reaches the cap, innocent is re-queued"
    );
    let dl = dead_letter(&mut conn, &keys, "guilty").await.expect("dead");
    assert_eq!(dl["err"], b"worker lost (delivered 2 times)");
    assert!(dead_letter(&mut conn, &keys, "innocent").await.is_none());
    // The innocent one keeps r = 1 however often a dying worker merely prefetches it.
    for _ in 0..3 {
        let again = read_as(&mut conn, &keys, 0, "third", 10).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1["r"], b"1");
        assert_eq!(
            reclaim_all(&mut conn, &keys, "reaper", &["innocent"], 2).await,
            vec![1, 0, 0]
        );
    }
    // And an engine runs it (marking it first).
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    let r = wait_result(&mut conn, &keys, "innocent", Duration::from_secs(5)).await;
    assert!(r.ok);
    assert_eq!(exec.deliveries.lock().unwrap()[0].reclaims, 1);
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_marks_a_suspect_before_running_it() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let cfg = config(&server, "mark");
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(
        &mut conn,
        &keys,
        &[
            Task::new("sus", "sleep", "1500"),
            Task::new("fresh", "sleep", "1500"),
        ],
    )
    .await;
    assert_eq!(read_as(&mut conn, &keys, 0, "dead-one", 1).await.len(), 1);
    assert_eq!(
        reclaim_all(&mut conn, &keys, "reaper", &["sus"], 5).await,
        vec![1, 0, 0]
    );
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    eventually(Duration::from_secs(5), "both started", || async {
        exec.calls_of("sus") == 1 && exec.calls_of("fresh") == 1
    })
    .await;
    let st_of = |id: &str| keys.job(id);
    let sus_st: Option<String> = redis::cmd("HGET")
        .arg(st_of("sus"))
        .arg("st")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fresh_st: Option<String> = redis::cmd("HGET")
        .arg(st_of("fresh"))
        .arg("st")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sus_entry = exec
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .find(|d| d.task_id == "sus")
        .unwrap()
        .entry_id
        .clone();
    assert_eq!(
        sus_st.as_deref(),
        Some(sus_entry.as_str()),
        "marked before it ran"
    );
    assert_eq!(fresh_st, None, "a first delivery costs no mark");
    for id in ["sus", "fresh"] {
        assert!(
            wait_result(&mut conn, &keys, id, Duration::from_secs(5))
                .await
                .ok
        );
    }
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_chance_tasks_run_one_at_a_time() {
    // Two entries each one counted loss from the cap (r = 2, cap 3): had both run at once
    // on a worker that died, both would be dead-lettered although at most one killed it.
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "lastchance");
    cfg.max_deliveries = 3;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    let now = now_ms();
    for id in ["lc1", "lc2"] {
        let eid: String = redis::cmd("XADD")
            .arg(keys.stream(0))
            .arg("*")
            .arg(&["id", id, "fn", "sleep", "p", "300", "t", "0", "enq"])
            .arg(now)
            .arg(&["x", "0", "r", "2"])
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(keys.job(id))
            .arg(&[
                "fn", "sleep", "l", "default", "s", "q", "t", "0", "x", "0", "enq",
            ])
            .arg(now)
            .arg("e")
            .arg(&eid)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    enqueue(&mut conn, &keys, &[Task::new("fresh", "sleep", "300")]).await;
    let exec = TestExecutor::new();
    let running = spawn_engine(cfg, exec.clone());
    for id in ["lc1", "lc2", "fresh"] {
        assert!(
            wait_result(&mut conn, &keys, id, Duration::from_secs(5))
                .await
                .ok
        );
    }
    let starts = exec.starts.lock().unwrap().clone();
    let (a, b, f) = (starts["lc1"][0], starts["lc2"][0], starts["fresh"][0]);
    assert!(
        (a - b).abs() >= 280,
        "last-chance tasks overlapped: {a} {b}"
    );
    assert!(
        (a.min(b) - f).abs() < 250,
        "a fresh task runs next to one: {a} {b} {f}"
    );
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_takes_over_entries_left_past_their_lease_before_ending() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "burstreclaim");
    cfg.idle_timeout_ms = 300;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &echo_tasks("b", 3)).await;
    // A worker that died holding them: nothing waits in the stream any more.
    assert_eq!(read_as(&mut conn, &keys, 0, "ghost", 10).await.len(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await; // past the lease

    let exec = TestExecutor::new();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    for i in 0..3 {
        assert_eq!(exec.calls_of(&format!("b{i}")), 1);
        assert!(result(&mut conn, &keys, &format!("b{i}")).await.unwrap().ok);
    }
    assert!(pending_by_consumer(&mut conn, &keys, 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_does_not_wait_for_entries_inside_their_lease() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let mut cfg = config(&server, "burstlive");
    cfg.idle_timeout_ms = 5_000;
    cfg.burst = true;
    let keys = Keys::new(&cfg.queue, &cfg.lanes);
    enqueue(&mut conn, &keys, &echo_tasks("l", 2)).await;
    // Held by another worker, within its lease (as if it renewed it).
    assert_eq!(read_as(&mut conn, &keys, 0, "alive", 10).await.len(), 2);

    let exec = TestExecutor::new();
    let started = std::time::Instant::now();
    let report = spawn_engine(cfg, exec.clone())
        .join(Duration::from_secs(10))
        .await;
    assert_eq!(report.reason, StopReason::Burst);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(exec.total_calls(), 0);
    assert_eq!(
        pending_by_consumer(&mut conn, &keys, 0).await.get("alive"),
        Some(&2)
    );
}
