//! A `WorkerSettings` (python/ardiq/worker_settings.py) as the engine's [`Config`]: the
//! one reading of the app's settings, for the binary and the extension alike.

use std::sync::Arc;
use std::time::Duration;

use ardiq_core::{Config, CronEntry, CronSchedule, CronSpec, Every, SigningKey, TaskLimit};
use pyo3::prelude::*;

/// The longest duration a setting or option takes: a year. Larger values (`1e308`) would
/// overflow the deadlines computed from them; no drain, probe or liveness window needs more.
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// The engine's configuration from a `WorkerSettings` (python/ardiq/worker_settings.py),
/// attribute by attribute, each extracted to the type the engine wants.
pub fn read_config(s: &Bound<'_, PyAny>) -> PyResult<Config> {
    let redis_url: String = s.getattr("redis_url")?.extract()?;
    let queue: String = s.getattr("queue_name")?.extract()?;
    let mut c = Config::new(redis_url, queue);
    c.lanes = s.getattr("priorities")?.extract()?;
    c.weights = s.getattr("weights")?.extract()?;
    c.worker_id = s.getattr("worker_id")?.extract()?;
    c.concurrency = s.getattr("concurrency")?.extract()?;
    c.prefetch = s.getattr("prefetch")?.extract()?;
    c.idle_timeout_ms = s.getattr("idle_timeout_ms")?.extract()?;
    c.poll_block_ms = s.getattr("poll_block_ms")?.extract()?;
    c.result_ttl_ms = s.getattr("result_ttl_ms")?.extract()?;
    c.max_deliveries = s.getattr("max_deliveries")?.extract()?;
    c.max_payload_bytes = s.getattr("max_payload_bytes")?.extract()?;
    c.burst = s.getattr("burst")?.extract()?;
    let timeout: Option<f64> = s.getattr("shutdown_timeout_s")?.extract()?;
    // The app's own setting is checked like the option (`Duration` panics past ~1.8e19 s).
    c.drain_timeout = match timeout {
        None => None,
        Some(t) if t > 0.0 && t <= MAX_SECONDS => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "shutdown_timeout_s must be above 0 and at most {} s, got {t}",
                MAX_SECONDS
            )))
        }
    };
    let signing_key: Option<Vec<u8>> = s.getattr("signing_key")?.extract()?;
    c.signing_key = signing_key.map(SigningKey::new);
    c.signature_ttl_ms = s.getattr("signature_ttl_ms")?.extract()?;
    c.history = s.getattr("history")?.extract()?;
    c.history_ttl_ms = s.getattr("history_ttl_ms")?.extract()?;
    c.tasks = s.getattr("tasks")?.extract()?;
    for limit in s.getattr("limits")?.try_iter()? {
        let limit = limit?;
        let name: String = limit.getattr("name")?.extract()?;
        c.limits.insert(
            name,
            TaskLimit {
                rate_per_ms: limit.getattr("rate_per_ms")?.extract()?,
                burst: limit.getattr("burst")?.extract()?,
                max_concurrency: limit.getattr("max_concurrency")?.extract()?,
            },
        );
    }
    for cron in s.getattr("crons")?.try_iter()? {
        let cron = cron?;
        let name: String = cron.getattr("name")?.extract()?;
        let kind: String = cron.getattr("kind")?.extract()?;
        let spec: String = cron.getattr("spec")?.extract()?;
        let schedule: Arc<dyn CronSchedule> = if kind == "every" {
            let ms: i64 = spec.parse().unwrap_or(0);
            Arc::new(Every::new(ms).ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!("cron {name}: bad interval"))
            })?)
        } else {
            let tz: String = cron.getattr("tz")?.extract()?;
            let parsed = CronSpec::parse(&spec).and_then(|c| match tz.as_str() {
                "" => Ok(c),
                zone => c.in_time_zone(zone),
            });
            Arc::new(parsed.map_err(|e| {
                pyo3::exceptions::PyValueError::new_err(format!("cron {name}: {e}"))
            })?)
        };
        c.crons.push(CronEntry {
            fn_name: name.clone(),
            name,
            lane: cron.getattr("lane")?.extract()?,
            payload: cron.getattr("payload")?.extract()?,
            schedule,
        });
    }
    Ok(c)
}
