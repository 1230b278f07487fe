//! `ardiq info`: per queue and lane, what waits, what is delivered (pending) and how much
//! of that live workers hold (running); scheduled and dead counts; the workers with their
//! latest heartbeat. Without `--queue` or `--app`, every queue in the database.

use ardiq_core::ops::{Client, QueueStats};

use crate::cli::InfoArgs;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, human_ms, when, Json};

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
        Json::Obj(vec![
            ("redis", Json::str(url)),
            ("queues", Json::Arr(all.iter().map(to_json).collect())),
        ])
        .print();
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
        let note = if l.group {
            ""
        } else {
            "  (no consumer group yet)"
        };
        println!(
            "  {:<16} {:>9} {:>9} {:>9}  {oldest}{note}",
            printable(&l.lane),
            l.waiting,
            l.pending,
            l.running
        );
    }
    println!("  scheduled {}, dead {}", s.scheduled, s.dead);
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

pub fn to_json(s: &QueueStats) -> Json {
    Json::Obj(vec![
        ("queue", Json::str(&s.queue)),
        ("server_ms", Json::Int(s.server_ms)),
        ("scheduled", Json::Int(s.scheduled as i64)),
        ("dead", Json::Int(s.dead as i64)),
        (
            "lanes",
            Json::Arr(
                s.lanes
                    .iter()
                    .map(|l| {
                        Json::Obj(vec![
                            ("lane", Json::str(&l.lane)),
                            ("group", Json::Bool(l.group)),
                            ("waiting", Json::Int(l.waiting as i64)),
                            ("pending", Json::Int(l.pending as i64)),
                            ("running", Json::Int(l.running as i64)),
                            ("depth", Json::Int(l.depth() as i64)),
                            ("oldest_waiting_ms", Json::opt_int(l.oldest_waiting_age_ms)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "workers",
            Json::Arr(
                s.workers
                    .iter()
                    .map(|w| {
                        Json::Obj(vec![
                            ("id", Json::str(&w.id)),
                            ("alive", Json::Bool(w.alive)),
                            ("last_heartbeat", Json::str(when(w.last_beat_ms))),
                            ("last_heartbeat_ms", Json::Int(w.last_beat_ms)),
                            ("age_ms", Json::Int(w.age_ms)),
                            ("pending", Json::Int(w.pending as i64)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}
