//! `ardiq cron list|pause|resume|trigger`: the crons of one queue. A pause is a field of
//! `P crons:paused` that every worker's `cron` script reads at each occurrence, so it
//! holds across workers and restarts; `trigger` runs the `cron` script as an occurrence
//! does (sealed when the app signs), under an id of its own, as `app.trigger_cron()`.

use std::collections::BTreeMap;

use ardiq_core::ops::Client;
use ardiq_core::{Config, CronEntry, Keys};
use serde::Serialize;

use crate::cli::{CronAction, CronArgs};
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, exit, when};

pub fn run(args: CronArgs) -> i32 {
    let code = match cron(&args) {
        Ok(c) => c,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn cron(args: &CronArgs) -> Result<i32, Failure> {
    if matches!(args.action, CronAction::Trigger(_)) && args.queue.app.is_none() {
        return Err(
            Failure::new(code::USAGE, "`cron trigger` needs the app").hint(
                "pass `--app MODULE:ATTR`: the cron's task, lane and signing key are the app's",
            ),
        );
    }
    let (target, app) = ops::resolve_with_app(&args.queue)?;
    let queue = ops::need_queue(&target)?;
    let json = args.queue.json;
    let rt = ops::runtime()?;
    rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let keys = ops::keys(&mut client, &queue, target.lanes.as_deref()).await?;
        match &args.action {
            CronAction::List => list(&mut client, &keys, app.as_ref(), json).await,
            CronAction::Pause(n) => {
                known(&mut client, &keys, app.as_ref(), &n.name).await?;
                let done = client
                    .pause_cron(&keys, &n.name)
                    .await
                    .map_err(ops::failure)?;
                report(&n.name, "paused", done, json);
                Ok(code::OK)
            }
            CronAction::Resume(n) => {
                known(&mut client, &keys, app.as_ref(), &n.name).await?;
                let done = client
                    .resume_cron(&keys, &n.name)
                    .await
                    .map_err(ops::failure)?;
                report(&n.name, "resumed", done, json);
                Ok(code::OK)
            }
            CronAction::Trigger(n) => {
                let Some(config) = app.as_ref() else {
                    unreachable!("checked above: trigger needs --app");
                };
                let entry = app_cron(config, &n.name)?;
                let id = client
                    .trigger_cron(&keys, config, entry)
                    .await
                    .map_err(ops::failure)?;
                if json {
                    ops::print_json(&TriggerJson {
                        name: &n.name,
                        id: &id,
                    });
                } else {
                    println!("{}", printable(&id));
                }
                Ok(code::OK)
            }
        }
    })
}

/// The app's cron `name`, or "not found" (exit 8) naming the ones it has.
fn app_cron<'a>(config: &'a Config, name: &str) -> Result<&'a CronEntry, Failure> {
    config.crons.iter().find(|c| c.name == name).ok_or_else(|| {
        let names: Vec<&str> = config.crons.iter().map(|c| c.name.as_str()).collect();
        Failure::new(
            exit::NOT_FOUND,
            format!("the app has no cron `{}`", printable(name)),
        )
        .hint(if names.is_empty() {
            "the app defines no cron".to_owned()
        } else {
            format!("its crons: {}", names.join(", "))
        })
    })
}

/// Refuses a name that is no cron: with the app, one of its crons; without, one that
/// Redis knows (it fired, or is paused), so that a typo is not paused silently.
async fn known(
    client: &mut Client,
    keys: &Keys,
    app: Option<&Config>,
    name: &str,
) -> Result<(), Failure> {
    if let Some(config) = app {
        return app_cron(config, name).map(|_| ());
    }
    let fired = client.cron_fired(keys).await.map_err(ops::failure)?;
    let paused = client.cron_paused(keys).await.map_err(ops::failure)?;
    if fired.iter().chain(&paused).any(|(n, _)| n == name) {
        return Ok(());
    }
    Err(Failure::new(
        exit::NOT_FOUND,
        format!("no cron `{}` has fired on this queue", printable(name)),
    )
    .hint("pass `--app MODULE:ATTR` to act on a cron that has not fired yet"))
}

fn report(name: &str, what: &'static str, done: bool, json: bool) {
    if json {
        ops::print_json(&ChangeJson {
            name,
            status: if done { what } else { "unchanged" },
        });
    } else if done {
        println!("{what} `{}`", printable(name));
    } else {
        println!("`{}` was {what} already", printable(name));
    }
}

async fn list(
    client: &mut Client,
    keys: &Keys,
    app: Option<&Config>,
    json: bool,
) -> Result<i32, Failure> {
    let fired: BTreeMap<String, i64> = client
        .cron_fired(keys)
        .await
        .map_err(ops::failure)?
        .into_iter()
        .collect();
    let paused: BTreeMap<String, i64> = client
        .cron_paused(keys)
        .await
        .map_err(ops::failure)?
        .into_iter()
        .collect();
    let now = client.server_ms().await.map_err(ops::failure)?;
    // With the app: its crons, in its order. Without: every name Redis knows.
    let rows: Vec<CronJson> = match app {
        Some(config) => config
            .crons
            .iter()
            .map(|c| CronJson::new(&c.name, Some(c), &fired, &paused, now))
            .collect(),
        None => fired
            .keys()
            .chain(paused.keys().filter(|n| !fired.contains_key(*n)))
            .map(|n| CronJson::new(n, None, &fired, &paused, now))
            .collect(),
    };
    if json {
        ops::print_json(&ListJson { crons: rows });
        return Ok(code::OK);
    }
    if rows.is_empty() {
        println!("no crons");
        return Ok(code::OK);
    }
    for r in &rows {
        let state = match r.paused_ms {
            Some(ms) => format!("paused since {}", when(ms)),
            None => "active".to_owned(),
        };
        let mut line = format!(
            "{}  {state}  last={}",
            printable(&r.name),
            r.last_fired_ms.map_or_else(|| "-".to_owned(), when)
        );
        if let Some(next) = r.next_ms {
            line.push_str(&format!("  next={}", when(next)));
        }
        if let Some(lane) = &r.lane {
            line.push_str(&format!("  lane={}", printable(lane)));
        }
        println!("{line}");
    }
    Ok(code::OK)
}

/// `cron list --json`.
#[derive(Serialize)]
struct ListJson {
    crons: Vec<CronJson>,
}

#[derive(Serialize)]
struct CronJson {
    name: String,
    paused: bool,
    paused_ms: Option<i64>,
    last_fired_ms: Option<i64>,
    /// With --app: the next occurrence after now (by the Redis clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_ms: Option<i64>,
    /// With --app: the lane its runs go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    lane: Option<String>,
}

impl CronJson {
    fn new(
        name: &str,
        entry: Option<&CronEntry>,
        fired: &BTreeMap<String, i64>,
        paused: &BTreeMap<String, i64>,
        now: i64,
    ) -> Self {
        CronJson {
            name: name.to_owned(),
            paused: paused.contains_key(name),
            paused_ms: paused.get(name).copied(),
            last_fired_ms: fired.get(name).copied(),
            next_ms: entry.and_then(|c| c.schedule.next_after(now)),
            lane: entry.map(|c| c.lane.clone()),
        }
    }
}

/// `cron pause|resume --json`: `paused`/`resumed`, or `unchanged`.
#[derive(Serialize)]
struct ChangeJson<'a> {
    name: &'a str,
    status: &'static str,
}

/// `cron trigger --json`: the id of the run enqueued.
#[derive(Serialize)]
struct TriggerJson<'a> {
    name: &'a str,
    id: &'a str,
}
