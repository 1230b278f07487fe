"""The public PyPI package `ardiq==1.2.0` (another project with the same name; Rust core).

Worker: its own CLI, `ardiq run ardiq_pypi_adapter:app`, started by the driver from this
queue's venv. Its settings (concurrency) are keyword arguments of the app.
"""

from __future__ import annotations

from typing import Any

import benchcommon as bc
from ardiq import Ardiq

app = Ardiq(redis_url=bc.REDIS_URL, queue_name="bench", concurrency=bc.CONCURRENCY)


@app.task()
async def noop() -> None:
    bc.noop_body()


@app.task()
async def cpu() -> None:
    bc.cpu_body()


@app.task()
async def io() -> None:
    await bc.io_body()


@app.task()
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


def run_worker() -> None:
    raise SystemExit("run this queue's worker with its CLI: ardiq run ardiq_pypi_adapter:app")


if __name__ == "__main__":
    bc.main(Producer, run_worker)
