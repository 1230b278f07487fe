"""Apps for the security tests: they never touch Redis outside their queue's keys (the
worker may run as a least-privilege ACL user) and record what ran in files instead.

Environment: ARDIQ_REDIS_URL (may be rediss:// or carry an ACL user), ARDIQ_TEST_QUEUE,
ARDIQ_SIGNING_KEY (picked up by `Ardiq()` itself), ARDIQ_TEST_DIR (where tasks record),
ARDIQ_TEST_SECRET (the canary the logging test looks for).

- `app`: msgpack (the default), the tasks the scenarios use;
- `pickle_app`: the same queue with pickle chosen explicitly (for the signed-pickle test);
- `cron_app`: one cron firing every second.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

from ardiq import Ardiq, Retry, current_task

QUEUE = os.environ.get("ARDIQ_TEST_QUEUE", "test")
DIR = Path(os.environ.get("ARDIQ_TEST_DIR", "."))
SECRET = os.environ.get("ARDIQ_TEST_SECRET", "")

app = Ardiq(queue_name=QUEUE, poll_block_ms=200, idle_timeout_ms=3000)


def record(kind: str, value: str) -> None:
    """Append a line to `<ARDIQ_TEST_DIR>/<kind>` (one write: atomic for short lines)."""
    with (DIR / kind).open("a") as f:
        f.write(value + "\n")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def count(n: int) -> int:
    record("count", str(n))
    return n


@app.task
async def echo(value: Any, *, extra: Any = None) -> Any:
    return value


@app.task(max_retries=3)
async def retry_then_ok(until: int) -> int:
    task = current_task()
    assert task is not None
    if task.tries < until:
        raise Retry("not yet", delay_ms=20)
    return task.tries


@app.task(max_retries=1, backoff_ms=20)
async def always_fails(message: str) -> None:
    raise ValueError(message)


@app.task
async def sleep(seconds: float) -> float:
    task = current_task()
    assert task is not None
    record("started", task.task_id)
    await asyncio.sleep(seconds)
    return seconds


@app.task(max_retries=1, backoff_ms=10)
async def fail_secret(secret: str, *, also: str = "") -> None:
    raise ValueError(f"{secret} {also}")


@app.task(timeout=0.2, max_retries=0)
async def slow_secret(secret: str) -> str:
    await asyncio.sleep(5)
    return secret


class Opaque:
    """A value msgpack cannot encode, whose repr is the canary."""

    def __repr__(self) -> str:
        return f"Opaque({SECRET})"


@app.task(max_retries=0)
async def unserializable_secret(secret: str) -> object:
    return Opaque()


@app.task
def sync_echo(secret: str) -> str:
    return secret


# Pickle, chosen explicitly (never a default). Same queue and task names as `app`.
pickle_app = Ardiq(
    queue_name=QUEUE,
    poll_block_ms=200,
    serializer=pickle.dumps,
    deserializer=pickle.loads,
)


@pickle_app.task(name="add")
async def pickle_add(a: int, b: int) -> int:
    return a + b


@pickle_app.task(name="sub")
async def pickle_sub(a: int, b: int) -> int:
    return a - b


cron_app = Ardiq(queue_name=QUEUE, poll_block_ms=200, cron_poll_s=0.1)


@cron_app.cron(every=1)
async def tick() -> None:
    task = current_task()
    assert task is not None
    record("tick", task.task_id)


# A cron whose occurrence stays pending long enough for an attacker to copy its entry.
slow_cron_app = Ardiq(queue_name=QUEUE, poll_block_ms=200, cron_poll_s=0.1)


@slow_cron_app.cron(every=1)
async def slow_tick() -> None:
    task = current_task()
    assert task is not None
    record("slow_tick", task.task_id)
    await asyncio.sleep(0.8)


# A worker that refuses payloads over 1 KiB before decoding them.
small_app = Ardiq(queue_name=QUEUE, poll_block_ms=200, max_payload_bytes=1024)


@small_app.task(name="add")
async def small_add(a: int, b: int) -> int:
    return a + b


@small_app.task(name="count")
async def small_count(n: int) -> int:
    record("count", str(n))
    return n
