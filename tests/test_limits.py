"""Rate limits and concurrency caps across workers (README, "Rate limits and concurrency
caps"; PROTOCOL.md, Limits), on every worker kind, with the tasks of tests/apps/limits_app.py
recording what they saw in a ledger."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import Ledger, stop_code, wait_until
from ardiq import Ardiq, Status
from support.windows import max_in_window
from support.workers import WorkerProcess

TARGET = "apps.limits_app:app"


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    led = Ledger(redis_url, queue)
    yield led
    await led.close()


@pytest.fixture
def producer(make_app: Callable[..., Ardiq]) -> Ardiq:
    return make_app()


async def test_a_rate_limit_holds_across_three_workers(
    start_worker: Callable[..., WorkerProcess], producer: Ardiq, ledger: Ledger
) -> None:
    """rate 20/s, burst 5: in any window of T seconds at most 5 + 20 x T starts granted
    (on the Redis server's clock), over 3 workers; every task runs once."""
    workers = [start_worker(TARGET) for _ in range(3)]
    n = 45
    jobs = await producer.enqueue_many(producer.ref("rated").prepare(i) for i in range(n))
    await ledger.wait_for("done", n, timeout=30)
    grants = [float(g) for g in await ledger.items("grant")]
    assert len(grants) == n and all(g > 0 for g in grants)
    for window_ms in (0, 50, 100, 250, 500, 1000, 2000):
        # A millisecond of slack for the grant times' rounding.
        assert max_in_window(grants, window_ms) <= 5 + 20 * (window_ms + 1) / 1000, window_ms
    # The limit binds: 45 tasks at 20/s after a burst of 5 take about two seconds.
    assert max(grants) - min(grants) >= 1900
    assert sorted(await ledger.items("done")) == sorted(f"rated:{i}" for i in range(n))
    for job in jobs:
        r = await job.result(timeout=5)
        assert r is not None and r.success and r.tries == 1
    for w in workers:
        assert stop_code(w) == 0, w.output()


async def test_a_concurrency_cap_holds_across_workers_and_a_kill(
    start_worker: Callable[..., WorkerProcess], producer: Ardiq, ledger: Ledger
) -> None:
    """max_concurrency=2 over 3 workers: never three running; a holder killed with -9
    gives its slot back once its lease runs out, and nothing is lost."""
    env = {"ARDIQ_TEST_LEASE_MS": "1500"}
    workers = [start_worker(TARGET, env=env) for _ in range(3)]
    first = await producer.ref("capped").enqueue(0, 3.0)  # held while we kill its worker
    started = await ledger.wait_for("started", 1)
    pid = int(started[0].split(":")[0])
    victim = next(w for w in workers if w.pid == pid)
    victim.kill()
    jobs = [first]
    jobs += await producer.enqueue_many(
        producer.ref("capped").prepare(i, 0.1) for i in range(1, 16)
    )
    await ledger.wait_for("done", 16, timeout=40)
    counts = [int(c) for c in await ledger.items("cap")]
    assert max(counts) <= 2, counts
    assert max(counts) == 2  # the cap is reached, not just respected by luck
    for job in jobs:
        r = await job.result(timeout=10)
        assert r is not None and r.success, r
    for w in workers:
        if w is not victim:
            assert stop_code(w) == 0, w.output()


async def test_a_per_key_limit_lets_other_keys_flow(
    start_worker: Callable[..., WorkerProcess], producer: Ardiq, ledger: Ledger
) -> None:
    """1/s per customer: one busy customer's backlog waits; 20 other customers run at
    once, and so do unlimited tasks of the same lane."""
    worker = start_worker(TARGET)
    per = producer.ref("per_customer", limit_key="customer")
    await producer.enqueue_many(per.prepare(customer="busy", i=i) for i in range(5))
    began = time.monotonic()
    await producer.enqueue_many(per.prepare(customer=f"c{i}", i=i) for i in range(20))
    await producer.enqueue_many(producer.ref("plain").prepare(i) for i in range(10))
    done = await wait_until(
        lambda: _done_with(ledger, lambda d: d.startswith(("per:c", "plain:")), 30), 10
    )
    assert len(done) == 30
    # Far less than the busy customer's 4 s of backlog.
    assert time.monotonic() - began < 3.0
    busy_done = [d for d in await ledger.items("done") if d.startswith("per:busy:")]
    assert len(busy_done) < 5
    await ledger.wait_for("done", 35, timeout=15)
    busy = sorted(float(a.split(":")[1]) for a in await ledger.items("at") if a.startswith("busy"))
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(busy)), busy
    assert stop_code(worker) == 0, worker.output()


async def _done_with(ledger: Ledger, pred: Callable[[str], bool], n: int) -> list[str] | None:
    items = [d for d in await ledger.items("done") if pred(d)]
    return items if len(items) >= n else None


async def test_a_parked_task_is_queued_abortable_and_counted(
    start_worker: Callable[..., WorkerProcess], producer: Ardiq, ledger: Ledger
) -> None:
    """A task parked behind a full cap: `queued`, counted by queue_size, aborted at once;
    the rest run once the slot frees, and the worker never spins on them."""
    worker = start_worker(TARGET)
    gate = producer.ref("gate")
    first = await gate.enqueue(0)
    await ledger.wait_for("started", 1)
    waiting = [await gate.enqueue(i) for i in range(1, 4)]
    keys = producer.keys
    await wait_until(lambda: _zcard_is(ledger, keys.parked, 3), 10)
    for job in waiting:
        assert await job.status() == Status.QUEUED
    assert await producer.queue_size() >= 3
    assert await waiting[0].abort() is True
    r = await waiting[0].result(timeout=5)
    assert r is not None and r.aborted
    await ledger.client.set(f"ledger:{ledger.queue}:open", 1)
    for job in [first, *waiting[1:]]:
        r = await job.result(timeout=15)
        assert r is not None and r.success and r.tries == 1, r
    assert sorted(await ledger.items("done")) == ["gate:0", "gate:2", "gate:3"]
    assert await ledger.client.zcard(keys.parked) == 0
    assert stop_code(worker) == 0, worker.output()


async def _zcard_is(ledger: Ledger, key: str, n: int) -> bool:
    return int(await ledger.client.zcard(key)) == n


async def test_a_burst_worker_waits_for_parked_tasks(
    start_worker: Callable[..., WorkerProcess], producer: Ardiq, ledger: Ledger
) -> None:
    """A burst worker does not call the queue drained while tasks are parked."""
    jobs = await producer.enqueue_many(producer.ref("rated").prepare(i) for i in range(12))
    worker = start_worker(TARGET, "--burst")
    code = await asyncio.to_thread(worker.wait, 30)
    assert code == 0, worker.output()
    for job in jobs:
        r = await job.result()
        assert r is not None and r.success


async def test_a_signing_worker_refuses_a_changed_limit_key(
    start_worker: Callable[..., WorkerProcess], make_app: Callable[..., Ardiq], ledger: Ledger
) -> None:
    """The key is sealed with the payload (`ardiq.lk`): an entry whose `lk` was rewritten
    (to slip under another customer's limit) fails with `limit key mismatch`; an intact
    one runs."""
    key = "s" * 32
    producer = make_app(signing_key=key)
    per = producer.ref("per_customer", limit_key="customer")
    bad = await per.enqueue(customer="mallory", i=0)
    good = await per.enqueue(customer="alice", i=1)
    r = ledger.client
    stream = producer.keys.stream(producer.default_priority)
    ((eid, fields), _) = await r.xrange(stream)
    await r.xdel(stream, eid)
    fields[b"lk"] = b"victim"
    new = await r.xadd(stream, fields)
    await r.hset(producer.keys.job(bad.id), "e", new)
    worker = start_worker(TARGET, env={"ARDIQ_SIGNING_KEY": key})
    res = await bad.result(timeout=15)
    assert res is not None and not res.success and "limit key mismatch" in str(res.value)
    ok = await good.result(timeout=15)
    assert ok is not None and ok.success, ok
    assert stop_code(worker) == 0, worker.output()
