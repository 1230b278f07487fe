//! Which Python environment the embedded interpreter runs in.
//!
//! The binary links one libpython, but a worker must see the *user's* environment: its
//! virtualenv's site-packages, and a `sys.executable` that `multiprocessing` (spawn) and
//! `subprocess` can start. CPython derives all of that from the path of its executable,
//! so the binary finds a real interpreter of that environment and hands its path over
//! before start (see `embed.rs`). First match wins:
//!
//! 1. `--python PATH` / `ARDIQ_PYTHON`;
//! 2. the activated virtualenv (`$VIRTUAL_ENV/bin/python`), or conda environment;
//! 3. the environment the binary is installed in: `<prefix>/bin/ardiq` next to
//!    `<prefix>/bin/python` (a venv's `bin/`, as pip installs it), so `.venv/bin/ardiq`
//!    works from `env -i` as systemd runs it;
//! 4. `python3` (then `python`) on `PATH`; a pyenv-style shim script is asked for the
//!    interpreter it runs;
//! 5. the interpreter the binary was built against.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The build-time interpreter and its `major.minor`, from build.rs.
pub const BUILD_PYTHON: &str = env!("ARDIQ_BUILD_PYTHON");
pub const BUILD_VERSION: &str = env!("ARDIQ_BUILD_PYTHON_VERSION");

/// What discovery looks at; `from_process` reads the real process, tests build their own.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub flag: Option<PathBuf>,
    pub virtual_env: Option<OsString>,
    pub conda_prefix: Option<OsString>,
    pub current_exe: Option<PathBuf>,
    pub path: Option<OsString>,
    pub build_python: Option<PathBuf>,
}

impl Inputs {
    pub fn from_process(flag: Option<PathBuf>) -> Self {
        Inputs {
            flag,
            virtual_env: std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()),
            conda_prefix: std::env::var_os("CONDA_PREFIX").filter(|v| !v.is_empty()),
            current_exe: std::env::current_exe().ok(),
            path: std::env::var_os("PATH"),
            build_python: Some(PathBuf::from(BUILD_PYTHON)).filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

/// The interpreter chosen, and why (shown in the banner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub executable: PathBuf,
    pub source: &'static str,
}

/// Finds the interpreter (see the module doc for the order).
pub fn discover(inputs: &Inputs) -> Result<Found, String> {
    let found = |executable: PathBuf, source: &'static str| Found { executable, source };
    if let Some(flag) = &inputs.flag {
        let path = std::path::absolute(flag).unwrap_or_else(|_| flag.clone());
        if !path.is_file() {
            return Err(format!(
                "`--python {}` is not a Python interpreter",
                flag.display()
            ));
        }
        return Ok(found(path, "--python"));
    }
    if let Some(venv) = &inputs.virtual_env {
        if let Some(exe) = python_in(&Path::new(venv).join("bin")) {
            return Ok(found(exe, "VIRTUAL_ENV"));
        }
    }
    if let Some(conda) = &inputs.conda_prefix {
        if let Some(exe) = python_in(&Path::new(conda).join("bin")) {
            return Ok(found(exe, "CONDA_PREFIX"));
        }
    }
    if let Some(dir) = inputs.current_exe.as_deref().and_then(Path::parent) {
        if let Some(exe) = python_in(dir) {
            let source = if dir.parent().is_some_and(|p| p.join("pyvenv.cfg").is_file()) {
                "the virtualenv of `ardiq`"
            } else {
                "the installation of `ardiq`"
            };
            return Ok(found(exe, source));
        }
    }
    if let Some(path) = &inputs.path {
        for name in ["python3", "python"] {
            for dir in std::env::split_paths(path) {
                let candidate = dir.join(name);
                if !candidate.is_file() {
                    continue;
                }
                if is_script(&candidate) {
                    // A shim (pyenv, asdf) is not an interpreter: ask it which one it runs.
                    if let Some(real) = ask_executable(&candidate) {
                        return Ok(found(real, "PATH"));
                    }
                    continue;
                }
                return Ok(found(candidate, "PATH"));
            }
        }
    }
    if let Some(build) = &inputs.build_python {
        if build.is_file() {
            return Ok(found(build.clone(), "the build"));
        }
    }
    Err(
        "no Python interpreter found (no virtualenv is active and `python3` is not on PATH)"
            .to_owned(),
    )
}

/// `dir/python` or `dir/python3`, if it is a real file (not a script).
fn python_in(dir: &Path) -> Option<PathBuf> {
    ["python", "python3"]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file() && !is_script(p))
}

/// Starts with `#!`: a wrapper script, not an interpreter binary.
fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"#!")
        .unwrap_or(false)
}

fn ask_executable(shim: &Path) -> Option<PathBuf> {
    let out = Command::new(shim)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(text.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// The `major.minor` of the Python at `exe`, when it can be told without running it:
/// from the virtualenv's `pyvenv.cfg`, else from a `pythonX.Y` name the path resolves to.
pub fn version_of(exe: &Path) -> Option<String> {
    let bin = exe.parent()?;
    for cfg in [bin.join("pyvenv.cfg"), bin.parent()?.join("pyvenv.cfg")] {
        if let Ok(text) = fs::read_to_string(&cfg) {
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                if matches!(key.trim(), "version" | "version_info") {
                    let mut parts = value.trim().split('.');
                    if let (Some(a), Some(b)) = (parts.next(), parts.next()) {
                        return Some(format!("{a}.{b}"));
                    }
                }
            }
        }
    }
    let real = fs::canonicalize(exe).ok()?;
    let name = real.file_name()?.to_str()?;
    let version = name.strip_prefix("python")?;
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Some(format!("{a}.{b}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ardiq-interp-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn touch(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn flag_wins_and_must_exist() {
        let t = TempDir::new("flag");
        let py = t.0.join("py");
        touch(&py, b"\x7fELF");
        let venv = t.0.join("venv");
        touch(&venv.join("bin/python"), b"\x7fELF");
        let inputs = Inputs {
            flag: Some(py.clone()),
            virtual_env: Some(venv.into()),
            ..Inputs::default()
        };
        assert_eq!(
            discover(&inputs).unwrap(),
            Found {
                executable: py,
                source: "--python"
            }
        );
        let missing = Inputs {
            flag: Some(t.0.join("nope")),
            ..Inputs::default()
        };
        assert!(discover(&missing).unwrap_err().contains("nope"));
    }

    #[test]
    fn virtual_env_then_binary_venv_then_path() {
        let t = TempDir::new("order");
        let active = t.0.join("active");
        touch(&active.join("bin/python"), b"\x7fELF");
        let installed = t.0.join("installed");
        touch(&installed.join("bin/python"), b"\x7fELF");
        touch(&installed.join("pyvenv.cfg"), b"version = 3.11.7\n");
        let on_path = t.0.join("usr/bin");
        touch(&on_path.join("python3"), b"\x7fELF");
        let mut inputs = Inputs {
            virtual_env: Some(active.clone().into()),
            current_exe: Some(installed.join("bin/ardiq")),
            path: Some(on_path.clone().into()),
            ..Inputs::default()
        };
        assert_eq!(
            discover(&inputs).unwrap().executable,
            active.join("bin/python")
        );
        inputs.virtual_env = None;
        let f = discover(&inputs).unwrap();
        assert_eq!(f.executable, installed.join("bin/python"));
        assert_eq!(f.source, "the virtualenv of `ardiq`");
        inputs.current_exe = Some(t.0.join("target/release/ardiq"));
        assert_eq!(
            discover(&inputs).unwrap().executable,
            on_path.join("python3")
        );
        inputs.path = None;
        assert!(discover(&inputs).is_err());
    }

    #[test]
    fn skips_scripts_that_cannot_answer() {
        let t = TempDir::new("shim");
        let shims = t.0.join("shims");
        touch(&shims.join("python3"), b"#!/bin/false\n");
        let real = t.0.join("real");
        touch(&real.join("python3"), b"\x7fELF");
        let mut p = OsString::from(shims.as_os_str());
        p.push(":");
        p.push(real.as_os_str());
        let inputs = Inputs {
            path: Some(p),
            ..Inputs::default()
        };
        assert_eq!(discover(&inputs).unwrap().executable, real.join("python3"));
    }

    #[test]
    fn versions_from_pyvenv_cfg_and_names() {
        let t = TempDir::new("ver");
        touch(
            &t.0.join("venv/pyvenv.cfg"),
            b"home = /x\nversion = 3.12.1\n",
        );
        touch(&t.0.join("venv/bin/python"), b"");
        assert_eq!(
            version_of(&t.0.join("venv/bin/python")).as_deref(),
            Some("3.12")
        );
        touch(&t.0.join("usr/bin/python3.11"), b"");
        assert_eq!(
            version_of(&t.0.join("usr/bin/python3.11")).as_deref(),
            Some("3.11")
        );
        touch(&t.0.join("other/python3"), b"");
        assert_eq!(version_of(&t.0.join("other/python3")), None);
    }
}
