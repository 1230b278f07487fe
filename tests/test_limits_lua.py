"""The flow-control scripts called directly (PROTOCOL.md, Limits): `admit` parks what is
over a rate limit or a concurrency cap, reserves the parked entry's rate token, cleans
stale holders; `unpark` brings parked entries back with their token; the producer-side
scripts (`inspect`, `queue_size`, `abort`, `purge`) see parked tasks."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from ardiq import Ardiq, Status
from ardiq.broker import Broker
from ardiq.protocol import GROUP, Keys


@pytest.fixture
async def setup(redis_url: str, queue: str) -> AsyncIterator[tuple[Ardiq, Broker, aioredis.Redis]]:
    app = Ardiq(redis_url, queue_name=queue, priorities=["low", "high"], default_priority="low")
    admin = aioredis.Redis.from_url(redis_url)
    broker = app._client().broker
    for lane in app.priorities:
        await admin.xgroup_create(app.keys.stream(lane), GROUP, id="0", mkstream=True)
    yield app, broker, admin
    await admin.aclose()
    await app.aclose()


async def deliver(admin: aioredis.Redis, keys: Keys, lane: str, n: int) -> list[tuple[str, dict]]:
    """Read n entries as consumer `w1` (what a worker's fetch does)."""
    reply: Any = await admin.xreadgroup(GROUP, "w1", {keys.stream(lane): ">"}, count=n)
    out = []
    for _, entries in reply or []:
        for eid, fields in entries:
            out.append((eid.decode(), {k.decode(): v.decode("latin-1") for k, v in fields.items()}))
    return out


async def admit(
    broker: Broker,
    app: Ardiq,
    lane: str,
    delivered: list[tuple[str, dict]],
    *,
    rate: float = 0.0,
    burst: float = 0.0,
    cap: int = 0,
) -> list[int]:
    keys = app.keys
    call_keys = [*(keys.stream(lane) for lane in app.priorities), keys.parked]
    args: list[Any] = [GROUP, len(app.priorities)]
    for eid, f in delivered:
        lk = f.get("lk")
        call_keys += [keys.limit(f["fn"], lk), keys.job(f["id"])]
        args += [app.priorities.index(lane), eid, f["id"], f.get("ad", "0"), repr(rate)]
        args += [repr(burst), cap, lk or ""]
    return [int(v) for v in await broker.script("admit", call_keys, args)]


async def unpark(broker: Broker, app: Ardiq, force_due: bool = True) -> int:
    keys = app.keys
    lanes = list(reversed(app.priorities))
    streams = [keys.stream(lane) for lane in lanes]
    reply = await broker.script("unpark", [keys.parked, *streams], [len(lanes), *lanes, 200])
    due = [i.decode() for i in reply[3]]
    if not due:
        return 0
    jobs = [keys.job(i) for i in due]
    reply = await broker.script(
        "unpark", [keys.parked, *streams, *jobs], [len(lanes), *lanes, 200, *due]
    )
    return int(reply[0])


async def test_rate_admits_the_burst_then_parks_with_a_reserved_token(setup: Any) -> None:
    app, broker, admin = setup
    keys = app.keys
    task = app.ref("api", priority="high")
    jobs = [await task.enqueue() for _ in range(5)]
    got = await deliver(admin, keys, "high", 5)
    # 1 token per second, burst 2: two start now, three are parked a second apart.
    verdicts = await admit(broker, app, "high", got, rate=0.001, burst=2)
    assert verdicts == [1, 1, 0, 0, 0]
    parked = await admin.zrange(keys.parked, 0, -1, withscores=True)
    assert [p[0].decode() for p in parked] == [j.id for j in jobs[2:]]
    dues = [p[1] for p in parked]
    assert 990 <= dues[1] - dues[0] <= 1010 and 990 <= dues[2] - dues[1] <= 1010
    # A parked task: out of the stream and the pending list, queued for its callers.
    assert await admin.xlen(keys.stream("high")) == 2
    job = await admin.hgetall(keys.job(jobs[2].id))
    assert job[b"s"] == b"k" and job[b"ad"] == b"1" and b"e" not in job
    assert await jobs[2].status() == Status.QUEUED
    info = await jobs[2].info()
    assert info is not None and info.status == Status.QUEUED
    assert await app.queue_size() == 3
    # Not due yet: unpark moves nothing; made due, all come back holding their token.
    assert await unpark(broker, app) == 0
    await admin.zadd(keys.parked, {j.id: 0 for j in jobs[2:]})
    assert await unpark(broker, app) == 3
    back = await deliver(admin, keys, "high", 10)
    assert sorted(f["id"] for _, f in back) == sorted(j.id for j in jobs[2:])
    assert all(f["ad"] == "1" for _, f in back)
    job = await admin.hgetall(keys.job(jobs[2].id))
    assert job[b"s"] == b"q" and b"ad" not in job and b"p" not in job
    # Holding their token, they are admitted although the bucket is empty.
    assert await admit(broker, app, "high", back, rate=0.001, burst=2) == [1, 1, 1]


async def test_cap_parks_over_the_cap_and_frees_stale_holders(setup: Any) -> None:
    app, broker, admin = setup
    keys = app.keys
    task = app.ref("db")
    for _ in range(3):
        await task.enqueue()
    got = await deliver(admin, keys, "low", 3)
    assert await admit(broker, app, "low", got, cap=2) == [1, 1, 0]
    holders = await admin.hkeys(keys.limit("db"))
    assert sorted(h.decode() for h in holders if h.startswith(b"h:")) == sorted(
        f"h:0:{eid}" for eid, _ in got[:2]
    )
    assert 0 < await admin.pttl(keys.limit("db")) <= 24 * 3600 * 1000
    # One holder finishes (acked: no longer pending); the parked one is admitted.
    await admin.xack(keys.stream("low"), GROUP, got[0][0])
    await admin.zadd(keys.parked, {got[2][1]["id"]: 0})
    assert await unpark(broker, app) == 1
    again = await deliver(admin, keys, "low", 1)
    assert "ad" not in again[0][1]
    assert await admit(broker, app, "low", again, cap=2) == [1]
    holders = await admin.hkeys(keys.limit("db"))
    assert f"h:0:{got[0][0]}".encode() not in holders


async def test_waiters_of_a_full_cap_are_spaced_one_at_a_time(setup: Any) -> None:
    app, broker, admin = setup
    keys = app.keys
    for _ in range(4):
        await app.ref("db").enqueue()
    got = await deliver(admin, keys, "low", 4)
    assert await admit(broker, app, "low", got, cap=1) == [1, 0, 0, 0]
    dues = [s for _, s in await admin.zrange(keys.parked, 0, -1, withscores=True)]
    assert [round(b - a) for a, b in itertools.pairwise(dues)] == [10, 10]


async def test_per_key_limits_are_separate_and_keyless_entries_use_the_task_bucket(
    setup: Any,
) -> None:
    app, broker, admin = setup
    keys = app.keys
    ref = app.ref("per", limit_key="customer")
    for c in ["a", "a", "b", "b"]:
        await ref.enqueue(customer=c)
    await app.send("per")  # no key: the task-wide bucket
    got = await deliver(admin, keys, "low", 5)
    assert [f.get("lk") for _, f in got] == ["a", "a", "b", "b", None]
    assert await admit(broker, app, "low", got, rate=0.001, burst=1) == [1, 0, 1, 0, 1]
    assert await admin.exists(keys.limit("per", "a"), keys.limit("per", "b")) == 2
    assert await admin.exists(keys.limit("per")) == 1
    # The key travels with the parked task and comes back with it.
    await admin.zadd(keys.parked, {got[1][1]["id"]: 0})
    assert await unpark(broker, app) == 1
    (back,) = await deliver(admin, keys, "low", 1)
    assert back[1]["lk"] == "a" and back[1]["ad"] == "1"


async def test_entries_without_a_job_are_admitted(setup: Any) -> None:
    app, broker, admin = setup
    keys = app.keys
    await admin.xadd(keys.stream("low"), {"id": "ghost", "fn": "api", "p": b""})
    got = await deliver(admin, keys, "low", 1)
    await app.ref("api").enqueue()
    got += await deliver(admin, keys, "low", 1)
    # The ghost is admitted (nothing to park it in) and spends no token.
    assert await admit(broker, app, "low", got, rate=0.001, burst=1) == [1, 1]


async def test_abort_and_purge_finalize_a_parked_task(setup: Any) -> None:
    app, broker, admin = setup
    keys = app.keys
    jobs = [await app.ref("api").enqueue() for _ in range(3)]
    got = await deliver(admin, keys, "low", 3)
    assert await admit(broker, app, "low", got, rate=0.001, burst=1) == [1, 0, 0]
    assert await jobs[1].abort() is True
    r = await jobs[1].result()
    assert r is not None and r.aborted
    assert await admin.zscore(keys.parked, jobs[1].id) is None
    assert await jobs[1].status() == Status.COMPLETE
    # Enqueueing a parked task's id again is a no-op: the job exists.
    again = await app.ref("api").options(task_id=jobs[2].id).enqueue()
    assert again.id == jobs[2].id
    assert await admin.xlen(keys.stream("low")) == 1
    assert await app.queue_size() == 1


async def test_ops_count_and_purge_parked_tasks(setup: Any, redis_url: str) -> None:
    """`ardiq info` shows the parked count; `ardiq purge` finalizes parked tasks."""
    import json

    from support.ops_cli import ardiq, env_for

    app, broker, admin = setup
    keys = app.keys
    jobs = [await app.ref("api").enqueue() for _ in range(3)]
    got = await deliver(admin, keys, "low", 3)
    assert await admit(broker, app, "low", got, rate=0.001, burst=1) == [1, 0, 0]
    args = ("--queue", app.queue_name, "--lanes", ",".join(app.priorities), "--json")
    env = env_for(redis_url, app.queue_name)
    info = ardiq("info", *args, env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["queues"][0]["parked"] == 2
    purge = ardiq("purge", "--yes", *args, env=env)
    assert purge.returncode == 0, purge.stderr
    assert json.loads(purge.stdout)["queued"] == 2
    assert await admin.zcard(keys.parked) == 0
    for job in jobs[1:]:
        r = await job.result()
        assert r is not None and r.aborted and r.value == "purged"


async def test_an_entry_whose_abort_was_requested_is_not_parked(setup: Any) -> None:
    """Its worker finishes it as aborted; parked, it would run after the request."""
    app, broker, admin = setup
    keys = app.keys
    jobs = [await app.ref("api").enqueue() for _ in range(2)]
    got = await deliver(admin, keys, "low", 2)
    assert await jobs[1].abort() is True  # delivered: flagged for its worker
    assert await admit(broker, app, "low", got, rate=0.001, burst=1) == [1, 1]
    assert await admin.zcard(keys.parked) == 0


async def test_handback_keeps_the_limit_key_and_drops_the_token(setup: Any) -> None:
    """A re-queue keeps `lk` (the task stays under its key's limit) but not `ad` (the
    token was spent on the lost delivery: the next one is charged again)."""
    app, broker, admin = setup
    keys = app.keys
    ref = app.ref("per", limit_key="customer")
    job = await ref.enqueue(customer="acme")
    (got,) = await deliver(admin, keys, "low", 1)
    assert got[1]["id"] == job.id
    assert await admit(broker, app, "low", [got], rate=0.001, burst=1) == [1]
    await ref.enqueue(customer="acme")
    second = await deliver(admin, keys, "low", 1)
    assert await admit(broker, app, "low", second, rate=0.001, burst=1) == [0]
    await admin.zadd(keys.parked, {second[0][1]["id"]: 0})
    assert await unpark(broker, app) == 1
    (back,) = await deliver(admin, keys, "low", 1)
    assert (back[1]["lk"], back[1]["ad"]) == ("acme", "1")
    stream = keys.stream("low")
    n = await broker.script("handback", [stream, keys.job(back[1]["id"])], [GROUP, "w1", back[0]])
    assert int(n) == 1
    (again,) = await deliver(admin, keys, "low", 1)
    assert again[1]["lk"] == "acme" and "ad" not in again[1]
