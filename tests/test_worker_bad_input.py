"""Bad input gets a clear failure result or a dead letter with a reason, never a retry,
and the worker keeps going after each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from apps.ledger import LANES, stop_code
from ardiq import Ardiq, Job
from support.workers import WorkerProcess


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def still_works(app: Ardiq) -> None:
    job = await app.ref("add").enqueue(2, 3)
    r = await job.result(timeout=5)
    assert r is not None and r.success and r.value == 5


# Adds the entry and its job hash in one step, so a worker cannot finish the entry before
# the job hash exists (which would leave a job hash behind for a finished task).
RAW_ENTRY = """
local eid = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
redis.call('HSET', KEYS[2], 'fn', 'add', 'l', 'default', 's', 'q', 't', 0, 'enq', 1,
  'x', 0, 'e', eid)
return eid
"""


async def raw_entry(app: Ardiq, raw: aioredis.Redis, task_id: str, fields: dict[str, bytes]) -> str:
    """Add an entry by hand (as a broken producer would), with a job hash so status works."""
    flat = [x for pair in fields.items() for x in pair]
    keys = [app.keys.stream("default"), app.keys.job(task_id)]
    eid = await raw.eval(RAW_ENTRY, 2, *keys, *flat)  # type: ignore[misc]
    return bytes(eid).decode()


async def test_bad_input_fails_cleanly_and_worker_goes_on(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], raw: aioredis.Redis
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    await still_works(app)

    # A task name no worker knows: failure, dead letter, never retried.
    unknown = await app.send("x", 1, key="v")
    r = await unknown.result(timeout=5)
    assert r is not None and not r.success and r.value == "unknown task 'x'" and r.tries == 1
    await still_works(app)

    # A payload the serializer cannot read.
    entry = {"id": b"garbled", "fn": b"add", "p": b"\xc1", "t": b"0", "enq": b"1", "x": b"0"}
    await raw_entry(app, raw, "garbled", {**entry, "r": b"0"})
    garbled: Job[object] = app.job("garbled")
    r = await garbled.result(timeout=5)
    assert r is not None and not r.success and r.tries == 1
    assert r.value.startswith("undecodable payload"), r.value
    assert await garbled.status() == "complete"
    await still_works(app)

    # A payload that decodes but is not [args, kwargs, headers].
    await raw_entry(app, raw, "shapeless", {**entry, "id": b"shapeless", "p": b"\x05", "r": b"0"})
    r = await app.job("shapeless").result(timeout=5)
    assert r is not None and not r.success and r.value.startswith("undecodable payload")
    await still_works(app)

    # An entry missing required fields: dead letter "malformed entry".
    eid = (await raw.xadd(app.keys.stream("default"), {"id": b"broken"})).decode()
    await still_works(app)

    # A return value the serializer cannot encode.
    unser = await app.ref("unserializable").enqueue()
    r = await unser.result(timeout=5)
    assert r is not None and not r.success and r.tries == 1
    assert r.value.startswith("result could not be serialized"), r.value
    await still_works(app)

    dead = {d.task_id: d for d in await app.dead_letters()}
    assert dead[unknown.id].error == "unknown task 'x'"
    assert dead[unknown.id].args == [1] and dead[unknown.id].kwargs == {"key": "v"}
    assert dead[unknown.id].tries == 1
    assert dead["garbled"].error.startswith("undecodable payload")
    assert dead[unser.id].error.startswith("result could not be serialized")
    malformed = [d for d in dead.values() if d.error.startswith("malformed entry")]
    assert len(malformed) == 1 and eid in malformed[0].task_id, dead
    assert len(dead) == 5
    # Nothing is left pending or queued behind.
    assert await app.queue_size() == 0
    for lane in LANES:
        pending = await raw.xpending(app.keys.stream(lane), "ardiq")
        assert pending["pending"] == 0
    assert stop_code(worker) == 0, worker.output()
