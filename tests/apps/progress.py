"""Tasks that report progress (tests/test_progress.py).

Settings from the environment: ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE. A task that must wait
for the test polls the key `ledger:<queue>:go:<name>`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
from ardiq import Ardiq, Retry, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=200,
    result_ttl_ms=60_000,
)

_ledger = redis.Redis.from_url(app.redis_url)
SPIN = 10_000
PAUSES = 5  # the spin pauses this many times for PAUSE_S: about a second in all
PAUSE_S = 0.2


def go(name: str) -> bool:
    return bool(_ledger.exists(f"ledger:{app.queue_name}:go:{name}"))


def started(name: str) -> None:
    _ledger.rpush(f"ledger:{app.queue_name}:started", name)


@app.task
async def spin_async() -> int:
    """A tight loop of SPIN reports over about a second, then a last one."""
    ctx = current_task()
    assert ctx is not None
    for i in range(SPIN):
        ctx.progress(i * 100 / SPIN, f"step {i}")
        if i % (SPIN // PAUSES) == 0:
            await asyncio.sleep(PAUSE_S)
    ctx.progress(100, "done")
    return SPIN


@app.task
def spin_sync() -> int:
    """The same in a sync body (reports from a worker thread)."""
    ctx = current_task()
    assert ctx is not None
    for i in range(SPIN):
        ctx.progress(i * 100 / SPIN, f"step {i}")
        if i % (SPIN // PAUSES) == 0:
            time.sleep(PAUSE_S)
    ctx.progress(100, "done")
    return SPIN


@app.task
async def report_and_wait_async(name: str) -> str:
    ctx = current_task()
    assert ctx is not None
    ctx.progress({"stage": "halfway", "items": [1, 2]}, "half")
    started(name)
    while not go(name):
        await asyncio.sleep(0.02)
    ctx.progress(99)
    return name


@app.task
def report_and_wait_sync(name: str) -> str:
    ctx = current_task()
    assert ctx is not None
    ctx.progress({"stage": "halfway", "items": [1, 2]}, "half")
    started(name)
    while not go(name):
        time.sleep(0.02)
    ctx.progress(99)
    return name


@app.task(max_retries=1)
async def retry_once(name: str) -> int:
    """Reports, then fails its first attempt (retried after a while the test watches)."""
    ctx = current_task()
    assert ctx is not None
    ctx.progress(10 * ctx.tries, f"attempt {ctx.tries}")
    if ctx.tries == 1:
        raise Retry(delay_ms=1500)
    return ctx.tries


@app.task
def bad_reports() -> list[str]:
    """What each bad report raised in the body: `<type>: <message>`."""
    ctx = current_task()
    assert ctx is not None
    bad: list[tuple[Any, Any]] = [
        (101, None),
        (-0.5, None),
        (float("nan"), None),
        (True, None),
        ("50", None),
        ({1: "x"}, None),
        ({"a": object()}, None),
        (50, 7),
        ({"blob": "x" * 70_000}, None),
    ]
    out = []
    for value, message in bad:
        try:
            ctx.progress(value, message)
        except (TypeError, ValueError) as exc:
            out.append(f"{type(exc).__name__}: {exc}")
        else:
            out.append("accepted")
    return out
