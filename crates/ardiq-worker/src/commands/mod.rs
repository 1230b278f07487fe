//! One module per subcommand.

pub mod check;
pub mod cron;
pub mod dashboard;
pub mod dlq;
pub mod functions;
pub mod info;
pub mod job;
pub mod pause;
pub mod purge;
pub mod run;
