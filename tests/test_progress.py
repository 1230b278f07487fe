"""Progress from inside a task (PROTOCOL.md, "Progress"; README, "Progress"), on every
worker kind: reported from async and sync bodies, throttled, kept with the result,
cleared on retry, refused for a stale attempt, and checked in the caller."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from apps.ledger import stop_code, wait_until
from ardiq import Ardiq, Job, Progress, Status, TaskContext, current_task
from ardiq.broker import Broker
from ardiq.errors import ArdiqError
from ardiq.progress import Reporter
from ardiq.protocol import GROUP, Keys
from ardiq.runtime import OK, Delivery, Outcome
from ardiq.testing import inline
from support.protocol_driver import ProtocolDriver, make_task
from support.redis_server import RedisServer
from support.workers import WorkerProcess

TARGET = "apps.progress:app"


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def set_count(client: aioredis.Redis) -> int:
    """SET commands the server ran (inside scripts too): progress writes and results."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


@pytest.mark.parametrize("name", ["spin_async", "spin_sync"])
async def test_a_tight_loop_writes_a_few_times_and_the_last_value_stays(
    worker_kind: str,
    own_redis: Callable[..., RedisServer],
    queue: str,
    tmp_path: object,
    name: str,
) -> None:
    """10,000 reports over about a second: a handful of writes (one per 0.5 s and the
    last), counted by the test's own server; the last value is kept with the result."""
    server = own_redis()
    app = Ardiq(server.url, queue_name=queue)
    admin = aioredis.Redis.from_url(server.url)
    worker = WorkerProcess(
        worker_kind,
        TARGET,
        env={"ARDIQ_REDIS_URL": server.url, "ARDIQ_TEST_QUEUE": queue},
        log_dir=tmp_path,  # type: ignore[arg-type]
    )
    try:
        job = await app.ref(name).enqueue()
        r = await job.result(timeout=30)
        assert r is not None and r.success, (r, worker.output())
        writes = await set_count(admin) - 1  # the result's SET
        # About a second of reports: the first at once, one per 0.5 s, and the last.
        assert 2 <= writes <= 6, writes
        p = await job.progress()
        assert p is not None
        assert (p.value, p.message, p.tries) == (100, "done", 1)
        assert p.updated_ms >= r.start
        assert stop_code(worker) == 0, worker.output()
    finally:
        worker.close()
        await admin.aclose()
        await app.aclose()


@pytest.mark.parametrize("name", ["report_and_wait_async", "report_and_wait_sync"])
async def test_progress_while_running_then_kept_with_the_result(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: aioredis.Redis,
    queue: str,
    name: str,
) -> None:
    app = make_app()
    job = await app.ref(name).options(delay_ms=60_000).enqueue(name)
    assert await job.progress() is None  # nothing reported (it has not even started)
    assert await asyncio.to_thread(job.progress_sync) is None
    await app.abort(job.id)
    job = await app.ref(name).enqueue(name)
    worker = start_worker(TARGET)
    try:
        p = await wait_until(job.progress, 15, "the first progress")
        assert isinstance(p, Progress)
        assert p.value == {"stage": "halfway", "items": [1, 2]}
        assert (p.message, p.tries) == ("half", 1)
        assert await job.status() == Status.RUNNING
        assert await asyncio.to_thread(job.progress_sync) == p
        await ledger.set(f"ledger:{queue}:go:{name}", 1)
        r = await job.result(timeout=10)
        assert r is not None and r.success
        last = await job.progress()
        assert last is not None and (last.value, last.message, last.tries) == (99, None, 1)
        # Kept as long as the result (apps.progress: result_ttl_ms=60000).
        key = app.keys.progress(job.id)
        progress_ttl, result_ttl = (
            await ledger.pttl(key),
            await ledger.pttl(app.keys.result(job.id)),
        )
        assert 0 < progress_ttl <= 60_000 and abs(progress_ttl - result_ttl) < 2_000
        assert json.loads(await ledger.get(key))["t"] == 1
        assert stop_code(worker) == 0, worker.output()
    finally:
        worker.close()


async def test_a_retry_clears_the_failed_attempts_progress(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app()
    job = await app.ref("retry_once").enqueue("r")
    start_worker(TARGET)

    async def scheduled() -> bool:
        return await job.status() == Status.SCHEDULED

    await wait_until(scheduled, 15, "the retry to be scheduled")
    assert await job.progress() is None  # the first attempt's progress went with it
    r = await job.result(timeout=15)
    assert r is not None and r.success and r.value == 2
    p = await job.progress()
    assert p is not None and (p.value, p.message, p.tries) == (20, "attempt 2", 2)


async def test_bad_reports_raise_in_the_body(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app()
    job = await app.ref("bad_reports").enqueue()
    start_worker(TARGET)
    r = await job.result(timeout=15)
    assert r is not None and r.success, r
    out = r.value
    assert out[0].startswith("ValueError: progress value must be a number from 0 to 100")
    assert out[1].startswith("ValueError:") and out[2].startswith("ValueError:")
    assert (
        out[3] == "TypeError: progress value must be a number from 0 to 100 or a mapping, not bool"
    )
    assert out[4].endswith("or a mapping, not str")
    assert out[5] == "TypeError: progress value keys must be str, not int (1)"
    assert out[6].startswith("TypeError: progress value cannot be JSON")
    assert out[7] == "TypeError: progress message must be a str or None, not int"
    assert out[8].startswith("ValueError: progress record too large")
    assert await job.progress() is None  # nothing bad was written


# ------------------------------------------------------------------- the script alone
async def test_only_the_live_attempt_writes(make_app: Callable[..., Ardiq]) -> None:
    """The `progress` script writes while the job's `e` is the reporting entry, never for
    a stale attempt or a finished task."""
    app = make_app()
    job = await app.ref("report_and_wait_async").enqueue("x")
    k = app.keys
    broker = app._client().broker
    live = (await broker.command("HGET", k.job(job.id), "e")).decode()

    async def write(entry: str, value: str) -> int:
        reply = await broker.script(
            "progress", [k.job(job.id), k.progress(job.id)], [entry, value, '"m"', 3]
        )
        return int(reply)

    assert await write("1-0", "5") == 0  # a stale attempt
    assert await job.progress() is None
    assert await write(live, "7") == 1
    p = await job.progress()
    assert p is not None and (p.value, p.message, p.tries) == (7, "m", 3)
    assert p.updated_ms > 0
    assert await job.abort()  # finalized: the job record is gone
    assert await write(live, "9") == 0
    p = await job.progress()
    assert p is not None and p.value == 7
    # A new enqueue of the id starts without the old run's progress.
    await app.ref("report_and_wait_async").options(task_id=job.id).enqueue("x")
    assert await job.progress() is None


async def test_a_malformed_record_says_so(make_app: Callable[..., Ardiq]) -> None:
    app = make_app()
    await app._client().broker.command("SET", app.keys.progress("m"), b"nope")
    with pytest.raises(ArdiqError, match="progress record of task 'm' is malformed"):
        await Job(app, "m").progress()


# ------------------------------------------------------------ the throttle, in process
class Recorder:
    """A progress writer that keeps what it was given (and when), optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.writes: list[tuple[str, str, float]] = []
        self.landed: list[str] = []

    def sync(self, d: object, tries: int, value: str, message: str) -> None:
        self.writes.append((value, message, time.monotonic()))

    async def slow(self, d: object, tries: int, value: str, message: str) -> None:
        self.writes.append((value, message, time.monotonic()))
        await asyncio.sleep(self.delay)
        self.landed.append(value)


def delivery() -> Delivery:
    return Delivery("1-0", "default", "t", "n", b"", 0, 0)


async def test_the_throttle_writes_the_first_the_latest_every_interval_and_the_last() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder()
    reporter = Reporter(loop, rec.sync, delivery(), 1)
    began = time.monotonic()
    for i in range(10_000):
        reporter.offer(str(i), "null")
    await asyncio.sleep(0.05)
    assert [w[0] for w in rec.writes] == ["9999"]  # the first write carries the latest
    for i in range(3):
        reporter.offer(f"{i}b", "null")
    await asyncio.sleep(0.6)
    assert [w[0] for w in rec.writes] == ["9999", "2b"]  # a trailing write, 0.5 s later
    assert rec.writes[1][2] - rec.writes[0][2] >= 0.45
    reporter.offer("last", '"bye"')
    await reporter.close()  # the last value at once, whatever the interval
    assert rec.writes[-1][:2] == ("last", '"bye"')
    assert time.monotonic() - began < 1.0
    reporter.offer("late", "null")  # after the attempt: nothing
    await asyncio.sleep(0.6)
    assert len(rec.writes) == 3


async def test_reports_from_threads_are_throttled_too() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder()
    reporter = Reporter(loop, rec.sync, delivery(), 1)

    def spin(n: int) -> None:
        for i in range(n):
            reporter.offer(str(i), "null")
        time.sleep(0.7)
        reporter.offer("end", "null")

    await asyncio.gather(*(asyncio.to_thread(spin, 5_000) for _ in range(4)))
    await reporter.close()
    values = [w[0] for w in rec.writes]
    assert 2 <= len(values) <= 4, values
    assert values[-1] == "end"


async def test_slow_writes_land_in_order_and_the_last_one_before_close_returns() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(delay=0.8)
    reporter = Reporter(loop, rec.slow, delivery(), 1)
    reporter.offer("a", "null")
    await asyncio.sleep(0.05)  # "a" is on its way (0.8 s)
    reporter.offer("b", "null")
    await asyncio.sleep(0.6)  # the interval is up, "a" still in flight: "b" waits
    assert rec.landed == []
    reporter.offer("c", "null")
    await reporter.close()
    assert rec.landed == ["a", "c"]


def test_progress_needs_a_worker_made_context() -> None:
    with pytest.raises(RuntimeError, match="was not made by one"):
        TaskContext("t", "n", 1).progress(50)
    made = TaskContext("t", "n", 1)
    made.__dict__.update(_runtime=object(), _delivery=delivery())  # as a worker makes it
    with pytest.raises(RuntimeError, match="was not made by one"):
        pickle.loads(pickle.dumps(made)).progress(50)  # the runtime stays behind
    assert current_task() is None  # outside a task there is no context to report on


async def test_inline_keeps_progress_in_memory(make_app: Callable[..., Ardiq]) -> None:
    app = make_app()

    @app.task(max_retries=1)
    def steps(n: int) -> int:
        ctx = current_task()
        assert ctx is not None
        for i in range(n):
            ctx.progress(100 * (i + 1) / n, f"try {ctx.tries}")
        if ctx.tries == 1:
            raise ValueError("again")
        return n

    @app.task
    async def silent() -> None:
        return None

    async with inline(app):
        job = await steps.enqueue(1000)
        r = await job.result()
        assert r is not None and r.success and r.tries == 2
        p = await job.progress()
        assert p is not None and (p.value, p.message, p.tries) == (100.0, "try 2", 2)
        assert await asyncio.to_thread(job.progress_sync) == p
        quiet = await silent.enqueue()
        assert await quiet.progress() is None


async def test_finish_keeps_only_the_listed_outcomes_progress_and_reclaim_drops_it(
    redis_url: str, queue: str
) -> None:
    """`finish` gives the record the result's TTL for the outcomes it is told reported
    (and leaves the key alone for the others: a task that never reports costs nothing);
    `reclaim` deletes a lost delivery's record as it re-queues it."""
    keys = Keys(queue)
    broker = Broker(redis_url, keys, ["default"])
    d = ProtocolDriver(broker, priorities=["default"], result_ttl_ms=50_000, max_deliveries=5)
    r = broker.client
    try:
        await d.enqueue([make_task(f"p{i}", "n", b"x", "default") for i in range(3)])
        got = await d.fetch("w1", 3)
        by_id = {x.task_id: x for x in got if isinstance(x, Delivery)}
        for task_id, x in by_id.items():
            written = await d.script(
                "progress",
                [keys.job(task_id), keys.progress(task_id)],
                [x.entry_id, "5", "null", 1],
            )
            assert written == 1
        # p0 listed as reporting, p1 not: its record (if a worker forgot it) keeps no TTL.
        args: list[Any] = [keys.prefix, GROUP, "w1", 50_000, 2, 0]  # history off
        ks = [keys.delayed, keys.dead, keys.history, keys.stats]
        for task_id in ("p0", "p1"):
            x = by_id[task_id]
            ks += [
                keys.stream("default"),
                keys.job(task_id),
                keys.wait(task_id),
                keys.result(task_id),
                keys.dead_letter(task_id),
                keys.attempts(task_id),
            ]
            args += Outcome(x.entry_id, task_id, OK, b"1", 1, 0, 0, "default").fields()
        assert list(await d.script("finish", ks, [*args, "1"])) == [1, 1]
        assert 0 < await r.pttl(keys.progress("p0")) <= 50_000
        assert await r.pttl(keys.progress("p1")) == -1
        # p2's worker is lost: the reclaim re-queues it without its progress.
        assert await d.reclaim("w2", 0, {}) == (1, 0, 0)
        assert not await r.exists(keys.progress("p2"))
    finally:
        await broker.close()
