//! `ardiq job ID`: one task's status (queued, scheduled, running, complete, dead,
//! not_found), attempts and timings, which worker holds it, and why it failed. Read with
//! the protocol's `inspect` script plus plain reads; the payload and a success's value
//! are never printed (they may hold secrets).

use ardiq_core::ops::JobInfo;
use serde::Serialize;

use crate::cli::JobArgs;
use crate::commands::dlq::LetterJson;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, exit, human_ms, when};

pub fn run(args: JobArgs) -> i32 {
    let code = match job(&args) {
        Ok(c) => c,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn job(args: &JobArgs) -> Result<i32, Failure> {
    let target = ops::resolve(&args.queue)?;
    let queue = ops::need_queue(&target)?;
    let rt = ops::runtime()?;
    let info = rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let keys = ops::keys(&mut client, &queue, target.lanes.as_deref()).await?;
        client.job(&keys, &args.id).await.map_err(ops::failure)
    })?;
    if args.queue.json {
        ops::print_json(&JobJson::from(&info));
    } else {
        print_text(&info, &queue);
    }
    Ok(if info.status == "not_found" {
        exit::NOT_FOUND
    } else {
        code::OK
    })
}

fn print_text(j: &JobInfo, queue: &str) {
    if j.status == "not_found" {
        eprintln!(
            "error: no task `{}` in queue `{}` (never enqueued, or its result expired)",
            printable(&j.id),
            printable(queue)
        );
        return;
    }
    let mut rows: Vec<(&str, String)> = vec![("id", j.id.clone()), ("status", j.status.clone())];
    if let Some(n) = &j.name {
        rows.push(("task", n.clone()));
    }
    if let Some(l) = &j.lane {
        rows.push(("lane", l.clone()));
    }
    if let Some(t) = j.tries {
        rows.push(("attempts", t.to_string()));
    }
    if let Some(ms) = j.enqueued_ms {
        rows.push(("enqueued", when(ms)));
    }
    if let Some(ms) = j.scheduled_ms {
        rows.push(("due", when(ms)));
    }
    if let Some(h) = &j.holder {
        rows.push((
            "held by",
            format!(
                "{} (lease renewed {} ago, delivered {}x)",
                h.worker,
                human_ms(h.idle_ms),
                h.deliveries
            ),
        ));
    }
    if j.abort_requested {
        rows.push(("abort", "requested".into()));
    }
    if let Some(r) = &j.result {
        let outcome = match (r.ok, r.aborted) {
            (true, _) => "success".to_owned(),
            (false, true) => "aborted".to_owned(),
            (false, false) => "failure".to_owned(),
        };
        rows.push(("outcome", outcome));
        if r.started_ms > 0 {
            rows.push(("started", when(r.started_ms)));
        }
        rows.push(("finished", when(r.finished_ms)));
        if r.started_ms > 0 && r.finished_ms >= r.started_ms {
            rows.push(("ran for", human_ms(r.finished_ms - r.started_ms)));
        }
        if let Some(e) = &r.error {
            rows.push(("error", e.lines().next().unwrap_or("").to_owned()));
        }
    }
    if let Some(d) = &j.dead {
        rows.push(("failed", when(d.failed_ms)));
        if j.result.is_none() {
            rows.push(("error", d.error.lines().next().unwrap_or("").to_owned()));
        }
    }
    // Ids, names, workers and errors come from Redis: escaped (see `escape`).
    for (k, v) in rows {
        println!("{k:<10} {}", printable(&v));
    }
}

/// `job --json`: everything known about one task (never its payload or its value).
#[derive(Serialize)]
struct JobJson<'a> {
    id: &'a str,
    status: &'a str,
    name: Option<&'a str>,
    lane: Option<&'a str>,
    tries: Option<i64>,
    enqueued_ms: Option<i64>,
    scheduled_ms: Option<i64>,
    entry: Option<&'a str>,
    holder: Option<HolderJson<'a>>,
    abort_requested: bool,
    result: Option<ResultJson<'a>>,
    dead_letter: Option<LetterJson<'a>>,
}

#[derive(Serialize)]
struct HolderJson<'a> {
    worker: &'a str,
    idle_ms: i64,
    deliveries: i64,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    ok: bool,
    aborted: bool,
    error: Option<&'a str>,
    tries: i64,
    enqueued_ms: i64,
    started_ms: i64,
    finished_ms: i64,
}

impl<'a> From<&'a JobInfo> for JobJson<'a> {
    fn from(j: &'a JobInfo) -> Self {
        JobJson {
            id: &j.id,
            status: &j.status,
            name: j.name.as_deref(),
            lane: j.lane.as_deref(),
            tries: j.tries,
            enqueued_ms: j.enqueued_ms,
            scheduled_ms: j.scheduled_ms,
            entry: j.entry.as_deref(),
            holder: j.holder.as_ref().map(|h| HolderJson {
                worker: &h.worker,
                idle_ms: h.idle_ms,
                deliveries: h.deliveries,
            }),
            abort_requested: j.abort_requested,
            result: j.result.as_ref().map(|r| ResultJson {
                ok: r.ok,
                aborted: r.aborted,
                error: r.error.as_deref(),
                tries: r.tries,
                enqueued_ms: r.enqueued_ms,
                started_ms: r.started_ms,
                finished_ms: r.finished_ms,
            }),
            dead_letter: j.dead.as_ref().map(LetterJson::from),
        }
    }
}
