"""An app with two crons on the same one-second schedule, for the pause, resume and
trigger tests: `tock` is never paused, so its runs show that the workers went through
occurrences that a paused `tick` had to skip. Each run records its task id in
`ledger:<queue>:<name>`. `report` runs daily at 09:00 in Tokyo (for the time zone
listing). Signs its payloads when ARDIQ_SIGNING_KEY is set.
"""

from __future__ import annotations

import os

import redis
from ardiq import Ardiq, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=200,
    cron_poll_s=0.1,
)

# Its own URL when the worker's Redis user may not write the ledger (the ACL test).
_ledger = redis.Redis.from_url(os.environ.get("CRON_LEDGER_URL", app.redis_url))


def _record(name: str) -> None:
    task = current_task()
    assert task is not None
    _ledger.rpush(f"ledger:{app.queue_name}:{name}", task.task_id)


@app.cron(every=1)
async def tick() -> None:
    _record("tick")


@app.cron(every=1)
async def tock() -> None:
    _record("tock")


@app.cron("0 9 * * *", tz="Asia/Tokyo")
async def report() -> None:
    _record("report")
