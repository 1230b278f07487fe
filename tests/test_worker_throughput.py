"""Many tasks through one worker: each completes exactly once, in burst mode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis
from apps.ledger import exit_code
from ardiq import Ardiq
from support.workers import WorkerProcess


async def test_thousand_tasks_complete_exactly_once_in_burst(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    redis_url: str,
) -> None:
    app = make_app(priorities=["low", "default", "high"])
    count = app.ref("count")
    jobs = await app.enqueue_many([count.prepare(i) for i in range(1000)])
    assert await app.queue_size() == 1000

    worker = start_worker("apps.basic:app", "--burst", env={"ARDIQ_TEST_CONCURRENCY": "16"})
    assert exit_code(worker, 120) == 0, worker.output()

    ledger = aioredis.Redis.from_url(redis_url)
    runs = Counter(int(x) for x in await ledger.lrange(f"ledger:{queue}:count", 0, -1))
    await ledger.aclose()
    assert sorted(runs) == list(range(1000))
    assert set(runs.values()) == {1}
    assert await app.queue_size() == 0
    for n in (0, 499, 999):
        result = await jobs[n].result()
        assert result is not None and result.success and result.value == n
