//! `ardiq dlq list|replay|delete`: the dead letters of one queue. Replay and delete go
//! through the protocol's `replay` and `delete_dead` scripts, as `app.replay()` and
//! `app.delete_dead()` do. Payloads are never printed (arguments may hold secrets).

use ardiq_core::ops::{Client, DeadLetter};
use ardiq_core::Keys;
use serde::Serialize;

use crate::cli::{DlqAction, DlqArgs, IdsArgs};
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, exit, when};

pub fn run(args: DlqArgs) -> i32 {
    let code = match dlq(&args) {
        Ok(c) => c,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn dlq(args: &DlqArgs) -> Result<i32, Failure> {
    let target = ops::resolve(&args.queue)?;
    let queue = ops::need_queue(&target)?;
    let json = args.queue.json;
    let rt = ops::runtime()?;
    rt.block_on(async {
        let mut client = ops::connect(&target.url).await?;
        let keys = ops::keys(&mut client, &queue, target.lanes.as_deref()).await?;
        match &args.action {
            DlqAction::List { limit, offset } => {
                list(&mut client, &keys, *offset, *limit, json).await
            }
            DlqAction::Replay(ids) => each(&mut client, &keys, ids, Action::Replay, json).await,
            DlqAction::Delete(ids) => each(&mut client, &keys, ids, Action::Delete, json).await,
        }
    })
}

async fn list(
    client: &mut Client,
    keys: &Keys,
    offset: usize,
    limit: usize,
    json: bool,
) -> Result<i32, Failure> {
    let (total, letters) = client
        .dead_letters(keys, offset, limit)
        .await
        .map_err(ops::failure)?;
    if json {
        ops::print_json(&ListJson {
            total,
            dead_letters: letters.iter().map(LetterJson::from).collect(),
        });
        return Ok(code::OK);
    }
    println!(
        "{total} dead letter(s){}",
        if letters.len() < total as usize {
            format!(", showing {}", letters.len())
        } else {
            String::new()
        }
    );
    // Ids, names and errors come from Redis: escaped (see `escape`).
    for d in &letters {
        println!(
            "{}  {}  lane={} tries={} failed={}\n    {}",
            printable(&d.id),
            printable(&d.fn_name),
            printable(&d.lane),
            d.tries,
            when(d.failed_ms),
            printable(first_line(&d.error))
        );
    }
    Ok(code::OK)
}

/// `dlq list --json`.
#[derive(Serialize)]
struct ListJson<'a> {
    total: u64,
    dead_letters: Vec<LetterJson<'a>>,
}

/// One dead letter in `--json` output (`dlq list`, `job`).
/// A dead letter as `dlq list --json` shows it (also the dashboard's `api/.../dead`).
pub fn letter_json(d: &DeadLetter) -> serde_json::Value {
    serde_json::to_value(LetterJson::from(d)).unwrap_or_default()
}

#[derive(Serialize)]
pub struct LetterJson<'a> {
    id: &'a str,
    name: &'a str,
    lane: &'a str,
    error: &'a str,
    tries: i64,
    enqueued_ms: i64,
    failed_ms: i64,
    /// RFC 3339.
    failed: String,
}

impl<'a> From<&'a DeadLetter> for LetterJson<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        LetterJson {
            id: &d.id,
            name: &d.fn_name,
            lane: &d.lane,
            error: &d.error,
            tries: d.tries,
            enqueued_ms: d.enqueued_ms,
            failed_ms: d.failed_ms,
            failed: when(d.failed_ms),
        }
    }
}

/// `dlq replay|delete --json`: how many were done (under `replayed` or `deleted`), and
/// each id's status.
#[derive(Serialize)]
struct EachJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<usize>,
    results: Vec<StatusJson<'a>>,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    id: &'a str,
    status: &'static str,
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// What the `replay` (`replay` set) or `delete_dead` script's reply means, as `--json`
/// (and the dashboard) say it.
pub fn outcome(replay: bool, reply: i64) -> &'static str {
    match (replay, reply) {
        (true, 1) => "replayed",
        (false, 1) => "deleted",
        (_, 0) => "not_found",
        (_, -1) => "live", // a live task holds the id
        (true, -3) => "needs_key",
        (true, -4) => "bad_seal",
        _ => "unknown_lane",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Delete,
}

async fn each(
    client: &mut Client,
    keys: &Keys,
    ids: &IdsArgs,
    action: Action,
    json: bool,
) -> Result<i32, Failure> {
    let ids = if ids.all {
        client.dead_ids(keys).await.map_err(ops::failure)?
    } else {
        ids.ids.clone()
    };
    let mut results = Vec::with_capacity(ids.len());
    let mut missed = 0;
    for id in &ids {
        let r = match action {
            Action::Replay => {
                client
                    .replay(keys, id, &signing_keys(), ardiq_core::sign::DEFAULT_TTL_MS)
                    .await
            }
            Action::Delete => client.delete_dead(keys, id).await,
        }
        .map_err(ops::failure)?;
        let status = outcome(action == Action::Replay, r);
        if r != 1 {
            missed += 1;
        }
        results.push((id.clone(), status));
    }
    let done = results.len() - missed;
    if json {
        let replay = action == Action::Replay;
        ops::print_json(&EachJson {
            replayed: replay.then_some(done),
            deleted: (!replay).then_some(done),
            results: results
                .iter()
                .map(|(id, status)| StatusJson { id, status })
                .collect(),
        });
    } else {
        let verb = if action == Action::Replay {
            "replayed"
        } else {
            "deleted"
        };
        for (id, status) in &results {
            let id = printable(id);
            match *status {
                "not_found" => eprintln!(
                    "error: `{id}` is not a dead letter of queue `{}`",
                    printable(queue_name(keys))
                ),
                "live" => eprintln!("error: `{id}` is queued or running again; not replayed"),
                "unknown_lane" => eprintln!(
                    "error: `{id}` belongs to a lane not in {}; pass `--lanes`",
                    printable(&format!("{:?}", keys.lanes()))
                ),
                "needs_key" => eprintln!(
                    "error: `{id}` is signed: replaying it seals it again, which needs the \
                     signing key\n\nhint: set `ARDIQ_SIGNING_KEY` (or `ARDIQ_SIGNING_KEY_FILE`)"
                ),
                "bad_seal" => eprintln!(
                    "error: the seal of `{id}` does not verify under the signing key (another \
                     key, an altered payload, or a protocol version 1 seal); not replayed"
                ),
                _ => {}
            }
        }
        println!("{verb} {done} dead letter(s)");
    }
    Ok(if missed > 0 {
        exit::NOT_FOUND
    } else {
        code::OK
    })
}

/// The signing keys the environment gives the ops tools (read at start: `secrets` takes
/// them out of the environment before any command runs).
fn signing_keys() -> Vec<ardiq_core::SigningKey> {
    crate::secrets::signing_keys()
}

fn queue_name(keys: &Keys) -> &str {
    keys.prefix()
        .strip_prefix("ardiq:{")
        .and_then(|s| s.strip_suffix("}:"))
        .unwrap_or(keys.prefix())
}
