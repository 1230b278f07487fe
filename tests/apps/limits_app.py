"""Tasks under rate limits and concurrency caps (tests/test_limits.py).

Settings from the environment: ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE. Each task records in
the ledger (`ledger:<queue>:<kind>` lists, plus a set of the `capped` attempts running):

- `grant`: the Redis server time the task's rate token was granted (`g` of its job hash,
  written by `admit`), so the test checks the bound on the times Redis granted;
- `cap`: how many `capped` attempts were running (of live workers) when one entered;
- `done`: one item per finished task (the nothing-lost check).
"""

from __future__ import annotations

import asyncio
import os
import time

import redis
from ardiq import Ardiq, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=100,
    idle_timeout_ms=int(os.environ.get("ARDIQ_TEST_LEASE_MS", "60000")),
    result_ttl_ms=120_000,
    concurrency=8,
)

_ledger = redis.Redis.from_url(app.redis_url)
Q = app.queue_name


def _record(kind: str, value: object) -> None:
    _ledger.rpush(f"ledger:{Q}:{kind}", str(value))


def _grant() -> None:
    ctx = current_task()
    assert ctx is not None
    g = _ledger.hget(app.keys.job(ctx.task_id), "g")
    _record("grant", g.decode() if g else "")


@app.task(rate_limit="20/s", burst=5)
async def rated(i: int) -> int:
    _grant()
    _record("done", f"rated:{i}")
    return i


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@app.task(max_concurrency=2)
async def capped(i: int, hold_s: float = 0.2) -> int:
    running = f"ledger:{Q}:running"
    me = f"{os.getpid()}:{i}"
    _ledger.sadd(running, me)
    try:
        # A member of a killed worker stays behind: count live workers' attempts only.
        members = [m.decode() for m in _ledger.smembers(running)]
        live = [m for m in members if _alive(int(m.split(":")[0]))]
        _record("cap", len(live))
        _record("started", me)
        await asyncio.sleep(hold_s)
    finally:
        _ledger.srem(running, me)
    _record("done", f"capped:{i}")
    return i


@app.task(rate_limit="1/s", burst=1, limit_key="customer")
async def per_customer(customer: str, i: int) -> str:
    _record("done", f"per:{customer}:{i}")
    _record("at", f"{customer}:{time.time():.3f}")
    return customer


@app.task
async def plain(i: int) -> int:
    _record("done", f"plain:{i}")
    return i


@app.task(max_concurrency=1)
async def gate(i: int) -> int:
    """Holds its only slot until the test sets `ledger:<queue>:open`."""
    _record("started", f"gate:{i}")
    while not _ledger.exists(f"ledger:{Q}:open"):
        await asyncio.sleep(0.02)
    _record("done", f"gate:{i}")
    return i
