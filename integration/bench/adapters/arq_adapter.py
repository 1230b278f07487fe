"""arq: functions take arq's `ctx` first; default settings (results kept, queue polled every
0.5 s). Worker: `Worker(...).run()` in this process (it handles SIGTERM itself)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchcommon as bc
from arq import Worker, create_pool
from arq.connections import RedisSettings

SETTINGS = RedisSettings.from_dsn(bc.REDIS_URL)


async def noop(ctx: dict[str, Any]) -> None:
    bc.noop_body()


async def cpu(ctx: dict[str, Any]) -> None:
    bc.cpu_body()


async def io(ctx: dict[str, Any]) -> None:
    await bc.io_body()


async def lat(ctx: dict[str, Any], t0: int, due: int) -> None:
    bc.lat_body(t0, due)


class Producer(bc.Producer):
    bulk = False

    async def setup(self) -> None:
        self.pool = await create_pool(SETTINGS)

    async def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return await self.pool.enqueue_job(kind, *args)

    async def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return await self.pool.enqueue_job(kind, *args, _defer_by=timedelta(milliseconds=delay_ms))

    async def close(self) -> None:
        await self.pool.aclose()


def run_worker() -> None:
    Worker(functions=[noop, cpu, io, lat], redis_settings=SETTINGS, max_jobs=bc.CONCURRENCY).run()


if __name__ == "__main__":
    bc.main(Producer, run_worker)
