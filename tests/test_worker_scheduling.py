"""Delayed and scheduled tasks start on time (not before, and soon after), and read as
`scheduled` while they wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, stop_code, wait_until
from ardiq import Ardiq
from support.workers import WorkerProcess

# A due task must start within this long after its time (promotion runs at least every
# 100 ms; the rest is slack for a loaded 2-core machine).
LATE_MS = 300


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def _ready(worker: WorkerProcess, app: Ardiq) -> None:
    """Wait until the worker has taken a task (it is up and reading)."""
    job = await app.ref("noop").enqueue()
    assert await job.result(timeout=15) is not None, worker.output()


async def test_delay_and_schedule_timing(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    await _ready(worker, app)
    stamp = app.ref("stamp")

    delayed = await stamp.options(delay_ms=500).enqueue("delayed")
    at = time.time_ns() // 1_000_000 + 700
    # schedule_ms (absolute) wins over delay_ms.
    scheduled = await stamp.options(schedule_ms=at, delay_ms=60_000).enqueue("scheduled")

    assert await delayed.status() == "scheduled"
    info = await scheduled.info()
    assert info is not None and info.status == "scheduled"
    assert info.scheduled_at == at and info.tries == 0
    delayed_info = await delayed.info()
    assert delayed_info is not None and delayed_info.scheduled_at is not None
    assert delayed_info.scheduled_at - delayed_info.enqueue_time == 500

    r1 = await delayed.result(timeout=5)
    r2 = await scheduled.result(timeout=5)
    assert r1 is not None and r1.success, r1
    assert r2 is not None and r2.success, r2
    waited = r1.value - r1.enqueue_time
    assert 500 <= waited <= 500 + LATE_MS, f"delay_ms=500 task started after {waited} ms"
    assert at <= r2.value <= at + LATE_MS, f"scheduled task started {r2.value - at} ms late"
    assert sorted(await ledger.items("stamp"))[0].startswith("delayed:")
    assert stop_code(worker) == 0, worker.output()


async def test_scheduled_task_stays_scheduled_until_due(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    await _ready(worker, app)
    job = await app.ref("stamp").options(delay_ms=1200).enqueue("later")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.9:
        assert await job.status() == "scheduled"
        assert await ledger.items("stamp") == []
        assert await app.queue_size() == 1
        await asyncio.sleep(0.1)
    result = await wait_until(job.result, 5, "the delayed task's result")
    assert result.success
    assert len(await ledger.items("stamp")) == 1
    assert stop_code(worker) == 0, worker.output()
