//! The engine's [`Executor`] backed by `ardiq._bridge.Bridge`, an asyncio event loop.
//!
//! Two kinds of threads meet here, and only the loop's thread takes the GIL:
//!
//! * **The loop's thread** runs the asyncio event loop: a thread of the binary's own
//!   (`ardiq run`), or the caller's (`await app.run()` through the extension). Task bodies
//!   run there (`def` bodies on the runtime's thread pool). Outcomes finished in one loop
//!   iteration come back in one call to [`Outcomes`], which pushes them into the engine's
//!   channel (never blocks). Progress a body reports (throttled by the runtime) comes
//!   through [`Progress`], before the attempt's outcome.
//! * **tokio's threads** run the engine and never touch Python. The batches and abort
//!   requests the engine hands [`PyExecutor`] go into an [`Inbox`] (a mutex-guarded
//!   buffer) and, when it was empty, one byte goes down a socket pair whose other end the
//!   event loop watches (`add_reader`). The loop then takes what it has slots for in
//!   one call ([`Take`]), already holding the GIL, and takes the next one itself each
//!   time a body ends (the engine hands over up to `concurrency` more than run, see
//!   `Executor::queues_ahead`). No thread hands the GIL back and forth per batch, and
//!   the engine's `start` and `abort` never wait for the GIL (a task body that holds it
//!   for a long time slows task starts, not the engine: leases keep being renewed).
//!
//! Nothing here holds the inbox's lock while it could wait for the GIL (logging included):
//! the loop's thread takes that lock while holding the GIL.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ardiq_core::{Delivery, Executor, Outcome, OutcomeKind, OutcomeSink, ProgressReport};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tracing::error;

use crate::format_traceback;

/// What the engine handed over and the loop has not taken yet.
struct Pending {
    starts: Vec<Delivery>,
    aborts: Vec<String>,
    /// A wake-up byte is in the socket and not yet read.
    signalled: bool,
    /// The loop has a free task slot and nothing left to take: new deliveries must wake
    /// it. While it is busy it takes the next one itself when a body ends, so handing
    /// over costs no wake-up (no syscall on either side).
    hungry: bool,
    /// Queued deliveries may start until then (`Executor::leases_valid_until`); `None`
    /// before the first renewal round.
    start_until: Option<Instant>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            starts: Vec::new(),
            aborts: Vec::new(),
            signalled: false,
            hungry: true,
            start_until: None,
        }
    }
}

/// The hand-over from the engine's threads to the event loop.
struct Inbox {
    pending: Mutex<Pending>,
    /// Watched by the event loop (non-blocking).
    wake_rx: UnixStream,
    /// Written by the engine's side (non-blocking; at most one byte is ever unread).
    wake_tx: UnixStream,
}

impl Inbox {
    fn new() -> std::io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Inbox {
            pending: Mutex::new(Pending::default()),
            wake_rx,
            wake_tx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues work and wakes the loop when `wake` says it must hear of it now, unless a
    /// wake-up is already on its way.
    fn push(&self, add: impl FnOnce(&mut Pending), wake: impl FnOnce(&Pending) -> bool) {
        let written = {
            let mut p = self.lock();
            add(&mut p);
            if !wake(&p) || p.signalled {
                return;
            }
            p.signalled = true;
            (&self.wake_tx).write(&[1])
        };
        // Logged with the lock released: a log line may need the GIL (the extension sends
        // the engine's logs to Python's `logging`).
        if let Err(e) = written {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                error!(error = %e, "could not wake the event loop");
            }
        }
    }

    /// Up to `max_starts` queued deliveries (oldest first) and every abort, with the
    /// wake-up consumed (under the same lock, so a push after this one sends a new
    /// byte). Deliveries left behind wait for the loop's next free slot, which takes
    /// them without a wake-up.
    fn take(&self, max_starts: usize) -> (Vec<Delivery>, Vec<String>) {
        let mut p = self.lock();
        if p.signalled {
            let mut buf = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
            p.signalled = false;
        }
        // Past the leases' horizon nothing starts: the next renewal round first finds
        // out which queued entries another worker reclaimed meanwhile (and withdraws
        // them), then moves the horizon and wakes the loop.
        let allowed = if p.start_until.is_some_and(|t| Instant::now() > t) {
            0
        } else {
            max_starts
        };
        let starts: Vec<Delivery> = if allowed >= p.starts.len() {
            std::mem::take(&mut p.starts)
        } else {
            p.starts.drain(..allowed).collect()
        };
        // Slots left free (nothing to take, or not allowed yet): wake the loop for more.
        p.hungry = starts.len() < max_starts;
        (starts, std::mem::take(&mut p.aborts))
    }

    /// Removes the first queued delivery matching `which`, if one is still queued.
    fn remove(&self, which: impl Fn(&Delivery) -> bool) -> Option<Delivery> {
        let mut p = self.lock();
        let index = p.starts.iter().position(which)?;
        Some(p.starts.remove(index))
    }

    /// The queued deliveries, which the loop will now never take.
    fn recall(&self) -> Vec<Delivery> {
        std::mem::take(&mut self.lock().starts)
    }
}

/// Where the loop's outcomes go: the engine's channel, known from its first `start` (the
/// loop cannot finish anything before it).
#[derive(Clone, Default)]
pub struct OutcomeSlot(Arc<OnceLock<OutcomeSink>>);

impl OutcomeSlot {
    /// The `on_outcomes(list)` callable `Bridge(app, worker_id, on_outcomes, on_progress)`
    /// takes.
    pub fn callback(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(
            py,
            Outcomes {
                sink: self.0.clone(),
            },
        )?
        .into_any())
    }

    /// The `on_progress(entry_id, lane, task_id, tries, value, message)` callable the
    /// same `Bridge` takes.
    pub fn progress_callback(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(Py::new(
            py,
            Progress {
                sink: self.0.clone(),
            },
        )?
        .into_any())
    }
}

/// Connects an engine to `bridge` (a `ardiq._bridge.Bridge` whose loop runs, or is about
/// to run on this thread): the loop watches the inbox (`Bridge.attach_inbox`). Returns
/// the executor the engine drives and the link the run's end closes.
pub fn connect(
    py: Python<'_>,
    bridge: &Py<PyAny>,
    slot: &OutcomeSlot,
) -> PyResult<(Arc<PyExecutor>, InboxLink)> {
    let inbox = Arc::new(Inbox::new()?);
    let take = Py::new(
        py,
        Take {
            inbox: inbox.clone(),
        },
    )?;
    bridge.call_method1(py, "attach_inbox", (inbox.wake_rx.as_raw_fd(), take))?;
    let executor = Arc::new(PyExecutor {
        inbox,
        sink: slot.0.clone(),
    });
    Ok((
        executor,
        InboxLink {
            bridge: bridge.clone_ref(py),
        },
    ))
}

/// The engine's connection to the event loop.
pub struct InboxLink {
    bridge: Py<PyAny>,
}

impl InboxLink {
    /// Has the loop take what is still queued before anything asked of it later (such
    /// as the stop that follows).
    pub fn close(self) {
        Python::attach(|py| {
            if let Err(e) = self.bridge.call_method0(py, "flush_inbox") {
                error!(
                    "could not hand tasks to Python: {}",
                    format_traceback(py, &e)
                );
            }
        });
    }
}

/// The engine's side: queues work for the event loop and returns at once.
pub struct PyExecutor {
    inbox: Arc<Inbox>,
    sink: Arc<OnceLock<OutcomeSink>>,
}

impl Executor for PyExecutor {
    fn start(&self, batch: Vec<Delivery>, outcomes: &OutcomeSink) {
        // Set before the first delivery reaches Python, so every outcome finds it.
        self.sink.get_or_init(|| outcomes.clone());
        self.inbox.push(|p| p.starts.extend(batch), |p| p.hungry);
    }

    fn abort(&self, task_id: &str) {
        // Still queued here (never taken by the loop): finished as aborted at once,
        // without waiting for a slot. Not an attempt: `tries` stays at those made.
        if let Some(sink) = self.sink.get() {
            if let Some(d) = self.inbox.remove(|d| d.task_id == task_id) {
                let mut outcome = d.aborted(0);
                outcome.tries = d.tries;
                sink.send_one(outcome);
                return;
            }
        }
        // Running, or about to: the loop cancels it. An abort cannot wait for a slot to
        // free: always wake.
        self.inbox
            .push(|p| p.aborts.push(task_id.to_owned()), |_| true);
    }

    /// The loop runs at most `concurrency` bodies and takes the next queued delivery
    /// when one ends (`Bridge._pull`), without waiting for this thread.
    fn queues_ahead(&self) -> bool {
        true
    }

    fn recall(&self) -> Vec<Delivery> {
        self.inbox.recall()
    }

    fn withdraw(&self, lane: &str, entry_id: &str) -> bool {
        self.inbox
            .remove(|d| d.lane == lane && d.entry_id == entry_id)
            .is_some()
    }

    fn leases_valid_until(&self, until: Instant) {
        // A loop that was refused starts (past the old horizon) and waits with free
        // slots hears of the new one.
        self.inbox.push(
            |p| p.start_until = Some(until),
            |p| p.hungry && !p.starts.is_empty(),
        );
    }
}

/// `take(max_starts)`: called on the loop thread when the wake-up socket is readable
/// or a task slot freed; returns `(deliveries, abort ids)`: up to `max_starts` queued
/// deliveries (as tuples) and every abort queued since the last call.
#[pyclass(frozen)]
struct Take {
    inbox: Arc<Inbox>,
}

type Taken<'py> = (Bound<'py, PyList>, Vec<String>);

#[pymethods]
impl Take {
    fn __call__<'py>(&self, py: Python<'py>, max_starts: usize) -> PyResult<Taken<'py>> {
        let (starts, aborts) = self.inbox.take(max_starts);
        let items = starts
            .iter()
            .map(|d| delivery_tuple(py, d))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((PyList::new(py, items)?, aborts))
    }
}

/// `(entry_id, lane, task_id, name, payload, tries, enqueue_ms, expire_ms, reclaims,
/// job_entry, job_nonce, limit_key)`; job_entry and job_nonce are `None` unless the
/// engine checked the live job (a signing worker: PROTOCOL.md, Signed payloads);
/// limit_key is the entry's `lk` (PROTOCOL.md, Limits).
fn delivery_tuple<'py>(py: Python<'py>, d: &Delivery) -> PyResult<Bound<'py, PyTuple>> {
    let job = d.live_job.as_ref();
    (
        d.entry_id.as_str(),
        d.lane.as_str(),
        d.task_id.as_str(),
        d.fn_name.as_str(),
        PyBytes::new(py, &d.payload),
        d.tries,
        d.enqueued_ms,
        d.expire_ms,
        d.reclaims,
        job.map(|j| j.entry_id.as_str()),
        job.map(|j| j.nonce.as_str()),
        d.limit_key.as_deref(),
    )
        .into_pyobject(py)
}

/// `on_outcomes(list)`: called on the loop thread once per iteration that finished
/// something.
#[pyclass(frozen)]
struct Outcomes {
    sink: Arc<OnceLock<OutcomeSink>>,
}

type OutcomeTuple<'py> = (
    String,
    String,
    String,
    Bound<'py, PyBytes>,
    u32,
    i64,
    i64,
    String,
    i64,
    Bound<'py, PyBytes>,
);

#[pymethods]
impl Outcomes {
    fn __call__(&self, batch: &Bound<'_, PyList>) -> PyResult<()> {
        let mut out = Vec::with_capacity(batch.len());
        for item in batch.iter() {
            let (
                entry_id,
                task_id,
                kind,
                value,
                tries,
                enqueued_ms,
                started_ms,
                lane,
                delay,
                payload,
            ): OutcomeTuple<'_> = item.extract()?;
            let kind = match kind.as_str() {
                "ok" => OutcomeKind::Ok,
                "fail" => OutcomeKind::Fail,
                "expired" => OutcomeKind::Expired,
                "retry" => OutcomeKind::Retry,
                "abort" => OutcomeKind::Abort,
                "drop" => OutcomeKind::Drop,
                other => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "unknown outcome kind {other:?}"
                    )))
                }
            };
            out.push(Outcome {
                entry_id,
                task_id,
                kind,
                value: value.as_bytes().to_vec(),
                tries,
                enqueued_ms,
                started_ms,
                lane,
                retry_delay_ms: delay.max(0) as u64,
                retry_payload: payload.as_bytes().to_vec(),
            });
        }
        match self.sink.get() {
            Some(sink) => {
                sink.send(out);
            }
            None => error!(
                count = out.len(),
                "outcomes arrived before any task was started"
            ),
        }
        Ok(())
    }
}

/// `on_progress(entry_id, lane, task_id, tries, value, message)`: called on the loop
/// thread with a running attempt's progress, already throttled and checked by the runtime
/// (`value` and `message` are JSON texts), and always before the attempt's outcome. The
/// engine writes it before it finishes that outcome (`ardiq_core::progress`).
#[pyclass(frozen)]
struct Progress {
    sink: Arc<OnceLock<OutcomeSink>>,
}

#[pymethods]
impl Progress {
    fn __call__(
        &self,
        entry_id: String,
        lane: String,
        task_id: String,
        tries: u32,
        value: String,
        message: String,
    ) {
        // No sink: no delivery was ever started, so no attempt can report.
        if let Some(sink) = self.sink.get() {
            sink.progress(ProgressReport {
                entry_id,
                lane,
                task_id,
                tries,
                value,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn delivery(entry_id: &str, task_id: &str) -> Delivery {
        Delivery {
            entry_id: entry_id.into(),
            lane: "default".into(),
            task_id: task_id.into(),
            fn_name: "noop".into(),
            payload: Vec::new(),
            tries: 0,
            enqueued_ms: 0,
            expire_ms: 0,
            reclaims: 0,
            live_job: None,
            limit_key: None,
            holds_token: false,
        }
    }

    /// Bytes waiting in the wake-up socket.
    fn unread(inbox: &Inbox) -> usize {
        let mut buf = [0u8; 16];
        // Nothing to read (WouldBlock) counts as none.
        (&inbox.wake_rx).read(&mut buf).unwrap_or(0)
    }

    fn push_starts(inbox: &Inbox, batch: Vec<Delivery>) {
        inbox.push(|p| p.starts.extend(batch), |p| p.hungry);
    }

    #[test]
    fn a_hungry_loop_is_woken_once_however_much_arrives() {
        let inbox = Inbox::new().unwrap();
        push_starts(&inbox, vec![delivery("1-0", "a")]);
        push_starts(&inbox, vec![delivery("2-0", "b")]);
        assert_eq!(unread(&inbox), 1, "one byte for both batches");
    }

    #[test]
    fn take_hands_over_at_most_the_free_slots_oldest_first() {
        let inbox = Inbox::new().unwrap();
        push_starts(
            &inbox,
            vec![
                delivery("1-0", "a"),
                delivery("2-0", "b"),
                delivery("3-0", "c"),
            ],
        );
        let (starts, aborts) = inbox.take(2);
        let ids: Vec<_> = starts.iter().map(|d| d.task_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(aborts.is_empty());
        // Every slot filled: the loop takes the rest itself when one frees, so new work
        // costs no wake-up until then.
        push_starts(&inbox, vec![delivery("4-0", "d")]);
        assert_eq!(unread(&inbox), 0);
        let (starts, _) = inbox.take(5);
        assert_eq!(starts.len(), 2);
        // Slots left free: the next delivery wakes the loop again.
        push_starts(&inbox, vec![delivery("5-0", "e")]);
        assert_eq!(unread(&inbox), 1);
    }

    #[test]
    fn nothing_starts_past_the_leases_horizon() {
        let inbox = Inbox::new().unwrap();
        inbox.push(
            |p| p.start_until = Some(Instant::now() - Duration::from_millis(1)),
            |_| false,
        );
        push_starts(&inbox, vec![delivery("1-0", "a")]);
        let (starts, _) = inbox.take(4);
        assert!(starts.is_empty(), "a lapsed horizon holds every start back");
        inbox.push(
            |p| p.start_until = Some(Instant::now() + Duration::from_secs(60)),
            |p| p.hungry && !p.starts.is_empty(),
        );
        let (starts, _) = inbox.take(4);
        assert_eq!(starts.len(), 1);
    }

    #[test]
    fn withdrawn_and_recalled_deliveries_never_reach_the_loop() {
        let inbox = Inbox::new().unwrap();
        push_starts(
            &inbox,
            vec![
                delivery("1-0", "a"),
                delivery("2-0", "b"),
                delivery("3-0", "c"),
            ],
        );
        let gone = inbox.remove(|d| d.entry_id == "2-0").unwrap();
        assert_eq!(gone.task_id, "b");
        assert!(inbox.remove(|d| d.entry_id == "2-0").is_none());
        let recalled: Vec<_> = inbox.recall().into_iter().map(|d| d.task_id).collect();
        assert_eq!(recalled, ["a", "c"]);
        assert!(inbox.take(4).0.is_empty());
    }

    #[test]
    fn aborts_always_wake_and_all_are_taken() {
        let inbox = Inbox::new().unwrap();
        push_starts(&inbox, vec![delivery("1-0", "a")]);
        let _ = inbox.take(1); // the loop is busy now: starts would not wake it
        assert_eq!(unread(&inbox), 0);
        inbox.push(|p| p.aborts.push("a".into()), |_| true);
        inbox.push(|p| p.aborts.push("z".into()), |_| true);
        assert_eq!(unread(&inbox), 1);
        let (_, aborts) = inbox.take(0);
        assert_eq!(aborts, ["a", "z"]);
    }
}
