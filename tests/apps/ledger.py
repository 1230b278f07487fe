"""The test side of the ledger: read what tasks recorded, and wait for conditions."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")


class Ledger:
    """Reads `ledger:<queue>:<kind>` lists that the tasks of tests/apps append to."""

    def __init__(self, redis_url: str, queue: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.queue = queue

    async def items(self, kind: str) -> list[str]:
        raw = await self.client.lrange(f"ledger:{self.queue}:{kind}", 0, -1)
        return [x.decode() for x in raw]

    async def wait_for(self, kind: str, n: int, timeout: float = 10.0) -> list[str]:
        """Wait until `kind` holds at least `n` items; return them."""
        return await wait_until(lambda: self._at_least(kind, n), timeout, f"{n} x {kind}")

    async def _at_least(self, kind: str, n: int) -> list[str] | None:
        items = await self.items(kind)
        return items if len(items) >= n else None

    async def close(self) -> None:
        await self.client.aclose()


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll `probe` every 20 ms until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


LANES = ["low", "default", "high"]
"""The lanes of apps.basic, lowest first: producer apps in tests use the same."""


def exit_code(worker: Any, timeout: float) -> int:
    """The worker process's exit code; if it does not exit in time, fail with its output."""
    try:
        code: int = worker.wait(timeout)
    except subprocess.TimeoutExpired:
        if worker.kind in ("incode", "inproc"):  # the runner prints its stacks on these
            worker.signal(signal.SIGUSR2)
            time.sleep(0.5)
            worker.signal(signal.SIGUSR1)
            time.sleep(0.5)
        raise AssertionError(
            f"worker did not exit within {timeout}s; its output:\n{worker.output()}"
        ) from None
    return code


def stop_code(worker: Any, timeout: float = 15) -> int:
    """SIGTERM the worker and return its exit code; fail with its output if it hangs."""
    worker.signal(signal.SIGTERM)
    return exit_code(worker, timeout)
