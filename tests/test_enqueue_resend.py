"""An enqueue whose reply was lost (the connection dropped after Redis ran the script) is
sent again checked, so a task accepted once is enqueued once and runs once (issue 10,
defect 6; PROTOCOL.md `enqueue`, resend)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from apps.ledger import exit_code
from ardiq import Ardiq
from support.faulty_proxy import FaultyProxy
from support.redis_server import RedisServer
from support.workers import WorkerProcess


async def test_a_lost_reply_does_not_enqueue_twice(
    redis_server: RedisServer,
    queue: str,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    proxy = await FaultyProxy(redis_server.port).start()
    app = Ardiq(redis_url=proxy.url, queue_name=queue)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        stream = app.keys.stream("default")
        await app.ref("count").enqueue(0)  # warm up: scripts loaded, connections open
        proxy.lose_next_reply()
        job = await app.ref("count").enqueue(1)
        assert proxy.lost == 1
        # The script ran once and its resend found the task: one entry, not two.
        assert await admin.xlen(stream) == 2
        assert await app.status(job.id) == "queued"
        # A lost reply on a batch: the same.
        proxy.lose_next_reply()
        jobs = await app.enqueue_many([app.ref("count").prepare(n) for n in range(2, 12)])
        assert proxy.lost == 2 and len({j.id for j in jobs}) == 10
        assert await admin.xlen(stream) == 12

        worker = start_worker("apps.secure:app", "--burst", env={"ARDIQ_TEST_DIR": str(tmp_path)})
        assert exit_code(worker, 30) == 0, worker.output()
        ran = sorted(int(n) for n in (tmp_path / "count").read_text().split())
        assert ran == list(range(12)), ran  # each exactly once
    finally:
        await app.aclose()
        await admin.aclose()
        await proxy.close()
