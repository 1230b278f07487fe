"""Jobs (API §4-5): status in every state, info, queue_size, abort, equality."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from ardiq import Ardiq, ErrorContext, Job, Status, TaskInfo

AppFactory = Callable[..., Ardiq]


async def drain(app: Ardiq) -> None:
    app.burst = True
    await asyncio.wait_for(app.run(), 30)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Running:
    """An in-process worker running in the background for the test's duration."""

    def __init__(self, app: Ardiq) -> None:
        self.app = app
        self.task = asyncio.create_task(app.run())

    async def stop(self) -> None:
        self.app.stop()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[Ardiq]:
    yield make_app(poll_block_ms=50, priorities=["low", "default", "high"])


# ------------------------------------------------------------------- status
async def test_status_in_each_state(app: Ardiq) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task
    async def hold() -> str:
        started.set()
        await release.wait()
        return "ok"

    assert await app.status("nope") == Status.NOT_FOUND
    assert await app.job("nope").status() == "not_found"

    scheduled = await hold.options(delay_ms=60_000).enqueue()
    assert await scheduled.status() == Status.SCHEDULED

    job = await hold.enqueue()
    assert await job.status() == Status.QUEUED
    assert await job.status() == "queued"  # compares equal to its string

    worker = Running(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await job.status() == Status.RUNNING
        release.set()
        result = await job.result(timeout=10)
        assert result is not None and result.success
        assert await job.status() == Status.COMPLETE
        assert await scheduled.status() == Status.SCHEDULED
    finally:
        await worker.stop()


async def test_status_of_failure_and_abort_is_complete(app: Ardiq) -> None:
    @app.task(max_retries=0)
    def bad() -> None:
        raise RuntimeError("x")

    failed = await bad.enqueue()
    await drain(app)
    assert await failed.status() == Status.COMPLETE
    aborted = await bad.options(delay_ms=60_000).enqueue()
    assert await aborted.abort()
    assert await aborted.status() == Status.COMPLETE


async def test_status_while_waiting_out_a_retry_is_scheduled(app: Ardiq) -> None:
    @app.task(max_retries=2, backoff_ms=60_000)
    async def flaky() -> None:
        raise ValueError("later")

    job = await flaky.enqueue()
    worker = Running(app)
    try:
        for _ in range(200):
            if await job.status() == Status.SCHEDULED:
                break
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()
    assert await job.status() == Status.SCHEDULED
    info = await job.info()
    assert info is not None and info.tries == 1 and info.status == Status.SCHEDULED
    assert info.scheduled_at is not None and info.scheduled_at > now_ms() + 50_000


# --------------------------------------------------------------------- info
async def test_info_of_a_queued_task(app: Ardiq) -> None:
    @app.task(priority="high")
    async def work(a: int, b: str = "x", *, c: list[int] | None = None) -> None: ...

    before = now_ms()
    job = await work.enqueue(1, "two", c=[3])
    info = await job.info()
    assert isinstance(info, TaskInfo)
    assert info.task_id == job.id
    assert info.fn_name == "work"
    assert info.args == (1, "two")
    assert info.kwargs == {"c": [3]}
    assert before - 1000 <= info.enqueue_time <= now_ms() + 1000
    assert info.tries == 0
    assert info.status == Status.QUEUED
    assert info.scheduled_at is None
    assert await app.info(job.id) == info


async def test_info_of_a_scheduled_task(app: Ardiq) -> None:
    when = now_ms() + 120_000
    job = await app.ref("t").options(schedule_ms=when).enqueue("a", k=1)
    info = await job.info()
    assert info is not None
    assert (info.status, info.scheduled_at, info.args, info.kwargs) == (
        Status.SCHEDULED,
        when,
        ("a",),
        {"k": 1},
    )


async def test_info_of_a_running_task(app: Ardiq) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task
    async def hold(n: int) -> None:
        started.set()
        await release.wait()

    job = await hold.enqueue(9)
    worker = Running(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        info = await job.info()
        assert info is not None
        assert info.status == Status.RUNNING
        assert info.args == (9,)
        assert info.tries == 0
    finally:
        release.set()
        await worker.stop()


async def test_info_is_none_once_finished_or_unknown(app: Ardiq) -> None:
    @app.task
    async def t() -> None: ...

    job = await t.enqueue()
    await drain(app)
    assert await job.info() is None
    assert await app.info("unknown-id") is None


# --------------------------------------------------------------- queue_size
async def test_queue_size_counts_queued_and_scheduled(app: Ardiq) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task
    async def hold() -> None:
        started.set()
        await release.wait()

    assert await app.queue_size() == 0
    await app.ref("x", priority="low").enqueue()
    await app.ref("x", priority="high").enqueue()
    await app.ref("x").options(delay_ms=60_000).enqueue()
    assert await app.queue_size() == 3

    # A running task is not waiting: it leaves the count.
    await app.enqueue_many([])
    running = await hold.options(priority="high").enqueue()
    assert await app.queue_size() == 4
    worker = Running(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await running.status() == Status.RUNNING
    finally:
        release.set()
        await worker.stop()
    # The worker ran the known task and failed the unknown ones: only the delayed waits.
    assert await app.queue_size() == 1


# -------------------------------------------------------------------- abort
async def test_abort_of_a_scheduled_task(app: Ardiq) -> None:
    job = await app.ref("t").options(delay_ms=60_000).enqueue()
    assert await job.abort() is True
    result = await job.result()
    assert result is not None
    assert result.aborted is True
    assert result.success is False
    assert result.value == "aborted"
    assert result.start == 0
    assert await job.status() == Status.COMPLETE
    assert await app.queue_size() == 0
    assert await job.abort() is False


async def test_abort_of_a_queued_task_never_runs(app: Ardiq) -> None:
    runs: list[int] = []

    @app.task
    async def t(n: int) -> None:
        runs.append(n)

    job = await t.enqueue(1)
    other = await t.enqueue(2)
    assert await app.abort(job.id) is True
    result = await job.result()
    assert result is not None and result.aborted and result.value == "aborted"
    assert await app.queue_size() == 1
    await drain(app)
    assert runs == [2]
    assert (await job.result()).aborted  # type: ignore[union-attr]
    assert (await other.result()).success  # type: ignore[union-attr]
    assert await app.dead_count() == 0


async def test_abort_of_a_running_async_task(app: Ardiq) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()
    errors: list[ErrorContext] = []
    runs: list[int] = []

    @app.on_error
    def hook(ctx: ErrorContext) -> None:
        errors.append(ctx)

    @app.task(max_retries=5, backoff_ms=1)
    async def long(n: int) -> None:
        runs.append(n)
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = await long.enqueue(1)
    worker = Running(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await job.abort() is True
        await asyncio.wait_for(cancelled.wait(), 5)
        result = await job.result(timeout=5)
    finally:
        await worker.stop()
    assert result is not None
    assert result.aborted is True
    assert result.success is False
    assert result.value == "aborted"
    assert result.start > 0
    assert runs == [1]  # no retry
    assert errors == []  # no on_error hook
    assert await app.dead_count() == 0  # no dead letter
    assert await job.status() == Status.COMPLETE
    assert await job.abort() is False


async def test_abort_of_a_running_task_that_raises_retry_is_still_aborted(app: Ardiq) -> None:
    started = asyncio.Event()

    @app.task(max_retries=5, backoff_ms=1)
    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise ValueError("swallowed the cancel") from None

    job = await stubborn.enqueue()
    worker = Running(app)
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await job.abort()
        result = await job.result(timeout=5)
    finally:
        await worker.stop()
    assert result is not None and result.aborted
    assert await app.dead_count() == 0


async def test_abort_of_finished_or_unknown_is_false(app: Ardiq) -> None:
    @app.task
    async def t() -> int:
        return 1

    job = await t.enqueue()
    await drain(app)
    assert await job.abort() is False
    assert (await job.result()).success  # type: ignore[union-attr]
    assert await app.abort("unknown-id") is False
    assert await app.job("unknown-id").abort() is False


# ---------------------------------------------------------------------- Job
def test_job_equality_and_repr() -> None:
    a = Ardiq("redis://127.0.0.1:1")
    b = Ardiq("redis://127.0.0.1:1")
    j1, j2, j3 = Job(a, "x"), a.job("x"), a.job("y")
    assert j1 == j2
    assert hash(j1) == hash(j2)
    assert j1 != j3
    assert Job(b, "x") != j1  # another app's job with the same id
    assert j1 != "x"
    assert repr(j1) == "Job('x')"
    assert j1.id == "x" and j1.app is a
    assert len({j1, j2, j3}) == 2
