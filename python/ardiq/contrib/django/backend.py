"""``ArdiqBackend``: Django's task framework enqueues through ArdiQ.

    TASKS = {
        "default": {
            "BACKEND": "ardiq.contrib.django.ArdiqBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"redis_url": "redis://localhost:6379/0"},
        }
    }

Each Django queue is an ArdiQ queue (named ``queue_prefix`` + the Django queue name).
OPTIONS take ArdiQ's app settings by name (``redis_url``, ``priorities``,
``result_ttl_ms``, ``signing_key``, ...) and the Django semantics: ``max_retries``
(default 0: Django retries nothing by itself), ``backoff_ms``, ``timeout`` (seconds per
attempt), ``task_modules`` (modules the worker imports besides each app's ``tasks``).
``ENQUEUE_ON_COMMIT`` (top level, as the backport names it) defers each enqueue to the
end of the current transaction (default: off on Django 6, on with the backport, as each
documents); a backport task's own ``enqueue_on_commit`` wins.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import registry, store
from ._compat import (
    BACKPORT,
    SUCCESSFUL,
    BaseTaskBackend,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)

if TYPE_CHECKING:
    from ardiq import Ardiq

__all__ = ["ArdiqBackend"]

DEFAULT_PRIORITIES = ("low", "default", "high")
# Options that shape Django's semantics; everything else in OPTIONS goes to Ardiq().
_OWN_OPTIONS = ("queue_prefix", "max_retries", "backoff_ms", "timeout", "task_modules")
# The class path given to an attempt that ended without an exception of the task's own
# (timed out, aborted, unknown to the worker, refused payload): the text says which.
MACHINERY_ERROR = "ardiq.errors.ArdiqError"


class ArdiqBackend(BaseTaskBackend):  # type: ignore[misc]
    """Django task backend on ArdiQ: deferred runs, priorities (mapped onto lanes), async
    tasks and results by id from any process."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(params.get("OPTIONS") or {})
        self.queue_prefix: str = str(options.get("queue_prefix", ""))
        self.max_retries: int = int(options.get("max_retries", 0))
        self.backoff_ms: int = int(options.get("backoff_ms", 0))
        self.timeout: float | None = options.get("timeout")
        self.task_modules: list[str] = list(options.get("task_modules", ()))
        # Each framework's documented default: Django 6 enqueues at once (a project that
        # wants the commit wraps the call in transaction.on_commit, or sets this), the
        # backport defers to the commit unless told otherwise.
        self.enqueue_on_commit = bool(params.get("ENQUEUE_ON_COMMIT", BACKPORT))
        settings = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
        settings.setdefault("priorities", list(DEFAULT_PRIORITIES))
        self.app_settings = settings
        self._apps: dict[str, Ardiq] = {}
        self._lock = threading.Lock()
        # Checked now, so a bad setting fails at start-up and not at the first enqueue.
        self.app_for(next(iter(sorted(self.queues)), "default"))

    # ------------------------------------------------------------------ apps
    def ardiq_queue(self, queue_name: str) -> str:
        """The ArdiQ queue behind a Django queue."""
        return f"{self.queue_prefix}{queue_name}"

    def app_for(self, queue_name: str) -> Ardiq:
        """The ArdiQ app of one Django queue (one per queue, built once)."""
        with self._lock:
            app = self._apps.get(queue_name)
            if app is None:
                from ardiq import Ardiq

                app = Ardiq(queue_name=self.ardiq_queue(queue_name), **self.app_settings)
                self._apps[queue_name] = app
            return app

    def lane_for(self, priority: int, lanes: list[str]) -> str:
        """Django's priority (-100..100, 0 by default) onto a lane: 0 is the middle lane
        (ArdiQ's default), the negative and positive ranges are split evenly over the
        lanes below and above it."""
        mid = len(lanes) // 2
        if priority == 0:
            return lanes[mid]
        if priority < 0:
            return lanes[mid - math.ceil(-priority * mid / 100)]
        above = len(lanes) - 1 - mid
        return lanes[mid + math.ceil(priority * above / 100)]

    # --------------------------------------------------------------- enqueue
    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        result = TaskResult(
            task=task,
            id=uuid.uuid4().hex,
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

        def send() -> None:
            app = self.app_for(task.queue_name)
            app.sync.run(self._send(app, task, result))
            object.__setattr__(result, "enqueued_at", _now())
            task_enqueued.send(type(self), task_result=result)

        if self._on_commit(task):
            from django.db import transaction

            # Outside an atomic block Django runs it at once; inside, after the commit
            # (never, after a rollback): the task cannot run before its data exists.
            transaction.on_commit(send)
        else:
            send()
        return result

    def _on_commit(self, task: Any) -> bool:
        own = getattr(task, "enqueue_on_commit", None)  # the backport's per-task switch
        return self.enqueue_on_commit if own is None else bool(own)

    async def _send(self, app: Ardiq, task: Any, result: Any) -> None:
        lane = self.lane_for(task.priority, app.priorities)
        run_after = task.run_after
        schedule_ms = int(run_after.timestamp() * 1000) if run_after is not None else 0
        record_key = store.key(app.queue_name, result.id)
        now_ms = int(time.time() * 1000)
        redis = app._client().broker.client
        # The record first: a worker that takes the task at once finds it.
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                record_key,
                mapping={
                    "name": task.module_path,
                    "call": store.pack([result.args, result.kwargs]),
                    "enq": now_ms,
                },
            )
            pipe.pexpire(record_key, max(0, schedule_ms - now_ms) + store.PENDING_TTL_MS)
            await pipe.execute()
        bound = app.ref(task.module_path, priority=lane).options(
            task_id=result.id, schedule_ms=schedule_ms
        )
        await bound.enqueue(*result.args, **result.kwargs)

    # ---------------------------------------------------------------- results
    def get_result(self, result_id: str) -> Any:
        for queue_name in sorted(self.queues):
            app = self.app_for(queue_name)
            found = app.sync.run(self._load(app, result_id))
            if found is not None:
                return found
        raise TaskResultDoesNotExist(result_id)

    async def _load(self, app: Ardiq, result_id: str) -> Any | None:
        from ardiq.jobs import Status

        redis = app._client().broker.client
        # The result before the record: a worker writes an attempt's error to the record
        # before it finishes the attempt, so a result read first never meets a record
        # that lacks its last error.
        outcome = await app.result(result_id)
        status = Status.COMPLETE if outcome is not None else await app.status(result_id)
        raw = await redis.hgetall(store.key(app.queue_name, result_id))
        record = store.Record.decode(raw)
        if status == Status.NOT_FOUND:
            return None
        if record.name is None:
            info = await app.info(result_id)
            if info is None:
                return None  # the record expired and the task is over
            record.name, record.args, record.kwargs = info.fn_name, list(info.args), info.kwargs
            record.enqueued_ms = info.enqueue_time
        registry.autodiscover(self.task_modules)
        task = registry.find(record.name)
        if task is None:
            raise TaskResultDoesNotExist(
                f"{result_id}: its task {record.name!r} is not a task defined in this project"
            )
        if task.backend != self.alias:
            task = task.using(backend=self.alias)
        errors = [TaskError(exception_class_path=p, traceback=t) for p, t in _sorted(record)]
        finished_at = None
        if outcome is None:
            django_status = (
                TaskResultStatus.RUNNING if status == Status.RUNNING else TaskResultStatus.READY
            )
        else:
            finished_at = _from_ms(outcome.finish)
            django_status = SUCCESSFUL if outcome.success else TaskResultStatus.FAILED
            if not outcome.success and outcome.tries not in record.errors:
                # Ended without an exception of the task's own: say what ended it.
                errors.append(
                    TaskError(exception_class_path=MACHINERY_ERROR, traceback=str(outcome.value))
                )
        result = TaskResult(
            task=task,
            id=result_id,
            status=django_status,
            enqueued_at=_from_ms(record.enqueued_ms),
            started_at=_from_ms(record.first_start_ms),
            finished_at=finished_at,
            last_attempted_at=_from_ms(record.last_start_ms),
            args=record.args,
            kwargs=record.kwargs,
            backend=self.alias,
            errors=errors,
            worker_ids=record.workers,
        )
        if outcome is not None and outcome.success:
            object.__setattr__(result, "_return_value", outcome.value)
        return result


def _sorted(record: store.Record) -> list[tuple[str, str]]:
    return [record.errors[n] for n in sorted(record.errors)]


def _now() -> datetime:
    from django.utils import timezone

    now: datetime = timezone.now()
    return now


def _from_ms(ms: int | None) -> datetime | None:
    """Epoch ms as Django shows times: aware (UTC) with USE_TZ, naive local time without."""
    if not ms:
        return None
    from django.conf import settings

    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if settings.USE_TZ:
        return moment
    from django.utils import timezone

    naive: datetime = timezone.make_naive(moment)
    return naive
