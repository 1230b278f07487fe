"""Dead letters (API §5): what lands there, listing, counting, replay and delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from ardiq import Ardiq, DeadLetter, ErrorContext, Job, Status, current_task

AppFactory = Callable[..., Ardiq]


async def drain(app: Ardiq) -> None:
    app.burst = True
    await asyncio.wait_for(app.run(), 30)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def app(make_app: AppFactory) -> AsyncIterator[Ardiq]:
    yield make_app(poll_block_ms=50, priorities=["low", "default", "high"])


async def test_final_failure_lands_in_dead_letters(app: Ardiq) -> None:
    @app.task(max_retries=2, backoff_ms=1, priority="high")
    async def explode(a: int, b: str, *, c: bool = False) -> None:
        raise KeyError(f"{a}-{b}")

    before = now_ms()
    job = await explode.enqueue(1, "x", c=True)
    await drain(app)
    after = now_ms()
    assert await app.dead_count() == 1
    (letter,) = await app.dead_letters()
    assert isinstance(letter, DeadLetter)
    assert letter.task_id == job.id
    assert letter.fn_name == "explode"
    assert letter.args == [1, "x"]
    assert letter.kwargs == {"c": True}
    assert letter.priority == "high"
    assert letter.error == repr(KeyError("1-x"))
    assert letter.tries == 3
    assert before <= letter.enqueue_time <= letter.failed_at <= after
    result = await job.result()
    assert result is not None and not result.success and result.value == letter.error


async def test_dead_letters_newest_first_and_limit(app: Ardiq) -> None:
    @app.task(max_retries=0)
    def fail(n: int) -> None:
        raise ValueError(n)

    jobs = []
    for n in range(4):
        jobs.append(await fail.enqueue(n))
        await drain(app)
        await asyncio.sleep(0.005)
    letters = await app.dead_letters()
    assert [d.task_id for d in letters] == [j.id for j in reversed(jobs)]
    assert [d.args for d in letters] == [[3], [2], [1], [0]]
    assert [d.failed_at for d in letters] == sorted((d.failed_at for d in letters), reverse=True)
    assert [d.task_id for d in await app.dead_letters(limit=2)] == [jobs[3].id, jobs[2].id]
    assert await app.dead_letters(limit=0) == []
    assert await app.dead_count() == 4


async def test_success_and_abort_make_no_dead_letters(app: Ardiq) -> None:
    @app.task
    async def fine() -> int:
        return 1

    await fine.enqueue()
    aborted = await fine.options(delay_ms=60_000).enqueue()
    assert await aborted.abort()
    await drain(app)
    assert await app.dead_count() == 0
    assert await app.dead_letters() == []


async def test_replay_runs_again_with_a_fresh_retry_budget(app: Ardiq) -> None:
    tries_seen: list[int] = []
    fail_until = {"runs": 2}

    @app.task(max_retries=1, backoff_ms=1)
    async def flaky(x: int) -> int:
        ctx = current_task()
        assert ctx is not None
        tries_seen.append(ctx.tries)
        if len(tries_seen) <= fail_until["runs"]:
            raise RuntimeError("not yet")
        return x * 10

    job = await flaky.enqueue(4)
    await drain(app)
    assert tries_seen == [1, 2]
    assert await app.dead_count() == 1

    replayed = await app.replay(job.id)
    assert isinstance(replayed, Job)
    assert replayed == job  # same id
    assert await app.dead_count() == 0
    assert await replayed.status() == Status.QUEUED
    assert await replayed.result() is None  # the failure result is cleared
    info = await replayed.info()
    assert info is not None and info.tries == 0 and info.args == (4,)
    await drain(app)
    assert tries_seen == [1, 2, 1]  # a fresh budget: the count starts again
    result = await job.result()
    assert result is not None and result.success and result.value == 40
    assert result.tries == 1


async def test_replay_that_fails_again_is_dead_again(app: Ardiq) -> None:
    @app.task(max_retries=0)
    def always() -> None:
        raise ValueError("again")

    job = await always.enqueue()
    await drain(app)
    assert await app.replay(job.id) == job
    await drain(app)
    assert [d.task_id for d in await app.dead_letters()] == [job.id]
    assert await app.dead_count() == 1


async def test_replay_of_unknown_is_none(app: Ardiq) -> None:
    assert await app.replay("no-such-id") is None


async def test_delete_dead(app: Ardiq) -> None:
    @app.task(max_retries=0)
    def fail() -> None:
        raise ValueError("x")

    a = await fail.enqueue()
    b = await fail.enqueue()
    await drain(app)
    assert await app.dead_count() == 2
    assert await app.delete_dead(a.id) is True
    assert await app.delete_dead(a.id) is False
    assert await app.delete_dead("unknown") is False
    assert [d.task_id for d in await app.dead_letters()] == [b.id]
    assert await app.dead_count() == 1
    assert await app.replay(a.id) is None
    # Its result is still there: deleting a dead letter does not rewrite history.
    result = await a.result()
    assert result is not None and not result.success


async def test_unknown_task_is_a_dead_letter_never_retried(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app(poll_block_ms=50)
    errors: list[ErrorContext] = []

    @worker.on_error
    def hook(ctx: ErrorContext) -> None:
        errors.append(ctx)

    @worker.task
    async def known() -> None: ...

    job = await producer.send("no_such_task", 1, two=2)
    await drain(worker)
    result = await job.result()
    assert result is not None
    assert not result.success
    assert result.value == "unknown task 'no_such_task'"
    assert result.tries == 1  # never retried
    (letter,) = await producer.dead_letters()
    assert letter.task_id == job.id
    assert letter.fn_name == "no_such_task"
    assert "unknown task 'no_such_task'" in letter.error
    assert (letter.args, letter.kwargs) == ([1], {"two": 2})
    assert letter.tries == 1
    assert [(e.name, e.will_retry) for e in errors] == [("no_such_task", False)]
    assert await producer.dead_count() == 1


async def test_replay_of_unknown_task_after_it_is_defined(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app(poll_block_ms=50)
    job = await producer.send("later_task", 5)
    await drain(worker)
    assert await producer.dead_count() == 1

    @worker.task
    async def later_task(x: int) -> int:
        return x + 1

    assert await producer.replay(job.id) == job
    await drain(worker)
    result = await job.result()
    assert result is not None and result.success and result.value == 6
    assert await producer.dead_count() == 0
