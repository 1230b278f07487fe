"""Unique tasks: one live run per identical call; after it finished the call runs again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code, stop_code
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_unique_dedup_and_rerun_after_completion(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    count = app.ref("count", unique=True)
    first = await count.enqueue(7)
    second = await count.enqueue(7)
    other = await count.enqueue(8)
    assert first.id == second.id != other.id
    assert await app.queue_size() == 2

    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert sorted(await ledger.items("count")) == ["7", "8"]
    r = await first.result()
    assert r is not None and r.success and r.value == 7

    again = await count.enqueue(7)
    assert again.id == first.id
    assert await again.result() is None  # the old result was cleared
    assert await again.status() == "queued"
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert sorted(await ledger.items("count")) == ["7", "7", "8"]
    r = await again.result()
    assert r is not None and r.success


async def test_unique_while_running_returns_the_running_job(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    slow = app.ref("sleep", unique=True)
    job = await slow.enqueue(0.6)
    await ledger.wait_for("started", 1)
    assert (await slow.enqueue(0.6)).id == job.id
    r = await job.result(timeout=5)
    assert r is not None and r.success
    assert await ledger.items("started") == [job.id]
    assert stop_code(worker) == 0
