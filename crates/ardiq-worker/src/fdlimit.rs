//! The file-descriptor limit, raised at start from its soft value to the hard one.
//!
//! A worker's descriptors are shared by everything in the process: the engine's Redis
//! connections, the health endpoint's clients, and whatever the tasks open (files,
//! sockets, subprocess pipes). Distributions and container runtimes often leave the soft
//! limit low (1024, or less) under a far higher hard one, and running out fails tasks
//! with `Too many open files`. Raising the soft limit is what any unprivileged process
//! may do; children (subprocesses of tasks, the supervisor's workers) inherit it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::debug;

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; a failure leaves it as it was
/// (the worker runs either way). Returns the soft limit now in force, if it could be read.
pub fn raise() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            debug!(from = soft, to = hard, "raised the open-files limit");
            Some(hard)
        }
        Err(e) => {
            debug!(error = %e, soft, hard, "cannot raise the open-files limit");
            Some(soft)
        }
    }
}
