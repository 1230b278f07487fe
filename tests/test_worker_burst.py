"""Burst mode: exits 0 once everything queued (and past due) is done and nothing is in
flight; with an empty queue it exits promptly; the lifespan wraps it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code, stop_code
from ardiq import Ardiq
from redis.exceptions import ResponseError
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


async def pending_entries(app: Ardiq) -> int:
    """Entries pending in any lane of the queue (delivered and not acknowledged)."""
    client = app._client().broker.client
    total = 0
    for lane in LANES:
        try:
            summary = await client.xpending(app.keys.stream(lane), "ardiq")
        except ResponseError:  # no such stream or group: nothing pending there
            continue
        total += int(summary["pending"])
    return total


async def test_burst_takes_over_what_a_dead_worker_left_pending(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # A task that kills its worker (os._exit): its entry stays pending under the dead
    # worker. A burst worker started past the lease must take it over (and, as the task
    # kills it too, a later burst must dead-letter it) rather than exit leaving it pending.
    app = make_app(priorities=LANES)
    env = {
        "ARDIQ_TEST_IDLE_MS": "800",
        "ARDIQ_TEST_MAX_DELIVERIES": "2",
        "ARDIQ_TEST_CONCURRENCY": "1",
        "ARDIQ_TEST_PREFETCH": "1",
    }
    killer = await app.ref("kill_worker").enqueue()
    first = start_worker("apps.basic:app", env=env)
    assert exit_code(first, 20) == 17, first.output()
    assert await pending_entries(app) == 1

    codes = []
    for _ in range(4):
        await asyncio.sleep(1.0)  # past the dead worker's lease
        burst = start_worker("apps.basic:app", "--burst", env=env)
        codes.append(exit_code(burst, 20))
        if codes[-1] == 0:
            break
    # The first burst reclaimed and ran it (and died of it); the second dead-lettered it.
    assert codes == [17, 0], (codes, burst.output())
    assert len(await ledger.items("killer")) == 2
    r = await killer.result()
    assert r is not None and not r.success and r.value.startswith("worker lost"), r
    assert [d.task_id for d in await app.dead_letters()] == [killer.id]
    assert await pending_entries(app) == 0
    assert await app.queue_size() == 0


async def test_burst_does_not_wait_for_entries_a_live_worker_renews(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    env = {"ARDIQ_TEST_IDLE_MS": "1500"}
    live = start_worker("apps.basic:app", env=env)
    job = await app.ref("sleep").enqueue(5.0)
    await ledger.wait_for("started", 1)
    await asyncio.sleep(2.0)  # older than a lease, but renewed all along
    t0 = time.monotonic()
    burst = start_worker("apps.basic:app", "--burst", env=env)
    assert exit_code(burst, 10) == 0, burst.output()
    assert time.monotonic() - t0 < 3.0
    assert await job.result() is None  # still running on the live worker
    r = await job.result(timeout=10)
    assert r is not None and r.success
    assert await ledger.items("started") == [job.id]
    assert stop_code(live) == 0, live.output()
