//! The embedded interpreter's whole life: configured before start, entered by pyo3 from
//! our threads, and left without finalization.
//!
//! Start: `PyConfig` is filled the way the `python` command fills it (environment
//! variables, site), then told three things the command would have learned from its
//! own path and arguments: `executable` / `program_name` are a real interpreter of the
//! user's environment (so `sys.prefix`, the venv's site-packages, `sys.executable`,
//! `multiprocessing` spawn and `subprocess` behave), `argv` is ours but not parsed, and
//! `install_signal_handlers = 0` (the binary owns SIGINT/SIGTERM; Python never raises
//! `KeyboardInterrupt` into a task).
//!
//! End: `Py_FinalizeEx` would join every non-daemon thread (an abandoned sync task body
//! could hold the exit for ever) and tear modules down under threads that still run. So
//! the binary never finalizes: once every thread it started has been joined, it takes
//! the GIL, runs the `atexit` callbacks (graceful exits only), flushes Python's stdio and
//! leaves with `os._exit` while *holding* the GIL, so no Python thread runs during exit.

use std::ffi::{CStr, CString, OsStr};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;

/// Set once the interpreter runs: from then on the process leaves through [`exit`].
static STARTED: AtomicBool = AtomicBool::new(false);

/// Starts the interpreter on this (the main) thread and releases the GIL, so that every
/// thread, this one included, enters Python through `Python::attach`.
pub fn initialize(executable: &Path, argv: &[std::ffi::OsString]) -> Result<(), String> {
    let exe = c_string(executable.as_os_str())?;
    let args: Vec<CString> = argv.iter().map(|a| c_string(a)).collect::<Result<_, _>>()?;
    let mut arg_ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();

    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    let cfg = config.as_mut_ptr();
    // SAFETY: configuring and starting the interpreter, once, on the main thread, before
    // any other Python API is used. `PyConfig_InitPythonConfig` initializes every field of
    // `config` before we touch it; the strings are copied by `PyConfig_Set*`, so the
    // `CString`s only need to live through those calls; `PyConfig_Clear` frees the copies
    // after `Py_InitializeFromConfig` read them. Status structs are plain data.
    unsafe {
        ffi::PyConfig_InitPythonConfig(cfg);
        (*cfg).install_signal_handlers = 0;
        (*cfg).parse_argv = 0;
        let steps = [
            ffi::PyConfig_SetBytesString(cfg, addr_of_mut!((*cfg).executable), exe.as_ptr()),
            ffi::PyConfig_SetBytesString(cfg, addr_of_mut!((*cfg).program_name), exe.as_ptr()),
            ffi::PyConfig_SetBytesArgv(
                cfg,
                arg_ptrs.len() as ffi::Py_ssize_t,
                arg_ptrs.as_mut_ptr(),
            ),
        ];
        for status in steps {
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(cfg);
                return Err(status_message(status));
            }
        }
        let status = ffi::Py_InitializeFromConfig(cfg);
        ffi::PyConfig_Clear(cfg);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_message(status));
        }
        // The thread that initialized holds the GIL; hand it back. The thread state is
        // kept by CPython and found again by `Python::attach` on this thread.
        ffi::PyEval_SaveThread();
    }
    STARTED.store(true, Ordering::SeqCst);
    Ok(())
}

fn c_string(s: &OsStr) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("`{}` contains a NUL byte", s.to_string_lossy()))
}

/// The text of a failed `PyStatus`.
///
/// # Safety
/// `status` must come from a CPython config call (its `err_msg` is NULL or a static C
/// string).
unsafe fn status_message(status: ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return format!("Python exited during start-up (code {})", status.exitcode);
    }
    // SAFETY: non-NULL `err_msg` points to a static NUL-terminated string (the caller's
    // contract).
    let msg = unsafe { CStr::from_ptr(status.err_msg) };
    msg.to_string_lossy().into_owned()
}

/// Leaves the process with `code`, never finalizing (see the module doc). `graceful`:
/// run the `atexit` callbacks first, as a normal Python exit would. If the GIL cannot be
/// had within a few seconds (C code holding it), exits without Python's help.
pub fn exit(code: i32, graceful: bool) -> ! {
    if !STARTED.load(Ordering::SeqCst) {
        std::process::exit(code);
    }
    let (tx, rx) = mpsc::channel::<()>();
    // A thread of its own, so a wedged GIL cannot keep the process alive.
    let spawned = std::thread::Builder::new()
        .name("ardiq-exit".into())
        .spawn(move || {
            Python::attach(|py| {
                let _ = py.run(&exit_script(code, graceful), None, None);
                // Not reached: `os._exit` ends the process while this thread holds the GIL.
                let _ = tx.send(());
            })
        });
    if spawned.is_ok() {
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
    std::process::exit(code)
}

/// For commands that may or may not have started Python (`check`, the ops commands):
/// leaves through [`exit`] (gracefully) once it runs, else hands `code` back.
pub fn exit_if_started(code: i32) -> i32 {
    if STARTED.load(Ordering::SeqCst) {
        exit(code, true)
    }
    code
}

fn exit_script(code: i32, graceful: bool) -> CString {
    let atexit = if graceful {
        "    import atexit\n    atexit._run_exitfuncs()\n"
    } else {
        ""
    };
    let script = format!(
        "import os, sys\ntry:\n{atexit}    pass\nfinally:\n    \
         for s in (sys.stdout, sys.stderr):\n        \
         try:\n            s.flush()\n        except Exception:\n            pass\n    \
         os._exit({code})\n"
    );
    CString::new(script).expect("no NUL in the exit script")
}
