//! `ardiq`: the native ArdiQ worker. Parses the command line and runs the command; the
//! command returns the exit code (or ends the process itself once Python runs, see
//! `embed::exit`).
//!
//! Layout: `cli` (clap types), `commands/` (one file per subcommand), `supervisor`
//! (`--workers N`), `interpreter` (which Python environment) and `embed` (the
//! interpreter's start and exit), `app` (importing `MODULE:ATTR`, reading settings),
//! `executor` (the engine's executor over `ardiq._bridge`), `signals`, `logging`,
//! `banner`, `failure` (errors and exit codes).

mod app;
mod banner;
mod cli;
mod commands;
mod embed;
mod executor;
mod failure;
mod interpreter;
mod logging;
mod signals;
mod supervisor;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
    };
    std::process::exit(code);
}
