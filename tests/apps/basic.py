"""The app most behaviour tests run: lanes, and tasks covering each behaviour.

Settings come from the environment so one module serves every test:
ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE, ARDIQ_TEST_IDLE_MS, ARDIQ_TEST_MAX_DELIVERIES,
ARDIQ_TEST_CONCURRENCY. Tasks record what happened in Redis lists (`ledger:*`) so tests
can count executions across processes.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis

from ardiq import Ardiq, Retry, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    priorities=["low", "default", "high"],
    idle_timeout_ms=int(os.environ.get("ARDIQ_TEST_IDLE_MS", "60000")),
    max_deliveries=int(os.environ.get("ARDIQ_TEST_MAX_DELIVERIES", "5")),
    concurrency=int(os.environ.get("ARDIQ_TEST_CONCURRENCY", "16")),
    poll_block_ms=200,
)

_ledger = redis.Redis.from_url(app.redis_url)


def record(kind: str, value: str) -> None:
    """Append to a ledger list shared with the test process."""
    _ledger.rpush(f"ledger:{app.queue_name}:{kind}", value)


@app.task
async def noop() -> None:
    return None


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def count(n: int) -> int:
    """Record each execution: the test checks every n ran exactly once."""
    record("count", str(n))
    return n


@app.task
async def lane_order(tag: str) -> str:
    record("order", tag)
    return tag


@app.task
async def sleep(seconds: float) -> float:
    task = current_task()
    assert task is not None
    record("started", task.task_id)
    await asyncio.sleep(seconds)
    record("finished", task.task_id)
    return seconds


@app.task
def sync_sleep(seconds: float) -> float:
    task = current_task()
    assert task is not None
    record("started", task.task_id)
    time.sleep(seconds)
    return seconds


@app.task(max_retries=2, backoff_ms=50)
async def always_fails(message: str) -> None:
    raise ValueError(message)


@app.task(max_retries=3)
async def retry_then_ok(until: int) -> int:
    task = current_task()
    assert task is not None
    record("tries", str(task.tries))
    if task.tries < until:
        raise Retry("not yet", delay_ms=30)
    return task.tries


@app.task(timeout=0.2, max_retries=0)
async def too_slow() -> None:
    await asyncio.sleep(5)


@app.task
def whoami() -> list[object]:
    task = current_task()
    assert task is not None
    return [task.task_id, task.name, task.tries]


@app.task(max_retries=0)
async def unserializable() -> object:
    return object()


@app.task(max_retries=5)
def kill_worker() -> None:
    """Dies with its worker, every time."""
    record("killer", str(os.getpid()))
    os._exit(17)


@app.task
async def slow_count(n: int, seconds: float) -> int:
    """Like count, after a pause: long enough to kill the worker in the middle."""
    record("slow_started", str(n))
    await asyncio.sleep(seconds)
    record("count", str(n))
    return n
