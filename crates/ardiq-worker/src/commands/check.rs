//! `ardiq check MODULE:ATTR`: a probe. Exits 0 when the app imports, Redis answers and
//! lets this user do what a worker does on the queue's keys, and every lane has its
//! consumer group; with `--health-port`, also when that worker's `/livez` is OK.
//! Otherwise one `error:` line and a code of its own (see `cli_ops::OPS_EXIT_CODES`).
//!
//! Fast by construction: imports the app (no lifespan, no event loop), a few round trips
//! (see `ardiq_core::ops::Client::check`; nothing is changed), one HTTP GET.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ardiq_core::scripts::{self, Mode, Setting};
use ardiq_core::Keys;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::escape::printable;
use crate::failure::{code, Failure};
use crate::ops::{self, exit};

pub fn run(args: CheckArgs) -> i32 {
    let code = match check(&args) {
        Ok(ok) => {
            if args.json {
                ops::print_json(&PassedJson {
                    ok: true,
                    app: &args.target,
                    queue: &ok.queue,
                    lanes: &ok.lanes,
                    redis: &ok.redis,
                    scripts: ok.scripts.0,
                    library: scripts::library_name(),
                    health_port: args.health_port,
                });
            } else {
                println!(
                    "ok: `{}` imports; redis at `{}` serves queue `{}` (lanes {}); scripts: {}",
                    printable(&args.target),
                    printable(&ok.redis),
                    printable(&ok.queue),
                    printable(&ok.lanes.join(", ")),
                    ok.scripts.1
                );
            }
            code::OK
        }
        Err(f) => {
            if args.json {
                ops::print_json(&FailedJson {
                    ok: false,
                    code: f.code,
                    error: &f.message,
                });
            }
            // One line: probes log it, people read it.
            eprintln!("error: {}", printable(&f.message));
            f.code
        }
    };
    ops::leave(code)
}

fn check(args: &CheckArgs) -> Result<Passed, Failure> {
    let config = ops::load_app(
        &args.target,
        args.redis_url.as_deref(),
        args.python.as_deref(),
    )
    .map_err(one_line)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let keys = Keys::new(&config.queue, &config.lanes);
    let rt = ops::runtime()?;
    let (masked, missing) = rt.block_on(async {
        let run = async {
            let mut client = ardiq_core::ops::Client::connect(&config.redis_url, timeout)
                .await
                .map_err(ops::failure)?;
            let missing = client.check(&keys).await.map_err(ops::failure)?;
            Ok::<_, Failure>((client.masked_url().to_owned(), missing))
        };
        match tokio::time::timeout(timeout * 3, run).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                exit::UNREACHABLE,
                format!(
                    "redis at `{}` did not answer in time",
                    ardiq_core::mask_url(&config.redis_url)
                ),
            )),
        }
    })?;
    if !missing.is_empty() {
        return Err(Failure::new(
            exit::NOT_SERVED,
            format!(
                "queue `{}` is not served yet: no consumer group on lane(s) {} (a worker creates them on start)",
                config.queue,
                missing.join(", ")
            ),
        ));
    }
    if let Some(port) = args.health_port {
        livez(&args.health_host, port, timeout)?;
    }
    Ok(Passed {
        queue: config.queue,
        lanes: config.lanes,
        redis: masked,
        scripts: scripts_mode(),
    })
}

/// How this process ran `queue_size` (settled by that call): the short name for JSON,
/// and what the line says.
fn scripts_mode() -> (&'static str, String) {
    let name = scripts::library_name();
    match scripts::mode() {
        Some(Mode::Functions) => ("functions", format!("functions (library {name})")),
        _ if scripts::setting() == Setting::Only(Mode::Eval) => (
            "eval",
            format!(
                "eval ({}=eval; EVALSHA, loading scripts as needed)",
                scripts::SETTING_ENV
            ),
        ),
        _ => (
            "eval",
            format!("eval (library {name} not loaded; this user loads the scripts itself)"),
        ),
    }
}

/// `check --json` when everything passed.
#[derive(Serialize)]
struct PassedJson<'a> {
    ok: bool,
    app: &'a str,
    queue: &'a str,
    lanes: &'a [String],
    redis: &'a str,
    /// `functions` or `eval`.
    scripts: &'static str,
    library: &'a str,
    health_port: Option<u16>,
}

/// `check --json` when something failed: the exit code and the one-line error.
#[derive(Serialize)]
struct FailedJson<'a> {
    ok: bool,
    code: i32,
    error: &'a str,
}

/// What passed.
struct Passed {
    queue: String,
    lanes: Vec<String>,
    redis: String,
    scripts: (&'static str, String),
}

/// A failure as one line: an import that raised becomes "cannot import ...: <last line of
/// the traceback>".
fn one_line(f: Failure) -> Failure {
    match &f.detail {
        Some(tb) if f.message.contains("traceback above") => {
            let last = tb.trim_end().lines().last().unwrap_or("").trim().to_owned();
            let what = f
                .message
                .split(" raised ")
                .next()
                .unwrap_or(&f.message)
                .replace("importing", "cannot import");
            Failure::new(f.code, format!("{what}: {last}"))
        }
        _ => Failure::new(f.code, f.message),
    }
}

/// `GET /livez` on the worker's health endpoint.
fn livez(host: &str, port: u16, timeout: Duration) -> Result<(), Failure> {
    let not_live = |why: String| Failure::new(exit::NOT_LIVE, why);
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            not_live(format!(
                "cannot resolve the health endpoint `{host}:{port}`"
            ))
        })?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| not_live(format!("no worker answers on `{addr}` (/livez): {e}")))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(
        format!("GET /livez HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| not_live(format!("health endpoint `{addr}`: {e}")))?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    if reply.starts_with("HTTP/1.1 200") {
        return Ok(());
    }
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .filter(|b| !b.is_empty())
        .unwrap_or("no answer");
    Err(not_live(format!("worker on `{addr}`: {body}")))
}
