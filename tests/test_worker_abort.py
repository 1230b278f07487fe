"""Abort: scheduled and queued tasks are finalized at once and never run; a running async
task is cancelled and a running sync task abandoned. No retry, no hook, no dead letter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code, stop_code, wait_until
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_abort_scheduled_and_queued_never_run(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    count = app.ref("count")
    scheduled = await count.options(delay_ms=300).enqueue(1)
    queued = await count.enqueue(2)
    kept = await count.enqueue(3)
    assert await scheduled.status() == "scheduled" and await queued.status() == "queued"

    assert await scheduled.abort() is True
    assert await queued.abort() is True
    for job in (scheduled, queued):
        assert await job.status() == "complete"
        r = await job.result()
        assert r is not None and r.aborted and not r.success and r.value == "aborted"
        assert r.start == 0
        assert await job.abort() is False  # already finished

    await asyncio.sleep(0.4)  # the scheduled one would be due now
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert await ledger.items("count") == ["3"]
    r3 = await kept.result()
    assert r3 is not None and r3.success
    assert await app.dead_count() == 0
    assert await app.queue_size() == 0
    assert await app.job("no-such-task").abort() is False


@pytest.mark.parametrize("task", ["sleep", "sync_sleep"])
async def test_abort_running_task(
    task: str,
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    job = await app.ref(task).enqueue(5)
    await ledger.wait_for("started", 1)
    assert await job.status() == "running"
    assert await job.abort() is True
    r = await job.result(timeout=2)
    assert r is not None and r.aborted and not r.success and r.value == "aborted"
    assert r.tries == 1 and r.duration_ms < 2000
    assert await job.status() == "complete"

    # The worker goes on: another task runs at once.
    after = await app.ref("add").enqueue(1, 2)
    r2 = await after.result(timeout=5)
    assert r2 is not None and r2.value == 3

    await asyncio.sleep(0.3)
    assert await ledger.items("started") == [job.id]  # not retried
    assert await ledger.items("finished") == []  # the async body was cancelled
    assert await ledger.items("hook") == []
    assert await app.dead_count() == 0
    assert stop_code(worker) == 0, worker.output()


async def test_abort_prefetched_task_waiting_for_a_slot(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # Both slots busy; the next tasks are held by the worker (the native one hands some
    # to its event loop ahead of time). Aborting one finishes it at once: it does not
    # wait for a slot, and it never runs.
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app", "--concurrency", "2")  # prefetch 4
    sleep = app.ref("sleep")
    busy = await app.enqueue_many([sleep.prepare(3) for _ in range(2)])
    await ledger.wait_for("started", 2)
    waiting = await app.enqueue_many([sleep.prepare(0.01) for _ in range(2)])

    async def held() -> bool:
        return [str(await j.status()) for j in waiting] == ["running"] * 2

    await wait_until(held, 5, "both waiting tasks held by the worker")
    t0 = asyncio.get_running_loop().time()
    assert await waiting[0].abort() is True
    r = await waiting[0].result(timeout=2)
    assert asyncio.get_running_loop().time() - t0 < 2  # the busy ones run 3 s
    assert r is not None and r.aborted and r.value == "aborted" and r.start == 0

    r1 = await waiting[1].result(timeout=10)
    assert r1 is not None and r1.success
    assert sorted(await ledger.items("started")) == sorted([*(j.id for j in busy), waiting[1].id])
    assert stop_code(worker) == 0, worker.output()


async def test_abort_after_the_body_ended_spares_the_next_run_of_the_id(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # The request arrives between the end of the body and the worker taking the outcome:
    # nothing is left to cancel, and nothing of it may hang around for the next delivery
    # of the same id (a custom task_id here; a unique task or a replay alike).
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    first = await app.ref("abort_self").options(task_id="same-id").enqueue("one")
    assert await first.result(timeout=10) is not None
    await asyncio.sleep(0.3)  # the request has reached the worker by now
    for n in range(2):
        again = await app.ref("count").options(task_id="same-id").enqueue(n)
        r = await again.result(timeout=10)
        assert r is not None and r.success and r.value == n, (r, worker.output())
    assert await ledger.items("abort_self") == ["one"]
    assert stop_code(worker) == 0, worker.output()


async def test_abort_that_overtakes_the_delivery_still_stops_the_task(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # The request can reach the worker before the fetch reply that delivers the task: the
    # worker does not hold it yet. When the delivery then comes, the task must still not
    # run. Simulated: another consumer holds the entry when the abort comes (so it is
    # signalled, not finalized), then the entry is handed to our worker.
    app = make_app(priorities=LANES)
    env = {"ARDIQ_TEST_CONCURRENCY": "1", "ARDIQ_TEST_PREFETCH": "1"}
    worker = start_worker("apps.basic:app", env=env)
    busy = await app.ref("sleep").enqueue(1.5)  # the one slot is busy: no fetch meanwhile
    await ledger.wait_for("started", 1)
    job = await app.ref("count").enqueue(1)
    client = app._client().broker.client
    stream = app.keys.stream("default")
    reply = await client.xreadgroup("ardiq", "elsewhere", {stream: ">"}, count=1)
    [(_, [(eid, fields)])] = reply
    assert fields[b"id"] == job.id.encode()
    assert await job.abort() is True  # signalled to whoever holds it
    await asyncio.sleep(0.3)  # the request reached our worker, which does not hold it
    await client.xack(stream, "ardiq", eid)
    await client.xdel(stream, eid)
    new = await client.xadd(stream, fields)
    await client.hset(app.keys.job(job.id), "e", new)

    r = await job.result(timeout=10)
    assert r is not None and r.aborted and r.start == 0, (r, worker.output())
    assert (await busy.result(timeout=5)) is not None
    await asyncio.sleep(0.2)
    assert await ledger.items("count") == []  # never ran
    assert stop_code(worker) == 0, worker.output()
