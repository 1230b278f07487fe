//! `ardiq job ID`: one task's status (queued, scheduled, running, complete, dead,
//! not_found), attempts and timings, which worker holds it, and why it failed. Read with
//! the protocol's `inspect` script plus plain reads; the payload and a success's value
//! are never printed (they may hold secrets).

use ardiq_core::ops::{JobInfo, Recorded};
use serde::Serialize;
use serde_json::{Map, Value};

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
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
    row("id", j.id.clone());
    row("status", j.status.clone());
    if let Some(n) = &j.name {
        row("task", n.clone());
    }
    if let Some(l) = &j.lane {
        row("lane", l.clone());
    }
    if let Some(t) = j.tries {
        row("attempts", t.to_string());
    }
    if let Some(ms) = j.enqueued_ms {
        row("enqueued", when(ms));
    }
    if let Some(ms) = j.scheduled_ms {
        row("due", when(ms));
    }
    if let Some(h) = &j.holder {
        row(
            "held by",
            format!(
                "{} (lease renewed {} ago, delivered {}x)",
                h.worker,
                human_ms(h.idle_ms),
                h.deliveries
            ),
        );
    }
    if j.abort_requested {
        row("abort", "requested".into());
    }
    if let Some(r) = &j.result {
        let outcome = match (r.ok, r.aborted) {
            (true, _) => "success".to_owned(),
            (false, true) => "aborted".to_owned(),
            (false, false) => "failure".to_owned(),
        };
        row("outcome", outcome);
        if r.started_ms > 0 {
            row("started", when(r.started_ms));
        }
        row("finished", when(r.finished_ms));
        if r.started_ms > 0 && r.finished_ms >= r.started_ms {
            row("ran for", human_ms(r.finished_ms - r.started_ms));
        }
        if let Some(e) = &r.error {
            row("error", e.lines().next().unwrap_or("").to_owned());
        }
    }
    if let Some(e) = &j.result_error {
        row("result", format!("unreadable: {e}"));
    }
    if let Some(d) = &j.dead {
        row("failed", when(d.failed_ms));
        if j.result.is_none() {
            row("error", d.error.lines().next().unwrap_or("").to_owned());
        }
    }
    match &j.progress {
        Some(Ok(p)) => row("progress", progress_text(p)),
        Some(Err(why)) => row("progress", format!("unreadable: {why}")),
        None => {}
    }
    if !j.attempts.is_empty() {
        row("history", format!("{} failed attempt(s)", j.attempts.len()));
    }
    for (i, a) in j.attempts.iter().enumerate() {
        // Numbered as recorded (`n`), else by position.
        let n = match a {
            Ok(a) => a.get("n").and_then(int).unwrap_or(i as i64 + 1),
            Err(_) => i as i64 + 1,
        };
        let text = match a {
            Ok(a) => attempt_text(a),
            Err(why) => format!("unreadable: {why}"),
        };
        row(&format!("  #{n}"), text);
    }
    // Ids, names, workers, errors and progress come from Redis: escaped (see `escape`).
    for (k, v) in rows {
        println!("{k:<10} {}", printable(&v));
    }
}

/// A whole number, also from a float (what a Lua JSON encoder may write).
fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// `{"v", "m", "t", "at"}` for people: `42%: resizing (attempt 2, reported <when>)`; a
/// value that is an object is shown as JSON, and a record of another shape whole.
fn progress_text(p: &Map<String, Value>) -> String {
    let Some(v) = p.get("v") else {
        return Value::Object(p.clone()).to_string();
    };
    let mut out = match v {
        Value::Number(n) => format!("{n}%"),
        other => other.to_string(),
    };
    if let Some(m) = p.get("m").and_then(Value::as_str) {
        out.push_str(&format!(": {}", first_line(m)));
    }
    let mut about = Vec::new();
    if let Some(t) = p.get("t").and_then(int) {
        about.push(format!("attempt {t}"));
    }
    if let Some(at) = p.get("at").and_then(int) {
        about.push(format!("reported {}", when(at)));
    }
    if !about.is_empty() {
        out.push_str(&format!(" ({})", about.join(", ")));
    }
    out
}

/// `{"n", "k", "w", "st", "fin", "err"}` for people: `retry <when> after 1.2s on w-1:
/// ValueError('boom')` (the first line of the error).
fn attempt_text(a: &Map<String, Value>) -> String {
    let mut out = a
        .get("k")
        .and_then(Value::as_str)
        .unwrap_or("failed")
        .to_owned();
    let (st, fin) = (a.get("st").and_then(int), a.get("fin").and_then(int));
    if let Some(fin) = fin {
        out.push_str(&format!(" {}", when(fin)));
    }
    if let (Some(st), Some(fin)) = (st, fin) {
        if st > 0 && fin >= st {
            out.push_str(&format!(" after {}", human_ms(fin - st)));
        }
    }
    if let Some(w) = a.get("w").and_then(Value::as_str) {
        out.push_str(&format!(" on {w}"));
    }
    if let Some(e) = a.get("err").and_then(Value::as_str) {
        out.push_str(&format!(": {}", first_line(e)));
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `job --json`: everything known about one task (never its payload or its value).
/// A task as `job --json` shows it (also the dashboard's `api/queues/{q}/jobs/{id}`).
pub fn to_json(j: &JobInfo) -> Value {
    serde_json::to_value(JobJson::from(j)).unwrap_or_default()
}

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
    /// Why `P result:<id>` could not be read (`result` is null then).
    result_error: Option<&'a str>,
    /// The latest progress: the recorded object, null, or a string saying why it is
    /// unreadable.
    progress: Option<RecordedJson<'a>>,
    /// The failed attempts, oldest first: objects, or strings for unreadable ones.
    attempts: Vec<RecordedJson<'a>>,
}

/// A recorded JSON object as it was, or `"unreadable: <why>"`.
#[derive(Serialize)]
#[serde(untagged)]
enum RecordedJson<'a> {
    Object(&'a Map<String, Value>),
    Unreadable(String),
}

impl<'a> From<&'a Recorded> for RecordedJson<'a> {
    fn from(r: &'a Recorded) -> Self {
        match r {
            Ok(object) => RecordedJson::Object(object),
            Err(why) => RecordedJson::Unreadable(format!("unreadable: {why}")),
        }
    }
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
            result_error: j.result_error.as_deref(),
            progress: j.progress.as_ref().map(RecordedJson::from),
            attempts: j.attempts.iter().map(RecordedJson::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        ardiq_core::ops::parse_recorded(text.as_bytes()).unwrap()
    }

    #[test]
    fn progress_reads_for_people() {
        let p = object(r#"{"v": 42.5, "m": "resizing\nimages", "t": 2, "at": 86400000}"#);
        assert_eq!(
            progress_text(&p),
            "42.5%: resizing (attempt 2, reported 1970-01-02T00:00:00.000Z)"
        );
        let p = object(r#"{"v": {"done": 3, "of": 9}, "m": null}"#);
        assert_eq!(progress_text(&p), r#"{"done":3,"of":9}"#);
        // Another shape: shown whole, never dropped.
        assert_eq!(progress_text(&object(r#"{"x": 1}"#)), r#"{"x":1}"#);
    }

    #[test]
    fn attempts_read_for_people() {
        let a = object(
            r#"{"n": 1, "k": "retry", "w": "w-1", "st": 86400000, "fin": 86401200.0,
                "err": "ValueError('boom')\nTraceback"}"#,
        );
        assert_eq!(
            attempt_text(&a),
            "retry 1970-01-02T00:00:01.200Z after 1.2s on w-1: ValueError('boom')"
        );
        // Lost before it started: no run time.
        let a = object(r#"{"n": 2, "k": "lost", "st": 0, "fin": 86400000}"#);
        assert_eq!(attempt_text(&a), "lost 1970-01-02T00:00:00.000Z");
        assert_eq!(attempt_text(&object("{}")), "failed");
    }

    #[test]
    fn json_keeps_objects_and_says_why_others_are_unreadable() {
        let j = JobInfo {
            id: "t1".into(),
            status: "running".into(),
            progress: Some(Ok(object(r#"{"v": 10, "m": null, "t": 1, "at": 5}"#))),
            attempts: vec![
                Ok(object(r#"{"n": 1, "k": "retry"}"#)),
                Err("not JSON: EOF while parsing".into()),
            ],
            ..JobInfo::default()
        };
        let doc: Value = serde_json::to_value(JobJson::from(&j)).unwrap();
        assert_eq!(doc["progress"]["v"], 10);
        assert_eq!(doc["attempts"][0]["k"], "retry");
        assert_eq!(
            doc["attempts"][1],
            "unreadable: not JSON: EOF while parsing"
        );
        assert_eq!(doc["result_error"], Value::Null);
        let none = serde_json::to_value(JobJson::from(&JobInfo::default())).unwrap();
        assert_eq!(none["progress"], Value::Null);
        assert_eq!(none["attempts"], serde_json::json!([]));
    }
}
