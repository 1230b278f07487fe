"""taskiq + taskiq-redis: the stream broker (acknowledged deliveries, like ArdiQ's), no
result backend (taskiq's default). Worker: taskiq's documented in-process receiver
(`run_receiver_task`), one process, at most 10 tasks at once. No delayed row: taskiq
delays tasks only through a separately run scheduler process.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import benchcommon as bc
from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

# consumer_id="0": read the stream from its start, so tasks staged before the first
# worker started are consumed (the default, "$", would skip them)
broker = RedisStreamBroker(url=bc.REDIS_URL, queue_name="bench", consumer_id="0")


@broker.task
async def noop() -> None:
    bc.noop_body()


@broker.task
async def cpu() -> None:
    bc.cpu_body()


@broker.task
async def io() -> None:
    await bc.io_body()


@broker.task
async def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


TASKS = {"noop": noop, "cpu": cpu, "io": io, "lat": lat}


class Producer(bc.Producer):
    bulk = False
    delayed = False

    async def setup(self) -> None:
        await broker.startup()

    async def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return await TASKS[kind].kiq(*args)

    async def close(self) -> None:
        await broker.shutdown()


def run_worker() -> None:
    async def serve() -> None:
        receiver = asyncio.create_task(
            run_receiver_task(broker, max_async_tasks=bc.CONCURRENCY, run_startup=True)
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        receiver.cancel()
        await broker.shutdown()

    asyncio.run(serve())


if __name__ == "__main__":
    bc.main(Producer, run_worker)
