"""Workers that die or stall: their tasks are reclaimed by another worker and finished;
a task that kills every worker it lands on ends in the dead letters; a stalled worker that
wakes up never overwrites what the new owner did."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from apps.ledger import LANES, Ledger, stop_code, wait_until
from ardiq import Ardiq
from support.workers import WorkerProcess

FAST_RECLAIM = {"ARDIQ_TEST_IDLE_MS": "1500"}


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_sigkill_mid_task_is_finished_by_another_worker(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    env = {**FAST_RECLAIM, "ARDIQ_TEST_CONCURRENCY": "2"}
    victim = start_worker("apps.basic:app", env=env)
    jobs = await app.enqueue_many([app.ref("slow_count").prepare(n, 0.5) for n in range(8)])
    started = await ledger.wait_for("slow_started", 2)
    victim.kill()
    started_by_victim = set(await ledger.items("slow_started"))
    assert len(started_by_victim) >= len(started)

    rescuer = start_worker("apps.basic:app", env=env)
    for job in jobs:
        r = await job.result(timeout=20)
        assert r is not None and r.success, (r, rescuer.output())
    runs = Counter(int(x) for x in await ledger.items("count"))
    assert sorted(runs) == list(range(8))
    # Exactly once, except a task the victim had finished but not yet acknowledged.
    for n, times in runs.items():
        assert times == 1 or (times == 2 and str(n) in started_by_victim), runs
    assert await app.queue_size() == 0
    assert await app.dead_count() == 0
    assert stop_code(rescuer) == 0, rescuer.output()


async def test_task_that_kills_every_worker_goes_to_dead_letters(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    # One task at a time and no prefetch beyond it, so a dying worker takes nothing else
    # down with it (a bystander's deliveries would count towards the cap too).
    env = {
        **FAST_RECLAIM,
        "ARDIQ_TEST_MAX_DELIVERIES": "2",
        "ARDIQ_TEST_CONCURRENCY": "1",
        "ARDIQ_TEST_PREFETCH": "1",
    }
    killer = await app.ref("kill_worker").options(priority="high").enqueue()
    others = await app.enqueue_many([app.ref("count").prepare(n) for n in range(10)])
    workers = [start_worker("apps.basic:app", env=env) for _ in range(2)]
    deaths = 0
    deadline = time.monotonic() + 30
    result = None
    while result is None:
        assert time.monotonic() < deadline, [w.output() for w in workers]
        for i, w in enumerate(workers):
            code = w.proc.poll()
            if code is not None:
                assert code == 17, w.output()  # only the killer task ends a worker
                deaths += 1
                workers[i] = start_worker("apps.basic:app", env=env)
        result = await killer.result()
        await asyncio.sleep(0.05)

    assert not result.success and result.value.startswith("worker lost"), result
    assert deaths == 2 and len(await ledger.items("killer")) == 2
    dead = await app.dead_letters()
    assert [d.task_id for d in dead] == [killer.id]
    assert dead[0].error.startswith("worker lost") and dead[0].fn_name == "kill_worker"

    # Everything else flowed, each exactly once.
    for job in others:
        r = await job.result(timeout=10)
        assert r is not None and r.success
    assert sorted(int(x) for x in await ledger.items("count")) == list(range(10))
    for w in workers:
        assert stop_code(w) == 0, w.output()


async def test_stalled_worker_does_not_overwrite_the_new_owner(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    stale = start_worker("apps.basic:app", env=FAST_RECLAIM)
    job = await app.ref("owner").enqueue(2.5)
    await ledger.wait_for("owner_started", 1)
    stale.signal(signal.SIGSTOP)
    try:
        fresh = start_worker("apps.basic:app", env=FAST_RECLAIM)
        started = await ledger.wait_for("owner_started", 2, timeout=15)
        assert started == [str(stale.pid), str(fresh.pid)]
    finally:
        stale.signal(signal.SIGCONT)
    # The stale worker's body ends first (its sleep ran out while it was stopped)...
    finished = await ledger.wait_for("owner_finished", 1, timeout=10)
    assert finished == [str(stale.pid)]
    await asyncio.sleep(0.3)  # time for a stale outcome to (wrongly) land
    assert await job.result() is None
    assert await job.status() == "running"
    # ...and the result is the new owner's, recorded once.
    r = await job.result(timeout=10)
    assert r is not None and r.success and r.value == fresh.pid, (r, stale.output())
    assert r.tries == 1  # a reclaim is not an attempt
    await asyncio.sleep(0.3)
    assert await job.result() == r
    assert await ledger.items("owner_finished") == [str(stale.pid), str(fresh.pid)]
    assert await app.dead_count() == 0
    assert stop_code(stale) == 0, stale.output()
    assert stop_code(fresh) == 0, fresh.output()


async def test_prefetched_bystanders_of_a_killer_are_not_dead_lettered(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    """A worker that dies takes its prefetched tasks down with it; only the task that
    was running counts towards the delivery cap once tasks are suspects (r >= 1)."""
    app = make_app(priorities=LANES)
    env = {
        **FAST_RECLAIM,
        "ARDIQ_TEST_MAX_DELIVERIES": "2",
        "ARDIQ_TEST_CONCURRENCY": "1",
        "ARDIQ_TEST_PREFETCH": "20",
    }
    killer = await app.ref("kill_worker").options(priority="high").enqueue()
    others = await app.enqueue_many([app.ref("count").prepare(n) for n in range(10)])
    worker = start_worker("apps.basic:app", env=env)
    deaths = 0
    deadline = time.monotonic() + 40
    while await killer.result() is None:
        assert time.monotonic() < deadline, worker.output()
        code = worker.proc.poll()
        if code is not None:
            assert code == 17, worker.output()
            deaths += 1
            worker = start_worker("apps.basic:app", env=env)
        await asyncio.sleep(0.05)
    result = await killer.result()
    assert result is not None and result.value == "worker lost (delivered 2 times)", result
    assert deaths == 2
    dead = await app.dead_letters()
    assert [d.task_id for d in dead] == [killer.id], [(d.task_id, d.error) for d in dead]
    for job in others:
        r = await job.result(timeout=15)
        assert r is not None and r.success, (r, worker.output())
    assert sorted(int(x) for x in await ledger.items("count")) == list(range(10))
    assert stop_code(worker) == 0, worker.output()


async def test_last_chance_tasks_run_one_at_a_time(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
    redis_url: str,
) -> None:
    """Entries one counted loss from the cap never run side by side on one worker: a
    task killing its worker then takes no other last-chance task down with it."""
    import msgpack
    import redis.asyncio as aioredis

    app = make_app(priorities=LANES)
    r = aioredis.Redis.from_url(redis_url)
    k = app.keys
    now = str(int(time.time() * 1000))
    for i in range(3):
        tid = f"lc{i}"
        eid = await r.xadd(
            k.stream("default"),
            {
                "id": tid,
                "fn": "gauge",
                "p": msgpack.packb([[0.3], {}, None]),
                "t": 0,
                "enq": now,
                "x": 0,
                "r": 2,
            },
        )
        await r.hset(
            k.job(tid),
            mapping={"fn": "gauge", "l": "default", "s": "q", "t": 0, "enq": now, "x": 0, "e": eid},
        )
    await r.aclose()
    worker = start_worker("apps.basic:app", env={"ARDIQ_TEST_MAX_DELIVERIES": "3"})
    for i in range(3):
        res = await app.job(f"lc{i}").result(timeout=15)
        assert res is not None and res.success, (res, worker.output())
    assert await ledger.items("gauge") == ["1", "1", "1"]
    assert stop_code(worker) == 0, worker.output()


async def test_a_reclaim_round_takes_a_whole_backlog(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    # Both workers page the same way: up to 10 pages of 100 per lane in one round while
    # they come back full (not one page per lane per round).
    app = make_app(priorities=LANES)
    n = 350
    jobs = await app.enqueue_many([app.ref("noop").prepare() for _ in range(n)])
    client = app._client().broker.client
    stream = app.keys.stream("default")
    await client.xgroup_create(stream, "ardiq", id="0", mkstream=True)
    reply = await client.xreadgroup("ardiq", "ghost", {stream: ">"}, count=n)
    ids = [eid for eid, _ in reply[0][1]]
    assert len(ids) == n
    # A dead consumer has held them for long: all reclaimable at the first round.
    await client.xclaim(stream, "ardiq", "ghost", 0, ids, idle=10_000_000)

    async def ghost_holds() -> int:
        rows = await client.xpending_range(stream, "ardiq", "-", "+", n, consumername="ghost")
        return len(rows)

    worker = start_worker("apps.basic:app", env={"ARDIQ_TEST_IDLE_MS": "4000"})  # 1 s rounds
    await wait_until(lambda: _below(ghost_holds, n), 15, "the first reclaim round")
    await asyncio.sleep(0.6)  # within the same round, well before the next
    assert await ghost_holds() == 0, worker.output()
    for job in jobs:
        r = await job.result(timeout=15)
        assert r is not None and r.success
    assert stop_code(worker) == 0, worker.output()


async def _below(probe: Callable[[], Awaitable[int]], n: int) -> bool:
    return await probe() < n
