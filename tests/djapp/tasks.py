"""The test project's Django tasks (found by the worker as this app's `tasks` module)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from ardiq.settings import default_redis_url

try:
    from django.tasks import task
except ImportError:  # Python 3.11: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

from django.db import connections

_ledger = redis.Redis.from_url(default_redis_url())
_held: list[Any] = []


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def boom(message: str) -> None:
    raise ValueError(message)


@task
async def double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@task
async def sleepy(seconds: float) -> None:
    await asyncio.sleep(seconds)


@task(takes_context=True)
def whoami(context: Any, tag: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "tag": tag}


@task(backend="retrying")
def flaky(key: str, failures: int) -> int:
    """Fails its first `failures` runs (counted in Redis, across attempts)."""
    n = int(_ledger.incr(f"flaky:{key}"))
    if n <= failures:
        raise RuntimeError(f"failure {n}")
    return n


@task
def touch_db() -> bool:
    """Opens this thread's connection and leaves it to the worker to close."""
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    _held.append(connection)
    return connection.connection is not None


@task
def db_closed() -> list[bool]:
    """Whether each connection `touch_db` left open was closed after its task."""
    return [c.connection is None for c in _held]


@task
def count_notes() -> int:
    from .models import Note

    return Note.objects.count()


@task(backend="oncommit")
def count_notes_on_commit() -> int:
    from .models import Note

    return Note.objects.count()
