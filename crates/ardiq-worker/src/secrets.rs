//! The Redis URL, the signing keys and the dashboard's token, kept out of the environment
//! task code inherits.
//!
//! At start (before the command line is parsed) `ARDIQ_REDIS_URL_FILE`,
//! `ARDIQ_SIGNING_KEY_FILE` and `ARDIQ_DASHBOARD_TOKEN_FILE` (systemd `LoadCredential=`,
//! Docker secrets) are read into `ARDIQ_REDIS_URL`, `ARDIQ_SIGNING_KEY` and
//! `ARDIQ_DASHBOARD_TOKEN`: the file's content, trailing newlines stripped; setting both
//! forms is a usage error. Once parsed, the variables are taken
//! out of the process environment, so the embedded Python (whose `os.environ` is a copy
//! made when it starts) and every process a task spawns never see them. The package gets
//! them through `ardiq._secrets.provide`, which `default_redis_url()` and the signing key
//! lookup consult first; `--workers` children get them in their environment (never in
//! argv, which `/proc/<pid>/cmdline` shows to every local user).

use std::sync::OnceLock;

use crate::failure::{code, Failure};

pub const REDIS_URL: &str = "ARDIQ_REDIS_URL";
pub const SIGNING_KEY: &str = "ARDIQ_SIGNING_KEY";
pub const DASHBOARD_TOKEN: &str = "ARDIQ_DASHBOARD_TOKEN";
const NAMES: [&str; 3] = [REDIS_URL, SIGNING_KEY, DASHBOARD_TOKEN];

/// The values taken out of the environment.
#[derive(Debug, Default)]
pub struct Taken {
    pub redis_url: Option<String>,
    pub signing_key: Option<String>,
    /// Only `ardiq dashboard` reads it; never handed to Python or a child.
    pub dashboard_token: Option<String>,
}

static TAKEN: OnceLock<Taken> = OnceLock::new();

/// Reads each `NAME_FILE` into `NAME`. Call first thing in `main`, while no other thread
/// exists (it changes the process environment).
pub fn load_files() -> Result<(), Failure> {
    for name in NAMES {
        let file_var = format!("{name}_FILE");
        let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
            return Err(Failure::new(
                code::USAGE,
                format!("both {name} and {file_var} are set; set one of them"),
            ));
        }
        let shown = path.to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&path).map_err(|e| {
            Failure::new(
                code::USAGE,
                format!("cannot read {file_var} `{shown}`: {e}"),
            )
        })?;
        let value = content.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(Failure::new(
                code::USAGE,
                format!("{file_var} `{shown}` is empty"),
            ));
        }
        // Only the main thread runs yet: nothing reads the environment concurrently.
        std::env::set_var(name, value);
        std::env::remove_var(&file_var);
    }
    Ok(())
}

/// Takes the variables out of the process environment (after the command line, which
/// reads `ARDIQ_REDIS_URL`, is parsed; still before any other thread starts).
pub fn take() {
    let get = |name: &str| {
        let value = std::env::var(name).ok().filter(|v| !v.is_empty());
        std::env::remove_var(name);
        value
    };
    let taken = Taken {
        redis_url: get(REDIS_URL),
        signing_key: get(SIGNING_KEY),
        dashboard_token: get(DASHBOARD_TOKEN),
    };
    let _ = TAKEN.set(taken);
}

/// What [`take`] took (nothing before it ran).
pub fn taken() -> &'static Taken {
    TAKEN.get_or_init(Taken::default)
}

/// `(name, value)` of each secret taken, to hand to the package or a child's environment.
pub fn pairs() -> Vec<(&'static str, &'static str)> {
    let t = taken();
    [(REDIS_URL, &t.redis_url), (SIGNING_KEY, &t.signing_key)]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
}

/// The signing keys the ops tools and the dashboard hold: `ARDIQ_SIGNING_KEY` (keys
/// separated by commas, the first one seals) or the file `ARDIQ_SIGNING_KEY_FILE` names,
/// as [`take`] took them.
pub fn signing_keys() -> Vec<ardiq_core::SigningKey> {
    taken()
        .signing_key
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| ardiq_core::SigningKey::new(k.as_bytes().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}
