"""The ArdiQ app: settings, task registration, the producer API and the in-code worker."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from .context import EnqueueContext, ErrorContext, TaskContext
from .errors import ArdiqError
from .jobs import (
    Attempt,
    CronState,
    DeadLetter,
    HistoryEntry,
    Job,
    Status,
    TaskInfo,
    TaskResult,
    decode_result,
)
from .lifespan import State, lifespan_factory
from .limits import LIMIT_KEY_HEADER
from .progress import Progress
from .progress import decode as decode_progress
from .protocol import Keys
from .serializers import Deserializer, Serializer, msgpack_dumps, msgpack_loads
from .settings import (
    DEFAULT_HISTORY,
    DEFAULT_HISTORY_TTL_S,
    MAX_SECONDS,
    check_history,
    check_history_ttl_s,
    check_int,
    check_lane,
    check_max_connections,
    check_optional_positive_int,
    check_positive_int,
    check_redis_url,
    check_weights,
    default_redis_url,
)
from .signing import DEFAULT_TTL_MS, Binding, Signer, check_signing_keys
from .task import PreparedTask, Task

if TYPE_CHECKING:
    import asyncio
    from datetime import timedelta

    from .client import EncodedTask, RedisClient
    from .cron import Schedule
    from .syncrunner import SyncRunner
    from .testing import InlineQueue
    from .worker import Worker
    from .worker.native import EngineChoice, NativeWorker
    from .worker_settings import WorkerSettings

__all__ = ["Ardiq", "CronJob"]

P = ParamSpec("P")
# The shortest lease (as the engine's Config): renewed every third of it, a lease of a few
# ms would lapse on an ordinary round trip.
MIN_IDLE_TIMEOUT_MS = 30
R = TypeVar("R")

Middleware = Callable[[TaskContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
ErrorHook = Callable[[ErrorContext], Any]
EnqueueHook = Callable[[EnqueueContext], Any]
# `async def lifespan(): ...` or `async def lifespan(app): ...`, yielding a mapping or None.
L = TypeVar(
    "L",
    bound=Callable[[], AsyncIterator[Mapping[str, Any] | None]]
    | Callable[["Ardiq"], AsyncIterator[Mapping[str, Any] | None]],
)

# The kinds of completed tasks in the history (PROTOCOL.md, History).
HISTORY_KINDS = ("ok", "fail", "expired", "abort", "lost")

_SETTINGS = (
    "default_priority",
    "serializer",
    "deserializer",
    "cron_poll_s",
    "concurrency",
    "prefetch",
    "idle_timeout_ms",
    "poll_block_ms",
    "result_ttl_ms",
    "burst",
    "max_deliveries",
    "max_payload_bytes",
    "shutdown_timeout_s",
    "signing_key",
    "signature_ttl_s",
    "legacy_signatures",
    "max_connections",
    "history",
    "history_ttl_s",
    "max_tasks_per_child",
    "max_memory_per_child",
)


@dataclass(frozen=True, slots=True)
class CronJob:
    """A task fired on a schedule, once per occurrence across all workers."""

    name: str
    schedule: Schedule
    task: Task[[], Any]


class _TaskDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class Ardiq:
    """A task queue on Redis: define tasks, enqueue them, run workers.

    Constructing an app never connects to Redis. See the README for every setting.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        queue_name: str = "default",
        priorities: Iterable[str] | Mapping[str, int] | None = None,
        worker_id: str | None = None,
        **settings: Any,
    ) -> None:
        unknown = [k for k in settings if k not in _SETTINGS]
        if unknown:
            import difflib

            name = unknown[0]
            close = difflib.get_close_matches(name, _SETTINGS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"Ardiq() got an unexpected keyword argument {name!r}{hint}")
        self._redis_url = check_redis_url(default_redis_url() if redis_url is None else redis_url)
        if not isinstance(queue_name, str) or not queue_name or "}" in queue_name:
            raise ValueError(
                f"queue_name must be a non-empty string without '}}', got {queue_name!r}"
            )
        self._queue_name = queue_name
        self._priorities, self._weights = check_weights(priorities)
        default_priority = settings.get("default_priority")
        self._default_priority = (
            check_lane(default_priority, self._priorities, "default_priority")
            if default_priority is not None
            else self._priorities[len(self._priorities) // 2]
        )
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise ValueError("worker_id must be a non-empty string")
        self._worker_id = worker_id or f"w-{os.urandom(6).hex()}"
        self._serializer: Serializer = settings.get("serializer") or msgpack_dumps
        self._deserializer: Deserializer = settings.get("deserializer") or msgpack_loads
        for name in ("serializer", "deserializer"):
            if not callable(getattr(self, f"_{name}")):
                raise TypeError(f"{name} must be callable")
        cron_poll_s = settings.get("cron_poll_s", 1.0)
        if (
            isinstance(cron_poll_s, bool)
            or not isinstance(cron_poll_s, int | float)
            or cron_poll_s <= 0
        ):
            raise ValueError(f"cron_poll_s must be a positive number, got {cron_poll_s!r}")
        self._cron_poll_s = float(cron_poll_s)
        self._concurrency = check_positive_int("concurrency", settings.get("concurrency", 16))
        prefetch = settings.get("prefetch")
        self._prefetch = (
            2 * self._concurrency if prefetch is None else check_positive_int("prefetch", prefetch)
        )
        if self._prefetch < self._concurrency:
            raise ValueError(
                f"prefetch ({self._prefetch}) must be at least concurrency ({self._concurrency})"
            )
        self._idle_timeout_ms = check_positive_int(
            "idle_timeout_ms", settings.get("idle_timeout_ms", 60000)
        )
        if self._idle_timeout_ms < MIN_IDLE_TIMEOUT_MS:
            # The native engine refuses it too: one app must mean the same to both workers.
            raise ValueError(
                f"idle_timeout_ms must be at least {MIN_IDLE_TIMEOUT_MS}, "
                f"got {self._idle_timeout_ms}"
            )
        self._poll_block_ms = check_positive_int(
            "poll_block_ms", settings.get("poll_block_ms", 500)
        )
        self._result_ttl_ms = check_int("result_ttl_ms", settings.get("result_ttl_ms", 300000))
        self._max_deliveries = check_positive_int(
            "max_deliveries", settings.get("max_deliveries", 5)
        )
        self._max_payload_bytes = check_positive_int(
            "max_payload_bytes", settings.get("max_payload_bytes", 16 * 1024 * 1024)
        )
        shutdown_timeout = settings.get("shutdown_timeout_s")
        if shutdown_timeout is not None and (
            isinstance(shutdown_timeout, bool)
            or not isinstance(shutdown_timeout, int | float)
            or not 0 < shutdown_timeout <= MAX_SECONDS  # also refuses NaN
        ):
            raise ValueError(
                f"shutdown_timeout_s must be above 0 and at most {MAX_SECONDS:g} (a year), "
                f"got {shutdown_timeout!r}"
            )
        self._shutdown_timeout_s: float | None = shutdown_timeout
        self._burst = bool(settings.get("burst", False))
        # HMAC keys (first signs, all verify): from `signing_key`, else ARDIQ_SIGNING_KEY.
        self._signing_keys = check_signing_keys(settings.get("signing_key"))
        ttl = settings.get("signature_ttl_s", DEFAULT_TTL_MS / 1000)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValueError(f"signature_ttl_s must be a positive number, got {ttl!r}")
        self._signature_ttl_ms = int(ttl * 1000)
        self._legacy_signatures = bool(settings.get("legacy_signatures", False))
        self._signer = Signer(
            self._signing_keys,
            queue=queue_name,
            ttl_ms=self._signature_ttl_ms,
            legacy=self._legacy_signatures,
        )
        self._max_connections = check_max_connections(settings.get("max_connections"))
        self._history = check_history(settings.get("history", DEFAULT_HISTORY))
        self._history_ttl_s = check_history_ttl_s(
            settings.get("history_ttl_s", DEFAULT_HISTORY_TTL_S)
        )

        self._max_tasks_per_child = check_optional_positive_int(
            "max_tasks_per_child", settings.get("max_tasks_per_child")
        )
        self._max_memory_per_child = check_optional_positive_int(
            "max_memory_per_child", settings.get("max_memory_per_child")
        )

        self.keys = Keys(queue_name)
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._crons: dict[str, CronJob] = {}
        self._middleware: list[Middleware] = []
        self._error_hooks: list[ErrorHook] = []
        self._enqueue_hooks: list[EnqueueHook] = []
        # The lifespan function as a call taking the app (see lifespan.lifespan_factory).
        self._lifespan: Callable[[Ardiq], AsyncIterator[Any]] | None = None
        self._state = State()
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, RedisClient]] = {}
        self._inline: InlineQueue | None = None  # set by ardiq.testing.inline
        self._worker: Worker | NativeWorker | None = None
        self._sync: SyncRunner | None = None
        # Threads that make their first blocking call at once must share one runner: a
        # second would open a second loop and pool, and close_sync() would close only one.
        self._sync_lock = threading.Lock()

    # ----------------------------------------------------------------- settings
    @property
    def redis_url(self) -> str:
        return self._redis_url

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def priorities(self) -> list[str]:
        """Lane names, lowest first."""
        return list(self._priorities)

    @property
    def lane_weights(self) -> dict[str, int] | None:
        """Lane weights (lowest lane first) when ``priorities`` was a mapping; ``None``
        for strict priorities."""
        if self._weights is None:
            return None
        return dict(zip(self._priorities, self._weights, strict=True))

    @property
    def default_priority(self) -> str:
        return self._default_priority

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    @property
    def deserializer(self) -> Deserializer:
        return self._deserializer

    @property
    def cron_poll_s(self) -> float:
        return self._cron_poll_s

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def prefetch(self) -> int:
        return self._prefetch

    @property
    def idle_timeout_ms(self) -> int:
        return self._idle_timeout_ms

    @property
    def poll_block_ms(self) -> int:
        return self._poll_block_ms

    @property
    def result_ttl_ms(self) -> int:
        return self._result_ttl_ms

    @property
    def max_deliveries(self) -> int:
        """How many times one attempt may be delivered to workers that died before it goes
        to the dead letters as "worker lost"."""
        return self._max_deliveries

    @property
    def max_payload_bytes(self) -> int:
        return self._max_payload_bytes

    @property
    def shutdown_timeout_s(self) -> float | None:
        """Drain deadline after a graceful stop; None waits for running tasks."""
        return self._shutdown_timeout_s

    @property
    def signing_key(self) -> bytes | None:
        """The key that signs payloads (None: unsigned). See ``ardiq.signing``."""
        return self._signing_keys[0] if self._signing_keys else None

    @property
    def signature_ttl_s(self) -> float:
        """How long after its due time a sealed payload stays runnable (PROTOCOL.md)."""
        return self._signature_ttl_ms / 1000

    @property
    def legacy_signatures(self) -> bool:
        """Accept protocol v1 seals and unsealed results (only while upgrading)."""
        return self._legacy_signatures

    @property
    def max_connections(self) -> int:
        """Redis connections this app opens per event loop it is used from, pub/sub
        included; callers beyond them wait for a free one."""
        return self._max_connections

    @property
    def history_size(self) -> int:
        """The ``history`` setting: about how many completed tasks workers keep in the
        queue's history (0: they keep no history, attempts or counters). Read it with
        :meth:`history`."""
        return self._history

    @property
    def history_ttl_s(self) -> float:
        """How long workers keep history entries and throughput counters, in seconds."""
        return self._history_ttl_s

    @property
    def max_tasks_per_child(self) -> int | None:
        """Isolated tasks: a child process is replaced after this many tasks (None:
        never)."""
        return self._max_tasks_per_child

    @property
    def max_memory_per_child(self) -> int | None:
        """Isolated tasks: a child process whose resident memory is above this many MB
        after a task is replaced (None: never)."""
        return self._max_memory_per_child

    @property
    def tasks(self) -> list[str]:
        """Registered task names (crons included), in registration order."""
        return list(self._tasks)

    @property
    def crons(self) -> list[str]:
        """Registered cron names, in registration order (each is in :attr:`tasks` too)."""
        return list(self._crons)

    @property
    def cron_jobs(self) -> list[CronJob]:
        """The registered crons with their schedules and tasks, in registration order."""
        return list(self._crons.values())

    @property
    def state(self) -> State:
        """What the ``@app.lifespan`` function yielded, as attributes."""
        return self._state

    @property
    def sync(self) -> SyncRunner:
        """The private loop behind the blocking ``*_sync`` twins."""
        with self._sync_lock:
            if self._sync is None:
                import weakref

                from .syncrunner import SyncRunner

                # The closer and the finalizer must not hold the app, or it would never die.
                clients = self._clients

                async def close_clients() -> None:
                    entry = clients.pop(id(_running_loop()), None)
                    if entry is not None:
                        await entry[1].broker.close()

                self._sync = SyncRunner(self._queue_name, close_clients)
                weakref.finalize(self, self._sync.close_soon).atexit = False
            return self._sync

    def _adopt_worker_settings(self, settings: WorkerSettings) -> None:
        """Take on the values a worker runs with (the command line's overrides), so task
        code and the runtime see what the engine sees."""
        self._redis_url = settings.redis_url
        self._concurrency = settings.concurrency
        self._prefetch = settings.prefetch
        self._shutdown_timeout_s = settings.shutdown_timeout_s
        self._history = settings.history
        self._history_ttl_s = settings.history_ttl_ms / 1000
        self._worker_id = settings.worker_id
        self._max_tasks_per_child = settings.max_tasks_per_child
        self._max_memory_per_child = settings.max_memory_per_child
        self.burst = settings.burst

    def close_sync(self) -> None:
        """Close the connections of the blocking twins (they reopen on next use)."""
        if self._sync is not None:
            self._sync.close()

    def __repr__(self) -> str:
        return f"Ardiq(queue_name={self._queue_name!r}, tasks={len(self._tasks)})"

    # ------------------------------------------------------------- registration
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        max_retries: int = 3,
        backoff_ms: int = 0,
        timeout: float | None = None,
        priority: str | None = None,
        unique: bool = False,
        isolated: bool = False,
        rate_limit: str | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
        limit_key: str | None = None,
    ) -> _TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        max_retries: int = 3,
        backoff_ms: int = 0,
        timeout: float | None = None,
        priority: str | None = None,
        unique: bool = False,
        isolated: bool = False,
        rate_limit: str | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
        limit_key: str | None = None,
    ) -> Any:
        """Register a task (``async def`` or plain ``def``): ``@app.task`` or
        ``@app.task(name=..., max_retries=3, backoff_ms=0, timeout=None, priority=None,
        unique=False, isolated=False, rate_limit=None, burst=None, max_concurrency=None,
        limit_key=None)``.

        ``isolated=True`` (sync ``def`` bodies defined at module level only, TypeError
        otherwise) runs each attempt in a child process of the worker: a timeout or an
        abort kills it, and a crash fails the attempt, not the worker (README, Isolated
        tasks).

        ``rate_limit`` (``"N/s"``, ``"N/m"``, ``"N/h"``) bounds the starts of this task
        across every worker of the queue to ``burst`` (default: one second's worth, at
        least 1) plus the rate times any window; ``max_concurrency`` bounds the attempts
        running at once across every worker. ``limit_key`` names an argument whose value
        (an int or a str) applies the limits per value: per customer, tenant or token.
        A task over its limit waits, parked in Redis, without counting an attempt."""

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(
                func,
                name,
                max_retries=max_retries,
                backoff_ms=backoff_ms,
                timeout=timeout,
                priority=priority,
                unique=unique,
                isolated=isolated,
                rate_limit=rate_limit,
                burst=burst,
                max_concurrency=max_concurrency,
                limit_key=limit_key,
            )

        return register if fn is None else register(fn)

    def _register(
        self, fn: Callable[..., Any], name: str | None, decorator: str = "task", **options: Any
    ) -> Task[Any, Any]:
        if not callable(fn):
            raise TypeError(f"@app.{decorator} needs a function, got {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not isinstance(name, str):
                raise TypeError(
                    f"@app.{decorator} needs an explicit name for {fn!r}, which has no "
                    f"__name__: pass @app.{decorator}(name=...)"
                )
        if not isinstance(name, str) or not name:
            raise ValueError("a task name must be a non-empty string")
        if name in self._tasks:
            owner = getattr(self._tasks[name].fn, "__module__", None) or "<unknown module>"
            raise ValueError(
                f"task {name!r} is already registered by {owner}: give one of the two "
                f"another name with @app.{decorator}(name=...)"
            )
        task: Task[Any, Any] = Task(self, fn, name, **options)
        self._tasks[name] = task
        return task

    def cron(
        self,
        spec: str | None = None,
        *,
        every: float | timedelta | None = None,
        name: str | None = None,
        max_retries: int = 3,
        backoff_ms: int = 0,
        timeout: float | None = None,
        priority: str | None = None,
        isolated: bool = False,
        tz: str | None = None,
        rate_limit: str | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
    ) -> Callable[[Callable[[], Any]], Task[[], Any]]:
        """Run a function with no arguments on a 5-field cron ``spec`` or ``every=``
        seconds (or a timedelta), once per occurrence across all workers.

        The spec is read in UTC, or in the IANA time zone ``tz`` (``"Europe/Paris"``;
        ``ValueError`` for an unknown zone). Across daylight-saving changes each matching
        wall time fires once: one the clocks skip fires at the first instant after the
        gap, one they repeat fires at its first instance. ``every=`` ignores ``tz``.
        ``isolated=True`` runs it in a child process, and ``rate_limit``, ``burst`` and
        ``max_concurrency`` work, as on :meth:`task`.
        """
        from .cron import parse_schedule  # only apps with crons pay for the cron parser

        schedule = parse_schedule(spec, every, tz)

        def register(fn: Callable[[], Any]) -> Task[[], Any]:
            task = self._register(
                fn,
                name,
                "cron",
                max_retries=max_retries,
                backoff_ms=backoff_ms,
                timeout=timeout,
                priority=priority,
                unique=False,
                isolated=isolated,
                rate_limit=rate_limit,
                burst=burst,
                max_concurrency=max_concurrency,
            )
            self._crons[task.name] = CronJob(task.name, schedule, task)
            return task

        return register

    def middleware(self, fn: Middleware) -> Middleware:
        """Wrap every task: ``async def mw(ctx, call_next): return await call_next()``.
        The first registered is the outermost."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("middleware must be an async function (ctx, call_next)")
        self._middleware.append(fn)
        return fn

    def on_error(self, fn: ErrorHook) -> ErrorHook:
        """Call `fn(ErrorContext)` (sync or async) on every failed attempt."""
        self._error_hooks.append(fn)
        return fn

    def on_enqueue(self, fn: EnqueueHook) -> EnqueueHook:
        """Call `fn(EnqueueContext)` (sync or async) before each task is sent; it may set
        ``ctx.headers``, which travel with the task."""
        self._enqueue_hooks.append(fn)
        return fn

    def lifespan(self, fn: L) -> L:
        """Wrap the whole worker in an async generator function with one ``yield``, taking
        no argument or the app: set up before the yield, tear down after. A mapping it
        yields is copied onto ``app.state``."""
        self._lifespan = lifespan_factory(fn)
        return fn

    def ref(
        self,
        name: str,
        *,
        priority: str | None = None,
        unique: bool = False,
        limit_key: str | None = None,
    ) -> Task[..., Any]:
        """A handle on a task by name, for producers that do not import its module.
        ``limit_key`` names the keyword argument whose value is the task's limit key
        (the task is declared with the same ``limit_key``): each call must pass it by
        keyword."""
        if not isinstance(name, str) or not name:
            raise ValueError("a task name must be a non-empty string")
        task: Task[..., Any] = Task(self, None, name, priority=priority, unique=unique)
        if limit_key is not None:
            if not isinstance(limit_key, str) or not limit_key.isidentifier():
                raise ValueError(f"limit_key must name a keyword argument, got {limit_key!r}")
            task.limit_key = limit_key
        return task

    # ------------------------------------------------------------------ clients
    def _client(self) -> RedisClient:
        """The Redis client of the running loop (one per loop, made on first use)."""
        from .broker import Broker  # redis-py is imported on first use: `import ardiq` stays lean
        from .client import RedisClient

        loop = _running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            for key, (other, _) in list(self._clients.items()):
                if other.is_closed():
                    del self._clients[key]
            broker = Broker(self._redis_url, self.keys, self._priorities, self._max_connections)
            client = RedisClient(broker, self._deserializer, self._result_ttl_ms, self._signer)
            entry = (loop, client)
            self._clients[id(loop)] = entry
        return entry[1]

    async def aclose(self) -> None:
        """Close this loop's Redis connections (they reopen on next use)."""
        entry = self._clients.pop(id(_running_loop()), None)
        if entry is not None:
            await entry[1].broker.close()

    # ----------------------------------------------------------------- enqueue
    async def send(self, name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue a task by name, without importing its module."""
        task = self._tasks.get(name) or self.ref(name)
        (job,) = await self.enqueue_many([task.prepare(*args, **kwargs)])
        return job

    async def enqueue_many(self, prepared: Iterable[PreparedTask]) -> list[Job[Any]]:
        """Enqueue many prepared calls in one round trip per large chunk. Everything is
        validated first: one bad item and nothing is sent. Jobs come back in input order."""
        items = list(prepared)
        if not items:
            return []
        encoded = await self._encode_all(items)
        if self._inline is not None:
            return await self._inline.enqueue(encoded)
        await self._client().submit(encoded)
        return [Job(self, t.task_id) for t in encoded]

    async def _encode_all(self, items: list[PreparedTask]) -> list[EncodedTask]:
        """Validate and serialize every call (one plain loop: no coroutine per item)."""
        from .client import EncodedTask  # redis-py is imported on first use, not on import

        encoded = []
        # Random ids drawn in one read for the whole batch: a read per id was a tenth of
        # the Python cost of a bulk enqueue.
        entropy = os.urandom(16 * len(items)).hex()
        signer = self._signer
        now = _now_ms() if signer.enabled else 0
        for index, p in enumerate(items):
            if not isinstance(p, PreparedTask):
                raise TypeError(
                    f"enqueue_many takes PreparedTask items (from task.prepare()), "
                    f"got {type(p).__name__}"
                )
            check_lane(p.priority, self._priorities)
            task_id = p.task_id
            fresh = False
            if task_id is None:
                if p.unique:
                    task_id = self._unique_id(p)
                else:
                    task_id = entropy[32 * index : 32 * index + 32]
                    fresh = True
            headers = await self._run_enqueue_hooks(p, task_id) if self._enqueue_hooks else None
            if p.limit_key is not None and signer.enabled:
                # Sealed with the payload, so a worker can tell the entry's `lk` was not
                # changed (PROTOCOL.md, Limits); old v2 workers verify the seal unchanged.
                headers = {**(headers or {}), LIMIT_KEY_HEADER: p.limit_key}
            try:
                payload = self._serializer([list(p.args), p.kwargs, headers])
            except Exception as exc:
                raise TypeError(
                    f"arguments of task {p.name!r} cannot be serialized: {exc}"
                ) from exc
            if len(payload) > self._max_payload_bytes:
                raise ArdiqError(
                    f"payload of task {p.name!r} is {len(payload)} bytes, over the limit of "
                    f"{self._max_payload_bytes} (max_payload_bytes)"
                )
            nonce = ""
            if signer.enabled:
                due = p.schedule_ms or now + max(0, p.delay_ms)
                payload, nonce = signer.seal(
                    Binding(self._queue_name, p.priority, task_id, p.name), payload, max(due, now)
                )
            encoded.append(
                EncodedTask(
                    task_id,
                    p.name,
                    payload,
                    p.priority,
                    p.schedule_ms,
                    p.delay_ms,
                    p.expire_ms,
                    1 if fresh else 0,
                    nonce,
                    p.limit_key or "",
                )
            )
        return encoded

    async def _run_enqueue_hooks(self, p: PreparedTask, task_id: str) -> dict[str, str] | None:
        """The headers the `on_enqueue` hooks set for this call (None when they set none)."""
        ctx = EnqueueContext(p.name, task_id, p.args, p.kwargs, {})
        for hook in self._enqueue_hooks:
            result = hook(ctx)
            if inspect.isawaitable(result):
                await result
        return ctx.headers or None

    def _unique_id(self, p: PreparedTask) -> str:
        """The id of a unique task, as PROTOCOL.md derives it from (name, args, sorted
        kwargs): every producer computes the same id for the same call, whether it imports
        the task's function or holds an ``app.ref`` handle."""
        args = list(p.args)
        kwargs = sorted(p.kwargs.items())
        try:
            material = self._serializer([p.name, args, kwargs])
        except Exception as exc:
            raise TypeError(f"arguments of task {p.name!r} cannot be serialized: {exc}") from exc
        import hashlib

        return "u:" + hashlib.blake2b(material, digest_size=16).hexdigest()

    # ---------------------------------------------------------- jobs & results
    def job(self, task_id: str) -> Job[Any]:
        """A handle on the task with this id."""
        return Job(self, task_id)

    async def result(self, task_id: str, timeout: float | None = None) -> TaskResult[Any] | None:
        """The task's result: None if there is none yet; with `timeout` (seconds) wait for
        it, woken by Redis, and raise TimeoutError if it does not come."""
        if self._inline is not None:
            if timeout is None:
                return self._inline.result(task_id)
            return await self._inline.wait(task_id, timeout)
        blob = await self._client().result_raw(task_id, timeout)
        if blob is None:
            return None
        return decode_result(blob, self._deserializer, self._signer, task_id)

    async def status(self, task_id: str) -> Status:
        """queued, scheduled, running, complete or not_found."""
        if self._inline is not None:
            return self._inline.status(task_id)
        return await self._client().status(task_id)

    async def progress(self, task_id: str) -> Progress | None:
        """The last progress the task reported (``current_task().progress(...)``); None
        when it reported none (yet), or once it was retried or its result expired."""
        if self._inline is not None:
            return self._inline.last_progress(task_id)
        raw = await self._client().progress_raw(task_id)
        return None if raw is None else decode_progress(raw, task_id)

    async def info(self, task_id: str) -> TaskInfo | None:
        """What a live task is; None once it finished or if it is unknown."""
        if self._inline is not None:
            return None
        return await self._client().info(task_id)

    async def abort(self, task_id: str) -> bool:
        """Abort a task in any state; False if it already finished or does not exist."""
        if self._inline is not None:
            return False
        return await self._client().abort(task_id)

    async def queue_size(self) -> int:
        """Tasks waiting to run (queued + scheduled)."""
        if self._inline is not None:
            return 0
        return await self._client().queue_size()

    # ----------------------------------------------------------------- history
    async def attempts(self, task_id: str) -> list[Attempt]:
        """The task's failed attempts, oldest first (the last 25): kept while it is live
        and, once it completed, as long as its result. Empty when none failed, or when
        the workers keep no history (``history=0``; ``ardiq.testing.inline`` keeps none
        either)."""
        if self._inline is not None:
            return []
        return await self._client().attempts(task_id)

    async def history(self, limit: int = 100, kind: str | None = None) -> list[HistoryEntry]:
        """Recently completed tasks, newest first: at most `limit`, of one `kind` (``ok``,
        ``fail``, ``expired``, ``abort`` or ``lost``) when given. The workers keep about
        the last ``history`` of them for ``history_ttl_s`` (``ardiq.testing.inline`` keeps
        none)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        if kind is not None and kind not in HISTORY_KINDS:
            kinds = ", ".join(HISTORY_KINDS)
            raise ValueError(f"kind must be one of {kinds} or None, got {kind!r}")
        if self._inline is not None:
            return []
        return await self._client().history(limit, kind)

    # ------------------------------------------------------------ dead letters
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Tasks that failed for good, newest first."""
        if self._inline is not None:
            return self._inline.dead_letters(limit)
        return await self._client().dead_letters(limit)

    async def dead_count(self) -> int:
        if self._inline is not None:
            return len(self._inline.dead_letters(1 << 30))
        return await self._client().dead_count()

    async def replay(self, task_id: str) -> Job[Any] | None:
        """Queue a dead letter again under its id with a fresh retry budget; None if there
        is no such dead letter."""
        if self._inline is not None:
            return await self._inline.replay(task_id)
        code = await self._client().replay(task_id)
        if code == -2:
            raise ArdiqError(f"dead letter {task_id!r} belongs to a lane this app does not have")
        if code == -4:
            raise ArdiqError(
                f"dead letter {task_id!r} has a seal that does not verify under this app's "
                "keys; not replayed"
            )
        return Job(self, task_id) if code == 1 else None

    async def delete_dead(self, task_id: str) -> bool:
        if self._inline is not None:
            return self._inline.delete_dead(task_id)
        return await self._client().delete_dead(task_id)

    # ------------------------------------------------------------------- crons
    def _cron(self, name: str) -> CronJob:
        job = self._crons.get(name)
        if job is None:
            known = ", ".join(repr(n) for n in self._crons) or "none"
            raise ValueError(f"no cron named {name!r} in this app (its crons: {known})")
        return job

    async def pause_cron(self, name: str) -> bool:
        """Pause cron `name` on every worker of the queue: its occurrences are skipped
        (not queued, not kept for later) until :meth:`resume_cron`. False if it was
        paused already. ``ValueError`` if the app has no such cron."""
        self._cron(name)
        if self._inline is not None:
            fresh = name not in self._inline.paused_crons
            self._inline.paused_crons.setdefault(name, _now_ms())
            return fresh
        return await self._client().pause_cron(name)

    async def resume_cron(self, name: str) -> bool:
        """Resume cron `name`: it fires again from its next occurrence; the ones skipped
        while it was paused are not made up. False if it was not paused."""
        self._cron(name)
        if self._inline is not None:
            return self._inline.paused_crons.pop(name, None) is not None
        return await self._client().resume_cron(name)

    async def trigger_cron(self, name: str) -> Job[Any]:
        """Enqueue one run of cron `name` now, paused or not, under an id of its own
        (``cron:<name>:now:<hex>``), sealed when the app signs as its occurrences are. The
        schedule is left alone: the next occurrence fires as planned."""
        job = self._cron(name)
        if self._inline is not None:
            task_id = f"cron:{name}:now:{os.urandom(16).hex()}"
            return await job.task.options(task_id=task_id).enqueue()
        body = self.serializer([[], {}, None])
        task_id = await self._client().trigger_cron(name, job.task.priority, body)
        return Job(self, task_id)

    async def cron_states(self) -> list[CronState]:
        """The app's crons, in registration order, with what the queue knows of each:
        paused or not, the last occurrence fired, the next one."""
        from .cron import CronSpec, Every

        if self._inline is not None:
            fired: dict[str, int] = {}
            paused = dict(self._inline.paused_crons)
        else:
            fired, paused = await self._client().cron_records()
        now = _now_ms()
        states = []
        for job in self._crons.values():
            schedule = job.schedule
            tz = schedule.tz if isinstance(schedule, CronSpec) else None
            text = (
                f"every {schedule.interval_ms / 1000:g}s"
                if isinstance(schedule, Every)
                else schedule.text
            )
            states.append(
                CronState(
                    job.name,
                    text,
                    tz,
                    job.name in paused,
                    paused.get(job.name),
                    fired.get(job.name),
                    schedule.next_after(now),
                )
            )
        return states

    # ---------------------------------------------------------- blocking twins
    def pause_cron_sync(self, name: str) -> bool:
        """Blocking twin of :meth:`pause_cron`."""
        return self.sync.run(self.pause_cron(name))

    def resume_cron_sync(self, name: str) -> bool:
        """Blocking twin of :meth:`resume_cron`."""
        return self.sync.run(self.resume_cron(name))

    def trigger_cron_sync(self, name: str) -> Job[Any]:
        """Blocking twin of :meth:`trigger_cron`."""
        return self.sync.run(self.trigger_cron(name))

    def cron_states_sync(self) -> list[CronState]:
        """Blocking twin of :meth:`cron_states`."""
        return self.sync.run(self.cron_states())

    # ----------------------------------------------------------------- pausing
    def _pause_field(self, lane: str | None) -> str:
        if lane is None:
            return "*"
        return check_lane(lane, self._priorities, "lane")

    async def pause(self, lane: str | None = None) -> None:
        """Pause the whole queue (``lane=None``) or one lane: every worker of the queue
        stops taking its tasks within about a second; running tasks finish, prefetched
        ones are handed back. Idempotent (the first pause time is kept). An unknown lane
        raises ValueError listing the lanes."""
        field = self._pause_field(lane)
        if self._inline is not None:
            raise ArdiqError("pausing needs Redis; ardiq.testing.inline runs tasks at once")
        await self._client().broker.command("HSETNX", self.keys.paused, field, _now_ms())

    async def resume(self, lane: str | None = None) -> None:
        """Undo :meth:`pause` for the queue (``lane=None``: only the whole-queue pause;
        lanes paused one by one stay paused) or for one lane. Resuming what is not paused
        does nothing."""
        field = self._pause_field(lane)
        if self._inline is not None:
            raise ArdiqError("pausing needs Redis; ardiq.testing.inline runs tasks at once")
        await self._client().broker.command("HDEL", self.keys.paused, field)

    async def paused(self) -> set[str]:
        """What is paused: lane names, and ``"*"`` when the whole queue is."""
        if self._inline is not None:
            return set()
        reply = await self._client().broker.command("HKEYS", self.keys.paused)
        return {k.decode() if isinstance(k, bytes) else str(k) for k in reply}

    # ---------------------------------------------------------- blocking twins
    def pause_sync(self, lane: str | None = None) -> None:
        """Blocking twin of :meth:`pause`."""
        return self.sync.run(self.pause(lane))

    def resume_sync(self, lane: str | None = None) -> None:
        """Blocking twin of :meth:`resume`."""
        return self.sync.run(self.resume(lane))

    def paused_sync(self) -> set[str]:
        """Blocking twin of :meth:`paused`."""
        return self.sync.run(self.paused())

    def send_sync(self, name: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Blocking twin of :meth:`send`."""
        return self.sync.run(self.send(name, *args, **kwargs))

    def enqueue_many_sync(self, prepared: Iterable[PreparedTask]) -> list[Job[Any]]:
        """Blocking twin of :meth:`enqueue_many`."""
        return self.sync.run(self.enqueue_many(list(prepared)))

    def result_sync(self, task_id: str, timeout: float | None = None) -> TaskResult[Any] | None:
        """Blocking twin of :meth:`result`."""
        return self.sync.run(self.result(task_id, timeout))

    def status_sync(self, task_id: str) -> Status:
        """Blocking twin of :meth:`status`."""
        return self.sync.run(self.status(task_id))

    def info_sync(self, task_id: str) -> TaskInfo | None:
        """Blocking twin of :meth:`info`."""
        return self.sync.run(self.info(task_id))

    def progress_sync(self, task_id: str) -> Progress | None:
        """Blocking twin of :meth:`progress`."""
        return self.sync.run(self.progress(task_id))

    def abort_sync(self, task_id: str) -> bool:
        """Blocking twin of :meth:`abort`."""
        return self.sync.run(self.abort(task_id))

    def queue_size_sync(self) -> int:
        """Blocking twin of :meth:`queue_size`."""
        return self.sync.run(self.queue_size())

    def attempts_sync(self, task_id: str) -> list[Attempt]:
        """Blocking twin of :meth:`attempts`."""
        return self.sync.run(self.attempts(task_id))

    def history_sync(self, limit: int = 100, kind: str | None = None) -> list[HistoryEntry]:
        """Blocking twin of :meth:`history`."""
        return self.sync.run(self.history(limit, kind))

    def dead_letters_sync(self, limit: int = 100) -> list[DeadLetter]:
        """Blocking twin of :meth:`dead_letters`."""
        return self.sync.run(self.dead_letters(limit))

    def dead_count_sync(self) -> int:
        """Blocking twin of :meth:`dead_count`."""
        return self.sync.run(self.dead_count())

    def replay_sync(self, task_id: str) -> Job[Any] | None:
        """Blocking twin of :meth:`replay`."""
        return self.sync.run(self.replay(task_id))

    def delete_dead_sync(self, task_id: str) -> bool:
        """Blocking twin of :meth:`delete_dead`."""
        return self.sync.run(self.delete_dead(task_id))

    # ------------------------------------------------------------------ worker
    async def run(self, *, engine: EngineChoice | None = None) -> None:
        """Run a worker in this event loop until :meth:`stop` (or, with ``burst``, until
        the queue is drained). May be called again after it returns.

        ``engine``: ``"native"`` runs the Rust engine of ``ardiq run`` (the
        ``ardiq-native`` package must be installed), ``"python"`` the pure-Python loop,
        ``"auto"`` the native one when installed. ``None`` reads ``ARDIQ_ENGINE``, else
        ``"auto"``. Both behave alike (README, "Running a worker").
        """
        from .worker.native import NativeWorker, choose

        if self._worker is not None:
            raise RuntimeError("this app's worker is already running")
        _, module = choose(engine)
        if module is not None:
            self._worker = NativeWorker(self, module)
        else:
            from .worker import Worker

            self._worker = Worker(self)
        try:
            await self._worker.run()
        finally:
            self._worker = None

    def stop(self) -> None:
        """Stop the running worker: the first call drains (running tasks finish), a second
        call exits at once. Safe to call from a signal handler or another thread."""
        worker = self._worker
        if worker is not None:
            worker.request_stop()

    @property
    def burst(self) -> bool:
        """Return from :meth:`run` once the queue is drained; may be set while it runs."""
        return self._burst

    @burst.setter
    def burst(self, on: bool) -> None:
        self._burst = bool(on)
        worker = self._worker
        if worker is not None:
            worker.set_burst(self._burst)


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def _running_loop() -> asyncio.AbstractEventLoop:
    # asyncio is imported here, not at the top: `import ardiq` must stay fast for producers
    # and for the worker's start-up.
    import asyncio

    return asyncio.get_running_loop()
