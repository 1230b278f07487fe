//! One task, as `ardiq job` shows it: the `inspect` script, then the holder, the result
//! record and the dead letter.

use redis::Value;

use super::dead::DeadLetter;
use super::recorded::Recorded;
use super::result::ResultRecord;
use super::{Client, OpsError};
use crate::keys::{Keys, GROUP};
use crate::reply;
use crate::scripts;

impl Client {
    /// The `inspect` script's reply for task `id` (status, name, payload, times, tries
    /// and lane while live; see its header).
    pub(super) async fn inspect(&mut self, keys: &Keys, id: &str) -> Result<Value, OpsError> {
        let mut inv = scripts::INSPECT.prepare_invoke();
        inv.key(keys.job(id)).key(keys.result(id));
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(GROUP).arg(keys.lanes().len());
        for lane in keys.lanes() {
            inv.arg(lane);
        }
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Everything known about one task: its status, attempts and timings, its progress
    /// and its failed attempts.
    pub async fn job(&mut self, keys: &Keys, id: &str) -> Result<JobInfo, OpsError> {
        let reply = self.inspect(keys, id).await?;
        let parts = reply::array(&reply).unwrap_or_default();
        let status = parts
            .first()
            .and_then(reply::string)
            .unwrap_or_else(|| "not_found".to_owned());
        let mut info = JobInfo {
            id: id.to_owned(),
            status,
            ..JobInfo::default()
        };
        if parts.len() >= 7 {
            info.name = parts.get(1).and_then(reply::string);
            info.enqueued_ms = parts.get(3).and_then(reply::int);
            info.tries = parts.get(4).and_then(reply::int);
            info.scheduled_ms = parts.get(5).and_then(reply::int).filter(|ms| *ms > 0);
            info.lane = parts.get(6).and_then(reply::string);
        }
        if matches!(info.status.as_str(), "queued" | "running") {
            let (entry, abort): (Option<String>, Option<String>) = self
                .query(redis::cmd("HMGET").arg(keys.job(id)).arg("e").arg("a"))
                .await?;
            info.abort_requested = abort.as_deref() == Some("1");
            let stream = info
                .lane
                .as_deref()
                .and_then(|l| keys.lane_index(l))
                .map(|i| keys.stream(i).to_owned());
            if let (Some(eid), Some(stream)) = (&entry, stream) {
                let p: Value = self
                    .query(
                        redis::cmd("XPENDING")
                            .arg(&stream)
                            .arg(GROUP)
                            .arg(eid)
                            .arg(eid)
                            .arg(1),
                    )
                    .await
                    .unwrap_or(Value::Nil);
                let row = reply::array(&p)
                    .and_then(|a| a.first())
                    .and_then(reply::array)
                    .unwrap_or_default();
                if row.len() >= 4 {
                    info.holder = Some(Holder {
                        worker: reply::string(&row[1]).unwrap_or_default(),
                        idle_ms: reply::int(&row[2]).unwrap_or(0),
                        deliveries: reply::int(&row[3]).unwrap_or(0),
                    });
                }
            }
            info.entry = entry;
        }
        let blob: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(keys.result(id))).await?;
        match blob.as_deref().map(ResultRecord::decode) {
            Some(Ok(record)) => info.result = Some(record),
            Some(Err(e)) => info.result_error = Some(e.to_string()),
            None => {}
        }
        info.progress = self.progress(keys, id).await?;
        info.attempts = self.attempts(keys, id).await?;
        info.dead = self.dead_letter(keys, id).await?;
        if info.dead.is_some() && matches!(info.status.as_str(), "complete" | "not_found") {
            info.status = "dead".to_owned();
        }
        if let Some(r) = &info.result {
            info.tries = info.tries.or(Some(r.tries));
            info.enqueued_ms = info.enqueued_ms.or(Some(r.enqueued_ms).filter(|v| *v > 0));
        }
        if let Some(d) = &info.dead {
            info.name = info.name.take().or_else(|| Some(d.fn_name.clone()));
            info.lane = info.lane.take().or_else(|| Some(d.lane.clone()));
            info.tries = info.tries.or(Some(d.tries));
        }
        Ok(info)
    }
}

/// Who holds a delivered task.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    /// The consumer (worker id).
    pub worker: String,
    /// Since its lease was last renewed, ms.
    pub idle_ms: i64,
    /// Times this entry was delivered.
    pub deliveries: i64,
}

/// One task, as `ardiq job` shows it.
#[derive(Debug, Clone, Default)]
pub struct JobInfo {
    /// The task id.
    pub id: String,
    /// `queued`, `scheduled`, `running`, `complete`, `dead` or `not_found`.
    pub status: String,
    /// The task name.
    pub name: Option<String>,
    /// Its lane.
    pub lane: Option<String>,
    /// Attempts made so far.
    pub tries: Option<i64>,
    /// Enqueued at, epoch ms.
    pub enqueued_ms: Option<i64>,
    /// Due at, epoch ms (scheduled tasks).
    pub scheduled_ms: Option<i64>,
    /// Its stream entry (queued or running).
    pub entry: Option<String>,
    /// The worker holding it (running).
    pub holder: Option<Holder>,
    /// An abort was requested and its worker has not finished it yet.
    pub abort_requested: bool,
    /// The result record, while it is kept.
    pub result: Option<ResultRecord>,
    /// Why the bytes under `P result:<id>` are not a result record (then `result` is
    /// `None`).
    pub result_error: Option<String>,
    /// The latest progress the task reported (`{"v", "m", "t", "at"}`), while it is kept.
    pub progress: Option<Recorded>,
    /// Its failed attempts, oldest first (`{"n", "k", "w", "st", "fin", "err"}` each).
    pub attempts: Vec<Recorded>,
    /// The dead letter, if it has one.
    pub dead: Option<DeadLetter>,
}
