//! `ardiq`: the command users run. It finds the Python environment to run in (the same
//! discovery as the worker, `interpreter.rs`), finds that interpreter's libpython, and
//! becomes `ardiq-embedded` (installed beside it: the worker, which links libpython) with
//! the library's directory first in `LD_LIBRARY_PATH`.
//!
//! Why: the worker links `libpythonX.Y.so.1.0` by name only, with no RUNPATH into the
//! build machine's Python, so one wheel serves every build of that Python version at any
//! prefix (pyenv's, Debian's `/usr/bin/python3.11`, a container's `/usr/local`). The
//! dynamic loader needs the directory before the worker's `main` runs, hence a separate,
//! small executable that links no Python. `ardiq-embedded` puts `LD_LIBRARY_PATH` back
//! as it was before the interpreter starts (`launch.rs`), so task code and its
//! subprocesses never see the change. Costs one `exec` (well under a millisecond): no
//! Python is run to find the library unless the usual places lack it.
//!
//! A Python of another version is refused here (the worker embeds the one it was built
//! for), with the exit code and message of `ardiq run`.

#[path = "interpreter.rs"]
mod interpreter;
#[path = "launch.rs"]
mod launch;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use interpreter::{Found, Inputs, BUILD_VERSION};

/// `ardiq run`'s code for "the embedded Python cannot start" (`failure::code::PYTHON`).
const PYTHON: i32 = 3;
/// `ardiq run`'s code for a usage error (`failure::code::USAGE`): a Python of another
/// version than the one embedded was pointed at.
const USAGE: i32 = 2;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(worker) = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(launch::WORKER))
        .filter(|w| w.is_file())
    else {
        fail(
            &format!("`{}` is missing beside `ardiq`", launch::WORKER),
            "reinstall `ardiq-worker` (`pip install --force-reinstall ardiq-worker`)",
        );
    };
    let mut command = Command::new(&worker);
    command.arg0(&args[0]).args(&args[1..]);
    if wants_python(&args) {
        let flag = python_flag(&args).or_else(|| {
            std::env::var_os("ARDIQ_PYTHON")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let found = interpreter::discover(&Inputs::from_process(flag))
            .unwrap_or_else(|m| fail(&m, "point at one with `--python PATH`"));
        let dir = library_dir(&found).unwrap_or_else(|(code, m, h)| fail_with(code, &m, &h));
        launch::prepare(&mut command, &dir);
    }
    let err = command.exec();
    fail(
        &format!("cannot start `{}`: {err}", worker.display()),
        "reinstall `ardiq-worker`",
    );
}

fn fail(message: &str, hint: &str) -> ! {
    fail_with(PYTHON, message, hint)
}

fn fail_with(code: i32, message: &str, hint: &str) -> ! {
    eprint!("error: {message}\n\nhint: {hint}\n");
    std::process::exit(code)
}

/// Help and the version need no Python; everything else may start it.
fn wants_python(args: &[OsString]) -> bool {
    let words: Vec<&str> = args[1..].iter().filter_map(|a| a.to_str()).collect();
    !(words.is_empty()
        || words.first() == Some(&"help")
        || words
            .iter()
            .take_while(|w| **w != "--")
            .any(|w| matches!(*w, "-h" | "--help" | "-V" | "--version")))
}

/// The value of `--python PATH` / `--python=PATH` (before a `--`), as clap reads it.
fn python_flag(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args[1..].iter();
    let mut last = None;
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == "--python" {
            last = iter.next().map(PathBuf::from);
        } else if let Some(value) = text.strip_prefix("--python=") {
            last = Some(PathBuf::from(value));
        }
    }
    last
}

/// The directory holding the interpreter's `libpythonX.Y.so.1.0`, refusing another
/// Python version. Looked for under the base installation's prefix (a virtualenv's
/// `pyvenv.cfg` names it), then asked of the interpreter itself.
/// The error is (exit code, message, hint).
fn library_dir(found: &Found) -> Result<PathBuf, (i32, String, String)> {
    let exe = &found.executable;
    if let Some(version) = interpreter::version_of(exe) {
        if version != BUILD_VERSION {
            return Err((
                USAGE,
                format!(
                    "`{}` is Python {version}, but this `ardiq` embeds Python {BUILD_VERSION}",
                    exe.display()
                ),
                format!(
                    "install `ardiq-worker` into that environment (pip picks the wheel for its \
                     Python), or pass `--python` a Python {BUILD_VERSION}"
                ),
            ));
        }
    }
    let name = format!("libpython{BUILD_VERSION}.so.1.0");
    let mut looked = Vec::new();
    if let Some(prefix) = base_prefix(exe) {
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        for dir in [
            prefix.join("lib"),
            prefix.join("lib").join(&multiarch),
            prefix.join("lib64"),
        ] {
            if dir.join(&name).is_file() {
                return Ok(dir);
            }
            looked.push(dir);
        }
    }
    if let Some(dir) = ask_libdir(exe).filter(|d| d.join(&name).is_file()) {
        return Ok(dir);
    }
    let looked: Vec<String> = looked.iter().map(|d| d.display().to_string()).collect();
    Err((
        PYTHON,
        format!(
            "`{}` ({}) has no shared `{name}` (looked in {} and its LIBDIR)",
            exe.display(),
            found.source,
            looked.join(", ")
        ),
        "the native worker needs a Python built with `--enable-shared`; run the worker in \
         code instead (`python -m ardiq run`), or point `--python` at another interpreter"
            .to_owned(),
    ))
}

/// The installation a (possibly virtualenv) interpreter belongs to: `pyvenv.cfg`'s
/// `home` (its `bin/`) one level up, else the resolved executable's `../`.
fn base_prefix(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    for cfg in [bin.join("pyvenv.cfg"), bin.parent()?.join("pyvenv.cfg")] {
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            for line in text.lines() {
                if let Some((key, value)) = line.split_once('=') {
                    if key.trim() == "home" {
                        let home = PathBuf::from(value.trim());
                        let home = std::fs::canonicalize(&home).unwrap_or(home);
                        return home.parent().map(Path::to_path_buf);
                    }
                }
            }
        }
    }
    let real = std::fs::canonicalize(exe).ok()?;
    Some(real.parent()?.parent()?.to_path_buf())
}

/// `sysconfig`'s LIBDIR, from the interpreter (isolated, no site: a few milliseconds).
fn ask_libdir(exe: &Path) -> Option<PathBuf> {
    let out = Command::new(exe)
        .args([
            "-I",
            "-S",
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn python_flag_as_clap_reads_it() {
        let a = os(&["ardiq", "run", "m:app", "--python", "/a", "--python=/b"]);
        assert_eq!(python_flag(&a), Some(PathBuf::from("/b")));
        let a = os(&["ardiq", "run", "--", "--python=/b"]);
        assert_eq!(python_flag(&a), None);
    }

    #[test]
    fn help_and_version_need_no_python() {
        assert!(!wants_python(&os(&["ardiq"])));
        assert!(!wants_python(&os(&["ardiq", "--version"])));
        assert!(wants_python(&os(&["ardiq", "run", "m:app"])));
        assert!(!wants_python(&os(&["ardiq", "run", "--help"])));
        assert!(wants_python(&os(&["ardiq", "check", "m:app"])));
    }
}
