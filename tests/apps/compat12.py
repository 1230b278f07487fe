"""An app written the way ardiq 1.2's documentation shows: a lifespan with no argument,
tasks that unpack `current_task()` as a tuple, error hooks that unpack their context.

Settings come from the environment: ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE. With
COMPAT_LIFESPAN_YIELD=list the lifespan yields a list instead of a mapping (the worker
must refuse to start, after releasing what the lifespan set up). Tasks and hooks record
what they saw in Redis lists (`ledger:<queue>:<kind>`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import redis
from ardiq import Ardiq, ErrorContext, Retry, current_task

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=200,
)

_ledger = redis.Redis.from_url(app.redis_url)


def record(kind: str, value: Any) -> None:
    _ledger.rpush(f"ledger:{app.queue_name}:{kind}", json.dumps(value))


@app.lifespan
async def lifespan() -> AsyncIterator[Any]:
    record("lifespan", "start")
    try:
        if os.environ.get("COMPAT_LIFESPAN_YIELD") == "list":
            yield ["not", "a", "mapping"]
        else:
            yield {"db": "connected"}
    finally:
        record("lifespan", "stop")


@app.on_error
def on_error(ctx: ErrorContext) -> None:
    name, task_id, exc, tries, will_retry = ctx  # five fields, in this order
    record("errors", [name, task_id, type(exc).__name__, tries, will_retry, list(ctx._asdict())])


@app.task
async def uses_state() -> Any:
    return app.state.db


@app.task
def unpacks_context() -> Any:  # a sync task sees the same tuple
    ctx = current_task()
    assert ctx is not None
    task_id, name, tries = ctx
    return [task_id, name, tries, ctx[1], list(ctx._asdict()), ctx._replace(tries=9).tries]


@app.task(timeout=0.2, max_retries=0)
async def slow_float() -> None:
    await asyncio.sleep(30)


@app.task(timeout=1, max_retries=0)
def slow_int() -> None:
    time.sleep(5)


@app.task(max_retries=1)
async def gives_up() -> None:
    raise Retry("msg")


@app.task(max_retries=1)
async def gives_up_after_delay() -> None:
    raise Retry("later", delay_ms=10)


@app.task(max_retries=0)
async def gives_up_default() -> None:
    raise Retry()


@app.cron(every=3600)
async def hourly() -> None: ...
