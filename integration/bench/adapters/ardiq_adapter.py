"""ArdiQ (this repository): one app for every way of running its worker.

- ardiq-native: the driver runs `.venv/bin/ardiq run ardiq_adapter:app` in this directory;
- ardiq-inproc and ardiq-incode: `python ardiq_adapter.py worker` runs `await app.run()`,
  with ARDIQ_ENGINE=native (the Rust engine) or ARDIQ_ENGINE=python (the pure loop).
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import benchcommon as bc
from ardiq import Ardiq

app = Ardiq(redis_url=bc.REDIS_URL, queue_name="bench", concurrency=bc.CONCURRENCY)


# ARDIQ_BENCH_LIMIT (rows ardiq-*-limit): noop under a rate limit that never binds, to
# measure what admission costs (README, "Rate limits and concurrency caps").
@app.task(rate_limit=os.environ.get("ARDIQ_BENCH_LIMIT") or None)
async def noop() -> None:
    bc.noop_body()


@app.task
async def cpu() -> None:
    bc.cpu_body()


@app.task
async def io() -> None:
    await bc.io_body()


@app.task
async def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


TASKS = {"noop": noop, "cpu": cpu, "io": io, "lat": lat}


class Producer(bc.Producer):
    async def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return await TASKS[kind].enqueue(*args)

    async def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return await TASKS[kind].options(delay_ms=delay_ms).enqueue(*args)

    async def enqueue_bulk(self, kind: str, n: int) -> None:
        task = TASKS[kind]
        for start in range(0, n, self.bulk_chunk):
            await app.enqueue_many([task.prepare() for _ in range(min(self.bulk_chunk, n - start))])

    async def close(self) -> None:
        await app.aclose()


def run_worker() -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop)
        await app.run()

    asyncio.run(serve())


if __name__ == "__main__":
    bc.main(Producer, run_worker)
