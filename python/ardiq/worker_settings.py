"""What a worker loop needs from an app, validated once, in one frozen object.

Both workers read it: the native engine (``crates/ardiq-worker/src/app.rs`` reads its
attributes, typed) and the in-code worker. The command line's overrides come in as a
:class:`WorkerOverrides`; the app adopts the result (:meth:`Ardiq._adopt_worker_settings`),
so task code, the runtime and the engine all see the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Ardiq


@dataclass(frozen=True, slots=True)
class CronSetting:
    """One cron job as the engine runs it."""

    name: str
    kind: str
    """``"every"`` (``spec`` is the interval in ms) or ``"cron"`` (``spec`` is the text)."""
    spec: str
    lane: str
    payload: bytes
    """The serializer's bytes of ``[[], {}, None]`` (the engine seals each occurrence)."""
    tz: str = ""
    """The IANA time zone a ``"cron"`` spec is read in (``""``: UTC)."""


@dataclass(frozen=True, slots=True)
class LimitSetting:
    """One task's rate limit and concurrency cap, as the workers pass them to ``admit``
    (PROTOCOL.md, Limits)."""

    name: str
    rate_per_ms: float
    """Tokens per millisecond (0: no rate limit)."""
    burst: float
    """Tokens that may be spent at once."""
    max_concurrency: int
    """0: no cap."""


@dataclass(frozen=True, slots=True)
class WorkerOverrides:
    """Settings the command line may change (``None``: keep the app's)."""

    redis_url: str | None = None
    concurrency: int | None = None
    prefetch: int | None = None
    shutdown_timeout_s: float | None = None
    burst: bool = False
    history: int | None = None
    history_ttl_s: float | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Every setting a worker runs with. Build it with :meth:`of`."""

    redis_url: str
    queue_name: str
    priorities: tuple[str, ...]
    """Lane names, lowest first."""
    weights: tuple[int, ...] | None
    """Lane weights, same order as ``priorities`` (``None``: strict priorities)."""
    worker_id: str
    concurrency: int
    prefetch: int
    idle_timeout_ms: int
    poll_block_ms: int
    result_ttl_ms: int
    max_deliveries: int
    max_payload_bytes: int
    shutdown_timeout_s: float | None
    burst: bool
    signing_key: bytes | None
    signature_ttl_ms: int
    history: int
    """Completed tasks kept in the history, about (0: no history, attempts or stats)."""
    history_ttl_ms: int
    """History entries and counters older than this are trimmed (about once a minute)."""
    crons: tuple[CronSetting, ...]
    tasks: int
    """How many tasks the app registered (for the banner)."""
    max_tasks_per_child: int | None = None
    """Isolated tasks: a child process is replaced after this many tasks (None: never)."""
    max_memory_per_child: int | None = None
    """Isolated tasks: a child above this many MB of resident memory after a task is
    replaced (None: never)."""
    limits: tuple[LimitSetting, ...] = ()
    """The tasks with a rate limit or a concurrency cap. Empty: the worker never calls
    ``admit`` or ``unpark`` (its hot path is unchanged)."""

    @classmethod
    def of(
        cls,
        app: Ardiq,
        overrides: WorkerOverrides | None = None,
        *,
        worker_id: str | None = None,
    ) -> WorkerSettings:
        """The app's settings with `overrides` applied and checked together.

        A `concurrency` override moves a default prefetch along (2 x N); a prefetch the
        app chose is kept, raised to N if it would be below. Raises ValueError with a
        one-line message for a combination that cannot work.
        """
        from .cron import CronSpec, Every
        from .settings import (
            check_history,
            check_history_ttl_s,
            check_optional_positive_int,
            check_positive_int,
            check_redis_url,
        )

        o = overrides or WorkerOverrides()
        concurrency, prefetch = app.concurrency, app.prefetch
        if o.concurrency is not None:
            default_prefetch = prefetch == 2 * concurrency
            concurrency = check_positive_int("concurrency", o.concurrency)
            if o.prefetch is None:
                prefetch = 2 * concurrency if default_prefetch else max(prefetch, concurrency)
        if o.prefetch is not None:
            prefetch = check_positive_int("prefetch", o.prefetch)
        if prefetch < concurrency:
            raise ValueError(f"prefetch ({prefetch}) must be at least concurrency ({concurrency})")
        shutdown = app.shutdown_timeout_s
        if o.shutdown_timeout_s is not None:
            if not o.shutdown_timeout_s > 0:
                raise ValueError(f"shutdown_timeout_s must be positive, got {o.shutdown_timeout_s}")
            shutdown = float(o.shutdown_timeout_s)
        history = app.history_size if o.history is None else check_history(o.history)
        history_ttl_s = (
            app.history_ttl_s if o.history_ttl_s is None else check_history_ttl_s(o.history_ttl_s)
        )
        payload = app.serializer([[], {}, None])
        crons = []
        for job in app.cron_jobs:
            schedule = job.schedule
            tz = ""
            if isinstance(schedule, Every):
                kind, spec = "every", str(schedule.interval_ms)
            elif isinstance(schedule, CronSpec):
                kind, spec, tz = "cron", schedule.text, schedule.tz or ""
            else:  # pragma: no cover - parse_schedule returns one of the two
                raise ValueError(f"cron {job.name!r} has an unknown schedule type")
            crons.append(CronSetting(job.name, kind, spec, job.task.priority, payload, tz))
        return cls(
            redis_url=check_redis_url(o.redis_url) if o.redis_url is not None else app.redis_url,
            queue_name=app.queue_name,
            priorities=tuple(app.priorities),
            weights=None if app.lane_weights is None else tuple(app.lane_weights.values()),
            worker_id=worker_id or app.worker_id,
            concurrency=concurrency,
            prefetch=prefetch,
            idle_timeout_ms=app.idle_timeout_ms,
            poll_block_ms=app.poll_block_ms,
            result_ttl_ms=app.result_ttl_ms,
            max_deliveries=app.max_deliveries,
            max_payload_bytes=app.max_payload_bytes,
            shutdown_timeout_s=shutdown,
            burst=app.burst or o.burst,
            signing_key=app.signing_key,
            signature_ttl_ms=int(app.signature_ttl_s * 1000),
            history=history,
            history_ttl_ms=max(1, round(history_ttl_s * 1000)),
            crons=tuple(crons),
            tasks=len(app.tasks),
            max_tasks_per_child=app.max_tasks_per_child
            if o.max_tasks_per_child is None
            else check_optional_positive_int("max_tasks_per_child", o.max_tasks_per_child),
            max_memory_per_child=app.max_memory_per_child
            if o.max_memory_per_child is None
            else check_optional_positive_int("max_memory_per_child", o.max_memory_per_child),
            limits=tuple(
                LimitSetting(t.name, t.limits.rate_per_ms, t.limits.burst, t.limits.max_concurrency)
                for t in app._tasks.values()
                if t.limits is not None
            ),
        )
