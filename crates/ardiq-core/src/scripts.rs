//! The protocol's Lua scripts, compiled into the engine.
//!
//! Each script is `_lib.lua` followed by the script itself, the same text the Python
//! package loads, so both sides run one copy of every state transition. Two ways reach
//! Redis (README, "Security"; `ARDIQ_SCRIPTS`):
//!
//! - `functions`: an administrator loaded the scripts once as a Redis 7 function library
//!   ([`library_text`], `ardiq functions install`) and every call is an `FCALL`, so
//!   producers and workers need no right to load Lua of their own;
//! - `eval`: `EVALSHA`, loading the script on `NOSCRIPT` (a restarted or flushed server).
//!
//! `auto` (the default) tries `FCALL` on first use and falls back to `eval` for the rest
//! of the process when Redis has no such function (or the user may not `FCALL`): nothing
//! ran then, so the fallback never runs a script twice. The mode is process-wide: one
//! process talks to one Redis.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{LazyLock, OnceLock};

use redis::{
    ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, ToRedisArgs,
};

/// `_lib.lua`: the helpers every script starts with.
const LIB: &str = include_str!("../../../python/ardiq/lua/_lib.lua");

macro_rules! sources {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../python/ardiq/lua/", $name, ".lua")))),*]
    };
}

/// Every script, in the order of `SCRIPT_NAMES` in python/ardiq/protocol.py (the library
/// text, and so its name, depends on it).
const SOURCES: &[(&str, &str)] = sources!(
    "abort",
    "admit",
    "cron",
    "delete_dead",
    "enqueue",
    "fetch",
    "finish",
    "handback",
    "inspect",
    "progress",
    "promote",
    "purge",
    "queue_size",
    "reclaim",
    "renew",
    "replay",
    "retire",
    "run_now",
    "started",
    "unpark",
    "wait",
);

/// Scripts Redis must refuse while out of memory (`OOM_REFUSED` in protocol.py): as a
/// script they carry the `#!lua` shebang, as a function no `allow-oom` flag.
const OOM_REFUSED: &[&str] = &["enqueue"];

/// What every library name starts with.
pub const LIBRARY_PREFIX: &str = "ardiq_";

/// The library named `ardiq_<tag>`: `lib` once, then each (name, body) wrapped in a local
/// function whose parameters are `KEYS` and `ARGV` (the bodies read them as globals and
/// return at top level, which a function body allows), registered as
/// `ardiq_<tag>_<name>`. Byte for byte `library_text` in protocol.py
/// (tests/vectors/functions/).
pub fn library_text(lib: &str, scripts: &[(&str, &str)], tag: &str) -> String {
    let name = format!("{LIBRARY_PREFIX}{tag}");
    let mut out = format!("#!lua name={name}\n{lib}\n");
    for (script, body) in scripts {
        // The ack must land under OOM (PROTOCOL.md, "Finishing"); enqueue is refused
        // whole instead.
        let flags = if OOM_REFUSED.contains(script) {
            ""
        } else {
            ", flags={'allow-oom'}"
        };
        out.push_str(&format!(
            "local function run_{script}(KEYS, ARGV)\n{body}\nend\n\
             redis.register_function{{function_name='{name}_{script}', \
             callback=run_{script}{flags}}}\n"
        ));
    }
    out
}

/// The first 12 hex digits of the SHA-1 of the library text generated with an empty tag:
/// any change to a source, a flag or the wrapping gives another name, so two versions each
/// find their own library and can be loaded side by side.
pub fn library_tag(lib: &str, scripts: &[(&str, &str)]) -> String {
    // redis-rs hashes a script with SHA-1 (what EVALSHA names it by): the same digest.
    let digest = Script::new(&library_text(lib, scripts, ""))
        .get_hash()
        .to_owned();
    digest[..12].to_owned()
}

/// This build's library: (name, text).
pub fn library() -> &'static (String, String) {
    static LIBRARY: LazyLock<(String, String)> = LazyLock::new(|| {
        let tag = library_tag(LIB, SOURCES);
        (
            format!("{LIBRARY_PREFIX}{tag}"),
            library_text(LIB, SOURCES, &tag),
        )
    });
    &LIBRARY
}

/// The library's name, `ardiq_<tag>`.
pub fn library_name() -> &'static str {
    &library().0
}

/// How scripts reach Redis: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `FCALL` into the installed library.
    Functions,
    /// `EVALSHA`, loading scripts on `NOSCRIPT`.
    Eval,
}

/// `ARDIQ_SCRIPTS`: `auto` (default), `functions` or `eval`. Read once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Auto,
    Only(Mode),
}

/// The environment variable that sets [`Setting`].
pub const SETTING_ENV: &str = "ARDIQ_SCRIPTS";

/// Parses `ARDIQ_SCRIPTS`; an error names the accepted values.
pub fn parse_setting(value: &str) -> Result<Setting, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(Setting::Auto),
        "functions" => Ok(Setting::Only(Mode::Functions)),
        "eval" => Ok(Setting::Only(Mode::Eval)),
        other => Err(format!(
            "{SETTING_ENV}={other:?}: expected one of auto, functions, eval"
        )),
    }
}

/// The process's setting (an invalid value counts as `auto`; the binary refuses it at
/// start, see `parse_setting`).
pub fn setting() -> Setting {
    static SETTING: OnceLock<Setting> = OnceLock::new();
    *SETTING.get_or_init(|| {
        parse_setting(&std::env::var(SETTING_ENV).unwrap_or_default()).unwrap_or(Setting::Auto)
    })
}

const UNDECIDED: u8 = 0;
const FUNCTIONS: u8 = 1;
const EVAL: u8 = 2;

/// What `auto` settled on.
static SETTLED: AtomicU8 = AtomicU8::new(UNDECIDED);

/// How this process calls scripts: `None` before the first call under `auto`.
pub fn mode() -> Option<Mode> {
    match setting() {
        Setting::Only(m) => Some(m),
        Setting::Auto => match SETTLED.load(Ordering::Relaxed) {
            FUNCTIONS => Some(Mode::Functions),
            EVAL => Some(Mode::Eval),
            _ => None,
        },
    }
}

/// One protocol script: callable as a function of the library or with `EVALSHA`.
/// Mirrors the part of `redis::Script` the engine uses, so call sites read the same.
pub struct ProtocolScript {
    name: &'static str,
    /// `ardiq_<tag>_<name>`: what `FCALL` names.
    function: String,
    script: Script,
}

impl ProtocolScript {
    fn new(name: &'static str) -> Self {
        let body = SOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .expect("a script of SOURCES");
        // `#!lua` for the scripts Redis must refuse while out of memory; compatibility
        // mode (no shebang) for the rest. The newline keeps the last line of `_lib.lua`
        // apart from the first of the script.
        let head = if OOM_REFUSED.contains(&name) {
            "#!lua\n"
        } else {
            ""
        };
        Self {
            name,
            function: format!("{}_{name}", library_name()),
            script: Script::new(&format!("{head}{LIB}\n{body}")),
        }
    }

    /// The script's name (`fetch`, `finish`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The SHA-1 of the script text (what `EVALSHA` sends).
    pub fn get_hash(&self) -> &str {
        self.script.get_hash()
    }

    /// A call with no keys or arguments yet.
    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// A call starting with this key.
    pub fn key<T: ToRedisArgs>(&self, key: T) -> Invocation<'_> {
        let mut inv = self.prepare_invoke();
        inv.key(key);
        inv
    }

    /// A call starting with this argument.
    pub fn arg<T: ToRedisArgs>(&self, arg: T) -> Invocation<'_> {
        let mut inv = self.prepare_invoke();
        inv.arg(arg);
        inv
    }
}

/// The keys and arguments of one call.
pub struct Invocation<'a> {
    script: &'a ProtocolScript,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    /// Adds a key: `KEYS[i]` in the script.
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Adds an argument: `ARGV[i]` in the script.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Runs the script the way [`mode`] says (deciding it on the first call under `auto`).
    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        let setting = setting();
        let mode = match setting {
            Setting::Only(m) => Some(m),
            Setting::Auto => mode(),
        };
        if mode != Some(Mode::Eval) {
            let mut cmd = redis::cmd("FCALL");
            cmd.arg(&self.script.function)
                .arg(self.keys.len())
                .arg(&self.keys)
                .arg(&self.args);
            match cmd.query_async(con).await {
                Ok(v) => {
                    if setting == Setting::Auto {
                        SETTLED.store(FUNCTIONS, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if function_missing(&e) => {
                    if setting != Setting::Auto {
                        let cause = format!("{} ({SETTING_ENV}=functions)", said(&e));
                        return Err(not_installed(&cause));
                    }
                    // Nothing ran: EVALSHA from now on (also after the library went away).
                    SETTLED.store(EVAL, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.eval(con).await
    }

    /// `EVALSHA`, then `SCRIPT LOAD` and `EVALSHA` again on `NOSCRIPT` (as redis-rs does).
    async fn eval<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        let first = match cmd.query_async(con).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                match self.script.script.load_async(con).await {
                    Ok(_) => cmd.query_async(con).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        first.map_err(|e| {
            let text = e.to_string();
            if e.code() == Some("NOPERM")
                && (text.contains("'evalsha'") || text.contains("'script"))
            {
                not_installed(&said(&e))
            } else {
                e
            }
        })
    }
}

/// Did Redis refuse an `FCALL` before running anything: no such function (or no `FCALL`
/// at all, before Redis 7), or a user that may not `FCALL`? An error raised inside a
/// function is none of these.
fn function_missing(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("Function not found")
        || (text.contains("unknown command") && text.to_ascii_lowercase().contains("fcall"))
        || (e.code() == Some("NOPERM") && text.contains("'fcall'"))
}

/// A NOPERM that says how to fix it: install the library. `cause` is what Redis said.
fn not_installed(cause: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::NoPerm),
        "ArdiQ's scripts cannot run (NOPERM)",
        format!(
            "{cause}, and function library {} is not loaded: an administrator installs it \
             with `ardiq functions install` (README, Security)",
            library_name()
        ),
    ))
}

/// What Redis said, without redis-rs's kind prefix.
fn said(e: &RedisError) -> String {
    e.detail().map_or_else(|| e.to_string(), str::to_owned)
}

macro_rules! lua {
    ($name:literal) => {
        LazyLock::new(|| ProtocolScript::new($name))
    };
}

/// `fetch`: read new entries, highest lane first, creating missing groups.
pub static FETCH: LazyLock<ProtocolScript> = lua!("fetch");
/// `finish`: ack + record the outcome of finished attempts.
pub static FINISH: LazyLock<ProtocolScript> = lua!("finish");
/// `started`: mark suspect entries (`r` >= 1) as started before running them, so
/// `reclaim` blames only a task that really ran on a worker that died.
pub static STARTED: LazyLock<ProtocolScript> = lua!("started");
/// `progress`: store a running task's progress while its attempt is the live one.
pub static PROGRESS: LazyLock<ProtocolScript> = lua!("progress");
/// `renew`: reset the idle time of entries this consumer still owns.
pub static RENEW: LazyLock<ProtocolScript> = lua!("renew");
/// `reclaim`: re-queue (or dead-letter) entries taken over with XAUTOCLAIM.
pub static RECLAIM: LazyLock<ProtocolScript> = lua!("reclaim");
/// `promote`: move due delayed tasks to their streams.
pub static PROMOTE: LazyLock<ProtocolScript> = lua!("promote");
/// `unpark`: move due parked entries back to their streams (PROTOCOL.md, Limits).
pub static UNPARK: LazyLock<ProtocolScript> = lua!("unpark");
/// `handback`: return prefetched entries to their streams when stopping.
pub static HANDBACK: LazyLock<ProtocolScript> = lua!("handback");
/// `retire`: leave the groups (where nothing is pending) and drop the heartbeat.
pub static RETIRE: LazyLock<ProtocolScript> = lua!("retire");
/// `cron`: enqueue one cron occurrence, once across all workers.
pub static CRON: LazyLock<ProtocolScript> = lua!("cron");
/// `enqueue`: the producer's script. The engine never enqueues; exposed for tests and
/// tools written in Rust.
pub static ENQUEUE: LazyLock<ProtocolScript> = lua!("enqueue");
/// `abort`: the producer's abort request. Exposed for tests and tools.
pub static ABORT: LazyLock<ProtocolScript> = lua!("abort");
/// `admit`: park the entries over a rate limit or concurrency cap (PROTOCOL.md, Limits).
pub static ADMIT: LazyLock<ProtocolScript> = lua!("admit");
/// `inspect`: one task's status and what it is. Used by `ardiq job`.
pub static INSPECT: LazyLock<ProtocolScript> = lua!("inspect");
/// `replay`: re-queue a dead letter. Used by `ardiq dlq replay`.
pub static REPLAY: LazyLock<ProtocolScript> = lua!("replay");
/// `delete_dead`: drop a dead letter. Used by `ardiq dlq delete`.
pub static DELETE_DEAD: LazyLock<ProtocolScript> = lua!("delete_dead");
/// `purge`: drop queued and scheduled tasks (finalized as aborted). Used by `ardiq purge`.
pub static PURGE: LazyLock<ProtocolScript> = lua!("purge");
/// `queue_size`: undelivered plus delayed tasks. Used by `ardiq check` (a read that
/// exercises the scripting permission on the queue's keys).
pub static QUEUE_SIZE: LazyLock<ProtocolScript> = lua!("queue_size");
/// `run_now`: move one scheduled task to its stream now. Used by the dashboard.
pub static RUN_NOW: LazyLock<ProtocolScript> = lua!("run_now");

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator agrees with the Python package's on a fixed input (pytest checks
    /// the same file in tests/test_functions.py).
    #[test]
    fn library_text_matches_the_shared_vector() {
        let lib = include_str!("../../../tests/vectors/functions/_lib.lua");
        let scripts = [
            (
                "enqueue",
                include_str!("../../../tests/vectors/functions/enqueue.lua"),
            ),
            (
                "finish",
                include_str!("../../../tests/vectors/functions/finish.lua"),
            ),
        ];
        let tag = library_tag(lib, &scripts);
        assert_eq!(
            library_text(lib, &scripts, &tag),
            include_str!("../../../tests/vectors/functions/library.lua.expected"),
            "the library differs from the Python package's (tests/vectors/functions/)"
        );
    }

    #[test]
    fn every_script_is_in_the_library_once() {
        let (name, text) = library();
        assert!(name.starts_with(LIBRARY_PREFIX) && name.len() == LIBRARY_PREFIX.len() + 12);
        for (script, _) in SOURCES {
            let needle = format!("function_name='{name}_{script}'");
            assert_eq!(text.matches(&needle).count(), 1, "{script}");
        }
        assert_eq!(text.matches("allow-oom").count(), SOURCES.len() - 1);
    }

    /// Every script file is in the library (a script missing from SOURCES would panic
    /// on first use).
    #[test]
    fn sources_list_every_script_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/ardiq/lua");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|f| f.strip_suffix(".lua").map(str::to_owned))
            .filter(|f| f != "_lib")
            .collect();
        files.sort();
        let listed: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, listed);
        for s in [
            &FETCH,
            &FINISH,
            &STARTED,
            &PROGRESS,
            &RENEW,
            &RECLAIM,
            &PROMOTE,
            &HANDBACK,
            &RETIRE,
            &CRON,
            &ENQUEUE,
            &ABORT,
            &INSPECT,
            &REPLAY,
            &DELETE_DEAD,
            &PURGE,
            &QUEUE_SIZE,
            &RUN_NOW,
            &ADMIT,
            &UNPARK,
        ] {
            assert!(!s.get_hash().is_empty(), "{}", s.name());
        }
    }

    #[test]
    fn settings_parse() {
        assert_eq!(parse_setting(""), Ok(Setting::Auto));
        assert_eq!(
            parse_setting("Functions"),
            Ok(Setting::Only(Mode::Functions))
        );
        assert_eq!(parse_setting("eval"), Ok(Setting::Only(Mode::Eval)));
        assert!(parse_setting("lua").is_err());
    }
}
