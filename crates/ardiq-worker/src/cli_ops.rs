//! The command line of `check` and the ops commands (`info`, `dlq`, `purge`, `job`,
//! `functions`, `cron`, `pause`, `resume`):
//! clap types only. What each does lives in `commands/`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};

/// Exit codes of `check` and the ops commands (also in the README).
pub const OPS_EXIT_CODES: &str = "\
Exit codes:
  0  all good
  1  internal error, or Redis failed a command
  2  usage error: a bad option, or MODULE:ATTR cannot be imported or is not an app
  3  the embedded Python cannot start (only when MODULE:ATTR is given)
  4  Redis is unreachable
  5  Redis refused: wrong credentials, or the ACL user lacks a command, key or channel
  6  the queue is not served: a lane has no consumer group yet (check)
  7  the worker on --health-port is not live, or not answering (check)
  8  not found: no such job, an id is not a dead letter, or no such cron (job, dlq, cron)";

/// Which queue an ops command acts on: `--queue` (with `--redis-url` and `--lanes`), or an
/// app to read them from, or (`info` only) every queue in the database.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Redis to read [default: the app's, else $REDIS_URL, else redis://localhost:6379]
    #[arg(
        long,
        env = "ARDIQ_REDIS_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: Option<String>,

    /// The queue name [default: the app's]
    #[arg(long, env = "ARDIQ_QUEUE", value_name = "NAME", global = true)]
    pub queue: Option<String>,

    /// Lane names, lowest priority first, comma-separated [default: the app's, else the
    /// lanes that have a stream in Redis]
    #[arg(
        long,
        env = "ARDIQ_LANES",
        value_name = "A,B,...",
        value_delimiter = ',',
        global = true
    )]
    pub lanes: Option<Vec<String>>,

    /// Read the queue name, lanes and Redis URL from this app (imports its module; runs
    /// no task)
    #[arg(long = "app", value_name = "MODULE:ATTR", global = true)]
    pub app: Option<String>,

    /// The Python interpreter for `--app` [default: as `ardiq run`]
    #[arg(long, env = "ARDIQ_PYTHON", value_name = "PATH", global = true)]
    pub python: Option<PathBuf>,

    /// Machine-readable output: one JSON document on stdout
    #[arg(long, action = ArgAction::SetTrue, global = true)]
    pub json: bool,
}

/// Options of `ardiq check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The app, as `MODULE:ATTR` (as for `ardiq run`)
    #[arg(value_name = "MODULE:ATTR", env = "ARDIQ_APP")]
    pub target: String,

    /// Redis to check [default: the app's]
    #[arg(
        long,
        env = "ARDIQ_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Also require the worker serving this health port (on --health-host) to be live
    #[arg(long, env = "ARDIQ_HEALTH_PORT", value_name = "PORT")]
    pub health_port: Option<u16>,

    /// Where that worker's health endpoint listens
    #[arg(
        long,
        env = "ARDIQ_HEALTH_HOST",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub health_host: String,

    /// Give up on Redis (and the health endpoint) after this long
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0,
          value_parser = crate::cli::parse_seconds)]
    pub timeout: f64,

    /// The Python interpreter whose environment to import the app in
    #[arg(long, env = "ARDIQ_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,

    /// Machine-readable output: one JSON document on stdout
    #[arg(long, action = ArgAction::SetTrue)]
    pub json: bool,
}

/// Options of `ardiq info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Options of `ardiq dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,

    #[command(flatten)]
    pub queue: QueueArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// List dead letters, newest first (payloads are never shown)
    List {
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip the newest N
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Queue dead letters again under their ids, with a fresh retry budget
    Replay(IdsArgs),
    /// Forget dead letters
    Delete(IdsArgs),
}

/// Task ids, or `--all`.
#[derive(Debug, Clone, Args)]
pub struct IdsArgs {
    /// Task ids of dead letters
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,

    /// Every dead letter of the queue
    #[arg(long, action = ArgAction::SetTrue)]
    pub all: bool,
}

/// Options of `ardiq purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Really do it (without it, nothing is purged)
    #[arg(long, action = ArgAction::SetTrue)]
    pub yes: bool,

    /// Also drop tasks live workers hold (their outcomes are then ignored)
    #[arg(long, action = ArgAction::SetTrue)]
    pub force: bool,

    /// Keep the `purged` results this long (ms; 0 none, < 0 forever) [default: the
    /// app's, else 300000]
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub result_ttl_ms: Option<i64>,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Options of `ardiq pause` and `ardiq resume`.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// Only this lane [default: the whole queue]
    #[arg(long, value_name = "LANE")]
    pub lane: Option<String>,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Options of `ardiq job`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The task id
    #[arg(value_name = "ID")]
    pub id: String,

    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Options of `ardiq functions`.
#[derive(Debug, Clone, Args)]
pub struct FunctionsArgs {
    #[command(subcommand)]
    pub action: FunctionsAction,

    #[command(flatten)]
    pub queue: QueueArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FunctionsAction {
    /// Load this version's function library (`FUNCTION LOAD REPLACE`; an administrator's
    /// right). Producers and workers then need `+fcall` and no script-loading right
    Install,
    /// Show whether this version's library is loaded, and which ArdiQ libraries are
    Status,
}

/// Options of `ardiq cron`.
#[derive(Debug, Clone, Args)]
pub struct CronArgs {
    #[command(subcommand)]
    pub action: CronAction,

    #[command(flatten)]
    pub queue: QueueArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CronAction {
    /// List the crons: paused or not, the last occurrence fired and (with --app) the
    /// next one
    List,
    /// Pause a cron on every worker: its occurrences are skipped until it is resumed
    Pause(CronName),
    /// Resume a paused cron from its next occurrence (skipped ones are not made up)
    Resume(CronName),
    /// Enqueue one run of a cron now, paused or not, leaving its schedule alone (needs
    /// --app: the task, its lane and the signing key are the app's)
    Trigger(CronName),
}

/// The cron a `cron` action acts on.
#[derive(Debug, Clone, Args)]
pub struct CronName {
    /// The cron's name (its task's name)
    #[arg(value_name = "NAME")]
    pub name: String,
}
