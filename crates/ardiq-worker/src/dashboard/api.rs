//! The read side of the JSON API: each function answers one `GET api/...` route. Shapes
//! are those of the ops commands' `--json` where one exists (queue info as `ardiq info
//! --json`, dead letters as `ardiq dlq list --json`, a job as `ardiq job --json`): the
//! same functions build them. Every read is bounded by its page (see
//! `ardiq_core::ops::browse`).

use ardiq_core::ops::{Client, Payload, STAT_KINDS};
use ardiq_core::{CronEntry, Keys};
use serde_json::{json, Map, Value};

use super::catalog::Catalog;
use super::params::{self, Query};
use super::reply::ApiError;

/// The most minutes `stats` covers (a day).
pub const MAX_MINUTES: i64 = 1440;

/// Entries listed per worker at most (`held`).
pub const MAX_HELD: i64 = 100;

/// Upcoming runs listed per cron.
pub const CRON_RUNS: usize = 5;

/// `api/config`.
pub fn config(catalog: &Catalog, read_only: bool, auth: bool) -> Value {
    let queues: Vec<String> = catalog
        .queues()
        .iter()
        .map(|k| k.queue().to_owned())
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "read_only": read_only,
        "auth": auth,
        "queues": queues,
        "redis": catalog.masked_url(),
    })
}

/// `api/queues`: `ardiq info --json` for every queue shown.
pub async fn queues(catalog: &Catalog, client: &mut Client) -> Result<Value, ApiError> {
    let mut all = Vec::new();
    for keys in catalog.queues() {
        let stats = client.queue_stats(&keys).await?;
        all.push(crate::commands::info::to_json(&stats));
    }
    Ok(json!({ "redis": catalog.masked_url(), "queues": all }))
}

/// `api/queues/{q}/stats?minutes=`: per-minute counters, one array per kind, oldest
/// minute first, the current (partial) minute last.
pub async fn stats(client: &mut Client, keys: &Keys, q: &Query) -> Result<Value, ApiError> {
    let minutes = q.int("minutes", 60, 1, MAX_MINUTES)?;
    let t = client.throughput(keys, minutes as u32).await?;
    let mut kinds = Map::new();
    let mut totals = Map::new();
    for (kind, row) in STAT_KINDS.iter().zip(&t.counts) {
        totals.insert((*kind).to_owned(), json!(row.iter().sum::<u64>()));
        kinds.insert((*kind).to_owned(), json!(row));
    }
    let minutes: Vec<i64> = (0..minutes)
        .map(|i| (t.first_minute + i) * 60_000)
        .collect();
    Ok(json!({
        "queue": keys.queue(),
        "now_ms": t.server_ms,
        "minutes_ms": minutes,
        "kinds": kinds,
        "totals": totals,
    }))
}

/// `api/queues/{q}/workers?offset=&limit=&held=`: the workers of `ardiq info` (alive
/// first), a page of them, each with up to `held` entries it holds.
pub async fn workers(client: &mut Client, keys: &Keys, q: &Query) -> Result<Value, ApiError> {
    let (offset, limit) = (q.offset()?, q.limit()?);
    let held = q.int("held", 10, 0, MAX_HELD)? as usize;
    let stats = client.queue_stats(keys).await?;
    let info = crate::commands::info::to_json(&stats);
    let listed = info["workers"].as_array().cloned().unwrap_or_default();
    let mut page = Vec::new();
    for (w, mut doc) in stats.workers.iter().zip(listed).skip(offset).take(limit) {
        let entries = if held > 0 && w.pending > 0 {
            client.held_by(keys, &w.id, held).await?
        } else {
            Vec::new()
        };
        doc["held_truncated"] = json!((entries.len() as u64) < w.pending);
        doc["held"] = entries
            .iter()
            .map(|h| {
                json!({
                    "lane": h.lane,
                    "entry": h.entry,
                    "id": h.id,
                    "name": h.fn_name,
                    "idle_ms": h.idle_ms,
                    "deliveries": h.deliveries,
                })
            })
            .collect();
        page.push(doc);
    }
    Ok(json!({
        "queue": keys.queue(),
        "server_ms": stats.server_ms,
        "total": stats.workers.len(),
        "offset": offset,
        "workers": page,
    }))
}

/// `api/queues/{q}/history?kind=&before=&limit=`: completed tasks, newest first, paged
/// by stream entry id (`next` goes into `before`).
pub async fn history(client: &mut Client, keys: &Keys, q: &Query) -> Result<Value, ApiError> {
    let limit = q.limit()?;
    let kinds = q.list("kind");
    if let Some(bad) = kinds
        .iter()
        .find(|k| !STAT_KINDS.contains(&k.as_str()) || k.as_str() == "retry")
    {
        return Err(ApiError::bad_request(format!(
            "unknown kind `{bad}` (ok, fail, expired, abort or lost)"
        )));
    }
    let before = q
        .get("before")
        .map(|b| params::stream_id("before", b))
        .transpose()?;
    let page = client
        .history(keys, &kinds, before.as_deref(), limit)
        .await?;
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            json!({
                "entry": e.entry,
                "id": e.id,
                "name": e.fn_name,
                "lane": e.lane,
                "kind": e.kind,
                "tries": e.tries,
                "enqueued_ms": e.enqueued_ms,
                "started_ms": e.started_ms,
                "finished_ms": e.finished_ms,
                "worker": e.worker,
                "error": e.error,
            })
        })
        .collect();
    Ok(json!({ "queue": keys.queue(), "entries": entries, "next": page.next }))
}

/// `api/queues/{q}/jobs/{id}?args=1`: `ardiq job --json`, plus the arguments on request.
/// `None` when there is no such task (404, with the same document).
pub async fn job(
    client: &mut Client,
    keys: &Keys,
    id: &str,
    q: &Query,
) -> Result<(bool, Value), ApiError> {
    let with_args = q.flag("args")?;
    let info = client.job(keys, id).await?;
    let found = info.status != "not_found";
    let mut doc = crate::commands::job::to_json(&info);
    if with_args && found {
        doc["args"] = match client.payload(keys, id).await? {
            Payload::Kept(p) => super::args::describe(&p),
            Payload::Gone => json!({
                "format": "gone",
                "note": "a completed task's payload is not kept",
            }),
        };
    }
    Ok((found, doc))
}

/// `api/queues/{q}/scheduled?after=&limit=`: tasks waiting for a time, soonest first;
/// `retry` marks a retry waiting out its backoff.
pub async fn scheduled(client: &mut Client, keys: &Keys, q: &Query) -> Result<Value, ApiError> {
    let limit = q.limit()?;
    let after = q.get("after");
    if let Some(a) = after {
        let ok = a
            .split_once(':')
            .is_some_and(|(ms, id)| ms.parse::<i64>().is_ok() && !id.is_empty());
        if !ok {
            return Err(ApiError::bad_request(
                "`after` must be the `next` of the previous page (<due ms>:<id>)",
            ));
        }
    }
    let page = client.scheduled(keys, after, limit).await?;
    let tasks: Vec<Value> = page
        .tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "due_ms": t.due_ms,
                "name": t.fn_name,
                "lane": t.lane,
                "tries": t.tries,
                "retry": t.tries > 0,
                "enqueued_ms": t.enqueued_ms,
            })
        })
        .collect();
    Ok(json!({
        "queue": keys.queue(),
        "total": page.total,
        "tasks": tasks,
        "next": page.next,
    }))
}

/// `api/queues/{q}/dead?offset=&limit=`: `ardiq dlq list --json`, newest first.
pub async fn dead(client: &mut Client, keys: &Keys, q: &Query) -> Result<Value, ApiError> {
    let (offset, limit) = (q.offset()?, q.limit()?);
    let (total, letters) = client.dead_letters(keys, offset, limit).await?;
    let letters: Vec<Value> = letters
        .iter()
        .map(crate::commands::dlq::letter_json)
        .collect();
    Ok(json!({
        "queue": keys.queue(),
        "total": total,
        "offset": offset,
        "dead_letters": letters,
    }))
}

/// `api/queues/{q}/crons`: with `--app`, the app's crons and their next runs (from the
/// Redis clock); otherwise the crons that fired, as `P crons` remembers them, and the
/// paused ones (`P crons:paused`). Each says whether it is paused, and since when.
pub async fn crons(
    client: &mut Client,
    keys: &Keys,
    app_crons: Option<&[CronEntry]>,
) -> Result<Value, ApiError> {
    let fired = client.cron_fired(keys).await?;
    let paused = client.cron_paused(keys).await?;
    let now = client.server_ms().await?;
    let last = |name: &str| fired.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms);
    let since = |name: &str| paused.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms);
    let list: Vec<Value> = match app_crons {
        Some(entries) => entries
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "task": c.fn_name,
                    "lane": c.lane,
                    "next_runs_ms": next_runs(c, now),
                    "last_fired_ms": last(&c.name),
                    "paused": since(&c.name).is_some(),
                    "paused_ms": since(&c.name),
                })
            })
            .collect(),
        None => {
            // The crons that fired, and the paused ones that never did.
            let mut names: Vec<&str> = fired.iter().map(|(n, _)| n.as_str()).collect();
            names.extend(paused.iter().map(|(n, _)| n.as_str()));
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .map(|name| {
                    json!({
                        "name": name,
                        "task": null,
                        "lane": null,
                        "next_runs_ms": null,
                        "last_fired_ms": last(name),
                        "paused": since(name).is_some(),
                        "paused_ms": since(name),
                    })
                })
                .collect()
        }
    };
    let source = if app_crons.is_some() { "app" } else { "redis" };
    Ok(json!({
        "queue": keys.queue(),
        "source": source,
        "server_ms": now,
        "crons": list,
    }))
}

/// The next [`CRON_RUNS`] occurrences after `now`.
fn next_runs(c: &CronEntry, now: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(CRON_RUNS);
    let mut t = now;
    while out.len() < CRON_RUNS {
        match c.schedule.next_after(t) {
            Some(next) if next > t => {
                out.push(next);
                t = next;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ardiq_core::Every;

    use super::*;

    #[test]
    fn lists_the_next_runs_of_a_cron() {
        let c = CronEntry {
            name: "tick".into(),
            fn_name: "tick".into(),
            lane: "default".into(),
            payload: Vec::new(),
            schedule: Arc::new(Every::new(60_000).unwrap()),
        };
        assert_eq!(
            next_runs(&c, 90_000),
            [120_000, 180_000, 240_000, 300_000, 360_000]
        );
        let never = CronEntry {
            schedule: Arc::new(|_: i64| -> Option<i64> { None }),
            ..c
        };
        assert!(next_runs(&never, 0).is_empty());
    }
}
