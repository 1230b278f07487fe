//! The ArdiQ engine: serves one ArdiQ queue from Redis Streams and drives an
//! [`Executor`] that runs the task bodies. It knows nothing of Python; the `ardiq` binary
//! plugs an embedded interpreter in as the executor, and the tests plug in Rust ones.
//!
//! Every Redis state transition is one of the Lua scripts in `python/ardiq/lua/`
//! (compiled in, see [`scripts`]); this crate decides *when* to call them and never
//! changes state by hand. PROTOCOL.md at the repository root is the contract.
//!
//! # Layout
//!
//! Configuration and boundary:
//! * [`config`]: [`Config`] and [`CronEntry`], validation, password masking.
//! * [`executor`]: the [`Executor`] trait, [`Delivery`] batches in, [`Outcome`] batches out.
//! * [`engine`]: [`Engine`]: connects, starts the tasks below, runs the dispatcher
//!   (fetch → buffer → start) and the graceful drain.
//! * [`shutdown`]: [`StopHandle`] (first stop drains, second returns at once; a
//!   [`Recycle`] request drains too, for `--max-tasks`/`--max-memory`), handback and
//!   retire.
//! * [`report`]: [`RunReport`], [`StopReason`], live [`Counters`].
//! * [`error`]: the [`EngineError`] type.
//! * [`metrics`]: live state for health probes ([`Phase`], heartbeats, gauges) and the
//!   run-time and wait-time histograms.
//! * [`ops`]: what operators' tools read and change (queue statistics, dead letters,
//!   purge, one job with its progress and failed attempts), through the same scripts; a
//!   module directory, one job per file.
//!
//! One module per background job, each a loop on its own tokio task:
//! * `fetch`: the `fetch` script and the dedicated blocking read.
//! * `finish`: batches outcomes into `finish` calls.
//! * [`progress`]: writes what running tasks report (`progress`), before their outcome.
//! * `lease`: renews every held entry (`renew`) every `idle_timeout_ms / 3`.
//! * `reclaim`: XAUTOCLAIM with a kept cursor, then `reclaim`.
//! * `started`: marks reclaimed deliveries (`started`) before they run.
//! * `promote`: moves due delayed tasks (`promote`, two steps).
//! * `limits`: flow control: `admit` after every delivery of a limited task, `unpark`
//!   (two steps, like `promote`) for parked ones; never called without limits.
//! * `scheduler`: fires cron occurrences (`cron`); [`cron`] computes them.
//! * `abort`: the `P abort` subscription.
//! * `heartbeat`: `ZADD P workers`.
//!
//! Plumbing: [`keys`] (key names), [`scripts`], `connection` (the three kinds of
//! connection and reconnecting), `backoff` (jittered backoff, log throttling),
//! `entry` (parsing stream entries), `reply` (reading raw replies), `state` (what
//! this worker holds) and `context` (what the tasks share).
//!
//! # Use
//!
//! ```no_run
//! use std::sync::Arc;
//! use ardiq_core::{Config, Delivery, Engine, Executor, OutcomeSink, StopReason};
//!
//! /// Runs nothing, returns the payload: the smallest executor.
//! struct Echo;
//!
//! impl Executor for Echo {
//!     fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink) {
//!         // Real executors hand the batch to their own threads and return at once.
//!         outcomes.send(batch.iter().map(|d| d.ok(d.payload.clone(), 0)).collect());
//!     }
//!     fn abort(&self, _task_id: &str) {}
//! }
//!
//! # async fn demo() -> Result<(), ardiq_core::EngineError> {
//! let mut config = Config::new("redis://localhost/0", "default");
//! config.lanes = vec!["low".into(), "default".into(), "high".into()];
//! let engine = Engine::new(config)?;
//! let stop = engine.stop_handle(); // call `stop.stop()` on SIGTERM (twice: at once)
//! let report = engine.run(Arc::new(Echo)).await?;
//! assert_eq!(report.reason, StopReason::Signal);
//! # drop(stop);
//! # Ok(())
//! # }
//! ```

mod abort;
mod backoff;
pub mod config;
mod connection;
pub(crate) mod context;
pub mod cron;
pub mod engine;
pub mod entry;
pub mod error;
pub mod executor;
mod fetch;
mod finish;
mod heartbeat;
mod history;
pub mod keys;
mod lease;
mod limits;
pub mod metrics;
pub mod ops;
mod pause;
pub mod progress;
mod promote;
mod reclaim;
mod reply;
pub mod report;
pub mod retry;
mod scheduler;
pub mod scripts;
pub mod shutdown;
pub mod sign;
mod started;
mod state;

pub use config::{mask_url, Config, CronEntry, TaskLimit};
pub use cron::{CronError, CronSchedule, CronSpec, Every};
pub use engine::Engine;
pub use error::EngineError;
pub use executor::{Delivery, Executor, LiveJob, Outcome, OutcomeKind, OutcomeSink};
pub use keys::{Keys, GROUP};
pub use metrics::{Live, Phase};
pub use progress::ProgressReport;
pub use report::{Counters, CountersSnapshot, RunReport, StopReason};
pub use shutdown::{Recycle, StopHandle, StopLevel};
pub use sign::SigningKey;
