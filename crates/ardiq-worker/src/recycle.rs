//! Recycling (`--max-tasks N`, `--max-memory MB`), the worker's half: the engine counts
//! the tasks it starts ([`ardiq_core::Config::max_tasks`]); here the resident memory is
//! sampled once a second, from `/proc/self/statm` (one small read, no parsing of
//! `status`), and a worker over its limit asks its engine to recycle. Either way the
//! engine drains as on SIGTERM and the process exits with [`code::RECYCLED`], which its
//! supervisor (`supervisor.rs`) answers by starting a fresh worker in its place.

use std::time::Duration;

use ardiq_core::{Recycle, StopHandle};
use nix::unistd::{sysconf, SysconfVar};

use crate::failure::{code, Failure};

const MB: u64 = 1024 * 1024;

/// How often the resident memory is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// This process's resident memory in bytes (`None` where `/proc` is missing).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Some(pages.saturating_mul(u64::try_from(page).unwrap_or(4096)))
}

/// Before the engine starts: a limit the worker is over already, with its app imported,
/// its lifespan started and no task run, would recycle it for ever without doing any
/// work. A usage error.
pub fn check_start(limit_mb: u64) -> Result<(), Failure> {
    let Some(resident) = resident_bytes() else {
        return Err(Failure::new(
            code::USAGE,
            "`--max-memory` needs `/proc/self/statm` to read the worker's memory, and it cannot be read",
        ));
    };
    if resident > limit_mb * MB {
        return Err(Failure::new(
            code::USAGE,
            format!(
                "`--max-memory {limit_mb}` is below what this worker holds before running any \
                 task ({} MB resident once the app is imported and its lifespan started)",
                resident.div_ceil(MB)
            ),
        )
        .hint("raise `--max-memory` well above that, or leave it out"));
    }
    Ok(())
}

/// Samples the resident memory until it goes over `limit_mb`, then asks the engine to
/// recycle. Runs beside the engine; aborted when the run ends.
pub async fn watch_memory(limit_mb: u64, stop: StopHandle) {
    let limit = limit_mb * MB;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(resident) = resident_bytes() {
            if resident > limit {
                stop.recycle(Recycle::MaxMemory { limit, resident });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory() {
        let resident = resident_bytes().expect("/proc/self/statm");
        // A test binary holds more than a megabyte and less than a terabyte.
        assert!(resident > MB && resident < (1 << 40), "{resident}");
        assert!(check_start(1 << 20).is_ok());
        let err = check_start(1).unwrap_err();
        assert_eq!(err.code, code::USAGE);
        assert!(err.message.contains("--max-memory 1"), "{}", err.message);
    }
}
