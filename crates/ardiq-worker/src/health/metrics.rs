//! The Prometheus text of `/metrics`: this worker's counters and histograms, its
//! liveness and readiness, and the queue's figures when Redis could tell them.

use std::fmt::Write as _;

use ardiq_core::metrics::escape_label;
use ardiq_core::ops::QueueStats;

use super::routes::{readiness, Endpoint};

pub(super) fn render(e: &Endpoint, stats: Option<&QueueStats>) -> String {
    let live = e.counters.live();
    let c = e.counters.snapshot();
    let q = format!("queue=\"{}\"", escape_label(&e.queue));
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    metric(
        "ardiq_worker_info",
        "gauge",
        "This worker process (value 1).",
        &[(
            format!(
                "{q},worker=\"{}\",version=\"{}\"",
                escape_label(&e.worker),
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        )],
    );
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metric(
        "ardiq_ready",
        "gauge",
        "1 while /readyz is OK.",
        &[(q.clone(), flag(readiness(live).is_ok()))],
    );
    metric(
        "ardiq_live",
        "gauge",
        "1 while /livez is OK.",
        &[(q.clone(), flag(e.liveness.check(live).is_ok()))],
    );
    metric(
        "ardiq_redis_up",
        "gauge",
        "1 when the engine's latest Redis call worked.",
        &[(q.clone(), flag(live.redis_ok()))],
    );
    let outcome = |o: &str| format!("{q},outcome=\"{o}\"");
    metric(
        "ardiq_tasks_finished_total",
        "counter",
        "Attempts finished by this worker, by outcome (retries are counted apart).",
        &[
            (outcome("ok"), c.ok as f64),
            (outcome("failed"), c.failed as f64),
            (outcome("expired"), c.expired as f64),
            (outcome("aborted"), c.aborted as f64),
        ],
    );
    let counters = [
        (
            "ardiq_task_retries_total",
            "Attempts that failed and were scheduled again.",
            c.retried,
        ),
        (
            "ardiq_tasks_reclaimed_total",
            "Entries of stalled workers this worker re-queued.",
            c.reclaimed,
        ),
        (
            "ardiq_dead_letters_total",
            "Tasks this worker dead-lettered (last attempt failed, malformed, or worker lost).",
            c.failed + c.dead,
        ),
        (
            "ardiq_tasks_delivered_total",
            "Entries read from the streams.",
            c.delivered,
        ),
        (
            "ardiq_outcomes_stale_total",
            "Outcomes dropped because the entry was reclaimed meanwhile.",
            c.stale,
        ),
        (
            "ardiq_leases_lost_total",
            "Held entries whose lease was lost.",
            c.lost_leases,
        ),
        (
            "ardiq_promoted_total",
            "Scheduled tasks this worker moved to their streams.",
            c.promoted,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, &[(q.clone(), v as f64)]);
    }
    let held = live.held();
    metric(
        "ardiq_tasks_in_flight",
        "gauge",
        "Attempts started and not yet acknowledged.",
        &[(q.clone(), held.in_flight as f64)],
    );
    metric(
        "ardiq_tasks_buffered",
        "gauge",
        "Prefetched entries waiting to start.",
        &[(q.clone(), held.buffered as f64)],
    );
    live.run_time.render(
        &mut out,
        "ardiq_task_run_seconds",
        "Run time of each attempt, start to outcome.",
        &q,
    );
    live.wait_time.render(
        &mut out,
        "ardiq_task_wait_seconds",
        "Time from entering the stream to the start of the attempt.",
        &q,
    );
    let mut metric = |name: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    metric(
        "ardiq_queue_up",
        "1 when the queue's counts below could be read from Redis.",
        &[(q.clone(), flag(stats.is_some()))],
    );
    if let Some(s) = stats {
        let lane = |l: &str| format!("{q},lane=\"{}\"", escape_label(l));
        let rows = |f: &dyn Fn(&ardiq_core::ops::LaneStats) -> f64| -> Vec<(String, f64)> {
            s.lanes.iter().map(|l| (lane(&l.lane), f(l))).collect()
        };
        metric(
            "ardiq_queue_depth",
            "Tasks not yet finished per lane: waiting plus pending.",
            &rows(&|l| l.depth() as f64),
        );
        metric(
            "ardiq_queue_waiting",
            "Queued tasks not yet delivered, per lane.",
            &rows(&|l| l.waiting as f64),
        );
        metric(
            "ardiq_queue_pending",
            "Delivered tasks not yet finished, per lane.",
            &rows(&|l| l.pending as f64),
        );
        metric(
            "ardiq_queue_oldest_waiting_seconds",
            "Age of the oldest waiting task per lane (0 when none waits).",
            &rows(&|l| l.oldest_waiting_age_ms.unwrap_or(0) as f64 / 1000.0),
        );
        metric(
            "ardiq_queue_scheduled",
            "Tasks waiting for a time (delay, schedule, retry backoff).",
            &[(q.clone(), s.scheduled as f64)],
        );
        metric(
            "ardiq_queue_dead_letters",
            "Dead letters kept.",
            &[(q.clone(), s.dead as f64)],
        );
        metric(
            "ardiq_queue_workers_alive",
            "Workers whose heartbeat is recent.",
            &[(
                q.clone(),
                s.workers.iter().filter(|w| w.alive).count() as f64,
            )],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::routes::tests::endpoint;

    #[test]
    fn renders_metrics_without_queue_stats() {
        let e = endpoint();
        let text = render(&e, None);
        assert!(text.contains("ardiq_worker_info{queue=\"q\",worker=\"w\\\"1\",version="));
        assert!(text.contains("ardiq_tasks_finished_total{queue=\"q\",outcome=\"ok\"} 0\n"));
        assert!(text.contains("ardiq_queue_up{queue=\"q\"} 0\n"));
        assert!(text.contains("# TYPE ardiq_task_run_seconds histogram\n"));
        assert!(!text.contains("ardiq_queue_depth"));
        let stats = QueueStats {
            queue: "q".into(),
            lanes: vec![ardiq_core::ops::LaneStats {
                lane: "default".into(),
                waiting: 2,
                pending: 1,
                oldest_waiting_age_ms: Some(1500),
                ..Default::default()
            }],
            scheduled: 4,
            ..Default::default()
        };
        let text = render(&e, Some(&stats));
        assert!(text.contains("ardiq_queue_depth{queue=\"q\",lane=\"default\"} 3\n"));
        assert!(
            text.contains("ardiq_queue_oldest_waiting_seconds{queue=\"q\",lane=\"default\"} 1.5\n")
        );
        assert!(text.contains("ardiq_queue_scheduled{queue=\"q\"} 4\n"));
    }
}
