"""The task runtime: everything a task body experiences, for one delivery.

Decoding the arguments, ``current_task()``, middleware, the timeout, sync bodies on a
thread pool, encoding the result or the error, the retry decision and ``on_error`` hooks
live here, and only here. The in-code worker, the native worker (through the bridge) and
``ardiq.testing.inline`` all hand deliveries to :meth:`Runtime.execute` and get back an
:class:`Outcome` to finish; they differ only in how they talk to Redis.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .context import ErrorContext, TaskContext, _current
from .errors import Retry
from .limits import LIMIT_KEY_HEADER
from .progress import ProgressWriter, Reporter, encode
from .serializers import msgpack_dumps, msgpack_loads
from .signing import EXPIRED as SIGNATURE_EXPIRED
from .signing import SKEW_MS, Binding, Opened, SignatureError

if TYPE_CHECKING:
    from .app import Ardiq
    from .isolation import ChildPool
    from .task import Task

log = logging.getLogger("ardiq")

# Outcome kinds, as the finish script knows them (PROTOCOL.md).
OK, FAIL, EXPIRED, RETRY, ABORT, DROP = "ok", "fail", "expired", "retry", "abort", "drop"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def retry_delay_ms(tries: int, requested_ms: int | None, backoff_ms: int) -> int:
    """How long a failed attempt waits before the next: the delay a ``Retry`` asked for
    (negative counts as 0), else the task's ``backoff_ms``, else tries² seconds. `tries`
    counts the failed attempt. The engine's ``retry::retry_delay_ms`` is the same rule
    (tests/vectors/backoff.json holds both to it)."""
    if requested_ms is not None:
        return max(0, int(requested_ms))
    if backoff_ms:
        return backoff_ms
    return tries * tries * 1000


@dataclass(slots=True)
class Delivery:
    """One attempt of a task, as read from its stream entry."""

    entry_id: str
    lane: str
    task_id: str
    name: str
    payload: bytes
    tries: int
    """Attempts made before this one."""
    enqueue_ms: int
    expire_ms: int = 0
    reclaims: int = 0
    """Deliveries of this attempt lost with a worker (the entry's `r`): a suspect when >= 1."""
    job_entry: str | None = None
    """The live job's `e` as read just before the start (a signing worker checks every
    delivery, PROTOCOL.md "Signed payloads"); "" when no job; None when not checked."""
    job_nonce: str | None = None
    """The live job's `n`, read with `job_entry`."""
    limit_key: str | None = None
    """The entry's limit key (`lk`, PROTOCOL.md, Limits); a signing worker checks it
    against the one sealed in the headers."""


@dataclass(slots=True)
class Outcome:
    """How an attempt ended, in the shape the finish script takes."""

    entry_id: str
    task_id: str
    kind: str
    value: bytes
    tries: int
    """Attempts made, this one included."""
    enqueue_ms: int
    start_ms: int
    lane: str
    delay_ms: int = 0
    retry_payload: bytes = b""
    """For a retry: the payload the next attempt runs with (b"": the entry's own); a
    signing worker re-seals it with a fresh not-after."""

    def fields(self) -> tuple[str, str, str, bytes, int, int, int, str, int, bytes]:
        """Every field, in the order the `finish` script takes an outcome's ARGV and the
        binary's bridge hands it to Rust."""
        return (
            self.entry_id,
            self.task_id,
            self.kind,
            self.value,
            self.tries,
            self.enqueue_ms,
            self.start_ms,
            self.lane,
            self.delay_ms,
            self.retry_payload,
        )


class _Aborted(Exception):
    """Internal: the attempt was cancelled by an abort request."""


# The running attempt's timeout (None: no timeout), read for when it fires, on its event
# loop's clock. Code inside the attempt (middleware) is cancelled both by the timeout and
# by an abort or a hard stop; this tells them apart without guessing from elapsed time.
# (The timeout itself, not its time: an isolated body's moves, see ardiq.isolation.)
_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "ardiq_attempt_deadline", default=None
)


def timed_out() -> bool:
    """Internal: whether the running attempt's timeout has fired (asked on a
    ``CancelledError`` inside the attempt). asyncio fires a timer up to its clock's
    resolution early, hence the millisecond of slack."""
    limit = _deadline.get()
    deadline = None if limit is None else limit.when()
    return deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.001


class _TimedOut(Exception):
    """Internal: the attempt ran past its task's ``timeout``. Carries the TimeoutError
    hooks are given; the result reads its message alone, ``timed out after <timeout>s``
    with the timeout as the task gave it (not a ``repr``)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.error = TimeoutError(f"timed out after {timeout}s")


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _DaemonPool(Executor):
    """Threads for sync task bodies.

    Unlike ``ThreadPoolExecutor`` its threads are daemons that the interpreter does not
    join at exit: a sync body abandoned by an abort, a timeout or a hard stop keeps
    running to its end, but never holds the worker process open after it stopped. A
    thread is added whenever none is idle, so an abandoned body never delays the next
    task (running bodies are bounded by the worker's concurrency).
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the sync task pool is shut down")
            self._work.put((future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False):
                thread = threading.Thread(
                    target=self._serve, name=f"{self._prefix}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, call = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()


class Runtime:
    """Runs deliveries of one app's tasks. One per worker (or inline test context)."""

    def __init__(self, app: Ardiq, worker_id: str) -> None:
        self.app = app
        self.worker_id = worker_id
        # Attempts handed over and not yet ended, by (lane, entry id): an abort request
        # lives exactly as long as the attempt it was meant for, never on into the next
        # delivery of the same task id (a replay, a unique task, a custom id).
        # (Plain dicts and a set, not an object per attempt: this is on every task's path.)
        self._attempts: dict[tuple[str, str], str] = {}  # -> task id, until its body ended
        self._bodies: dict[tuple[str, str], asyncio.Task[Any]] = {}  # while the body runs
        self._aborted: set[tuple[str, str]] = set()
        self._pool: _DaemonPool | None = None
        self._children: ChildPool | None = None  # isolated tasks' processes, made on first use
        # The bytes of a `None` result, when the serializer is ours (pure: always the same).
        self._none: bytes | None = msgpack_dumps(None) if app.serializer is msgpack_dumps else None
        # Our deserializer builds new lists and dicts each call: no copies needed.
        self._fresh_decode = app.deserializer is msgpack_loads
        # Progress (see `progress`): where writes go, on which loop; and the reporters of
        # the attempts that reported, made on their first report (none for the rest).
        self._progress_loop: asyncio.AbstractEventLoop | None = None
        self._progress_writer: ProgressWriter | None = None
        self._reporters: dict[tuple[str, str], Reporter] = {}

    def write_progress_with(self, loop: asyncio.AbstractEventLoop, writer: ProgressWriter) -> None:
        """Where the progress task bodies report goes (the worker's own writer), and the
        loop the attempts run on. Until called, progress is checked and dropped."""
        self._progress_loop = loop
        self._progress_writer = writer

    def progress(self, d: Delivery, tries: int, value: object, message: object) -> None:
        """A report from the body of `d` (any thread): checked here (raising in the
        caller), then throttled by the attempt's :class:`~ardiq.progress.Reporter`."""
        text, message_text = encode(value, message)
        self.progress_encoded(d, tries, text, message_text)

    def progress_encoded(self, d: Delivery, tries: int, text: str, message_text: str) -> None:
        """:meth:`progress` with the value and message already checked and encoded (an
        isolated body's reports, checked in its child process)."""
        key = (d.lane, d.entry_id)
        reporter = self._reporters.get(key)
        if reporter is None:
            loop, writer = self._progress_loop, self._progress_writer
            if loop is None or writer is None or self._attempts.get(key) != d.task_id:
                # No writer, or the body already ended (an abandoned sync body that
                # still reports): nothing to write to.
                return
            reporter = self._reporters.setdefault(key, Reporter(loop, writer, d, tries))
        reporter.offer(text, message_text)

    @property
    def running_ids(self) -> list[str]:
        """The task ids whose bodies are running now."""
        return [self._attempts[key] for key in self._bodies if key in self._attempts]

    def admit(self, d: Delivery) -> None:
        """`d` is handed over and its :meth:`execute` will start soon: an abort from now
        on finds it (and it then never starts its body). Optional: :meth:`execute`
        registers the attempt itself; a caller that may drop `d` without executing it
        calls :meth:`release`."""
        self._attempts[(d.lane, d.entry_id)] = d.task_id

    def release(self, d: Delivery) -> None:
        """Forget an admitted delivery that will not be executed."""
        key = (d.lane, d.entry_id)
        self._attempts.pop(key, None)
        self._aborted.discard(key)

    def abort(self, task_id: str, lane: str | None = None, entry_id: str | None = None) -> bool:
        """Cancel the attempt of `task_id` here (only the one of `lane`/`entry_id` when
        given): a running body is cancelled, one not started yet never starts, and the
        outcome is an abort. Returns False, and remembers nothing, when no attempt of that
        id runs or is about to run here (its body already ended, or it never came)."""
        if entry_id is not None:
            key = (lane or "", entry_id)
            keys = [key] if self._attempts.get(key) == task_id else []
        else:
            keys = [k for k, t in self._attempts.items() if t == task_id]
        for key in keys:
            if key in self._aborted:
                continue  # already on its way: a second cancel would outlive the first
            self._aborted.add(key)
            body = self._bodies.get(key)
            if body is not None and not body.done():
                body.cancel()
        return bool(keys)

    def close(self) -> None:
        """Release the sync-task threads (abandoned sync bodies keep running to their end)
        and kill the children of isolated tasks."""
        if self._children is not None:
            self._children.close()
            self._children = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def execute(self, d: Delivery) -> Outcome:
        """Run one attempt to its end and say how it ended. Never raises, except
        ``CancelledError`` when the worker itself is being torn down."""
        key = (d.lane, d.entry_id)
        self._attempts[key] = d.task_id
        try:
            # The common path (a known task, decoded, returns, no middleware or timeout) does
            # as little per task as it can: no log fields built unless a line is emitted, no
            # closures, the body awaited directly.
            tries = d.tries + 1
            start = now_ms()
            if d.expire_ms and start > d.expire_ms:
                log.warning("task expired before it started %s", self._fields(d, tries))
                # Never started: no attempt counted and no start time (PROTOCOL.md: the
                # result's started_ms is 0), as the engine finishes an expired delivery.
                return self._outcome(d, d.tries, 0, EXPIRED, b"expired")
            app = self.app
            task = app._tasks.get(d.name)
            if task is None:
                error = f"unknown task {d.name!r}"
                log.error("unknown task %s", self._fields(d, tries))
                await self._on_error(d, LookupError(error), tries, will_retry=False)
                return self._outcome(d, tries, start, FAIL, error)
            # The seal is checked before the deserializer sees a byte.
            checked = self._open(d, start)
            if isinstance(checked, Outcome):
                return checked
            opened = checked
            body = opened.body
            try:
                args, kwargs, headers = self._decode(body)
            except Exception as exc:
                error = f"undecodable payload: {exc!r}"
                log.error(
                    "task payload could not be decoded %s error=%s",
                    self._fields(d, tries),
                    type(exc).__name__,
                )
                await self._on_error(d, exc, tries, will_retry=False)
                return self._outcome(d, tries, start, FAIL, error)

            if app._signer.enabled and headers.get(LIMIT_KEY_HEADER) != d.limit_key:
                # The entry's `lk` is not the sealed one: someone moved the task under
                # another limit (PROTOCOL.md, Limits).
                return self._refuse(d, "limit key mismatch", start)
            ctx = TaskContext(
                d.task_id, d.name, tries, headers=headers, lane=d.lane, enqueue_ms=d.enqueue_ms
            )
            # For ctx.progress(): two plain stores (no allocation on every task's path).
            extras = ctx.__dict__
            extras["_runtime"] = self
            extras["_delivery"] = d
            if self._aborted and key in self._aborted:
                log.warning("task aborted before it started %s", self._fields(d, tries))
                return self._outcome(d, tries, start, ABORT, b"aborted")
            debug = log.isEnabledFor(logging.DEBUG)
            if debug:
                log.debug("task started %s", self._fields(d, tries))
            me = asyncio.current_task()
            if me is not None:
                self._bodies[key] = me
            try:
                fn = task.fn
                if (
                    task.is_async
                    and task.timeout is None
                    and not app._middleware
                    and fn is not None
                ):
                    token = _current.set(ctx)
                    try:
                        value = await fn(*args, **kwargs)
                    finally:
                        _current.reset(token)
                else:
                    value = await self._run_attempt(task, ctx, args, kwargs)
            except _Aborted:
                log.warning("task aborted mid-flight %s", self._fields(d, tries))
                return self._outcome(d, tries, start, ABORT, b"aborted")
            except asyncio.CancelledError:
                if key in self._aborted and me is not None:
                    me.uncancel()
                    log.warning("task aborted mid-flight %s", self._fields(d, tries))
                    return self._outcome(d, tries, start, ABORT, b"aborted")
                raise
            except Exception as exc:
                # The body is over: an abort arriving from here on has nothing to cancel.
                self._bodies.pop(key, None)
                self._attempts.pop(key, None)
                if isinstance(exc, _TimedOut):
                    timed_out = exc.error
                    return await self._failed(
                        d, task, timed_out, tries, start, opened, str(timed_out)
                    )
                return await self._failed(d, task, exc, tries, start, opened)
            finally:
                self._bodies.pop(key, None)
                self._attempts.pop(key, None)
            try:
                none = self._none
                data = none if value is None and none is not None else app.serializer(value)
            except Exception as exc:
                log.error(
                    "task result could not be serialized %s error=%s",
                    self._fields(d, tries),
                    type(exc).__name__,
                )
                await self._on_error(d, exc, tries, will_retry=False)
                return self._outcome(
                    d, tries, start, FAIL, f"result could not be serialized: {exc!r}"
                )
            limit = app.max_payload_bytes
            if len(data) > limit:
                # Stored as is, a huge result would bloat Redis (and could be refused there
                # under maxmemory): the same limit as for payloads.
                error = f"result too large: {len(data)} bytes, over the limit of {limit}"
                log.error(
                    "task result too large %s size=%d limit=%d",
                    self._fields(d, tries),
                    len(data),
                    limit,
                )
                await self._on_error(d, ValueError(error), tries, will_retry=False)
                return self._outcome(d, tries, start, FAIL, error + " (max_payload_bytes)")
            if debug:
                log.debug(
                    "task succeeded %s duration_ms=%d", self._fields(d, tries), now_ms() - start
                )
            signer = app._signer
            if signer.enabled:
                data = signer.seal_result(d.task_id, data)
            return self._outcome(d, tries, start, OK, data)
        finally:
            self._attempts.pop(key, None)
            if self._aborted:
                self._aborted.discard(key)
            if self._reporters:
                reporter = self._reporters.pop(key, None)
                if reporter is not None:
                    # The attempt's last value lands before its outcome is finished.
                    await reporter.close()

    def _open(self, d: Delivery, now: int) -> Opened | Outcome:
        """The payload opened, or the outcome of a delivery that must not run.

        A signing app runs a delivery only when its seal verifies for this queue, lane, id
        and task, the live job still names this entry with the sealed nonce, and the
        not-after has not passed (PROTOCOL.md, Signed payloads). A refused delivery that is
        the live job's own entry fails its task (its waiters hear why); any other (a
        replay, a moved or duplicated entry) is dropped, leaving the task alone."""
        signer = self.app._signer
        if not signer.enabled:
            return signer.strip(d.payload)  # the common path: no binding, no copy
        binding = Binding(self.app.queue_name, d.lane, d.task_id, d.name)
        tries = d.tries + 1
        try:
            opened = signer.open(binding, d.payload)
        except SignatureError as exc:
            return self._refuse(d, str(exc), now)
        # The job check needs what `started` read (None: no check was made, as in
        # `ardiq.testing.inline`); the not-after holds whatever the job says.
        if (
            d.job_entry is not None
            and opened.nonce is not None
            and (d.job_entry != d.entry_id or d.job_nonce != opened.nonce)
        ):
            reason = "replayed entry: no live job holds it (nonce or entry mismatch)"
            log.error("task payload refused %s reason=%s", self._fields(d, tries), reason)
            return self._drop(d, reason)
        if opened.not_after is not None and now > opened.not_after + SKEW_MS:
            return self._refuse(d, SIGNATURE_EXPIRED, now)
        return opened

    def _refuse(self, d: Delivery, reason: str, now: int) -> Outcome:
        tries = d.tries + 1
        log.error("task payload refused %s reason=%s", self._fields(d, tries), reason)
        if d.job_entry is not None and d.job_entry != d.entry_id:
            return self._drop(d, reason)
        return self._outcome(d, tries, now, FAIL, reason)

    @staticmethod
    def _drop(d: Delivery, reason: str) -> Outcome:
        """Refused without touching the task it names: kept as `entry:<entry id>`."""
        return Outcome(
            d.entry_id,
            f"entry:{d.entry_id}",
            DROP,
            reason.encode(),
            d.tries,
            d.enqueue_ms,
            0,
            d.lane,
        )

    def _fields(self, d: Delivery, tries: int) -> str:
        """The task's log fields (built only for a line that is emitted)."""
        return f"id={d.task_id} name={d.name} worker={self.worker_id} try={tries}"

    @staticmethod
    def _outcome(
        d: Delivery, tries: int, start: int, kind: str, value: bytes | str, delay_ms: int = 0
    ) -> Outcome:
        raw = value.encode() if isinstance(value, str) else value
        return Outcome(
            d.entry_id, d.task_id, kind, raw, tries, d.enqueue_ms, start, d.lane, delay_ms
        )

    def _decode(self, payload: bytes) -> tuple[list[Any], dict[str, Any], dict[str, str]]:
        decoded = self.app.deserializer(payload)
        if type(decoded) is list and len(decoded) == 3:
            # The common shape, as msgpack decodes it: nothing to convert.
            args, kwargs, headers = decoded
            if type(args) is list and type(kwargs) is dict and self._fresh_decode:
                return args, kwargs, headers if type(headers) is dict else dict(headers or {})
        if not isinstance(decoded, list | tuple) or len(decoded) != 3:
            raise ValueError("payload is not [args, kwargs, headers]")
        args, kwargs, headers = decoded
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise ValueError("payload args must be a list and kwargs a map")
        return list(args), kwargs, dict(headers or {})

    async def _run_attempt(
        self, task: Task[Any, Any], ctx: TaskContext, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        token = _current.set(ctx)
        try:
            call = self._chain(task, ctx, args, kwargs)
            if task.timeout is None:
                return await call()
            try:
                async with asyncio.timeout(task.timeout) as limit:
                    deadline = _deadline.set(limit)
                    try:
                        return await call()
                    finally:
                        _deadline.reset(deadline)
            except TimeoutError:
                raise _TimedOut(task.timeout) from None
        finally:
            _current.reset(token)

    def _chain(
        self, task: Task[Any, Any], ctx: TaskContext, args: list[Any], kwargs: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]]:
        """The body wrapped in the app's middleware, first registered outermost."""

        async def body() -> Any:
            fn = task.fn
            assert fn is not None
            if task.is_async:
                return await fn(*args, **kwargs)
            if task.isolated:
                return await self._isolated(task, ctx, args, kwargs)
            loop = asyncio.get_running_loop()
            if self._pool is None:
                self._pool = _DaemonPool("ardiq-task")
            # The copied context carries current_task() into the thread.
            call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await loop.run_in_executor(self._pool, call)

        call: Callable[[], Awaitable[Any]] = body
        for mw in reversed(self.app._middleware):
            call = functools.partial(mw, ctx, call)
        return call

    def _isolated(
        self, task: Task[Any, Any], ctx: TaskContext, args: list[Any], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        """The body in a child process (``isolated=True``): see :mod:`ardiq.isolation`."""
        children = self._children
        if children is None:
            from .isolation import ChildPool  # only apps with isolated tasks pay for it

            if self._pool is None:
                self._pool = _DaemonPool("ardiq-task")
            children = self._children = ChildPool(self.app, self._pool)
        return children.call(task, ctx, args, kwargs)

    async def _failed(
        self,
        d: Delivery,
        task: Task[Any, Any],
        exc: BaseException,
        tries: int,
        start: int,
        opened: Opened | None = None,
        text: str | None = None,
    ) -> Outcome:
        """The outcome of a failed attempt: a retry or the last failure. Its value is
        `text` if given, else ``repr(exc)``."""
        if text is None:
            text = repr(exc)
        fields = self._fields(d, tries)
        will_retry = tries <= task.max_retries
        if will_retry:
            requested = exc.delay_ms if isinstance(exc, Retry) else None
            delay = retry_delay_ms(tries, requested, task.backoff_ms)
            log.warning(
                "task retry scheduled %s delay_ms=%d error=%s", fields, delay, type(exc).__name__
            )
            if not isinstance(exc, Retry):
                await self._on_error(d, exc, tries, will_retry=True)
            outcome = self._outcome(d, tries, start, RETRY, text, delay)
            signer = self.app._signer
            if signer.enabled and opened is not None and opened.nonce is not None:
                # The next attempt may run long after this one's not-after: seal it again
                # from its own due time (same nonce: the job record keeps it).
                binding = Binding(self.app.queue_name, d.lane, d.task_id, d.name)
                outcome.retry_payload = signer.reseal(binding, opened, now_ms() + delay)
            return outcome
        log.error("task failed after the last attempt %s error=%s", fields, type(exc).__name__)
        await self._on_error(d, exc, tries, will_retry=False)
        return self._outcome(d, tries, start, FAIL, text)

    async def _on_error(
        self, d: Delivery, exc: BaseException, tries: int, *, will_retry: bool
    ) -> None:
        hooks = self.app._error_hooks
        if not hooks:
            return
        ctx = ErrorContext(d.name, d.task_id, exc, tries, will_retry)
        for hook in hooks:
            try:
                result = hook(ctx)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as hook_exc:
                log.error(
                    "on_error hook %s raised %s (ignored) id=%s name=%s worker=%s try=%d",
                    getattr(hook, "__name__", type(hook).__name__),
                    type(hook_exc).__name__,
                    d.task_id,
                    d.name,
                    self.worker_id,
                    tries,
                )
