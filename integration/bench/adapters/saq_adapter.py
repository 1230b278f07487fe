"""saq (Redis queue): functions take saq's `ctx` first and keyword arguments only; default
settings (scheduled jobs checked every second). Worker: `await worker.start()` in this
process (it handles SIGTERM itself)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import benchcommon as bc
from saq import Queue, Worker

queue = Queue.from_url(bc.REDIS_URL, name="bench")


async def noop(ctx: dict[str, Any]) -> None:
    bc.noop_body()


async def cpu(ctx: dict[str, Any]) -> None:
    bc.cpu_body()


async def io(ctx: dict[str, Any]) -> None:
    await bc.io_body()


async def lat(ctx: dict[str, Any], *, t0: int, due: int) -> None:
    bc.lat_body(t0, due)


def kwargs(kind: str, args: tuple[int, ...]) -> dict[str, int]:
    return {"t0": args[0], "due": args[1]} if kind == "lat" else {}


class Producer(bc.Producer):
    bulk = False

    async def setup(self) -> None:
        await queue.connect()

    async def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return await queue.enqueue(kind, **kwargs(kind, args))

    async def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        # `scheduled` is epoch seconds; a float keeps the millisecond part
        return await queue.enqueue(
            kind, scheduled=time.time() + delay_ms / 1000, **kwargs(kind, args)
        )

    async def close(self) -> None:
        await queue.disconnect()


def run_worker() -> None:
    worker = Worker(queue, functions=[noop, cpu, io, lat], concurrency=bc.CONCURRENCY)
    asyncio.run(worker.start())


if __name__ == "__main__":
    bc.main(Producer, run_worker)
