"""streaq: tasks registered `silent=True` (no per-task INFO lines, like every other queue
here). Worker: `worker.run_sync()` in this process (it handles SIGTERM itself)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchcommon as bc
from streaq import Worker

worker = Worker(redis_url=bc.REDIS_URL, queue_name="bench", concurrency=bc.CONCURRENCY)


@worker.task(silent=True)
async def noop() -> None:
    bc.noop_body()


@worker.task(silent=True)
async def cpu() -> None:
    bc.cpu_body()


@worker.task(silent=True)
async def io() -> None:
    await bc.io_body()


@worker.task(silent=True)
async def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


TASKS = {"noop": noop, "cpu": cpu, "io": io, "lat": lat}


class Producer(bc.Producer):
    async def setup(self) -> None:
        await worker.__aenter__()  # `async with worker:`, held open while producing

    async def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return await TASKS[kind].enqueue(*args)

    async def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return await TASKS[kind].enqueue(*args).start(delay=timedelta(milliseconds=delay_ms))

    async def enqueue_bulk(self, kind: str, n: int) -> None:
        task = TASKS[kind]
        for start in range(0, n, self.bulk_chunk):
            chunk = min(self.bulk_chunk, n - start)
            await worker.enqueue_many([task.enqueue() for _ in range(chunk)])

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)


def run_worker() -> None:
    worker.run_sync()


if __name__ == "__main__":
    bc.main(Producer, run_worker)
