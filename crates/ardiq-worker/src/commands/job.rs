//! `ardiq job ID`: one task's status (queued, scheduled, running, complete, dead,
//! not_found), attempts and timings, which worker holds it, and why it failed. Read with
//! the protocol's `inspect` script plus plain reads; the payload and a success's value
//! are never printed (they may hold secrets).

use ardiq_core::ops::JobInfo;

use crate::cli::JobArgs;
use crate::commands::dlq::letter_json;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, exit, human_ms, when, Json};

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
        to_json(&info).print();
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

pub fn to_json(j: &JobInfo) -> Json {
    Json::Obj(vec![
        ("id", Json::str(&j.id)),
        ("status", Json::str(&j.status)),
        ("name", Json::opt_str(j.name.clone())),
        ("lane", Json::opt_str(j.lane.clone())),
        ("tries", Json::opt_int(j.tries)),
        ("enqueued_ms", Json::opt_int(j.enqueued_ms)),
        ("scheduled_ms", Json::opt_int(j.scheduled_ms)),
        ("entry", Json::opt_str(j.entry.clone())),
        (
            "holder",
            j.holder.as_ref().map_or(Json::Null, |h| {
                Json::Obj(vec![
                    ("worker", Json::str(&h.worker)),
                    ("idle_ms", Json::Int(h.idle_ms)),
                    ("deliveries", Json::Int(h.deliveries)),
                ])
            }),
        ),
        ("abort_requested", Json::Bool(j.abort_requested)),
        (
            "result",
            j.result.as_ref().map_or(Json::Null, |r| {
                Json::Obj(vec![
                    ("ok", Json::Bool(r.ok)),
                    ("aborted", Json::Bool(r.aborted)),
                    ("error", Json::opt_str(r.error.clone())),
                    ("tries", Json::Int(r.tries)),
                    ("enqueued_ms", Json::Int(r.enqueued_ms)),
                    ("started_ms", Json::Int(r.started_ms)),
                    ("finished_ms", Json::Int(r.finished_ms)),
                ])
            }),
        ),
        (
            "dead_letter",
            j.dead.as_ref().map_or(Json::Null, letter_json),
        ),
    ])
}
