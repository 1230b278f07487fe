"""The quickstart app: a few tasks showing what ArdiQ does.

Run a worker:      ardiq run example:app            (or: make demo)
Enqueue from code: await add.enqueue(1, 2)  /  add.enqueue_sync(1, 2)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from ardiq import Ardiq, Retry, current_task

log = logging.getLogger("example")

# Redis comes from ARDIQ_REDIS_URL (or REDIS_URL), else redis://localhost:6379.
# history=1000: workers keep the last thousand completed tasks, each failed attempt's
# error and per-minute counters, which `ardiq dashboard` shows (off by default: it costs
# about 4% of no-op throughput).
app = Ardiq(queue_name="example", priorities=["low", "default", "high"], history=1000)


@app.task
async def add(a: int, b: int) -> int:
    """An async task: runs on the worker's event loop."""
    return a + b


@app.task(priority="high")
def checksum(text: str, rounds: int = 1000) -> str:
    """A plain `def` task: runs on a worker thread, never blocking the loop."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@app.task(max_retries=3, backoff_ms=100)
async def flaky(succeed_on: int) -> str:
    """Fails until its `succeed_on`-th attempt: retries are automatic."""
    task = current_task()
    assert task is not None
    if task.tries < succeed_on:
        raise Retry(f"attempt {task.tries} is too early")
    return f"succeeded on attempt {task.tries}"


@app.task(timeout=1.0, max_retries=0)
async def slow_download(url: str) -> str:
    """Bounded by a timeout: longer than a second fails with a timeout error."""
    await asyncio.sleep(0.05)
    log.info("downloaded a page")
    return f"fetched {len(url)} chars of url"


@app.cron("*/5 * * * *")
async def every_five_minutes() -> None:
    """Runs once per occurrence across all workers."""
    log.info("five minutes passed")
