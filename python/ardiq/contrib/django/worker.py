"""``ardiq.contrib.django:app``: the worker for Django tasks.

``ardiq run ardiq.contrib.django:app`` with ``DJANGO_SETTINGS_MODULE`` set. The backend
alias is ``ARDIQ_DJANGO_BACKEND`` (default ``default``) and the Django queue it serves
``ARDIQ_DJANGO_QUEUE`` (default ``default``, else the backend's only queue).

Only Django tasks the project defines are registered (see :mod:`.registry`): an entry
naming anything else fails as an unknown task, and nothing is imported because of it.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import registry, store
from ._compat import (
    SUCCESSFUL,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    task_finished,
    task_started,
)

if TYPE_CHECKING:
    import redis

    from ardiq import Ardiq

    from .backend import ArdiqBackend

__all__ = ["worker_app"]

_lock = threading.Lock()
_app: Ardiq | None = None


def worker_app() -> Ardiq:
    """Set Django up (once) and build the ArdiQ app that runs this project's tasks."""
    global _app
    with _lock:
        if _app is None:
            _app = _build()
        return _app


def _build() -> Ardiq:
    import django

    django.setup()
    from ._compat import BACKPORT

    # The backport and Django 6 name the same registry in different modules.
    framework = importlib.import_module("django_tasks" if BACKPORT else "django.tasks")
    task_backends: Any = framework.task_backends

    from .backend import ArdiqBackend

    alias = os.environ.get("ARDIQ_DJANGO_BACKEND", "default")
    backend = task_backends[alias]
    if not isinstance(backend, ArdiqBackend):
        raise TypeError(
            f"TASKS[{alias!r}] is {type(backend).__name__}, not ArdiqBackend: nothing for an "
            "ArdiQ worker to run"
        )
    queues = sorted(backend.queues)
    queue = os.environ.get("ARDIQ_DJANGO_QUEUE") or ("default" if "default" in queues else "")
    if not queue and len(queues) == 1:
        queue = queues[0]
    if queue not in backend.queues:
        raise ValueError(
            f"Django queue {queue!r} is not one of TASKS[{alias!r}]['QUEUES'] {queues}: set "
            "ARDIQ_DJANGO_QUEUE"
        )
    app = backend.app_for(queue)
    registry.autodiscover(backend.task_modules)
    runner = _Runner(app, backend)
    for path, task in registry.all_tasks().items():
        if path not in app.tasks:
            fn = runner.async_body(task) if _is_async(task.func) else runner.sync_body(task)
            app.task(
                name=path,
                max_retries=backend.max_retries,
                backoff_ms=backend.backoff_ms,
                timeout=backend.timeout,
            )(fn)
    return app


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


class _Runner:
    """Runs one attempt of a Django task the way Django's request cycle treats a request:
    stale database connections closed before and after, signals sent, and the attempt's
    worker and error written to the task's record."""

    def __init__(self, app: Ardiq, backend: ArdiqBackend) -> None:
        self.app = app
        self.backend = backend
        self._redis: redis.Redis | None = None
        self._redis_lock = threading.Lock()

    def redis(self) -> redis.Redis:
        with self._redis_lock:
            if self._redis is None:
                import redis as redis_py

                self._redis = redis_py.Redis.from_url(self.app.redis_url)
            return self._redis

    # The two bodies below differ only in how they reach the blocking parts.
    def sync_body(self, task: Any) -> Callable[..., Any]:
        def body(*args: Any, **kwargs: Any) -> Any:
            result = self.begin(task, args, kwargs)
            try:
                if task.takes_context:
                    value = task.func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = task.func(*args, **kwargs)
            except Exception as exc:
                self.failed(result, exc)
                raise
            return self.succeeded(result, value)

        body.__name__ = task.func.__name__
        return body

    def async_body(self, task: Any) -> Callable[..., Any]:
        from asgiref.sync import sync_to_async

        begin = sync_to_async(self.begin)
        failed = sync_to_async(self.failed)
        succeeded = sync_to_async(self.succeeded)

        async def body(*args: Any, **kwargs: Any) -> Any:
            result = await begin(task, args, kwargs)
            try:
                if task.takes_context:
                    value = await task.func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = await task.func(*args, **kwargs)
            except Exception as exc:
                await failed(result, exc)
                raise
            return await succeeded(result, value)

        body.__name__ = task.func.__name__
        return body

    def begin(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from django.db import close_old_connections, reset_queries

        from ardiq import current_task

        ctx = current_task()
        assert ctx is not None
        # What Django does when a request starts: with DEBUG on, the log of queries would
        # otherwise grow for the worker's whole life.
        reset_queries()
        close_old_connections()
        now = int(time.time() * 1000)
        key = store.key(self.app.queue_name, ctx.task_id)
        pipe = self.redis().pipeline(transaction=False)
        pipe.hsetnx(key, "s", now)
        pipe.hset(key, mapping={"l": now, f"w{ctx.tries}": self.app.worker_id})
        pipe.hgetall(key)
        raw = pipe.execute()[-1]
        record = store.Record.decode(raw)
        from .backend import _from_ms

        if task.backend != self.backend.alias:
            task = task.using(backend=self.backend.alias)
        result = TaskResult(
            task=task,
            id=ctx.task_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=_from_ms(record.enqueued_ms),
            started_at=_from_ms(record.first_start_ms),
            finished_at=None,
            last_attempted_at=_from_ms(now),
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.backend.alias,
            errors=[
                TaskError(exception_class_path=p, traceback=t)
                for _, (p, t) in sorted(record.errors.items())
            ],
            worker_ids=record.workers,
        )
        task_started.send(sender=type(self.backend), task_result=result)
        return result

    def failed(self, result: Any, exc: BaseException) -> None:
        from django.db import close_old_connections

        from ardiq import current_task

        ctx = current_task()
        assert ctx is not None
        kind = type(exc)
        path = f"{kind.__module__}.{kind.__qualname__}"
        text = "".join(traceback.format_exception(exc))
        key = store.key(self.app.queue_name, ctx.task_id)
        pipe = self.redis().pipeline(transaction=False)
        pipe.hset(key, f"e{ctx.tries}", store.pack([path, text]))
        self._expire(pipe, key)
        pipe.execute()
        result.errors.append(TaskError(exception_class_path=path, traceback=text))
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", _now())
        try:
            task_finished.send(sender=type(self.backend), task_result=result)
        finally:
            close_old_connections()

    def succeeded(self, result: Any, value: Any) -> Any:
        from django.db import close_old_connections

        from ardiq import current_task

        ctx = current_task()
        assert ctx is not None
        try:
            value = normalize_json(value)
        except Exception as exc:  # a return value Django cannot keep fails the attempt
            self.failed(result, exc)
            raise
        try:
            pipe = self.redis().pipeline(transaction=False)
            self._expire(pipe, store.key(self.app.queue_name, ctx.task_id))
            pipe.execute()
            object.__setattr__(result, "_return_value", value)
            object.__setattr__(result, "status", SUCCESSFUL)
            object.__setattr__(result, "finished_at", _now())
            task_finished.send(sender=type(self.backend), task_result=result)
        finally:
            close_old_connections()
        return value

    def _expire(self, pipe: Any, key: str) -> None:
        ttl = store.finished_ttl_ms(self.app.result_ttl_ms)
        if ttl is None:
            pipe.persist(key)
        else:
            pipe.pexpire(key, ttl)


def _now() -> Any:
    from .backend import _now as now

    return now()
