//! `ardiq-embedded`: the native ArdiQ worker, started by the `ardiq` launcher
//! (`launcher.rs`, which puts the interpreter's libpython where the loader finds it;
//! `launch` undoes that first thing). Parses the command line and runs the command; the
//! command returns the exit code (or ends the process itself once Python runs, see
//! `embed::exit`).
//!
//! Layout: `cli` (clap types), `commands/` (one file per subcommand), `supervisor`
//! (`--workers N`, recycling), `interpreter` (which Python environment) and `embed` (the
//! interpreter's start and exit), `app` (importing `MODULE:ATTR`, reading settings),
//! `executor` (the engine's executor over `ardiq._bridge`), `signals`, `logging`,
//! `banner`, `failure` (errors and exit codes), `escape` (control characters in text
//! output); `health` (liveness, the `--health-port` endpoint) on `http` (the binary's
//! HTTP server) and `notify` (systemd's `sd_notify`); `fdlimit` (the open-files limit);
//! `ops` (what `check` and the ops commands share), `cli_ops` (their clap types);
//! `recycle` (`--max-tasks`, `--max-memory`: the worker's half; the supervisor replaces
//! recycled workers); `secrets` (the Redis URL and signing keys kept out of the
//! environment task code inherits); `dashboard` (the web dashboard and its JSON API,
//! `cli_dashboard` its clap types).

mod app;
mod banner;
mod cli;
mod cli_dashboard;
mod cli_ops;
mod commands;
mod dashboard;
mod embed;
mod escape;
mod executor;
mod failure;
mod fdlimit;
mod health;
mod http;
mod interpreter;
mod launch;
mod logging;
mod notify;
mod ops;
mod recycle;
mod secrets;
mod signals;
mod supervisor;

use clap::Parser;

fn main() {
    launch::restore();
    if let Err(f) = secrets::load_files() {
        f.print();
        std::process::exit(f.code);
    }
    let cli = cli::Cli::parse();
    // Refused here rather than read as `auto` by the engine (ardiq_core::scripts).
    if let Ok(value) = std::env::var(ardiq_core::scripts::SETTING_ENV) {
        if let Err(e) = ardiq_core::scripts::parse_setting(&value) {
            eprintln!("error: {e}");
            std::process::exit(failure::code::USAGE);
        }
    }
    secrets::take();
    let code = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Check(args) => commands::check::run(args),
        cli::Command::Info(args) => commands::info::run(args),
        cli::Command::Dlq(args) => commands::dlq::run(args),
        cli::Command::Cron(args) => commands::cron::run(args),
        cli::Command::Purge(args) => commands::purge::run(args),
        cli::Command::Job(args) => commands::job::run(args),
        cli::Command::Pause(args) => commands::pause::run(args, true),
        cli::Command::Resume(args) => commands::pause::run(args, false),
        cli::Command::Functions(args) => commands::functions::run(args),
        cli::Command::Dashboard(args) => commands::dashboard::run(args),
    };
    std::process::exit(code);
}
