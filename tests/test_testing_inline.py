"""ardiq.testing.inline (API §8): enqueue runs the task to completion, no Redis."""

from __future__ import annotations

import asyncio

import pytest
from ardiq import Ardiq, BrokerError, ErrorContext, Retry, Status, current_task
from ardiq.context import EnqueueContext, TaskContext
from ardiq.testing import InlineQueue, inline

UNREACHABLE = "redis://127.0.0.1:1"


@pytest.fixture
def app() -> Ardiq:
    return Ardiq(UNREACHABLE, queue_name="inline", priorities=["low", "high"])


async def test_enqueue_runs_to_completion_without_redis(app: Ardiq) -> None:
    log: list[str] = []

    @app.task
    async def greet(name: str) -> str:
        log.append(name)
        await asyncio.sleep(0)
        return f"hi {name}"

    async with inline(app) as q:
        assert isinstance(q, InlineQueue)
        job = await greet.enqueue("ann")
        assert log == ["ann"]  # already ran
        assert await job.status() == Status.COMPLETE
        result = await job.result()
        assert result is not None
        assert result.success and result.value == "hi ann"
        assert result.tries == 1
        assert not result.aborted
        assert result.enqueue_time <= result.start <= result.finish
        assert await app.result(job.id) == result
        assert await app.status(job.id) == Status.COMPLETE
        assert await app.status("unknown") == Status.NOT_FOUND
        assert await app.result("unknown") is None
        assert await app.queue_size() == 0
        assert await job.info() is None
    # Outside the context the app talks to Redis again (unreachable here).
    with pytest.raises(BrokerError):
        await greet.enqueue("bob")
    await app.aclose()


async def test_sync_tasks_send_and_enqueue_many(app: Ardiq) -> None:
    @app.task
    def mul(a: int, b: int) -> int:
        ctx = current_task()
        assert ctx is not None and ctx.name == "mul"
        return a * b

    async with inline(app):
        job = await app.send("mul", 6, 7)
        assert (await job.result()).value == 42  # type: ignore[union-attr]
        jobs = await app.enqueue_many([mul.prepare(i, i) for i in range(4)])
        assert [(await j.result()).value for j in jobs] == [0, 1, 4, 9]  # type: ignore[union-attr]
        opt = await mul.options(task_id="mine", priority="high", delay_ms=50).enqueue(2, 2)
        assert opt.id == "mine"
        assert (await opt.result()).value == 4  # type: ignore[union-attr]


async def test_arguments_are_checked_and_serialized(app: Ardiq) -> None:
    @app.task
    async def echo(x: object) -> object:
        return x

    async with inline(app):
        with pytest.raises(TypeError):
            await echo.enqueue()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            await echo.enqueue(object())
        job = await echo.enqueue((1, 2))
        # Tuples become lists, as with a real worker (msgpack).
        assert (await job.result()).value == [1, 2]  # type: ignore[union-attr]


async def test_retries_happen(app: Ardiq) -> None:
    tries: list[int] = []
    errors: list[ErrorContext] = []

    @app.on_error
    def hook(ctx: ErrorContext) -> None:
        errors.append(ctx)

    @app.task(max_retries=3, backoff_ms=60_000)
    async def flaky() -> str:
        ctx = current_task()
        assert ctx is not None
        tries.append(ctx.tries)
        if ctx.tries == 1:
            raise ValueError("first")
        if ctx.tries == 2:
            raise Retry("second", delay_ms=60_000)
        return "third time"

    async with inline(app):
        job = await flaky.enqueue()  # backoffs are not waited for
        result = await job.result()
    assert tries == [1, 2, 3]
    assert result is not None and result.success and result.value == "third time"
    assert result.tries == 3
    assert [(e.tries, e.will_retry) for e in errors] == [(1, True)]


async def test_failing_task_result_and_dead_letters(app: Ardiq) -> None:
    @app.task(max_retries=2, priority="high")
    def broken(n: int, *, why: str) -> None:
        raise RuntimeError(why)

    async with inline(app):
        job = await broken.enqueue(1, why="bad input")
        result = await job.result()
        assert result is not None
        assert not result.success
        assert result.value == repr(RuntimeError("bad input"))
        assert result.tries == 3
        assert await job.status() == Status.COMPLETE
        assert await app.dead_count() == 1
        (letter,) = await app.dead_letters()
        assert letter.task_id == job.id
        assert letter.fn_name == "broken"
        assert (letter.args, letter.kwargs) == ([1], {"why": "bad input"})
        assert letter.priority == "high"
        assert letter.error == result.value
        assert letter.tries == 3
        assert letter.enqueue_time <= letter.failed_at


async def test_dead_letters_order_replay_and_delete(app: Ardiq) -> None:
    fixed = {"now": False}

    @app.task(max_retries=0)
    def sometimes(n: int) -> int:
        if not fixed["now"]:
            raise ValueError(n)
        return n

    async with inline(app):
        jobs = []
        for n in range(3):
            jobs.append(await sometimes.enqueue(n))
            await asyncio.sleep(0.002)
        letters = await app.dead_letters()
        assert [d.args for d in letters] == [[2], [1], [0]]
        assert len(await app.dead_letters(limit=1)) == 1
        assert await app.dead_count() == 3

        fixed["now"] = True
        replayed = await app.replay(jobs[0].id)
        assert replayed == jobs[0]
        result = await jobs[0].result()
        assert result is not None and result.success and result.value == 0
        assert await app.dead_count() == 2
        assert await app.replay(jobs[0].id) is None
        assert await app.replay("unknown") is None

        assert await app.delete_dead(jobs[1].id) is True
        assert await app.delete_dead(jobs[1].id) is False
        assert [d.task_id for d in await app.dead_letters()] == [jobs[2].id]


async def test_unknown_task_by_name(app: Ardiq) -> None:
    async with inline(app):
        job = await app.send("nobody_has_this", 1)
        result = await job.result()
        assert result is not None and not result.success
        assert result.value == "unknown task 'nobody_has_this'"
        assert result.tries == 1
        (letter,) = await app.dead_letters()
        assert "unknown task" in letter.error


async def test_result_with_timeout(app: Ardiq) -> None:
    @app.task
    async def t() -> int:
        return 1

    async with inline(app):
        job = await t.enqueue()
        assert (await job.result(timeout=1)).value == 1  # type: ignore[union-attr]
        with pytest.raises(TimeoutError):
            await app.job("never").result(timeout=0.05)


async def test_abort_of_a_finished_task_is_false(app: Ardiq) -> None:
    @app.task
    async def t() -> int:
        return 1

    async with inline(app):
        job = await t.enqueue()
        assert await job.abort() is False
        assert await app.abort("unknown") is False


async def test_hooks_and_middleware_apply(app: Ardiq) -> None:
    seen: list[dict[str, str]] = []

    @app.on_enqueue
    def stamp(ctx: EnqueueContext) -> None:
        ctx.headers["who"] = "test"

    @app.middleware
    async def mw(ctx: TaskContext, call_next):  # type: ignore[no-untyped-def]
        seen.append(dict(ctx.headers))
        return await call_next()

    @app.task
    async def t() -> str:
        ctx = current_task()
        assert ctx is not None
        return ctx.headers["who"]

    async with inline(app):
        job = await t.enqueue()
        assert (await job.result()).value == "test"  # type: ignore[union-attr]
    assert seen == [{"who": "test"}]


async def test_timeout_applies(app: Ardiq) -> None:
    @app.task(timeout=0.05, max_retries=0)
    async def slow() -> None:
        await asyncio.sleep(5)

    async with inline(app):
        job = await slow.enqueue()
        result = await job.result()
    assert result is not None and not result.success
    assert "timed out after 0.05s" in result.value


async def test_enqueue_from_inside_a_task(app: Ardiq) -> None:
    order: list[str] = []

    @app.task
    async def child(n: int) -> int:
        order.append(f"child {n}")
        return n

    @app.task
    async def parent() -> int:
        order.append("parent start")
        job = await child.enqueue(1)
        order.append("parent end")
        r = await job.result()
        assert r is not None
        return int(r.value) + 1

    async with inline(app):
        job = await parent.enqueue()
        assert (await job.result()).value == 2  # type: ignore[union-attr]
    assert order == ["parent start", "child 1", "parent end"]


async def test_inline_cannot_nest_and_resets(app: Ardiq) -> None:
    async with inline(app):
        with pytest.raises(RuntimeError):
            async with inline(app):
                pass
    async with inline(app):
        pass


async def test_results_are_per_context(app: Ardiq) -> None:
    @app.task
    async def t() -> int:
        return 1

    async with inline(app):
        job = await t.enqueue()
        assert await job.result() is not None
    async with inline(app):
        assert await job.result() is None
        assert await job.status() == Status.NOT_FOUND


async def test_inline_seals_and_checks_as_a_worker_does() -> None:
    # Issue 11: the inline helper seals results and checks them, like a worker and a
    # producer that hold the key; an expired seal is refused there too.
    from ardiq.signing import Binding, ResultSealError
    from ardiq.testing import inline

    app = Ardiq(redis_url="redis://127.0.0.1:1", queue_name="q", signing_key="k" * 32)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with inline(app) as queue:
        job = await add.enqueue(2, 3)
        result = await job.result()
        assert result is not None and result.value == 5
        # The stored value was sealed by the runtime: a forged one is refused.
        with pytest.raises(ResultSealError):
            app._signer.open_result(job.id, app.serializer(5))
        # A payload past its not-after fails with the reason, without running.
        old = app._signer.seal_raw(
            Binding("q", "default", "old", "add"), bytes(16), 0, app.serializer([[1, 1], {}, None])
        )
        from ardiq.client import EncodedTask

        (late,) = await queue.enqueue([EncodedTask("old", "add", old, "default")])
        r = await late.result()
        assert r is not None and not r.success and r.value == "signature expired"
