//! `ardiq info`: per queue and lane, what waits, what is delivered (pending) and how much
//! of that live workers hold (running); scheduled and dead counts; the workers with their
//! latest heartbeat. Without `--queue` or `--app`, every queue in the database.

use ardiq_core::ops::{Client, LaneStats, QueueStats, WorkerInfo};
use serde::Serialize;

use crate::cli::InfoArgs;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, human_ms, when};

pub fn run(args: InfoArgs) -> i32 {
    let code = match info(&args) {
        Ok(()) => code::OK,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn info(args: &InfoArgs) -> Result<(), Failure> {
    let target = ops::resolve(&args.queue)?;
    let rt = ops::runtime()?;
    let (url, all) = rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let queues = match &target.queue {
            Some(q) => vec![q.clone()],
            None => client.discover_queues().await.map_err(ops::failure)?,
        };
        let mut all = Vec::new();
        for q in queues {
            // Discovered queues use the lanes found in Redis; `--lanes` applies to all.
            all.push(stats(&mut client, &q, target.lanes.as_deref()).await?);
        }
        Ok::<_, Failure>((client.masked_url().to_owned(), all))
    })?;
    if args.queue.json {
        ops::print_json(&InfoJson {
            redis: &url,
            queues: all.iter().map(QueueJson::from).collect(),
        });
        return Ok(());
    }
    if all.is_empty() {
        println!("no ArdiQ queue at `{}`", printable(&url));
        return Ok(());
    }
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_text(s, &url);
    }
    Ok(())
}

async fn stats(
    client: &mut Client,
    queue: &str,
    lanes: Option<&[String]>,
) -> Result<QueueStats, Failure> {
    let keys = ops::keys(client, queue, lanes).await?;
    client.queue_stats(&keys).await.map_err(ops::failure)
}

/// Queue, lane and worker names come from Redis: escaped (see `escape`).
fn print_text(s: &QueueStats, url: &str) {
    println!("queue `{}` at `{}`", printable(&s.queue), printable(url));
    println!(
        "  {:<16} {:>9} {:>9} {:>9}  oldest waiting",
        "lane", "waiting", "pending", "running"
    );
    // Highest priority first: the order workers read in.
    for l in s.lanes.iter().rev() {
        let oldest = l.oldest_waiting_age_ms.map_or("-".to_owned(), human_ms);
        let note = match (l.group, s.lane_paused(&l.lane)) {
            (true, false) => "",
            (true, true) => "  (paused)",
            (false, false) => "  (no consumer group yet)",
            (false, true) => "  (no consumer group yet, paused)",
        };
        println!(
            "  {:<16} {:>9} {:>9} {:>9}  {oldest}{note}",
            printable(&l.lane),
            l.waiting,
            l.pending,
            l.running
        );
    }
    if s.parked > 0 {
        println!(
            "  scheduled {}, parked {}, dead {}",
            s.scheduled, s.parked, s.dead
        );
    } else {
        println!("  scheduled {}, dead {}", s.scheduled, s.dead);
    }
    if s.queue_paused() {
        println!("  paused: the whole queue (`ardiq resume` resumes it)");
    }
    let alive = s.workers.iter().filter(|w| w.alive).count();
    println!("  workers: {alive} alive, {} gone", s.workers.len() - alive);
    for w in &s.workers {
        let beat = if w.last_beat_ms > 0 {
            format!("last heartbeat {} ago", human_ms(w.age_ms))
        } else {
            "no heartbeat".to_owned()
        };
        println!(
            "    {:<28} {:<5} {beat}, holds {}",
            printable(&w.id),
            if w.alive { "alive" } else { "gone" },
            w.pending
        );
    }
}

/// One queue as `info --json` shows it (also the dashboard's `api/queues`).
pub fn to_json(s: &QueueStats) -> serde_json::Value {
    serde_json::to_value(QueueJson::from(s)).unwrap_or_default()
}

/// `info --json`: the queues read, at one Redis.
#[derive(Serialize)]
struct InfoJson<'a> {
    redis: &'a str,
    queues: Vec<QueueJson<'a>>,
}

#[derive(Serialize)]
struct QueueJson<'a> {
    queue: &'a str,
    server_ms: i64,
    scheduled: u64,
    parked: u64,
    dead: u64,
    /// The whole queue is paused (`ardiq pause` without `--lane`).
    paused: bool,
    lanes: Vec<LaneJson<'a>>,
    workers: Vec<WorkerJson<'a>>,
}

#[derive(Serialize)]
struct LaneJson<'a> {
    lane: &'a str,
    group: bool,
    waiting: u64,
    pending: u64,
    running: u64,
    depth: u64,
    oldest_waiting_ms: Option<i64>,
    /// Workers take nothing from it: paused by itself or with the queue.
    paused: bool,
}

#[derive(Serialize)]
struct WorkerJson<'a> {
    id: &'a str,
    alive: bool,
    /// RFC 3339 (`-` when none).
    last_heartbeat: String,
    last_heartbeat_ms: i64,
    age_ms: i64,
    pending: u64,
}

impl<'a> From<&'a QueueStats> for QueueJson<'a> {
    fn from(s: &'a QueueStats) -> Self {
        QueueJson {
            queue: &s.queue,
            server_ms: s.server_ms,
            scheduled: s.scheduled,
            parked: s.parked,
            dead: s.dead,
            paused: s.queue_paused(),
            lanes: s
                .lanes
                .iter()
                .map(|l| LaneJson {
                    paused: s.lane_paused(&l.lane),
                    ..LaneJson::from(l)
                })
                .collect(),
            workers: s.workers.iter().map(WorkerJson::from).collect(),
        }
    }
}

impl<'a> From<&'a LaneStats> for LaneJson<'a> {
    fn from(l: &'a LaneStats) -> Self {
        LaneJson {
            lane: &l.lane,
            group: l.group,
            waiting: l.waiting,
            pending: l.pending,
            running: l.running,
            depth: l.depth(),
            oldest_waiting_ms: l.oldest_waiting_age_ms,
            paused: false,
        }
    }
}

impl<'a> From<&'a WorkerInfo> for WorkerJson<'a> {
    fn from(w: &'a WorkerInfo) -> Self {
        WorkerJson {
            id: &w.id,
            alive: w.alive,
            last_heartbeat: when(w.last_beat_ms),
            last_heartbeat_ms: w.last_beat_ms,
            age_ms: w.age_ms,
            pending: w.pending,
        }
    }
}
