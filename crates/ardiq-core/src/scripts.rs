//! The protocol's Lua scripts, compiled into the engine.
//!
//! Each script is `_lib.lua` followed by the script itself, the same text the Python
//! package loads, so both sides run one copy of every state transition. redis-rs sends
//! `EVALSHA` and falls back to `SCRIPT LOAD` on `NOSCRIPT` (a restarted or flushed server).

use std::sync::LazyLock;

use redis::Script;

macro_rules! lua {
    ($name:literal) => {
        lua!($name, "")
    };
    // `head`: a shebang for the scripts Redis must refuse while out of memory (see
    // `OOM_REFUSED` in python/ardiq/protocol.py); empty for the rest.
    ($name:literal, $head:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                $head,
                include_str!("../../../python/ardiq/lua/_lib.lua"),
                // A newline between the two files so the last line of `_lib.lua` never
                // runs into the first line of the script.
                "\n",
                include_str!(concat!("../../../python/ardiq/lua/", $name, ".lua"))
            ))
        })
    };
}

/// `fetch`: read new entries, highest lane first, creating missing groups.
pub static FETCH: LazyLock<Script> = lua!("fetch");
/// `finish`: ack + record the outcome of finished attempts.
pub static FINISH: LazyLock<Script> = lua!("finish");
/// `started`: mark suspect entries (`r` >= 1) as started before running them, so
/// `reclaim` blames only a task that really ran on a worker that died.
pub static STARTED: LazyLock<Script> = lua!("started");
/// `renew`: reset the idle time of entries this consumer still owns.
pub static RENEW: LazyLock<Script> = lua!("renew");
/// `reclaim`: re-queue (or dead-letter) entries taken over with XAUTOCLAIM.
pub static RECLAIM: LazyLock<Script> = lua!("reclaim");
/// `promote`: move due delayed tasks to their streams.
pub static PROMOTE: LazyLock<Script> = lua!("promote");
/// `handback`: return prefetched entries to their streams when stopping.
pub static HANDBACK: LazyLock<Script> = lua!("handback");
/// `retire`: leave the groups (where nothing is pending) and drop the heartbeat.
pub static RETIRE: LazyLock<Script> = lua!("retire");
/// `cron`: enqueue one cron occurrence, once across all workers.
pub static CRON: LazyLock<Script> = lua!("cron");
/// `enqueue`: the producer's script. The engine never enqueues; exposed for tests and
/// tools written in Rust.
pub static ENQUEUE: LazyLock<Script> = lua!("enqueue", "#!lua\n");
/// `abort`: the producer's abort request. Exposed for tests and tools.
pub static ABORT: LazyLock<Script> = lua!("abort");
/// `inspect`: one task's status and what it is. Used by `ardiq job`.
pub static INSPECT: LazyLock<Script> = lua!("inspect");
/// `replay`: re-queue a dead letter. Used by `ardiq dlq replay`.
pub static REPLAY: LazyLock<Script> = lua!("replay");
/// `delete_dead`: drop a dead letter. Used by `ardiq dlq delete`.
pub static DELETE_DEAD: LazyLock<Script> = lua!("delete_dead");
/// `purge`: drop queued and scheduled tasks (finalized as aborted). Used by `ardiq purge`.
pub static PURGE: LazyLock<Script> = lua!("purge");
/// `queue_size`: undelivered plus delayed tasks. Used by `ardiq check` (a read that
/// exercises the scripting permission on the queue's keys).
pub static QUEUE_SIZE: LazyLock<Script> = lua!("queue_size");
