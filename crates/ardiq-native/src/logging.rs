//! The engine's `tracing` events as records of Python's `logging` (logger `ardiq`), so an
//! in-code worker's logs go wherever the program sends its own, in its format, as the
//! pure-Python loop's do. A line reads as in the binary: the message, then `key=value`
//! for each field (`worker starting worker=w-1 queue=default ...`).
//!
//! Which events are built at all follows the `ardiq` logger's effective level, read when
//! an engine is made (`Engine(settings)`): below it, an event costs one atomic load.
//!
//! The engine never waits for the GIL to log (a task body holding it for seconds must not
//! stop lease renewal): a line goes into a bounded queue, and the `ardiq-log` thread hands
//! the queue to `logging` with the GIL. [`drain`] empties the queue on the caller's thread,
//! so every line of a run is out when `app.run()` returns.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// The most verbose level forwarded: 0 none, 1 ERROR ... 5 TRACE.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(3);

/// The `ardiq` logger, looked up once.
static LOGGER: OnceLock<Py<PyAny>> = OnceLock::new();

/// Lines a stalled Python can fall behind by; past it, lines are counted, not kept.
const QUEUE_CAP: usize = 10_000;

/// Lines waiting for the GIL.
#[derive(Default)]
struct Queue {
    state: Mutex<Pending>,
    changed: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: VecDeque<(i32, String)>,
    /// Lines the queue had no room for since the last hand-over.
    dropped: u64,
    /// A batch is being handed to Python by the `ardiq-log` thread.
    emitting: bool,
    /// [`drain`] is emptying the queue itself: the thread takes nothing meanwhile.
    draining: bool,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

fn queue() -> &'static Queue {
    QUEUE.get_or_init(Queue::default)
}

fn lock(q: &Queue) -> std::sync::MutexGuard<'_, Pending> {
    crate::lock(&q.state)
}

/// Installs the forwarding (once per process; a program that installed a `tracing`
/// subscriber of its own keeps it) and reads the `ardiq` logger's level again.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let logger = match LOGGER.get() {
        Some(l) => l.bind(py).clone(),
        None => {
            let l = py
                .import("logging")?
                .call_method1("getLogger", ("ardiq",))?;
            let _ = LOGGER.set(l.clone().unbind());
            std::thread::Builder::new()
                .name("ardiq-log".into())
                .spawn(hand_over)
                .map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start a thread: {e}"))
                })?;
            let subscriber = tracing_subscriber::registry().with(ToPython);
            // Fails only when another global subscriber exists: its choice stands.
            let _ = tracing::subscriber::set_global_default(subscriber);
            l
        }
    };
    let level: i32 = logger.call_method0("getEffectiveLevel")?.extract()?;
    MAX_LEVEL.store(rank_of_python(level), Ordering::Relaxed);
    Ok(())
}

/// The `ardiq-log` thread: waits for lines and hands each batch to Python.
fn hand_over() {
    let q = queue();
    loop {
        let (lines, dropped) = {
            let mut p = lock(q);
            while p.lines.is_empty() || p.draining {
                p = q.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.emitting = true;
            (std::mem::take(&mut p.lines), std::mem::take(&mut p.dropped))
        };
        Python::attach(|py| emit(py, lines, dropped));
        lock(q).emitting = false;
        q.changed.notify_all();
    }
}

/// Hands every queued line to Python on this thread (which holds the GIL), after the
/// `ardiq-log` thread finished the batch it may be emitting.
pub fn drain(py: Python<'_>) {
    let q = queue();
    py.detach(|| {
        let mut p = lock(q);
        p.draining = true;
        while p.emitting {
            p = q.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    });
    let (lines, dropped) = {
        let mut p = lock(q);
        p.draining = false;
        (std::mem::take(&mut p.lines), std::mem::take(&mut p.dropped))
    };
    q.changed.notify_all();
    emit(py, lines, dropped);
}

fn emit(py: Python<'_>, lines: VecDeque<(i32, String)>, dropped: u64) {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    if dropped > 0 {
        let text = format!("{dropped} engine log lines were dropped (Python fell behind)");
        log_one(py, logger, 30, text);
    }
    for (levelno, text) in lines {
        log_one(py, logger, levelno, text);
    }
}

fn log_one(py: Python<'_>, logger: &Py<PyAny>, levelno: i32, text: String) {
    // `%s`: the text is never taken for a format string.
    if logger
        .call_method1(py, "log", (levelno, "%s", text))
        .is_err()
    {
        // A handler that raised: logging's own `handleError` already reported it, or
        // there is nowhere left to say it.
        PyErr::take(py);
    }
}

/// A Python level as a rank of [`MAX_LEVEL`].
fn rank_of_python(levelno: i32) -> u8 {
    match levelno {
        n if n > 40 => 0,
        n if n > 30 => 1,
        n if n > 20 => 2,
        n if n > 10 => 3,
        n if n > 5 => 4,
        _ => 5,
    }
}

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn python_level(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided per event, never cached per call site: the level follows the `ardiq`
        // logger's, which may change between runs.
        if meta.target().starts_with("ardiq") {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        // Our crates only: a dependency's chatter is not the app's business.
        meta.target().starts_with("ardiq")
            && rank(meta.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let item = (python_level(event.metadata().level()), line.finish());
        let q = queue();
        {
            let mut p = lock(q);
            if p.lines.len() >= QUEUE_CAP {
                p.dropped += 1;
                return;
            }
            p.lines.push_back(item);
        }
        q.changed.notify_all();
    }
}

/// The message and the `key=value` pairs of one event.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(self) -> String {
        let mut out = escape(&self.message);
        out.push_str(&self.fields);
        out
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), quoted(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            // `?value` and `%value` fields: already one readable token (lists, ids);
            // only control characters need escaping.
            let _ = write!(
                self.fields,
                " {}={}",
                field.name(),
                escape(&format!("{value:?}"))
            );
        }
    }
}

/// Control characters escaped, so text that came from Redis (ids, task names) cannot
/// start a forged line.
fn escape(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A field's value as one token: as is when it has no space, quote or control character,
/// else quoted with escapes.
fn quoted(value: &str) -> String {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        format!("{value:?}")
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_spaces_or_controls_are_quoted() {
        assert_eq!(quoted("w-1"), "w-1");
        assert_eq!(quoted("a b"), "\"a b\"");
        assert_eq!(quoted("x\ny"), "\"x\\ny\"");
        assert_eq!(quoted(""), "\"\"");
    }

    #[test]
    fn messages_cannot_break_lines() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\nINFO forged"), "a\\nINFO forged");
    }

    #[test]
    fn python_levels_map_to_ranks() {
        assert_eq!(rank_of_python(20), 3); // INFO: errors, warnings, info
        assert_eq!(rank_of_python(10), 4);
        assert_eq!(rank_of_python(30), 2);
        assert_eq!(rank_of_python(50), 0);
        assert!(rank(&Level::INFO) <= rank_of_python(20));
        assert!(rank(&Level::DEBUG) > rank_of_python(20));
    }
}
