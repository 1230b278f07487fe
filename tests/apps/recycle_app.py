"""The app of tests/test_worker_recycle.py (`ardiq run --max-tasks / --max-memory`).

Settings from the environment: ARDIQ_TEST_QUEUE, RECYCLE_LEDGER_URL (where tasks record
what ran, and in which process: `ledger:<queue>:ran` holds `<n> <pid>`; `slow` also
pushes `<n>` to `ledger:<queue>:started` when it starts),
RECYCLE_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import os

import redis
from ardiq import Ardiq

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "recycle"),
    concurrency=int(os.environ.get("RECYCLE_CONCURRENCY", "4")),
    poll_block_ms=100,
)

_ledger = redis.Redis.from_url(os.environ.get("RECYCLE_LEDGER_URL", "redis://127.0.0.1:1"))
_hoard: list[bytes] = []


def record(n: int) -> None:
    _ledger.rpush(f"ledger:{app.queue_name}:ran", f"{n} {os.getpid()}")


@app.task
async def count(n: int) -> int:
    record(n)
    return n


@app.task
async def slow(n: int, seconds: float) -> int:
    _ledger.rpush(f"ledger:{app.queue_name}:started", str(n))
    await asyncio.sleep(seconds)
    record(n)
    return n


@app.task
async def hog(n: int, mb: int) -> int:
    """Leaks `mb` megabytes (written, so resident) for the rest of the process's life."""
    _hoard.append(b"\x01" * (mb * 1024 * 1024))
    record(n)
    return n
