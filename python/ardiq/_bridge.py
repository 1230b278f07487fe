"""The Rust engine's side of the Rust/Python boundary (private).

Two programs drive this module: the `ardiq` binary, which embeds CPython, and the
`ardiq_native` extension behind ``await app.run()`` (see :mod:`ardiq.worker.native`),
which uses only :class:`Bridge` on the caller's loop. The binary:

- :func:`load_app` imports ``MODULE:ATTR`` the way ``python -m`` would and checks that it
  is an :class:`~ardiq.Ardiq` app; :func:`configure` applies the command line's overrides
  to it and returns the settings the Rust engine needs.
- :func:`install_logging` forwards every ``logging`` record to a Rust function, so Python's
  logs and the engine's come out as one stream in one format.
- :class:`Bridge` runs the one asyncio event loop (uvloop when installed) on a thread the
  binary started (:meth:`Bridge.run`), or serves on the caller's (:meth:`Bridge.bind`).
  The engine queues deliveries and abort requests on the Rust side and wakes the loop
  through a socket it watches (:meth:`Bridge.attach_inbox`); the loop takes everything
  queued in one call, as *batches*, without another thread taking the GIL.
  Each delivery runs through the shared :class:`~ardiq.runtime.Runtime`;
  outcomes are collected and handed back to Rust in one call per loop iteration, and
  the progress bodies report (throttled by the runtime) is handed over before them.
  Aborts and timeouts cancel inside Python, on the loop. The app's lifespan wraps the
  whole run.

Tuples, not objects, cross the boundary: they are the cheapest thing for both sides to
build and read.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .lifespan import lifespan
from .runtime import FAIL, Delivery, Outcome, Runtime, now_ms
from .worker_settings import WorkerOverrides, WorkerSettings

if TYPE_CHECKING:
    from .app import Ardiq

log = logging.getLogger("ardiq")

# (entry_id, lane, task_id, name, payload, tries, enqueue_ms, expire_ms, reclaims,
#  job_entry, job_nonce): the fields of runtime.Delivery, in order
DeliveryTuple = tuple[
    str, str, str, str, bytes, int, int, int, int, str | None, str | None, str | None
]
# (entry_id, task_id, kind, value, tries, enqueue_ms, start_ms, lane, delay_ms,
#  retry_payload): the fields of runtime.Outcome, in order
OutcomeTuple = tuple[str, str, str, bytes, int, int, int, str, int, bytes]


class TargetError(Exception):
    """``MODULE:ATTR`` does not name an app; the message is the one line to print."""


# ----------------------------------------------------------------------- the app
def load_app(target: str) -> Ardiq:
    """Import ``MODULE:ATTR`` (``MODULE`` alone means ``MODULE:app``) with the current
    directory first on ``sys.path``, as ``python -m`` does.

    Raises :class:`TargetError` when the module or attribute does not exist or is not an
    app; any other exception was raised by the module itself (the user's bug).
    """
    from .app import Ardiq

    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise TargetError(f"`{target}` is not of the form `MODULE:ATTR` (e.g. `myproj.tasks:app`)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the target (or a package above it) missing is a usage error; a module that
        # fails on one of its own imports is the user's bug and keeps its traceback.
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise TargetError(
                f"no module named `{missing}` (looked in `{cwd}` and the environment of "
                f"`{sys.executable}`)"
            ) from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module `{module_name}` has no attribute `{attr}`") from None
    if not isinstance(obj, Ardiq):
        raise TargetError(
            f"`{module_name}:{attr}` is a `{type(obj).__name__}`, not an `ardiq.Ardiq` app"
        )
    return obj


def configure(app: Ardiq, overrides: Mapping[str, Any], worker_id: str) -> WorkerSettings:
    """The settings the engine runs with: the app's, with the command line's `overrides`
    (the fields of :class:`~ardiq.worker_settings.WorkerOverrides`) applied and checked.
    The app adopts them, so task code and the runtime see what the engine sees.

    Raises ValueError with a one-line message for a combination that cannot work.
    """
    settings = WorkerSettings.of(app, WorkerOverrides(**overrides), worker_id=worker_id)
    app._adopt_worker_settings(settings)
    return settings


def format_exception(exc: BaseException, tb: TracebackType | None = None) -> str:
    """The traceback as Python would print it, for the binary to show."""
    if tb is not None and exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    return "".join(traceback.format_exception(exc)).rstrip()


# ------------------------------------------------------------------------ logging
class _Forward(logging.Handler):
    """Hands each record to the binary's logger: (levelno, logger name, message)."""

    def __init__(self, emit: Callable[[int, str, str], None]) -> None:
        super().__init__()
        self._emit = emit
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self._formatter.formatException(record.exc_info)}"
            if record.stack_info:
                message = f"{message}\n{self._formatter.formatStack(record.stack_info)}"
            self._emit(record.levelno, record.name, message)
        except Exception:
            self.handleError(record)


def install_logging(emit: Callable[[int, str, str], None], level: int) -> None:
    """Send every record of the root logger (and warnings) to `emit`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Forward(emit))
    root.setLevel(level)
    logging.captureWarnings(True)


# ---------------------------------------------------------------------- the loop
def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, asyncio's otherwise."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Bridge:
    """The event loop the task bodies run on, and the two batched hand-overs."""

    def __init__(
        self,
        app: Ardiq,
        worker_id: str,
        on_outcomes: Callable[[list[OutcomeTuple]], None],
        on_progress: Callable[[str, str, str, int, str, str], None],
    ) -> None:
        self.app = app
        self.worker_id = worker_id
        self.runtime = Runtime(app, worker_id)
        self._on_outcomes = on_outcomes
        self._on_progress = on_progress
        self._loop: asyncio.AbstractEventLoop | None = None
        # (lane, entry id) -> running attempt (entry ids are unique only within a stream);
        # at most `concurrency` of them
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._pending: list[OutcomeTuple] = []
        self._flush_scheduled = False
        self._stop: asyncio.Event | None = None
        self._hard = False
        self._stopping = False  # the loop is ending: no new deliveries start
        self._take: Callable[[int], tuple[list[DeliveryTuple], list[str]]] | None = None

    # Called by the binary from its own threads (each holding the GIL briefly). --------
    def run(self, started: Callable[[], None]) -> None:
        """Run the loop on this thread until :meth:`stop`: enter the lifespan, call
        `started`, serve, leave the lifespan. Exceptions (a failing lifespan) propagate."""
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.bind(loop)
        try:
            loop.run_until_complete(self._main(started))
        finally:
            try:
                self.cancel_all()
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self.runtime.close()

    def attach_inbox(
        self, fd: int, take: Callable[[int], tuple[list[DeliveryTuple], list[str]]]
    ) -> None:
        """Watch `fd` (readable when the engine queued work) and call `take(n)` then for
        up to n queued deliveries (n: free task slots) and every abort id; also call it
        each time a task ends, for the next queued delivery (thread-safe; the loop must
        be running)."""
        self._take = take
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.add_reader, fd, self._pull)

    def flush_inbox(self) -> None:
        """Take what is queued before anything asked of the loop after this (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._pull)

    def abort(self, task_ids: list[str]) -> None:
        """Cancel the running attempts of `task_ids` (thread-safe; unknown ids ignored)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._abort, task_ids)

    def stop(self, hard: bool) -> None:
        """End :meth:`run`. `hard`: cancel running attempts first (no outcome: their
        entries stay pending for another worker's reclaim). Thread-safe."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._request_stop, hard)

    # On the loop. ------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve on `loop` (the caller's, already running) instead of one of our own."""
        self._loop = loop
        self.runtime.write_progress_with(loop, self._write_progress)

    def _write_progress(self, d: Delivery, tries: int, value: str, message: str) -> None:
        # Handed to the engine on the loop's thread, before the attempt's outcome: the
        # engine writes it before it finishes that outcome.
        self._on_progress(d.entry_id, d.lane, d.task_id, tries, value, message)

    async def wind_down(self, hard: bool) -> None:
        """The run is over: start nothing more, cancel running attempts when `hard` (they
        report nothing), wait for the rest and hand back their outcomes."""
        self._stopping = True
        if hard:
            self.cancel_all()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._flush()

    async def _main(self, started: Callable[[], None]) -> None:
        self._stop = asyncio.Event()
        async with lifespan(self.app):
            started()
            await self._stop.wait()
            await self.wind_down(self._hard)

    def _request_stop(self, hard: bool) -> None:
        self._stopping = True
        self._hard = self._hard or hard
        if self._stop is not None:
            self._stop.set()

    def cancel_all(self) -> None:
        """Start nothing more and cancel every running attempt (no outcome: their entries
        stay pending for reclaim)."""
        self._stopping = True
        for task in list(self._tasks.values()):
            task.cancel()

    def _pull(self) -> None:
        take = self._take
        if take is None:
            return
        # The engine hands over more deliveries than may run (they wait in the inbox), so
        # a slot that frees is refilled here at once; `concurrency` bodies at most.
        starts, aborts = take(max(0, self.app.concurrency - len(self._tasks)))
        if starts:
            self._start(starts)
        if aborts:
            self._abort(aborts)

    def _start(self, batch: list[DeliveryTuple]) -> None:
        loop = self._loop
        assert loop is not None
        for item in batch:
            d = Delivery(*item)
            # Known to the runtime before its first step: an abort taken in the same
            # batch (or before the task ran a step) stops it before its body starts.
            self.runtime.admit(d)
            task = loop.create_task(self._execute(d))
            if not task.done():  # an eager task factory may have run it to its end
                self._tasks[(d.lane, d.entry_id)] = task

    def _abort(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            # Nothing is remembered for an id that no longer runs here (its body ended
            # before the request came): the next delivery of that id is not touched.
            if not self.runtime.abort(task_id):
                log.debug("abort request for a task not running here id=%s", task_id)

    async def _execute(self, d: Delivery) -> None:
        try:
            o = await self.runtime.execute(d)
        except asyncio.CancelledError:
            return  # hard stop: no outcome; the entry stays pending for reclaim
        except BaseException as exc:
            # The runtime never raises; a body's SystemExit or KeyboardInterrupt gets
            # here. Every delivery still gets its one outcome.
            log.error(
                "task raised %s, which ends a process, not a task id=%s name=%s worker=%s try=%d",
                type(exc).__name__,
                d.task_id,
                d.name,
                self.worker_id,
                d.tries + 1,
            )
            o = Outcome(
                d.entry_id,
                d.task_id,
                FAIL,
                repr(exc).encode(),
                d.tries + 1,
                d.enqueue_ms,
                now_ms(),
                d.lane,
            )
        finally:
            self._tasks.pop((d.lane, d.entry_id), None)
            if not self._stopping:
                self._pull()  # the next queued delivery takes the freed slot
        self._pending.append(o.fields())
        if not self._flush_scheduled:
            # Everything that finishes in this loop iteration goes back in one call.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            self._on_outcomes(batch)
