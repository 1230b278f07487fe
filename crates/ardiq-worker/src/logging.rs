//! One log stream on stderr for the engine (Rust `tracing`) and the app (Python
//! `logging`), in one format.
//!
//! Python records come in through [`forward_python`], which the handler installed on the
//! root logger calls (see `_bridge.install_logging`); each becomes a `tracing` event with
//! target `python` and the logger's name in a `logger` field, which the formatter shows
//! in the target's place. So `ardiq: task started id=...` reads the same whichever side
//! wrote it.
//!
//! Text: `2024-05-01T12:00:00.123Z  INFO ardiq: message key=value`; JSON: one object per
//! line with `ts`, `level`, `target`, `message` and the event's fields.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, Verbosity};
use crate::escape::{self, printable};

/// Installs the subscriber. Call once, first thing.
pub fn init(format: LogFormat, verbosity: Verbosity) {
    // `--quiet` drops the banner only: the INFO lines stay, the `worker starting` one
    // carrying what the banner would have shown (as ardiq 1.2's `-q` does).
    let filter = match verbosity {
        Verbosity::Quiet | Verbosity::Normal => "info",
        Verbosity::Verbose => "debug",
    };
    let ansi = format == LogFormat::Text && colour_allowed();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::new(filter))
        .event_format(Format {
            json: format == LogFormat::Json,
            ansi,
        })
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Colour only on a terminal, and never under `NO_COLOR`.
pub fn colour_allowed() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// The level Python's root logger is set to, matching the tracing filter.
pub fn python_level(verbosity: Verbosity) -> i32 {
    match verbosity {
        Verbosity::Quiet | Verbosity::Normal => 20,
        Verbosity::Verbose => 10,
    }
}

/// Emits one Python `logging` record (level number, logger name, formatted message).
pub fn forward_python(levelno: i32, logger: &str, message: &str) {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(target: "python", $level, logger = logger, "{}", message)
        };
    }
    match levelno {
        n if n >= 40 => emit!(Level::ERROR),
        n if n >= 30 => emit!(Level::WARN),
        n if n >= 20 => emit!(Level::INFO),
        n if n >= 10 => emit!(Level::DEBUG),
        _ => emit!(Level::TRACE),
    }
}

struct Format {
    json: bool,
    ansi: bool,
}

/// The message and fields of one event, as text.
#[derive(Default)]
struct Fields {
    message: String,
    logger: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "logger" => self.logger = Some(value.to_owned()),
            name => self.rest.push((name, value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "logger" => self.logger = Some(format!("{value:?}")),
            name => self.rest.push((name, format!("{value:?}"))),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = match fields.logger.take() {
            Some(logger) => logger,
            None => short_target(meta.target()).to_owned(),
        };
        let ts = timestamp(SystemTime::now());
        // Python's names, so both sides' lines read alike (`WARNING`, not `WARN`).
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        if self.json {
            let mut line = String::with_capacity(128);
            line.push_str("{\"ts\":");
            json_str(&mut line, &ts);
            line.push_str(",\"level\":");
            json_str(&mut line, level);
            line.push_str(",\"target\":");
            json_str(&mut line, &target);
            line.push_str(",\"message\":");
            json_str(&mut line, &fields.message);
            for (k, v) in &fields.rest {
                line.push(',');
                json_str(&mut line, k);
                line.push(':');
                json_str(&mut line, v);
            }
            line.push('}');
            return writeln!(w, "{line}");
        }
        let (on, off) = if self.ansi {
            let colour = match *meta.level() {
                Level::ERROR => "\x1b[31m",
                Level::WARN => "\x1b[33m",
                Level::INFO => "\x1b[32m",
                _ => "\x1b[2m",
            };
            (colour, "\x1b[0m")
        } else {
            ("", "")
        };
        // Text from Redis (ids, names) reaches messages and fields: see `escape`.
        write!(
            w,
            "{ts} {on}{level:<7}{off} {}: {}",
            printable(&target),
            escape::message(&fields.message)
        )?;
        for (k, v) in &fields.rest {
            write!(w, " {k}={}", printable(v))?;
        }
        writeln!(w)
    }
}

/// `ardiq_core::engine` → `ardiq_core`: the crate is what a reader needs.
fn short_target(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

pub(crate) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = ardiq_core::cron::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(timestamp(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn targets() {
        assert_eq!(short_target("ardiq_core::engine"), "ardiq_core");
        assert_eq!(short_target("python"), "python");
    }
}
