"""The app of tests/test_history.py: tasks that succeed, fail, retry, run long or kill
their worker, with the history settings taken from the environment:
ARDIQ_TEST_QUEUE, ARDIQ_TEST_HISTORY, ARDIQ_TEST_HISTORY_TTL_S, ARDIQ_TEST_IDLE_MS,
ARDIQ_TEST_MAX_DELIVERIES (the Redis URL from ARDIQ_REDIS_URL)."""

from __future__ import annotations

import asyncio
import os

from ardiq import Ardiq, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    priorities=["low", "default", "high"],
    idle_timeout_ms=int(os.environ.get("ARDIQ_TEST_IDLE_MS", "60000")),
    max_deliveries=int(os.environ.get("ARDIQ_TEST_MAX_DELIVERIES", "5")),
    history=int(os.environ.get("ARDIQ_TEST_HISTORY", "1000")),
    history_ttl_s=float(os.environ.get("ARDIQ_TEST_HISTORY_TTL_S", "86400")),
    poll_block_ms=100,
)


def tries() -> int:
    task = current_task()
    assert task is not None
    return task.tries


@app.task
async def noop(n: int = 0) -> int:
    return n


@app.task(max_retries=3, backoff_ms=10)
async def fails_twice() -> int:
    """Fails its first two attempts with different errors, then succeeds."""
    if tries() <= 2:
        raise ValueError(f"attempt {tries()} failed")
    return tries()


@app.task(max_retries=0)
async def boom(message: str) -> None:
    raise RuntimeError(message)


@app.task(max_retries=1, backoff_ms=10)
async def boom_twice(message: str) -> None:
    raise KeyError(message)


@app.task
async def sleeper(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(max_retries=0)
def kill_worker() -> None:
    """Dies with its worker, every time."""
    os._exit(17)
