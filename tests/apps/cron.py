"""An app with one cron firing every second, for the cron-across-workers test.

Each execution records its task id (`cron:<name>:<occurrence ms>`) in
`ledger:<queue>:cron`, so the test counts executions per occurrence.
"""

from __future__ import annotations

import os

import redis
from ardiq import Ardiq, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=200,
    cron_poll_s=0.2,
)

_ledger = redis.Redis.from_url(app.redis_url)


@app.cron(every=1)
async def tick() -> None:
    task = current_task()
    assert task is not None
    _ledger.rpush(f"ledger:{app.queue_name}:cron", task.task_id)
