"""The app most behaviour tests run: lanes, and tasks covering each behaviour.

Settings come from the environment so one module serves every test:
ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE, ARDIQ_TEST_IDLE_MS, ARDIQ_TEST_MAX_DELIVERIES,
ARDIQ_TEST_CONCURRENCY, ARDIQ_TEST_PREFETCH, ARDIQ_TEST_WEIGHTS. Tasks record what
happened in Redis lists (`ledger:*`) so tests can count executions across processes.

The app also has a lifespan (records start/stop, sets `app.state.greeting`), two
middlewares (trace `mw_trace` only), and two error hooks: the first always raises (it
must be logged and ignored), the second records every call in `ledger:<queue>:hook`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis
from ardiq import Ardiq, Retry, current_task
from ardiq.context import ErrorContext, TaskContext

_prefetch = os.environ.get("ARDIQ_TEST_PREFETCH")
# ARDIQ_TEST_WEIGHTS="1,3,6": lane weights for low, default, high (strict priorities without).
_weights = os.environ.get("ARDIQ_TEST_WEIGHTS")
_lanes = ["low", "default", "high"]
app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    priorities=(
        dict(zip(_lanes, map(int, _weights.split(",")), strict=True)) if _weights else _lanes
    ),
    history=1000,  # on, as a dashboard user runs it (the default is off)
    idle_timeout_ms=int(os.environ.get("ARDIQ_TEST_IDLE_MS", "60000")),
    max_deliveries=int(os.environ.get("ARDIQ_TEST_MAX_DELIVERIES", "5")),
    concurrency=int(os.environ.get("ARDIQ_TEST_CONCURRENCY", "16")),
    prefetch=int(_prefetch) if _prefetch else None,
    poll_block_ms=200,
)

_ledger = redis.Redis.from_url(app.redis_url)


def record(kind: str, value: str) -> None:
    """Append to a ledger list shared with the test process."""
    _ledger.rpush(f"ledger:{app.queue_name}:{kind}", value)


def ms() -> int:
    return time.time_ns() // 1_000_000


def me() -> TaskContext:
    task = current_task()
    assert task is not None
    return task


@app.lifespan
async def lifespan(_app: Ardiq) -> AsyncIterator[dict[str, Any]]:
    record("lifespan", "start")
    yield {"greeting": "hello from lifespan"}
    record("lifespan", "stop")


@app.middleware
async def outer(ctx: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    if ctx.name == "mw_trace":
        record("mw", "outer-in")
    result = await call_next()
    if ctx.name == "mw_trace":
        record("mw", "outer-out")
    return result


@app.middleware
async def inner(ctx: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    if ctx.name == "mw_trace":
        record("mw", "inner-in")
    result = await call_next()
    if ctx.name == "mw_trace":
        record("mw", "inner-out")
    return result


@app.on_error
def exploding_hook(ctx: ErrorContext) -> None:
    raise RuntimeError("this hook always fails")


@app.on_error
async def recording_hook(ctx: ErrorContext) -> None:
    record(
        "hook", f"{ctx.name}:{ctx.task_id}:{ctx.tries}:{ctx.will_retry}:{type(ctx.exc).__name__}"
    )


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
    record("attempt", f"always_fails:{me().tries}")
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


@app.task
async def stamp(tag: str) -> int:
    """Record when it started (epoch ms, this machine's clock)."""
    now = ms()
    record("stamp", f"{tag}:{now}")
    return now


@app.task(max_retries=2, backoff_ms=300)
async def backoff_fails() -> None:
    record("attempt", f"backoff_fails:{me().tries}:{ms()}")
    raise ValueError("backoff")


@app.task(max_retries=1)
async def retry_delay() -> int:
    record("attempt", f"retry_delay:{me().tries}:{ms()}")
    if me().tries == 1:
        raise Retry("later", delay_ms=400)
    return me().tries


@app.task(max_retries=1)
async def default_backoff() -> int:
    """Fails once; the retry waits the default tries² seconds (1 s)."""
    record("attempt", f"default_backoff:{me().tries}:{ms()}")
    if me().tries == 1:
        raise KeyError("first attempt fails")
    return me().tries


@app.task(max_retries=1)
async def retry_forever() -> None:
    record("attempt", f"retry_forever:{me().tries}")
    raise Retry("again", delay_ms=30)


@app.task(timeout=0.2, max_retries=1, backoff_ms=50)
async def slow_then_fast() -> int:
    record("attempt", f"slow_then_fast:{me().tries}")
    if me().tries == 1:
        await asyncio.sleep(3)
    return me().tries


@app.task
async def owner(seconds: float) -> int:
    """Returns the pid of the worker process whose attempt finished it."""
    record("owner_started", str(os.getpid()))
    await asyncio.sleep(seconds)
    record("owner_finished", str(os.getpid()))
    return os.getpid()


@app.task
async def gauge(seconds: float) -> None:
    """Counts tasks running at once: each start records the count including itself."""
    key = f"ledger:{app.queue_name}:gauge-now"
    record("gauge", str(_ledger.incr(key)))
    try:
        await asyncio.sleep(seconds)
    finally:
        _ledger.decr(key)


@app.task(max_retries=0)
async def echo_secret(secret: str) -> str:
    return secret


@app.task(max_retries=1, backoff_ms=10)
async def fail_secret(secret: str) -> None:
    raise ValueError(secret)


@app.task
async def read_state() -> str:
    greeting: str = app.state.greeting
    return greeting


@app.task
async def read_headers() -> dict[str, str]:
    return dict(me().headers)


@app.task
async def whoami_async() -> list[object]:
    task = me()
    return [task.task_id, task.name, task.tries]


@app.task
async def mw_trace() -> str:
    record("mw", "body")
    return "traced"


_aborter: Ardiq | None = None


@app.task(max_retries=0)
async def abort_self(tag: str) -> str:
    """Requests its own abort, then returns without awaiting anything: the request reaches
    the worker only after the body ended."""
    global _aborter
    if _aborter is None:
        _aborter = Ardiq(redis_url=app.redis_url, queue_name=app.queue_name)
    record("abort_self", tag)
    _aborter.abort_sync(me().task_id)
    return tag


@app.task(max_retries=1, backoff_ms=10)
async def corrupt_own_job() -> None:
    """Turns its own job record into a string, then fails with a retry left: the finish
    script errors on this outcome (WRONGTYPE reading the job) before acknowledging it."""
    key = app.keys.job(me().task_id)
    _ledger.delete(key)
    _ledger.set(key, "not a hash")
    record("corrupted", me().task_id)
    raise ValueError("retry me")
