//! What operators' tools read and change: queue statistics, dead letters, purge, one
//! job, and the checks behind a health probe. The `ardiq` commands `info`, `dlq`,
//! `purge`, `job` and `check`, and the metrics endpoint, are thin layers over this.
//!
//! Reads are plain commands (XLEN, XPENDING, XRANGE, ZCARD, ...): they change
//! nothing, so they need no script. Every change goes through a protocol script
//! (`replay`, `delete_dead`, `purge`), as the engine's do. Nothing here runs a task.
//!
//! One [`Client`] (`client`: the connection, with a timeout on everything) whose methods
//! live beside what they do, one job per module:
//! * `error`: [`OpsError`], and how a Redis error is sorted into its kinds;
//! * `discover`: the queues and lanes a database holds (`SCAN`);
//! * `stats`: [`QueueStats`] and [`LaneStats`], a queue's counts per lane;
//! * `workers`: [`WorkerInfo`], the heartbeats and who holds what;
//! * `dead`: [`DeadLetter`]s, `replay` and `delete_dead`;
//! * `purge`: [`PurgeReport`], dropping what waits;
//! * `job`: [`JobInfo`], one task;
//! * `recorded`: its progress and failed attempts, JSON texts workers record;
//! * `result`: [`ResultRecord`], the result record (`msgpack` reads it);
//! * `functions`: installing and listing the function library;
//! * `check`: what `ardiq check` verifies;
//! * `browse`: paged reads for the dashboard, and `run_now`;
//! * `cron`: pausing, resuming and triggering crons.

mod browse;
mod check;
mod client;
mod cron;
mod dead;
mod discover;
mod error;
mod functions;
mod job;
mod msgpack;
mod pause;
mod purge;
mod recorded;
mod result;
mod stats;
mod workers;

pub use browse::{
    HeldEntry, HistoryEntry, HistoryPage, Payload, ScheduledPage, ScheduledTask, Throughput,
    HISTORY_SCAN, STAT_KINDS,
};
pub use client::Client;
pub use cron::triggered_id;
pub use dead::DeadLetter;
pub use error::OpsError;
pub use job::{Holder, JobInfo};
pub use pause::ALL as PAUSE_ALL;
pub use purge::PurgeReport;
pub use recorded::{parse as parse_recorded, Recorded, Unreadable};
pub use result::{RecordError, ResultRecord};
pub use stats::{LaneStats, QueueStats};
pub use workers::{WorkerInfo, WORKERS_LISTED, WORKER_ALIVE_MS};
