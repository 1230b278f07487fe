"""Graceful stop: the first SIGTERM hands prefetched tasks back at once and lets running
ones finish (exit 0); a second one exits at once, leaving running tasks for reclaim."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code, stop_code, wait_until
from ardiq import Ardiq, Job
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def statuses(jobs: list[Job[object]]) -> list[str]:
    return [str(await j.status()) for j in jobs]


async def test_sigterm_finishes_running_and_hands_back_prefetched(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app", "--concurrency", "2")  # prefetch 4
    jobs = await app.enqueue_many([app.ref("sleep").prepare(2.5) for _ in range(6)])
    started = await ledger.wait_for("started", 2)
    running = [j for j in jobs if j.id in started]
    waiting = [j for j in jobs if j.id not in started]

    async def prefetched() -> bool:
        return (await statuses(waiting)).count("running") == 2  # held in the buffer

    await wait_until(prefetched, 5, "two prefetched tasks")
    worker.signal(signal.SIGTERM)
    t0 = time.monotonic()

    async def handed_back() -> bool:
        return await statuses(waiting) == ["queued"] * 4

    # At once: well within a second on an idle machine; 1.5 s leaves room for a loaded
    # one, and the tasks still running (below) show it did not wait for them.
    await wait_until(handed_back, 1.5, "prefetched tasks handed back at once")
    assert time.monotonic() - t0 < 1.5
    for job in waiting:
        info = await job.info()
        assert info is not None and info.status == "queued" and info.tries == 0
    assert await statuses(running) == ["running"] * 2  # still finishing

    assert exit_code(worker, 10) == 0, worker.output()
    for job in running:
        r = await job.result()
        assert r is not None and r.success and r.tries == 1
    assert sorted(await ledger.items("started")) == sorted(started)
    assert await app.queue_size() == 4

    # Nothing is lost: another worker runs the handed-back tasks, as first attempts.
    rest = start_worker("apps.basic:app", "--burst", "--concurrency", "4")
    assert exit_code(rest, 15) == 0, rest.output()
    for job in waiting:
        r = await job.result()
        assert r is not None and r.success and r.tries == 1


async def test_second_sigterm_exits_at_once_and_running_tasks_are_reclaimed(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    env = {"ARDIQ_TEST_IDLE_MS": "1500"}
    worker = start_worker("apps.basic:app", env=env)
    jobs = [await app.ref("sleep").enqueue(2.5), await app.ref("sync_sleep").enqueue(2.5)]
    await ledger.wait_for("started", 2)
    worker.signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert worker.proc.poll() is None  # the first signal waits for running tasks
    worker.signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        code = worker.wait(1.5)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second SIGTERM did not exit at once\n" + worker.output()) from None
    assert code >= 0, worker.output()  # exited, not killed
    assert time.monotonic() - t0 < 1.5
    assert await statuses(jobs) == ["running"] * 2  # left pending, not finished

    rescuer = start_worker("apps.basic:app", env=env)
    for job in jobs:
        r = await job.result(timeout=15)
        assert r is not None and r.success and r.tries == 1, r
    started = await ledger.items("started")
    assert sorted(started) == sorted([j.id for j in jobs] * 2)
    assert stop_code(rescuer) == 0
