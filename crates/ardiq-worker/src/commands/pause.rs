//! `ardiq pause [--lane L]` and `ardiq resume [--lane L]`: write `P paused`
//! (PROTOCOL.md, Pausing), as `app.pause()` and `app.resume()` do. Workers read it about
//! once a second.

use ardiq_core::ops::PAUSE_ALL;
use serde::Serialize;

use crate::cli::PauseArgs;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops;

/// `pause --json` / `resume --json`.
#[derive(Serialize)]
struct PauseJson<'a> {
    queue: &'a str,
    /// The lane acted on; `null` for the whole queue.
    lane: Option<&'a str>,
    /// `false` when it already was in the asked state.
    changed: bool,
    /// What is paused now (`*`: the whole queue).
    paused: Vec<String>,
}

pub fn run(args: PauseArgs, pause: bool) -> i32 {
    let code = match act(&args, pause) {
        Ok(()) => code::OK,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn act(args: &PauseArgs, pause: bool) -> Result<(), Failure> {
    let target = ops::resolve(&args.queue)?;
    let queue = ops::need_queue(&target)?;
    let lane = args.lane.as_deref().map(str::trim);
    let rt = ops::runtime()?;
    let (changed, paused) = rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let keys = ops::keys(&mut client, &queue, target.lanes.as_deref()).await?;
        let field = match lane {
            None => PAUSE_ALL,
            Some(l) if keys.lane_index(l).is_some() => l,
            Some(l) => {
                let lanes = keys.lanes().join(", ");
                return Err(Failure::new(
                    code::USAGE,
                    format!(
                        "lane `{}` is not one of the lanes of `{queue}` ({lanes})",
                        printable(l)
                    ),
                )
                .hint("pass `--lanes` (or `--app`) when the lane has never had a task"));
            }
        };
        let changed = if pause {
            client.pause(&keys, field).await
        } else {
            client.resume(&keys, field).await
        }
        .map_err(ops::failure)?;
        let paused = client.paused(&keys).await.map_err(ops::failure)?;
        Ok::<_, Failure>((changed, paused))
    })?;
    let names: Vec<String> = paused.into_iter().map(|(f, _)| f).collect();
    if args.queue.json {
        ops::print_json(&PauseJson {
            queue: &queue,
            lane,
            changed,
            paused: names,
        });
        return Ok(());
    }
    let what = match lane {
        None => format!("queue `{}`", printable(&queue)),
        Some(l) => format!("lane `{}` of queue `{}`", printable(l), printable(&queue)),
    };
    let verb = if pause { "paused" } else { "resumed" };
    if changed {
        println!("{verb} {what}");
    } else {
        println!(
            "{what} was already {}",
            if pause { "paused" } else { "not paused" }
        );
    }
    if !pause && lane.is_none() && !names.is_empty() {
        // Resuming the queue leaves lanes paused one by one paused: say so.
        let lanes: Vec<String> = names.iter().map(|n| printable(n).to_string()).collect();
        println!("still paused: {}", lanes.join(", "));
    }
    Ok(())
}
