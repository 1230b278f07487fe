//! What `ardiq` (the launcher, `launcher.rs`) and `ardiq-embedded` (the worker) agree on:
//! the worker's file name, and how the launcher's change to `LD_LIBRARY_PATH` is undone
//! in the worker before its interpreter starts. Each executable uses its half.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The worker's file name, beside `ardiq`.
pub const WORKER: &str = "ardiq-embedded";
const LIBRARY_PATH: &str = "LD_LIBRARY_PATH";
/// `LD_LIBRARY_PATH` as the user had it (absent: it was unset).
const SAVED: &str = "ARDIQ_LAUNCH_SAVED_LD_LIBRARY_PATH";
/// The launcher's path: what the supervisor starts its workers through.
const LAUNCHER: &str = "ARDIQ_LAUNCH_LAUNCHER";

static LAUNCHED_BY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Launcher: `dir` first in the worker's `LD_LIBRARY_PATH`, the user's value saved.
pub fn prepare(command: &mut Command, dir: &Path) {
    let old = std::env::var_os(LIBRARY_PATH).filter(|v| !v.is_empty());
    let mut value = OsString::from(dir.as_os_str());
    if let Some(old) = &old {
        value.push(":");
        value.push(old);
        command.env(SAVED, old);
    } else {
        command.env_remove(SAVED);
    }
    command.env(LIBRARY_PATH, value);
    if let Ok(exe) = std::env::current_exe() {
        command.env(LAUNCHER, exe);
    }
}

/// Worker, first thing in `main` (one thread yet): puts `LD_LIBRARY_PATH` back as the
/// user had it, so the interpreter, task code and subprocesses never see the change.
pub fn restore() {
    let launcher = std::env::var_os(LAUNCHER).map(PathBuf::from);
    if launcher.is_some() {
        match std::env::var_os(SAVED) {
            Some(old) => std::env::set_var(LIBRARY_PATH, old),
            None => std::env::remove_var(LIBRARY_PATH),
        }
    }
    std::env::remove_var(SAVED);
    std::env::remove_var(LAUNCHER);
    let _ = LAUNCHED_BY.set(launcher);
}

/// Worker: the launcher it was started through, if any (children are started through it
/// too, so that they find the library the same way).
pub fn launcher() -> Option<&'static Path> {
    LAUNCHED_BY.get().and_then(|p| p.as_deref())
}
