"""The app every fault scenario runs: tasks that record each start and each finish in
the LEDGER (a separate redis-server, so a fault of the queue's Redis loses nothing of
it), and tasks that misbehave on purpose (die, segfault, hold the GIL, return what the
serializer cannot encode or what is too large).

Settings come from the environment: ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE, LEDGER_URL,
FAULT_IDLE_MS, FAULT_MAX_DELIVERIES, FAULT_CONCURRENCY, FAULT_PREFETCH,
FAULT_RESULT_TTL_MS, FAULT_MAX_PAYLOAD.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from ardiq import Ardiq
from ardiq.context import TaskContext

_prefetch = os.environ.get("FAULT_PREFETCH")
app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "faults"),
    idle_timeout_ms=int(os.environ.get("FAULT_IDLE_MS", "2000")),
    max_deliveries=int(os.environ.get("FAULT_MAX_DELIVERIES", "5")),
    concurrency=int(os.environ.get("FAULT_CONCURRENCY", "16")),
    prefetch=int(_prefetch) if _prefetch else None,
    result_ttl_ms=int(os.environ.get("FAULT_RESULT_TTL_MS", "3600000")),
    max_payload_bytes=int(os.environ.get("FAULT_MAX_PAYLOAD", str(1024 * 1024))),
    poll_block_ms=200,
)

_ledger = redis.Redis.from_url(os.environ.get("LEDGER_URL", "redis://127.0.0.1:1"))
PID = os.getpid()


def ms() -> int:
    return time.time_ns() // 1_000_000


def event(kind: str, task_id: str, tries: int) -> None:
    """One ledger event: S(tart) or F(inish) of a body, by this process, now."""
    _ledger.rpush("lg:ev", f"{kind} {task_id} {PID} {ms()} {tries}")


def me() -> TaskContext:
    from ardiq import current_task

    task = current_task()
    assert task is not None
    return task


@app.middleware
async def ledger_mw(ctx: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
    """Records S before and F after every body; `kill_before_ack` dies between its
    body's end and the ack, on the first delivery only."""
    event("S", ctx.task_id, ctx.tries)
    result = await call_next()
    event("F", ctx.task_id, ctx.tries)
    if ctx.name == "kill_before_ack" and _ledger.set(f"lg:killed:{ctx.task_id}", PID, nx=True):
        _ledger.rpush("lg:faults", f"kill_before_ack {PID} {ms()}")
        os.kill(PID, signal.SIGKILL)
    return result


@app.task(max_retries=0)
async def work(sleep_ms: int, pad: str = "") -> int:
    """Sleeps; `pad` only makes the payload bigger (memory scenarios)."""
    await asyncio.sleep(sleep_ms / 1000)
    return PID


@app.task(max_retries=0)
async def kill_before_ack() -> int:
    return PID


_queue_redis = redis.Redis.from_url(app.redis_url)


def _grant(where: str = "lg:grant", prefix: str = "") -> None:
    """The Redis server time `admit` granted this attempt's rate token (job `g`)."""
    task = me()
    g = _queue_redis.hget(app.keys.job(task.task_id), "g")
    _ledger.rpush(where, prefix + (g or b"0").decode())


@app.task(max_retries=0, rate_limit=os.environ.get("FAULT_RATE", "20/s"), burst=5)
async def rated(sleep_ms: int) -> int:
    """Rate-limited (scenario `limits`): records its grant time."""
    _grant()
    await asyncio.sleep(sleep_ms / 1000)
    return PID


@app.task(max_retries=0, max_concurrency=2)
async def capped(sleep_ms: int) -> int:
    """At most two running across every worker (scenario `limits`)."""
    await asyncio.sleep(sleep_ms / 1000)
    return PID


@app.task(max_retries=0, rate_limit="1/s", burst=1, limit_key="key")
async def keyed(key: str, sleep_ms: int) -> int:
    """One start a second per key (scenario `limits`)."""
    _grant("lg:kgrant", f"{key} ")
    await asyncio.sleep(sleep_ms / 1000)
    return PID


@app.task(max_retries=0)
def hold_gil(n: int) -> int:
    """One long C call: the GIL is held the whole time."""
    sum(range(n))
    return PID


@app.task(max_retries=5)
def die() -> None:
    os._exit(17)


@app.task(max_retries=5)
def segfault() -> None:
    ctypes.string_at(0)


@app.task(max_retries=0)
async def big_result(n: int) -> bytes:
    return b"x" * n


@app.task(max_retries=0)
async def unencodable() -> object:
    return object()


@app.task(max_retries=0)
async def fail_first(sleep_ms: int) -> int:
    """Fails on its first run (a dead letter), succeeds when replayed."""
    await asyncio.sleep(sleep_ms / 1000)
    ctx = me()
    if _ledger.set(f"lg:failed:{ctx.task_id}", PID, nx=True):
        # The ledger's F (the middleware records none for a body that raises): this run
        # ended here, and a replay's run must not count as overlapping it.
        event("F", ctx.task_id, ctx.tries)
        raise RuntimeError("first run fails")
    return PID


_hoard: list[bytes] = []


@app.task(max_retries=0)
async def hog(mb: int) -> int:
    """Allocates `mb` megabytes, written so they are resident, and keeps them for the
    process's life: a leak, for the recycling scenario (`--max-memory`)."""
    _hoard.append(b"\x01" * (mb * 1024 * 1024))
    return PID
