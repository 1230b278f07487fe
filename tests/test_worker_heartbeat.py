"""Heartbeats: every worker beats in `P workers` and forgets workers long gone, so the set
does not grow with every worker that was ever killed (both worker kinds)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis
from apps.ledger import stop_code, wait_until
from ardiq import Ardiq
from support.workers import WorkerProcess


async def test_workers_forget_long_gone_heartbeats(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    app = make_app()
    r = aioredis.Redis.from_url(redis_url)
    now = int(time.time() * 1000)
    try:
        stale = {"gone-an-hour-ago": now - 3_600_000, "a-minute": now - 60_000}
        await r.zadd(app.keys.workers, stale)
        worker = start_worker("apps.basic:app")

        async def pruned() -> bool:
            return await r.zscore(app.keys.workers, "gone-an-hour-ago") is None

        await wait_until(pruned, 20, "the stale heartbeat to be forgotten")
        # Only long-gone workers are forgotten: a recent one may still come back.
        assert await r.zscore(app.keys.workers, "a-minute") is not None
        assert await r.zcard(app.keys.workers) == 2  # and this worker's own beat
        assert stop_code(worker) == 0, worker.output()
    finally:
        await r.aclose()
