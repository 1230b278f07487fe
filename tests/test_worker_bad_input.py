"""Bad input gets a clear failure result or a dead letter with a reason, never a retry,
and the worker keeps going after each."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable

import msgpack
import pytest
import redis.asyncio as aioredis
from apps.ledger import LANES, stop_code
from ardiq import Ardiq, Job
from support.redis_server import RedisServer
from support.workers import WorkerProcess
from test_cli import binary, clean_env


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


async def dead_error(app: Ardiq, raw: aioredis.Redis, task_id: str, timeout: float = 10) -> str:
    """The error of dead letter `task_id`, read raw: its `fn` field may not be UTF-8."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        err = await raw.hget(app.keys.dead_letter(task_id), "err")
        if err is not None:
            return bytes(err).decode()
        assert asyncio.get_running_loop().time() < deadline, f"no dead letter {task_id!r}"
        await asyncio.sleep(0.05)


async def test_non_utf8_id_or_name_is_dead_lettered_never_run_lossily(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], raw: aioredis.Redis
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    await still_works(app)
    stream = app.keys.stream("default")
    payload = msgpack.packb([[2, 3], {}, None])
    bad_id = await raw.xadd(stream, {"id": b"job-\xff", "fn": b"add", "p": payload, "t": b"0"})
    bad_fn = await raw.xadd(stream, {"id": b"job-ok", "fn": b"ad\xc3d", "p": payload, "t": b"0"})
    await still_works(app)
    # The same reason from both workers (and the native engine's constants).
    err = await dead_error(app, raw, f"entry:{bad_id.decode()}")
    assert err == "malformed entry (id is not UTF-8)"
    err = await dead_error(app, raw, f"entry:{bad_fn.decode()}")
    assert err == "malformed entry (fn is not UTF-8)"
    # Shown by the producer too (names with replacement marks), never a decode error.
    letters = {d.task_id: d for d in await app.dead_letters()}
    assert letters[f"entry:{bad_fn.decode()}"].fn_name == "ad\ufffdd"
    # Nothing ran, nor left a result, under a lossily converted id or name.
    assert await app.job("job-\ufffd").status() == "not_found"
    assert await app.job("job-ok").status() == "not_found"
    assert stop_code(worker) == 0, worker.output()


# A task name and id that try to forge a log line, overwrite one and clear the screen.
FORGED = "2030-01-01T00:00:00.000Z INFO     ardiq: FORGED"
EVIL_NAME = f"no-such\n{FORGED}\r\x1b[2J\x9b31m"
EVIL_ID = f"id\r\n{FORGED}-ID\x1b[2J"


def assert_no_controls(text: str) -> None:
    for bad in ("\x1b", "\r", "\x9b"):
        assert bad not in text, repr(text)
    assert not any(line.startswith("2030-01-01") for line in text.splitlines()), text


async def test_control_characters_from_redis_are_escaped_in_text_output(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    job = await app.ref(EVIL_NAME).options(task_id=EVIL_ID).enqueue(1)
    r = await job.result(timeout=10)
    assert r is not None and not r.success
    assert stop_code(worker) == 0
    out = worker.output()
    assert "\\n" + FORGED in out and "\\x1b[2J" in out, out  # logged, escaped
    assert_no_controls(out)

    # The ops commands' text output (JSON stays JSON-escaped).
    env = clean_env(ARDIQ_REDIS_URL=redis_url)
    for args in (["dlq", "list"], ["job", EVIL_ID]):
        proc = subprocess.run(
            [binary(), *args, "--queue", queue, "--lanes", ",".join(LANES)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert FORGED in proc.stdout and "\\x1b[2J" in proc.stdout, proc.stdout
        assert_no_controls(proc.stdout + proc.stderr)
        as_json = subprocess.run(
            [binary(), *args, "--queue", queue, "--lanes", ",".join(LANES), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        data = json.loads(as_json.stdout)
        shown = data["dead_letters"][0] if args[0] == "dlq" else data
        assert (shown["id"], shown["name"]) == (EVIL_ID, EVIL_NAME), shown


async def test_a_job_key_of_the_wrong_type_does_not_wedge_reclaim(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], raw: aioredis.Redis
) -> None:
    # An entry a dead worker held, whose job key someone overwrote with a string: reading
    # its fields failed the whole `reclaim` call, the page was retried for ever and a
    # burst worker never exited. Now it is taken over like any other, and so is the
    # healthy orphan behind it.
    from apps.ledger import exit_code

    app = make_app(priorities=LANES)
    stream = app.keys.stream("default")
    payload = msgpack.packb([[2, 3], {}, None])
    fields = {"fn": "add", "p": payload, "t": "0", "enq": "1", "x": "0", "r": "0"}
    await raw.xgroup_create(stream, "ardiq", id="0", mkstream=True)
    await raw.xadd(stream, {"id": "garbled", **fields})
    await raw.eval(
        RAW_ENTRY,
        2,
        stream,
        app.keys.job("healthy"),
        "id",
        "healthy",
        *[x for kv in fields.items() for x in kv],
    )  # type: ignore[misc]
    await raw.set(app.keys.job("garbled"), "not a hash")
    await raw.xreadgroup("ardiq", "ghost", {stream: ">"}, count=10)  # then it died
    held = [eid for eid, _ in await raw.xrange(stream)]
    # ... long ago: both are past their lease when the burst worker looks.
    await raw.xclaim(stream, "ardiq", "ghost", 0, held, idle=60_000, justid=True)
    worker = start_worker("apps.basic:app", "--burst", env={"ARDIQ_TEST_IDLE_MS": "300"})
    assert exit_code(worker, 30) == 0, worker.output()
    pending = await raw.xpending(stream, "ardiq")
    assert pending["pending"] == 0, pending
    for task_id in ("garbled", "healthy"):
        r = await app.result(task_id)
        assert r is not None and r.success and r.value == 5, (task_id, r)


@pytest.mark.parametrize("password", ["wrong-one", None])
def test_refused_credentials_stop_the_worker_with_a_clear_error(
    own_redis: Callable[..., RedisServer],
    start_worker: Callable[..., WorkerProcess],
    password: str | None,
) -> None:
    """Retrying cannot fix credentials: every kind of worker says so and exits non-zero,
    at once, without the password in its output (the pure loop retried for ever before)."""
    server = own_redis("--requirepass", "right-one")
    auth = f":{password}@" if password else ""
    url = server.url.replace("redis://", f"redis://{auth}")
    worker = start_worker("apps.ops_app:app", env={"ARDIQ_REDIS_URL": url})
    code = worker.wait(timeout=20)
    out = worker.output()
    assert code != 0, out
    assert "refused the credentials" in out, out
    assert "wrong-one" not in out and "right-one" not in out, out
