"""Burst mode: exits 0 once everything queued (and past due) is done and nothing is in
flight; with an empty queue it exits promptly; the lifespan wraps it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_burst_with_empty_queue_exits_promptly(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    make_app(priorities=LANES)
    t0 = time.monotonic()
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 10) == 0, worker.output()
    assert time.monotonic() - t0 < 3.0
    assert await ledger.items("lifespan") == ["start", "stop"]


async def test_burst_drains_everything_before_exiting(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    slow = [await app.ref("sleep").enqueue(1.0) for _ in range(2)]
    fails = await app.ref("always_fails").enqueue("x")  # three attempts, 50 ms apart
    retried = await app.ref("retry_then_ok").enqueue(3)
    past_due = await app.ref("count").options(delay_ms=200).enqueue(1)
    future = await app.ref("count").options(delay_ms=60_000).enqueue(2)
    many = await app.enqueue_many([app.ref("count").prepare(n) for n in range(10, 40)])
    state = await app.ref("read_state").enqueue()
    await asyncio.sleep(0.3)  # past_due is due now, and still in the delayed set

    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    for job in [*slow, retried, past_due, *many]:
        r = await job.result()
        assert r is not None and r.success, (job, r)
    r = await fails.result()
    assert r is not None and not r.success and r.tries == 3
    rs = await state.result()
    assert rs is not None and rs.value == "hello from lifespan"
    # A task due later is not waited for, and stays scheduled.
    assert await future.status() == "scheduled"
    assert await app.queue_size() == 1
    assert sorted(int(x) for x in await ledger.items("count")) == [1, *range(10, 40)]
    # The lifespan wrapped the whole burst.
    assert await ledger.items("lifespan") == ["start", "stop"]


async def test_burst_ends_despite_a_due_task_of_a_lane_it_does_not_serve(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # Another app on the queue has a lane the worker does not read: its due task stays
    # scheduled, and must neither keep the burst alive nor make the worker spin.
    other = make_app(priorities=[*LANES, "elsewhere"])
    stranger = await other.ref("count").options(priority="elsewhere", delay_ms=100).enqueue(1)
    app = make_app(priorities=LANES)
    mine = await app.ref("count").options(delay_ms=100).enqueue(2)
    await asyncio.sleep(0.2)
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 10) == 0, worker.output()
    r = await mine.result()
    assert r is not None and r.success
    assert await stranger.status() == "scheduled"
    assert await ledger.items("count") == ["2"]
