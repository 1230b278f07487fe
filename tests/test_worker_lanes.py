"""Lanes: a worker drains higher lanes first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_high_lane_drained_first(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    task = app.ref("lane_order")
    prepared = []
    # Interleaved, lowest first, so insertion order alone would give the wrong answer.
    for i in range(4):
        for lane in LANES:
            prepared.append(task.options(priority=lane).prepare(f"{lane}-{i}"))
    await app.enqueue_many(prepared)

    worker = start_worker("apps.basic:app", "--burst", "--concurrency", "1")
    assert exit_code(worker, 30) == 0, worker.output()

    order = await ledger.items("order")
    lanes_run = [tag.split("-")[0] for tag in order]
    assert lanes_run == ["high"] * 4 + ["default"] * 4 + ["low"] * 4, (order, worker.output())
    # Within one lane, first in first out.
    assert order[:4] == [f"high-{i}" for i in range(4)]
    assert order[-4:] == [f"low-{i}" for i in range(4)]


# Adds an entry with a chosen entry id and its job hash, as two lanes written in the same
# millisecond would get (entry ids are unique only within one stream).
RAW = """
local eid = redis.call('XADD', KEYS[1], ARGV[1], 'id', ARGV[2], 'fn', ARGV[3], 'p', ARGV[4],
  't', 0, 'enq', ARGV[5], 'x', 0, 'r', 0)
redis.call('HSET', KEYS[2], 'fn', ARGV[3], 'l', ARGV[6], 's', 'q', 't', 0, 'enq', ARGV[5],
  'x', 0, 'e', eid)
return eid
"""


async def test_a_lease_lost_in_one_lane_keeps_the_same_entry_id_of_another(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
    redis_url: str,
) -> None:
    # Issue 10, defect 5: `renew` answered bare entry ids, and the engine dropped a
    # healthy `5-0` of lane low because `5-0` of lane high was lost.
    import time

    import redis
    import redis.asyncio as aioredis
    from ardiq.serializers import msgpack_dumps

    app = make_app(priorities=LANES)
    admin = aioredis.Redis.from_url(redis_url)
    now = time.time_ns() // 1_000_000
    try:
        for lane, eid, task_id, fn, args in [
            ("high", "4-0", "slow", "sleep", [1.5]),
            ("high", "5-0", "stolen", "lane_order", ["high-5"]),
            ("low", "5-0", "healthy", "lane_order", ["low-5"]),
        ]:
            keys = [app.keys.stream(lane), app.keys.job(task_id)]
            payload = msgpack_dumps([args, {}, None])
            await admin.eval(RAW, 2, *keys, eid, task_id, fn, payload, now, lane)  # type: ignore[misc]
        worker = start_worker(
            "apps.basic:app",
            env={
                "ARDIQ_TEST_IDLE_MS": "3000",
                "ARDIQ_TEST_CONCURRENCY": "1",
                "ARDIQ_TEST_PREFETCH": "4",
            },
        )

        async def all_delivered() -> bool:
            try:
                pending = await admin.xpending(app.keys.stream("low"), "ardiq")
            except redis.exceptions.ResponseError:
                return False  # no group yet
            return bool(pending["pending"])

        from apps.ledger import wait_until

        await wait_until(all_delivered, 10, "the worker to fetch every entry")
        # Another consumer takes high's 5-0 (as a reclaim would after a stall).
        await admin.xclaim(app.keys.stream("high"), "ardiq", "thief", 0, ["5-0"])
        r = await app.result("healthy", timeout=15)
        slow = await app.result("slow", timeout=15)
        assert r is not None and r.success, r
        assert slow is not None and slow.success, slow
        # It started as soon as the slow task freed the slot, not after its own lease ran
        # out and it was reclaimed (3 s).
        assert r.start - slow.finish < 1000, (r, slow, worker.output())
        assert r.tries == 1
        worker.stop()
    finally:
        await admin.aclose()
