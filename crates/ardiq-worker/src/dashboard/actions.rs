//! The write side of the JSON API: each function answers one `POST api/...` action.
//! Every change goes through a protocol script, as the ops commands' do: `run_now`,
//! `replay`, `delete_dead`, `purge`, `cron` (a trigger; a pause is one field of
//! `P crons:paused`, as `ardiq cron pause` writes it), `pause`/`resume` (one field of
//! `P paused`, as `ardiq pause` writes it: PROTOCOL.md, Pausing). Answers have the shapes of `ardiq dlq --json` and
//! `ardiq purge --json`; the status code says whether it happened (200), the task was not
//! there (404) or something else stood in the way (409).

use ardiq_core::ops::Client;
use ardiq_core::Keys;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::catalog::AppInfo;
use super::params::Query;
use super::reply::ApiError;
use crate::commands::dlq::outcome;

/// The status code for a script's reply: 1 done, 0 not found, anything else a conflict.
fn status_of(reply: i64) -> StatusCode {
    match reply {
        1 => StatusCode::OK,
        0 => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    }
}

/// `POST api/queues/{q}/scheduled/{id}/run`: a scheduled task (delay, schedule or retry
/// backoff) queued now.
pub async fn run_now(
    client: &mut Client,
    keys: &Keys,
    id: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let r = client.run_now(keys, id).await?;
    let status = match r {
        1 => "queued",
        0 => "not_scheduled",
        _ => "unknown_lane",
    };
    Ok((status_of(r), json!({ "id": id, "status": status })))
}

/// `POST api/queues/{q}/dead/{id}/replay` (`replay` set) or `.../delete`: one dead
/// letter, as `ardiq dlq replay|delete ID --json` answers.
pub async fn dead_letter(
    client: &mut Client,
    keys: &Keys,
    id: &str,
    replay: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let r = if replay {
        let signing = crate::secrets::signing_keys();
        client
            .replay(keys, id, &signing, ardiq_core::sign::DEFAULT_TTL_MS)
            .await?
    } else {
        client.delete_dead(keys, id).await?
    };
    let count = if r == 1 { 1 } else { 0 };
    let mut doc = Map::new();
    let verb = if replay { "replayed" } else { "deleted" };
    doc.insert(verb.to_owned(), json!(count));
    doc.insert(
        "results".to_owned(),
        json!([{ "id": id, "status": outcome(replay, r) }]),
    );
    let doc = Value::Object(doc);
    Ok((status_of(r), doc))
}

/// `POST api/queues/{q}/pause?lane=` (`pause` set) or `.../resume?lane=`: the queue, or
/// one lane, as `ardiq pause|resume [--lane L] --json` answers.
pub async fn pause(
    client: &mut Client,
    keys: &Keys,
    q: &Query,
    pause: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let lane = q.get("lane").filter(|l| !l.is_empty());
    let field = match lane {
        None => ardiq_core::ops::PAUSE_ALL,
        Some(l) if keys.lane_index(l).is_some() => l,
        Some(l) => {
            return Err(ApiError::bad_request(format!(
                "lane `{l}` is not one of the lanes of `{}` ({})",
                keys.queue(),
                keys.lanes().join(", ")
            )))
        }
    };
    let changed = if pause {
        client.pause(keys, field).await?
    } else {
        client.resume(keys, field).await?
    };
    let paused: Vec<String> = client
        .paused(keys)
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "queue": keys.queue(), "lane": lane, "changed": changed, "paused": paused }),
    ))
}

/// `POST api/queues/{q}/purge?force=&result_ttl_ms=`: as `ardiq purge --yes` (the POST
/// is the confirmation).
pub async fn purge(
    client: &mut Client,
    keys: &Keys,
    q: &Query,
    app_ttl_ms: Option<i64>,
) -> Result<(StatusCode, Value), ApiError> {
    let force = q.flag("force")?;
    let default = app_ttl_ms.unwrap_or(crate::commands::purge::DEFAULT_RESULT_TTL_MS);
    let ttl = q.int("result_ttl_ms", default, i64::MIN, i64::MAX)?;
    let report = client.purge(keys, ttl, force).await?;
    Ok((
        StatusCode::OK,
        json!({
            "queue": keys.queue(),
            "queued": report.queued,
            "scheduled": report.scheduled,
            "delivered": report.delivered,
            "skipped": report.skipped,
        }),
    ))
}

/// `POST api/queues/{q}/crons/{name}/pause|resume|trigger`, as `ardiq cron ... --json`
/// answers: `{"name", "status": "paused" | "resumed" | "unchanged"}`, or for a trigger
/// `{"name", "id", "status": "queued"}`. A name that is no cron (of the app with `--app`,
/// else one Redis knows) is a 404; a trigger without `--app` a 409 (the task, lane and
/// key are the app's).
pub async fn cron(
    client: &mut Client,
    keys: &Keys,
    app: Option<&AppInfo>,
    name: &str,
    action: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let entry = app.and_then(|a| a.crons.iter().find(|c| c.name == name));
    let known = match app {
        Some(_) => entry.is_some(),
        None => {
            let fired = client.cron_fired(keys).await?;
            let paused = client.cron_paused(keys).await?;
            fired.iter().chain(&paused).any(|(n, _)| n == name)
        }
    };
    if !known {
        return Err(ApiError::not_found(format!(
            "no cron `{name}` on this queue"
        )));
    }
    let done = match action {
        "pause" => client.pause_cron(keys, name).await?,
        "resume" => client.resume_cron(keys, name).await?,
        _ => {
            let (Some(app), Some(entry)) = (app, entry) else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "triggering a cron needs the app: start the dashboard with --app",
                ));
            };
            let mut config = ardiq_core::Config::new("", &app.queue);
            config.signing_key = app.signing_key.clone();
            config.signature_ttl_ms = app.signature_ttl_ms;
            let id = client.trigger_cron(keys, &config, entry).await?;
            return Ok((
                StatusCode::OK,
                json!({ "name": name, "id": id, "status": "queued" }),
            ));
        }
    };
    let status = match (action, done) {
        (_, false) => "unchanged",
        ("pause", true) => "paused",
        _ => "resumed",
    };
    Ok((StatusCode::OK, json!({ "name": name, "status": status })))
}
