"""Pausing queues and lanes (PROTOCOL.md, Pausing) and lane weights, on every worker kind.

A paused lane's tasks do not start, other lanes' do, and a resume starts them; a running
task finishes; buffered entries of a lane paused meanwhile are handed back (undelivered
again, so any worker can take them). Weighted lanes share the starts by weight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from apps.ledger import LANES, Ledger, exit_code, stop_code, wait_until
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def undelivered(client: aioredis.Redis, stream: str) -> tuple[int, int]:
    """(entries in the stream, entries pending in the group)."""
    length = await client.xlen(stream)
    pending = await client.xpending(stream, "ardiq")
    return length, int(pending["pending"])


async def test_pause_api(make_app: Callable[..., Ardiq]) -> None:
    app = make_app(priorities=LANES)
    assert await app.paused() == set()
    await app.pause("low")
    await app.pause()
    await app.pause("low")  # idempotent
    assert await app.paused() == {"low", "*"}
    await app.resume()  # the queue only: the lane stays paused
    assert await app.paused() == {"low"}
    with pytest.raises(ValueError, match="low, default, high"):
        await app.pause("nope")
    with pytest.raises(ValueError, match="'nope'"):
        await app.resume("nope")
    await app.resume("low")
    await app.resume("low")  # resuming what is not paused does nothing
    assert await app.paused() == set()


def test_pause_sync_twins(make_app: Callable[..., Ardiq]) -> None:
    app = make_app(priorities=LANES)
    app.pause_sync("high")
    assert app.paused_sync() == {"high"}
    app.resume_sync("high")
    assert app.paused_sync() == set()


def test_lane_weights_setting() -> None:
    app = Ardiq(priorities={"low": 1, "default": 3, "high": 6})
    assert app.priorities == ["low", "default", "high"]
    assert app.lane_weights == {"low": 1, "default": 3, "high": 6}
    assert app.default_priority == "default"
    assert Ardiq(priorities=["a", "b"]).lane_weights is None
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="weight of lane 'b'"):
            Ardiq(priorities={"a": 1, "b": bad})
    with pytest.raises(ValueError, match="at least one lane"):
        Ardiq(priorities={})


async def test_paused_lane_waits_and_resume_starts_it(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    await app.pause("low")
    task = app.ref("lane_order")
    await app.enqueue_many([task.options(priority="low").prepare(f"low-{i}") for i in range(3)])
    await app.enqueue_many([task.options(priority="high").prepare(f"high-{i}") for i in range(3)])
    worker = start_worker("apps.basic:app", "--concurrency", "1")
    await ledger.wait_for("order", 3, timeout=30)
    # A task enqueued after them on a served lane runs too; the paused lane's still wait.
    await task.options(priority="default").enqueue("default-0")
    order = await ledger.wait_for("order", 4, timeout=30)
    assert sorted(order) == ["default-0", "high-0", "high-1", "high-2"], worker.output()
    assert await app.queue_size() == 3
    await app.resume("low")
    order = await ledger.wait_for("order", 7, timeout=30)
    assert order[4:] == ["low-0", "low-1", "low-2"], worker.output()
    assert stop_code(worker) == 0, worker.output()


async def test_delayed_tasks_of_a_paused_lane_are_promoted_not_run(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    await app.pause("low")
    job = await app.ref("lane_order").options(priority="low", delay_ms=300).enqueue("late")
    worker = start_worker("apps.basic:app")

    async def queued() -> bool:
        return await job.status() == "queued"

    # Promotion goes on while the lane is paused: the task waits in its stream.
    await wait_until(queued, 30, "the delayed task promoted")
    await app.ref("lane_order").options(priority="high").enqueue("sentinel")
    await ledger.wait_for("order", 1, timeout=30)
    assert await ledger.items("order") == ["sentinel"], worker.output()
    assert await job.status() == "queued"
    await app.resume("low")
    result = await job.result(timeout=30)
    assert result is not None and result.value == "late", worker.output()
    assert stop_code(worker) == 0, worker.output()


async def test_pausing_hands_back_the_buffer_and_lets_running_tasks_finish(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
    redis_url: str,
) -> None:
    app = make_app(priorities=LANES)
    slow = await app.ref("sleep").options(priority="default").enqueue(2.0)
    task = app.ref("lane_order")
    await app.enqueue_many([task.options(priority="default").prepare(f"d-{i}") for i in range(5)])
    worker = start_worker(
        "apps.basic:app", env={"ARDIQ_TEST_CONCURRENCY": "1", "ARDIQ_TEST_PREFETCH": "8"}
    )
    stream = app.keys.stream("default")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ledger.wait_for("started", 1, timeout=30)
        # The worker holds the running task and the five behind it.
        await wait_until(lambda: _is(undelivered(client, stream), (6, 6)), 10, "six entries held")
        await app.pause("default")
        # The running task finishes; the five behind it are handed back within about a
        # second: undelivered again (none pending), so any worker may read them.
        result = await app.result(slow.id, timeout=10)
        assert result is not None and result.success, worker.output()
        await wait_until(
            lambda: _is(undelivered(client, stream), (5, 0)), 10, "the buffer handed back"
        )
        assert await ledger.items("order") == []
        assert await ledger.items("finished") == [slow.id]
        await app.resume("default")
        order = await ledger.wait_for("order", 5, timeout=30)
        # (A blocking read in flight when the pause came may take one handed-back entry
        # again, to be handed back a second later: the lane's order may change.)
        assert sorted(order) == [f"d-{i}" for i in range(5)], worker.output()
        assert stop_code(worker) == 0, worker.output()
    finally:
        await client.aclose()


async def _is(probe: object, want: tuple[int, int]) -> bool:
    return await probe == want  # type: ignore[misc]


async def test_paused_queue_idles_and_burst_skips_paused_lanes(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    task = app.ref("lane_order")
    await app.enqueue_many([task.options(priority=lane).prepare(lane) for lane in LANES])
    await app.pause()
    # A burst worker with the whole queue paused has nothing it may drain: it exits and
    # says what waits.
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert await ledger.items("order") == []
    assert "paused lanes" in worker.output()
    # One lane paused: the burst drains the others and leaves it.
    await app.resume()
    await app.pause("high")
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert sorted(await ledger.items("order")) == ["default", "low"]
    assert await app.queue_size() == 1
    await app.resume("high")
    worker = start_worker("apps.basic:app", "--burst")
    assert exit_code(worker, 30) == 0, worker.output()
    assert sorted(await ledger.items("order")) == ["default", "high", "low"]


WEIGHTS = {"low": 1, "default": 3, "high": 6}


async def test_lane_weights_share_the_starts(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    per_lane, first = 1000, 1500  # low (weight 1) has used 150 of its 1000 by then
    app = make_app(priorities=WEIGHTS)
    task = app.ref("lane_order")
    for lane in LANES:  # lowest first, so arrival order alone would starve high
        await app.enqueue_many([task.options(priority=lane).prepare(lane) for _ in range(per_lane)])
    worker = start_worker("apps.basic:app", "--burst", env={"ARDIQ_TEST_WEIGHTS": "1,3,6"})
    assert exit_code(worker, 120) == 0, worker.output()
    order = await ledger.items("order")
    assert len(order) == 3 * per_lane
    counts = Counter(order[:first])
    total = sum(WEIGHTS.values())
    for lane, weight in WEIGHTS.items():
        want = first * weight / total
        assert abs(counts[lane] - want) <= 0.1 * want, (lane, counts, want)


async def test_strict_priorities_stay_strict(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # Without weights the high lane still goes first (the list form is unchanged).
    app = make_app(priorities=LANES)
    task = app.ref("lane_order")
    for lane in LANES:
        await app.enqueue_many([task.options(priority=lane).prepare(lane) for _ in range(50)])
    worker = start_worker("apps.basic:app", "--burst", "--concurrency", "1")
    assert exit_code(worker, 60) == 0, worker.output()
    order = await ledger.items("order")
    assert order == ["high"] * 50 + ["default"] * 50 + ["low"] * 50
