"""Enqueueing (API §2-3): by name, in bulk, idempotent ids, unique, delays, expiry, hooks,
and the errors a producer sees."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from ardiq import Ardiq, ArdiqError, BrokerError, Job, PreparedTask, Status, current_task
from ardiq.context import EnqueueContext, TaskContext
from conftest import WORKER_KINDS

# The engines `app.run()` may use here: the Rust one (the `inproc` kind) and the pure loop.
IN_CODE_ENGINES = ["native", "python"] if "inproc" in WORKER_KINDS else ["python"]

AppFactory = Callable[..., Ardiq]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}"


async def drain(app: Ardiq, engine: str | None = None) -> None:
    """Run the app's in-code worker until the queue is drained (`engine`: as `app.run`'s,
    None for the default)."""
    app.burst = True
    await asyncio.wait_for(app.run(engine=engine), 30)  # type: ignore[arg-type]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ by name
async def test_send_by_name_without_the_module(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app(poll_block_ms=50)

    @worker.task
    async def add(a: int, b: int) -> int:
        return a + b

    assert producer.tasks == []
    job = await producer.send("add", 2, b=3)
    assert isinstance(job, Job)
    assert await job.status() == Status.QUEUED
    info = await job.info()
    assert info is not None
    assert (info.fn_name, info.args, info.kwargs) == ("add", (2,), {"b": 3})
    await drain(worker)
    result = await job.result()
    assert result is not None and result.success and result.value == 5


async def test_send_of_a_registered_task_binds(make_app: AppFactory) -> None:
    app = make_app()

    @app.task
    async def one(a: int) -> int:
        return a

    with pytest.raises(TypeError):
        await app.send("one")
    assert await app.queue_size() == 0


async def test_ref_enqueue_uses_its_lane(make_app: AppFactory, redis_url: str) -> None:
    app = make_app(priorities=["low", "high"])
    job = await app.ref("t", priority="low").enqueue(1)
    info = await job.info()
    assert info is not None and info.fn_name == "t"
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.xlen(app.keys.stream("low")) == 1
        assert await r.xlen(app.keys.stream("high")) == 0
    finally:
        await r.aclose()


# -------------------------------------------------------------- enqueue_many
async def test_enqueue_many_ids_in_input_order(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    async def echo(n: int) -> int:
        return n

    prepared = [echo.prepare(i) for i in range(20)]
    prepared[5] = echo.options(task_id="custom-5").prepare(5)
    jobs = await app.enqueue_many(prepared)
    assert len(jobs) == 20
    assert jobs[5].id == "custom-5"
    assert len({j.id for j in jobs}) == 20
    assert await app.queue_size() == 20
    await drain(app)
    for i, job in enumerate(jobs):
        result = await job.result()
        assert result is not None and result.value == i


async def test_enqueue_many_accepts_any_iterable(make_app: AppFactory) -> None:
    app = make_app()
    t = app.ref("t")
    jobs = await app.enqueue_many(t.prepare(i) for i in range(3))
    assert len(jobs) == 3
    assert await app.queue_size() == 3


async def test_enqueue_many_one_bad_lane_sends_nothing(make_app: AppFactory) -> None:
    app = make_app(priorities=["low", "high"])
    other = Ardiq("redis://127.0.0.1:1", priorities=["urgent"])
    good = app.ref("t").prepare(1)
    bad = other.ref("t").prepare(2)
    with pytest.raises(ValueError, match="urgent"):
        await app.enqueue_many([good, good, bad])
    assert await app.queue_size() == 0


async def test_enqueue_many_rejects_non_prepared_items(make_app: AppFactory) -> None:
    app = make_app()
    with pytest.raises(TypeError, match="PreparedTask"):
        await app.enqueue_many([app.ref("t").prepare(), ("t", 1)])  # type: ignore[list-item]
    assert await app.queue_size() == 0


async def test_enqueue_many_one_unserializable_sends_nothing(make_app: AppFactory) -> None:
    app = make_app()
    t = app.ref("t")
    with pytest.raises(TypeError):
        await app.enqueue_many([t.prepare(1), t.prepare(object())])
    assert await app.queue_size() == 0


async def test_enqueue_many_empty_makes_no_call() -> None:
    app = Ardiq(closed_port_url(), queue_name="empty")
    assert await app.enqueue_many([]) == []
    assert await app.enqueue_many(iter(())) == []
    assert app.enqueue_many_sync([]) == []
    await app.aclose()


async def test_enqueue_many_chunks_large_batches(make_app: AppFactory, redis_url: str) -> None:
    app = make_app()
    t = app.ref("t")
    n = 2503
    jobs = await app.enqueue_many([t.prepare(i) for i in range(n)])
    assert len(jobs) == n
    assert len({j.id for j in jobs}) == n
    assert await app.queue_size() == n
    r = aioredis.Redis.from_url(redis_url)
    try:
        entries = await r.xrange(app.keys.stream("default"))
    finally:
        await r.aclose()
    assert [e[1][b"id"].decode() for e in entries] == [j.id for j in jobs]
    last = await jobs[-1].info()
    assert last is not None and last.args == (n - 1,)


async def test_prepared_task_made_by_hand(make_app: AppFactory) -> None:
    app = make_app()
    (job,) = await app.enqueue_many([PreparedTask("t", (1,), {"k": 2}, "default", task_id="h")])
    assert job.id == "h"
    info = await job.info()
    assert info is not None and (info.args, info.kwargs) == ((1,), {"k": 2})


# ---------------------------------------------------------------- custom ids
async def test_custom_task_id_is_idempotent(make_app: AppFactory) -> None:
    app = make_app()

    @app.task
    async def t(n: int) -> int:
        return n

    first = await t.options(task_id="order-42").enqueue(1)
    second = await t.options(task_id="order-42").enqueue(2)
    assert first.id == second.id == "order-42"
    assert first == second
    assert await app.queue_size() == 1
    info = await first.info()
    assert info is not None and info.args == (1,)  # the first call is kept


async def test_custom_task_id_idempotent_while_scheduled(make_app: AppFactory) -> None:
    app = make_app()
    t = app.ref("t")
    await t.options(task_id="later", delay_ms=60_000).enqueue()
    again = await t.options(task_id="later").enqueue()
    assert again.id == "later"
    assert await again.status() == Status.SCHEDULED
    assert await app.queue_size() == 1


async def test_custom_task_id_idempotent_while_running(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    @app.task
    async def slow(n: int) -> int:
        runs.append(n)
        started.set()
        await release.wait()
        return n

    job = await slow.options(task_id="busy").enqueue(1)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert await job.status() == Status.RUNNING
        again = await slow.options(task_id="busy").enqueue(2)
        assert again.id == "busy"
        assert await app.queue_size() == 0
        release.set()
        result = await job.result(timeout=10)
        assert result is not None and result.value == 1
    finally:
        app.stop()
        await asyncio.wait_for(runner, 10)
    assert runs == [1]


async def test_custom_task_id_runs_again_after_it_finished(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    async def t(n: int) -> int:
        return n

    job = await t.options(task_id="again").enqueue(1)
    await drain(app)
    assert (await job.result()).value == 1  # type: ignore[union-attr]
    await t.options(task_id="again").enqueue(2)
    assert await job.result() is None  # the old result is cleared
    assert await job.status() == Status.QUEUED
    await drain(app)
    assert (await job.result()).value == 2  # type: ignore[union-attr]


# -------------------------------------------------------------------- unique
async def test_unique_dedups_while_queued(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(unique=True)
    async def report(day: str, *, full: bool = False) -> str:
        return day

    a = await report.enqueue("mon")
    b = await report.enqueue("mon")
    d = await report.enqueue("tue")
    e = await report.enqueue("mon", full=True)
    f = await report.enqueue("mon", full=False)  # other kwargs: another call
    assert a == b
    assert a.id.startswith("u:")
    assert len({a.id, d.id, e.id, f.id}) == 4
    assert await app.queue_size() == 4


async def test_unique_id_is_the_same_with_or_without_the_module(make_app: AppFactory) -> None:
    # A producer holding only a reference derives the id the importing one does
    # (PROTOCOL.md: blake2b of the serialized name, args and sorted kwargs).
    worker_side = make_app()
    producer = make_app()

    @worker_side.task(unique=True)
    async def resize(path: str, *, width: int = 100, height: int = 100) -> None: ...

    a = await resize.enqueue("a.png", width=5, height=7)
    b = await producer.ref("resize", unique=True).enqueue("a.png", height=7, width=5)
    c = await producer.send("resize", "a.png", width=5, height=7)  # not unique: its own id
    assert a.id == b.id
    assert c.id != a.id
    assert await producer.queue_size() == 2


async def test_unique_via_options_and_ref(make_app: AppFactory) -> None:
    app = make_app()
    t = app.ref("t")
    a = await t.options(unique=True).enqueue(1, x=2)
    b = await t.options(unique=True).enqueue(1, x=2)
    c = await app.ref("t", unique=True).enqueue(1, x=2)
    plain = await t.enqueue(1, x=2)
    assert a == b == c
    assert plain != a
    assert await app.queue_size() == 2


async def test_unique_dedups_while_scheduled(make_app: AppFactory) -> None:
    app = make_app()
    t = app.ref("t", unique=True)
    a = await t.options(delay_ms=60_000).enqueue(1)
    b = await t.enqueue(1)
    assert a == b
    assert await a.status() == Status.SCHEDULED
    assert await app.queue_size() == 1


async def test_unique_queues_again_after_completion(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)
    runs: list[int] = []

    @app.task(unique=True)
    async def t(n: int) -> int:
        runs.append(n)
        return len(runs)

    job = await t.enqueue(7)
    await drain(app)
    first = await job.result()
    assert first is not None and first.value == 1
    again = await t.enqueue(7)
    assert again == job
    assert await again.result() is None  # old result cleared
    assert await again.status() == Status.QUEUED
    await drain(app)
    second = await again.result()
    assert second is not None and second.value == 2
    assert runs == [7, 7]


# ---------------------------------------------------------- delay / schedule
async def test_delay_ms_schedules(make_app: AppFactory) -> None:
    app = make_app()
    before = now_ms()
    job = await app.ref("t").options(delay_ms=60_000).enqueue()
    assert await job.status() == Status.SCHEDULED
    info = await job.info()
    assert info is not None
    assert info.status == Status.SCHEDULED
    assert info.scheduled_at is not None
    assert before + 59_000 <= info.scheduled_at <= now_ms() + 61_000
    assert await app.queue_size() == 1


async def test_schedule_ms_wins_over_delay_ms(make_app: AppFactory) -> None:
    app = make_app()
    when = now_ms() + 3_600_000
    job = await app.ref("t").options(delay_ms=5, schedule_ms=when).enqueue()
    info = await job.info()
    assert info is not None and info.scheduled_at == when
    assert info.status == Status.SCHEDULED


async def test_schedule_in_the_past_queues_now(make_app: AppFactory) -> None:
    app = make_app()
    job = await app.ref("t").options(schedule_ms=now_ms() - 60_000).enqueue()
    assert await job.status() == Status.QUEUED
    info = await job.info()
    assert info is not None and info.scheduled_at is None


async def test_delayed_task_runs_when_due(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    async def t() -> int:
        return now_ms()

    enqueued = now_ms()
    job = await t.options(delay_ms=300).enqueue()
    runner = asyncio.create_task(app.run())
    try:
        result = await job.result(timeout=10)
    finally:
        app.stop()
        await asyncio.wait_for(runner, 10)
    assert result is not None and result.success
    assert result.value >= enqueued + 300


# -------------------------------------------------------------------- expiry
# Both in-code engines: the pure loop recorded an expired task as tried once and started.
@pytest.mark.parametrize("engine", IN_CODE_ENGINES)
async def test_expired_task_fails_with_expired(make_app: AppFactory, engine: str) -> None:
    app = make_app(poll_block_ms=50)
    runs: list[int] = []

    @app.task
    async def t() -> None:
        runs.append(1)

    job = await t.options(expire_ms=100).enqueue()
    fresh = await t.options(expire_ms=60_000).enqueue()
    await asyncio.sleep(0.3)
    await drain(app, engine)
    result = await job.result()
    assert result is not None
    assert not result.success
    assert result.value == "expired"
    assert not result.aborted
    # It never started: no attempt counted, no start time (as the native engine says).
    assert result.tries == 0 and result.start == 0, result
    assert runs == [1]  # only the fresh one ran
    ok = await fresh.result()
    assert ok is not None and ok.success
    assert await app.dead_count() == 0  # an expired task never ran: not a dead letter


# --------------------------------------------------------------------- hooks
async def test_on_enqueue_headers_reach_the_task(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)
    seen_ctx: list[EnqueueContext] = []
    in_middleware: list[dict[str, str]] = []

    @app.on_enqueue
    def stamp(ctx: EnqueueContext) -> None:
        seen_ctx.append(ctx)
        ctx.headers["trace"] = f"trace-{ctx.args[0]}"

    @app.on_enqueue
    async def more(ctx: EnqueueContext) -> None:
        ctx.headers["user"] = "alice"

    @app.middleware
    async def mw(ctx: TaskContext, call_next: Callable[[], object]) -> object:
        in_middleware.append(dict(ctx.headers))
        return await call_next()  # type: ignore[misc]

    @app.task
    def t(n: int) -> dict[str, str]:
        task = current_task()
        assert task is not None
        return dict(task.headers)

    job = await t.options(task_id="hdr").enqueue(
        5,
    )
    (ctx,) = seen_ctx
    assert (ctx.name, ctx.task_id, ctx.args, ctx.kwargs) == ("t", "hdr", (5,), {})
    await drain(app)
    result = await job.result()
    assert result is not None and result.success, result
    assert result.value == {"trace": "trace-5", "user": "alice"}
    assert in_middleware == [{"trace": "trace-5", "user": "alice"}]


async def test_on_enqueue_hook_error_sends_nothing(make_app: AppFactory) -> None:
    app = make_app()

    @app.on_enqueue
    def refuse(ctx: EnqueueContext) -> None:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        await app.ref("t").enqueue()
    assert await app.queue_size() == 0


# -------------------------------------------------------------------- errors
async def test_payload_over_the_limit_is_refused(make_app: AppFactory) -> None:
    app = make_app(max_payload_bytes=1000)
    assert app.max_payload_bytes == 1000
    t = app.ref("t")
    with pytest.raises(ArdiqError, match="max_payload_bytes") as info:
        await t.enqueue("x" * 2000)
    assert "'t'" in str(info.value)
    assert await app.queue_size() == 0
    await t.enqueue("x" * 100)
    assert await app.queue_size() == 1


async def test_unserializable_arguments_raise_type_error(make_app: AppFactory) -> None:
    app = make_app()

    @app.task
    async def t(x: object) -> None: ...

    with pytest.raises(TypeError, match="serial"):
        await t.enqueue(object())
    with pytest.raises(TypeError):
        await t.enqueue({1, 2})
    with pytest.raises(TypeError):
        await app.ref("u", unique=True).enqueue(object())
    assert await app.queue_size() == 0


async def test_broker_error_when_redis_is_unreachable() -> None:
    app = Ardiq(closed_port_url(), queue_name="nowhere")
    t = app.ref("t")
    started = time.monotonic()
    try:
        with pytest.raises(BrokerError, match="unreachable"):
            await t.enqueue(1)
        with pytest.raises(BrokerError):
            await app.send("t")
        with pytest.raises(BrokerError):
            await app.queue_size()
        with pytest.raises(BrokerError):
            await app.status("x")
        with pytest.raises(BrokerError):
            await app.result("x")
        with pytest.raises(BrokerError):
            await app.result("x", timeout=0.5)
    finally:
        await app.aclose()
    assert time.monotonic() - started < 5


async def test_broker_error_hides_the_password() -> None:
    url = closed_port_url().replace("redis://", "redis://bob:hunter2@")
    app = Ardiq(url, queue_name="nowhere")
    try:
        with pytest.raises(BrokerError) as info:
            await app.ref("t").enqueue()
    finally:
        await app.aclose()
    assert "hunter2" not in str(info.value)


async def test_queues_do_not_see_each_other(make_app: AppFactory, queue: str) -> None:
    a = make_app()
    b = make_app(queue_name=queue + "-other")
    job = await a.ref("t").enqueue()
    assert await a.queue_size() == 1
    assert await b.queue_size() == 0
    assert await b.status(job.id) == Status.NOT_FOUND


def test_enqueue_chunks_by_count_and_by_payload_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from ardiq import client
    from ardiq.client import EncodedTask, chunks

    tasks = [EncodedTask(str(i), "t", b"x" * 10, "default") for i in range(2500)]
    assert [len(c) for c in chunks(tasks)] == [1000, 1000, 500]
    assert list(chunks([])) == []
    monkeypatch.setattr(client, "ENQUEUE_CHUNK_BYTES", 35)
    assert [len(c) for c in chunks(tasks[:10])] == [3, 3, 3, 1]
    # A task larger than the byte budget still goes, alone.
    big = [EncodedTask(str(i), "t", b"x" * 100, "default") for i in range(3)]
    assert [len(c) for c in chunks(big)] == [1, 1, 1]
