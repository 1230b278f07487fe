//! The Prometheus text of `/metrics`: this worker's counters and histograms, its
//! liveness and readiness, and the queue's figures when Redis could tell them.
//!
//! Encoded by `prometheus-client` in the Prometheus text format 0.0.4, from a registry
//! built for each scrape out of the values of that moment: the engine keeps its own
//! atomics ([`ardiq_core::Counters`], the histograms in [`ardiq_core::Live`]), so the
//! registry holds copies, never live metrics. Every series carries the `queue` label (the
//! registry's own), and counters get their `_total` suffix from the encoder.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64};

use ardiq_core::metrics::{HistogramSnapshot, BUCKETS};
use ardiq_core::ops::{LaneStats, QueueStats};
use prometheus_client::encoding::{prometheus_text, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{Atomic, ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::routes::{readiness, Endpoint};

/// `Content-Type` of the answer.
pub(super) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Extra labels of one series, after `queue`.
type Labels = Vec<(&'static str, String)>;

/// A histogram as read at one moment (the engine's own, see `ardiq_core::metrics`).
#[derive(Debug)]
struct Snapshot(HistogramSnapshot);

impl EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes each bucket's own count and sums them itself; the snapshot
        // holds the running sums.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.0.cumulative)
            .map(|(bound, upto)| {
                let own = upto.saturating_sub(below);
                below = *upto;
                (*bound, own)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn flag(b: bool) -> ConstGauge<i64> {
    ConstGauge::new(i64::from(b))
}

fn count(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// One gauge per lane.
fn per_lane<T, A>(
    stats: &QueueStats,
    value: impl Fn(&LaneStats) -> T,
) -> Family<Labels, Gauge<T, A>>
where
    A: Atomic<T> + Default,
{
    let family = Family::<Labels, Gauge<T, A>>::default();
    for l in &stats.lanes {
        family
            .get_or_create(&vec![("lane", l.lane.clone())])
            .set(value(l));
    }
    family
}

pub(super) fn render(e: &Endpoint, stats: Option<&QueueStats>) -> String {
    let live = e.counters.live();
    let c = e.counters.snapshot();
    let queue = (Cow::Borrowed("queue"), Cow::Owned(e.queue.clone()));
    let mut r = Registry::with_labels(std::iter::once(queue));
    r.register(
        "ardiq_worker",
        "This worker process (value 1)",
        Info::new(vec![
            ("worker", e.worker.clone()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ]),
    );
    r.register(
        "ardiq_ready",
        "1 while /readyz is OK",
        flag(readiness(live).is_ok()),
    );
    r.register(
        "ardiq_live",
        "1 while /livez is OK",
        flag(e.liveness.check(live).is_ok()),
    );
    r.register(
        "ardiq_redis_up",
        "1 when the engine's latest Redis call worked",
        flag(live.redis_ok()),
    );
    let finished = Family::<Labels, Counter>::default();
    for (outcome, n) in [
        ("ok", c.ok),
        ("failed", c.failed),
        ("expired", c.expired),
        ("aborted", c.aborted),
    ] {
        finished
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc_by(n);
    }
    r.register(
        "ardiq_tasks_finished",
        "Attempts finished by this worker, by outcome (retries are counted apart)",
        finished,
    );
    let counters = [
        (
            "ardiq_task_retries",
            "Attempts that failed and were scheduled again",
            c.retried,
        ),
        (
            "ardiq_tasks_reclaimed",
            "Entries of stalled workers this worker re-queued",
            c.reclaimed,
        ),
        (
            "ardiq_dead_letters",
            "Tasks this worker dead-lettered (last attempt failed, malformed, or worker lost)",
            c.failed + c.dead,
        ),
        (
            "ardiq_tasks_delivered",
            "Entries read from the streams",
            c.delivered,
        ),
        (
            "ardiq_outcomes_stale",
            "Outcomes dropped because the entry was reclaimed meanwhile",
            c.stale,
        ),
        (
            "ardiq_leases_lost",
            "Held entries whose lease was lost",
            c.lost_leases,
        ),
        (
            "ardiq_promoted",
            "Scheduled tasks this worker moved to their streams",
            c.promoted,
        ),
    ];
    for (name, help, v) in counters {
        r.register(name, help, ConstCounter::new(v));
    }
    let held = live.held();
    r.register(
        "ardiq_tasks_in_flight",
        "Attempts started and not yet acknowledged",
        count(held.in_flight),
    );
    r.register(
        "ardiq_tasks_buffered",
        "Prefetched entries waiting to start",
        count(held.buffered),
    );
    r.register(
        "ardiq_task_run_seconds",
        "Run time of each attempt, start to outcome",
        Snapshot(live.run_time.snapshot()),
    );
    r.register(
        "ardiq_task_wait_seconds",
        "Time from entering the stream to the start of the attempt",
        Snapshot(live.wait_time.snapshot()),
    );
    r.register(
        "ardiq_queue_up",
        "1 when the queue's counts below could be read from Redis",
        flag(stats.is_some()),
    );
    if let Some(s) = stats {
        r.register(
            "ardiq_queue_depth",
            "Tasks not yet finished per lane: waiting plus pending",
            per_lane::<i64, AtomicI64>(s, |l| i64::try_from(l.depth()).unwrap_or(i64::MAX)),
        );
        r.register(
            "ardiq_queue_waiting",
            "Queued tasks not yet delivered, per lane",
            per_lane::<i64, AtomicI64>(s, |l| i64::try_from(l.waiting).unwrap_or(i64::MAX)),
        );
        r.register(
            "ardiq_queue_pending",
            "Delivered tasks not yet finished, per lane",
            per_lane::<i64, AtomicI64>(s, |l| i64::try_from(l.pending).unwrap_or(i64::MAX)),
        );
        r.register(
            "ardiq_queue_oldest_waiting_seconds",
            "Age of the oldest waiting task per lane (0 when none waits)",
            per_lane::<f64, AtomicU64>(s, |l| l.oldest_waiting_age_ms.unwrap_or(0) as f64 / 1000.0),
        );
        r.register(
            "ardiq_queue_scheduled",
            "Tasks waiting for a time (delay, schedule, retry backoff)",
            count(s.scheduled),
        );
        r.register(
            "ardiq_queue_parked",
            "Tasks parked by a rate limit or a concurrency cap, waiting for a token or a slot",
            count(s.parked),
        );
        r.register(
            "ardiq_queue_dead_letters",
            "Dead letters kept",
            count(s.dead),
        );
        r.register(
            "ardiq_queue_workers_alive",
            "Workers whose heartbeat is recent",
            count(s.workers.iter().filter(|w| w.alive).count() as u64),
        );
    }
    let mut out = String::with_capacity(4096);
    // Writing to a `String` cannot fail.
    let _ = prometheus_text::encode(&mut out, &r);
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
        assert!(text.contains("# TYPE ardiq_worker_info gauge\n"));
        assert!(text.contains("# TYPE ardiq_tasks_finished_total counter\n"));
        assert!(text.contains("ardiq_tasks_finished_total{queue=\"q\",outcome=\"ok\"} 0\n"));
        assert!(text.contains("ardiq_task_retries_total{queue=\"q\"} 0\n"));
        assert!(text.contains("ardiq_queue_up{queue=\"q\"} 0\n"));
        assert!(text.contains("# HELP ardiq_ready 1 while /readyz is OK.\n"));
        assert!(text.contains("# TYPE ardiq_task_run_seconds histogram\n"));
        assert!(!text.contains("ardiq_queue_depth"));
        let stats = QueueStats {
            queue: "q".into(),
            lanes: vec![LaneStats {
                lane: "default".into(),
                waiting: 2,
                pending: 1,
                oldest_waiting_age_ms: Some(1500),
                ..Default::default()
            }],
            scheduled: 4,
            parked: 2,
            ..Default::default()
        };
        let text = render(&e, Some(&stats));
        assert!(text.contains("ardiq_queue_depth{queue=\"q\",lane=\"default\"} 3\n"));
        assert!(
            text.contains("ardiq_queue_oldest_waiting_seconds{queue=\"q\",lane=\"default\"} 1.5\n")
        );
        assert!(text.contains("ardiq_queue_scheduled{queue=\"q\"} 4\n"));
        assert!(text.contains("ardiq_queue_parked{queue=\"q\"} 2\n"));
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let e = endpoint();
        let live = e.counters.live();
        for ms in [3, 40, 40, 2_000, 400_000] {
            live.run_time.observe_ms(ms);
        }
        let text = render(&e, None);
        let bucket = |le: &str| {
            let key = format!("ardiq_task_run_seconds_bucket{{queue=\"q\",le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(bucket("0.005"), 1);
        assert_eq!(bucket("0.05"), 3);
        assert_eq!(bucket("2.5"), 4);
        assert_eq!(bucket("300"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert!(text.contains("ardiq_task_run_seconds_count{queue=\"q\"} 5\n"));
        assert!(text.contains("ardiq_task_run_seconds_sum{queue=\"q\"} 402.083\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = endpoint();
        e.queue = "a\"b\\c\nd".into();
        let text = render(&e, None);
        assert!(
            text.contains("ardiq_live{queue=\"a\\\"b\\\\c\\nd\"} "),
            "{text}"
        );
    }
}
