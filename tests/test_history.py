"""Task history (PROTOCOL.md, History): `P history`, `P attempts:<id>` and `P stats`, as
every worker kind writes them, read back with `job.attempts()` and `app.history()`; the
cap, `history=0`, a lost task, the trim by age, the settings and the ACL users."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from apps.ledger import LANES, exit_code, stop_code, wait_until
from ardiq import Ardiq, Attempt, HistoryEntry
from ardiq.worker_settings import WorkerOverrides, WorkerSettings
from support.redis_server import RedisServer
from support.workers import WorkerProcess, native_binary

APP = "apps.history_app:app"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def burst(start_worker: Callable[..., WorkerProcess], **env: str) -> None:
    worker = start_worker(APP, "--burst", env=env)
    assert exit_code(worker, 60) == 0, worker.output()


async def stats(admin: Any, app: Ardiq) -> Counter[str]:
    """`P stats` summed per kind over its minutes."""
    out: Counter[str] = Counter()
    for field, count in (await admin.hgetall(app.keys.stats)).items():
        kind, _, minute = field.decode().rpartition(":")
        assert minute.isdigit(), field
        out[kind] += int(count)
    return out


# ------------------------------------------------------------------ what is kept
async def test_a_task_that_fails_twice_then_succeeds(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], admin: Any
) -> None:
    app = make_app(priorities=LANES)
    job = await app.ref("fails_twice").enqueue()
    burst(start_worker)
    result = await job.result()
    assert result is not None and result.success and result.tries == 3, result

    attempts = await job.attempts()
    assert [(a.tries, a.kind, a.error) for a in attempts] == [
        (1, "retry", "ValueError('attempt 1 failed')"),
        (2, "retry", "ValueError('attempt 2 failed')"),
    ]
    assert all(isinstance(a, Attempt) for a in attempts)
    worker = attempts[0].worker
    assert worker.startswith("w-") and attempts[1].worker == worker
    for a in attempts:
        assert 0 < a.started_ms <= a.finished_ms <= result.finish
    assert attempts[0].finished_ms <= attempts[1].started_ms
    assert await asyncio.to_thread(job.attempts_sync) == attempts
    # Once the task completed, its attempts live as long as its result.
    ttl = await admin.pttl(app.keys.attempts(job.id))
    assert 0 < ttl <= app.result_ttl_ms, ttl

    (entry,) = await app.history()
    assert isinstance(entry, HistoryEntry)
    assert (entry.task_id, entry.fn_name, entry.priority, entry.kind) == (
        job.id,
        "fails_twice",
        "default",
        "ok",
    )
    assert (entry.tries, entry.error, entry.worker) == (3, None, worker)
    assert (entry.enqueued_ms, entry.started_ms, entry.finished_ms) == (
        result.enqueue_time,
        result.start,
        result.finish,
    )
    assert entry.duration_ms == result.finish - result.start
    assert await asyncio.to_thread(app.history_sync) == [entry]
    assert await stats(admin, app) == Counter(retry=2, ok=1)


async def test_fail_expired_and_abort_entries(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], admin: Any
) -> None:
    app = make_app(priorities=LANES)
    oks = await app.enqueue_many([app.ref("noop").prepare(i) for i in range(3)])
    failed = await app.ref("boom").enqueue("x" * 5000)  # the error is cut to 2,000 bytes
    twice = await app.ref("boom_twice").enqueue("k")  # a retry, then a dead letter
    expired = await app.ref("noop").options(expire_ms=1).enqueue(9)
    queued_abort = await app.ref("noop").options(delay_ms=60_000).enqueue(8)
    assert await queued_abort.abort()  # finalized by the producer: no worker saw it
    await asyncio.sleep(0.05)  # `expired` is past its expiry before any worker fetches it
    worker = start_worker(APP)
    running = await app.ref("sleeper").enqueue(30)
    await wait_until(lambda: _running(running), 20, "the sleeper to run")
    assert await running.abort()
    r = await running.result(timeout=20)
    assert r is not None and r.aborted, r
    await wait_until(lambda: _all_done([*oks, failed, twice, expired]), 20, "every result")
    assert stop_code(worker) == 0, worker.output()

    entries = {e.task_id: e for e in await app.history()}
    assert set(entries) == {*(j.id for j in oks), failed.id, twice.id, expired.id, running.id}
    assert queued_abort.id not in entries
    for j in oks:
        assert entries[j.id].kind == "ok" and entries[j.id].error is None
    fail = entries[failed.id]
    assert (fail.kind, fail.tries, fail.fn_name) == ("fail", 1, "boom")
    assert fail.error is not None and fail.error.startswith("RuntimeError('xxx")
    assert len(fail.error.encode()) == 2000
    assert (entries[twice.id].kind, entries[twice.id].tries) == ("fail", 2)
    assert entries[twice.id].error == "KeyError('k')"
    exp = entries[expired.id]
    assert (exp.kind, exp.started_ms, exp.tries) == ("expired", 0, 0), exp  # never tried
    assert exp.error == (await expired.result()).value  # type: ignore[union-attr]
    ab = entries[running.id]
    assert (ab.kind, ab.error, ab.fn_name) == ("abort", "aborted", "sleeper")
    assert ab.started_ms > 0

    # Newest first; a kind filter and a limit.
    newest = await app.history()
    assert [e.finished_ms for e in newest] == sorted((e.finished_ms for e in newest), reverse=True)
    assert [e.task_id for e in await app.history(kind="fail")] == [
        e.task_id for e in newest if e.kind == "fail"
    ]
    assert len(await app.history(limit=2)) == 2 and await app.history(limit=0) == []
    assert [e.task_id for e in await app.history(limit=1, kind="ok")] == [
        next(e.task_id for e in newest if e.kind == "ok")
    ]

    # Attempts: each failed one, with its kind.
    assert [(a.kind, a.tries) for a in await failed.attempts()] == [("fail", 1)]
    assert len((await failed.attempts())[0].error.encode()) == 2000
    assert [(a.kind, a.tries, a.error) for a in await twice.attempts()] == [
        ("retry", 1, "KeyError('k')"),
        ("fail", 2, "KeyError('k')"),
    ]
    (a,) = await expired.attempts()
    assert (a.kind, a.started_ms, a.tries) == ("expired", 0, 0)
    (a,) = await running.attempts()
    assert (a.kind, a.error) == ("abort", "aborted") and a.started_ms > 0
    assert await oks[0].attempts() == [] and await queued_abort.attempts() == []

    # The counters add up to what was done, per kind.
    assert await stats(admin, app) == Counter(ok=3, fail=2, retry=1, expired=1, abort=1)


async def _running(job: Any) -> bool:
    return str(await job.status()) == "running"


async def _all_done(jobs: list[Any]) -> bool:
    for job in jobs:
        if await job.result() is None:
            return False
    return True


async def test_history_zero_writes_none_of_the_keys(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], admin: Any
) -> None:
    app = make_app(priorities=LANES)
    jobs = [
        await app.ref("noop").enqueue(),
        await app.ref("fails_twice").enqueue(),
        await app.ref("boom").enqueue("no"),
        await app.ref("noop").options(expire_ms=1).enqueue(),
    ]
    await asyncio.sleep(0.05)
    burst(start_worker, ARDIQ_TEST_HISTORY="0")
    for job in jobs:
        assert await job.result() is not None
        assert await job.attempts() == []
        assert not await admin.exists(app.keys.attempts(job.id))
    assert not await admin.exists(app.keys.history, app.keys.stats)
    assert await app.history() == []


async def test_history_is_capped(
    own_redis: Callable[..., RedisServer], queue: str, worker_kind: str, tmp_path: Path
) -> None:
    # Redis trims `MAXLEN ~` in whole stream nodes: small nodes make the cap visible.
    server = own_redis("--stream-node-max-entries", "10")
    app = Ardiq(server.url, queue_name=queue, priorities=LANES)
    admin = aioredis.Redis.from_url(server.url)
    try:
        jobs = await app.enqueue_many([app.ref("noop").prepare(i) for i in range(50)])
        env = {"ARDIQ_REDIS_URL": server.url, "ARDIQ_TEST_QUEUE": queue, "ARDIQ_TEST_HISTORY": "5"}
        worker = WorkerProcess(worker_kind, APP, "--burst", env=env, log_dir=tmp_path)
        try:
            assert exit_code(worker, 60) == 0, worker.output()
        finally:
            worker.close()
        assert all([await j.result() for j in jobs])
        kept = await admin.xlen(app.keys.history)
        assert 5 <= kept <= 5 + 10, kept  # the cap, plus at most one node
        entries = await app.history()
        assert len(entries) == kept
        # The newest are kept.
        newest = {r.value for r in [await j.result() for j in jobs[-5:]] if r is not None}
        assert all(n in {e.task_id for e in entries} for n in (j.id for j in jobs[-5:])), newest
        assert (await stats(admin, app))["ok"] == 50  # the counters count every task
    finally:
        await admin.aclose()
        await app.aclose()


# -------------------------------------------------------------- lost and trimmed
async def test_a_lost_task_is_in_the_history_as_lost(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], admin: Any
) -> None:
    app = make_app(priorities=LANES)
    # Cap 1: the first delivery lost with its worker dead-letters the task.
    env = {"ARDIQ_TEST_MAX_DELIVERIES": "1", "ARDIQ_TEST_IDLE_MS": "1000"}
    killer = await app.ref("kill_worker").enqueue()
    victim = start_worker(APP, env=env)
    assert exit_code(victim, 30) == 17, victim.output()
    rescuer = start_worker(APP, env=env)
    result = await killer.result(timeout=30)
    assert stop_code(rescuer) == 0, rescuer.output()
    assert result is not None and result.value == "worker lost (delivered 1 times)", result

    (entry,) = await app.history()
    assert (entry.task_id, entry.kind, entry.fn_name, entry.tries) == (
        killer.id,
        "lost",
        "kill_worker",
        1,
    )
    assert entry.error == result.value and entry.started_ms == 0
    assert entry.worker.startswith("w-")  # the worker that found it lost
    (a,) = await killer.attempts()
    assert (a.kind, a.tries, a.error, a.worker) == ("lost", 1, result.value, entry.worker)
    assert await stats(admin, app) == Counter(lost=1)


async def test_workers_trim_history_by_age(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], admin: Any
) -> None:
    app = make_app(priorities=LANES)
    await app.enqueue_many([app.ref("noop").prepare(i) for i in range(20)])
    burst(start_worker)
    assert await admin.xlen(app.keys.history) == 20
    await admin.hset(app.keys.stats, mapping={"ok:1000": 7, "not-ours": 1})
    fresh = f"ok:{time.time_ns() // 60_000_000_000 + 1}"  # next minute: never stale yet
    await admin.hset(app.keys.stats, fresh, 1)
    await asyncio.sleep(1.2)
    # A worker that keeps history one second trims, at its start, what is older.
    worker = start_worker(APP, env={"ARDIQ_TEST_HISTORY_TTL_S": "1"})

    async def trimmed() -> bool:
        return await admin.xlen(app.keys.history) == 0 and not await admin.hexists(
            app.keys.stats, "ok:1000"
        )

    await wait_until(trimmed, 20, "the history trim")
    assert stop_code(worker) == 0, worker.output()
    left = await admin.hgetall(app.keys.stats)
    assert left[b"not-ours"] == b"1" and left[fresh.encode()] == b"1"
    assert await app.history() == []


# -------------------------------------------------------------------- settings
def test_settings_are_checked() -> None:
    url = "redis://h"
    for bad in (-1, -1000):
        with pytest.raises(ValueError, match="history must be >= 0"):
            Ardiq(url, history=bad)
    for wrong in ("10", 1.5, True, None):
        with pytest.raises(TypeError, match="history must be an int"):
            Ardiq(url, history=wrong)
    for bad_ttl in (0, -1, math.nan, math.inf, 1e300):
        with pytest.raises(ValueError, match="history_ttl_s must be above 0"):
            Ardiq(url, history_ttl_s=bad_ttl)
    with pytest.raises(TypeError, match="history_ttl_s"):
        Ardiq(url, history_ttl_s="60")
    app = Ardiq(url, history=5, history_ttl_s=90)
    assert (app.history_size, app.history_ttl_s) == (5, 90.0)
    assert (Ardiq(url).history_size, Ardiq(url).history_ttl_s) == (0, 86400.0)  # off by default

    # The worker's overrides (the command line's --history, --history-ttl).
    s = WorkerSettings.of(app)
    assert (s.history, s.history_ttl_ms) == (5, 90_000)
    s = WorkerSettings.of(app, WorkerOverrides(history=7, history_ttl_s=1.5))
    assert (s.history, s.history_ttl_ms) == (7, 1500)
    with pytest.raises(ValueError, match="history must be >= 0"):
        WorkerSettings.of(app, WorkerOverrides(history=-1))
    with pytest.raises(ValueError, match="history_ttl_s"):
        WorkerSettings.of(app, WorkerOverrides(history_ttl_s=0))


async def test_read_arguments_are_checked(make_app: Callable[..., Ardiq]) -> None:
    app = make_app()
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="limit"):
            await app.history(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of ok, fail, expired, abort, lost"):
        await app.history(kind="retry")
    assert await app.history() == [] and await app.job("nope").attempts() == []


@pytest.mark.parametrize("command", ["ardiq", "python -m ardiq"])
def test_the_command_line_overrides_history(
    command: str, redis_server: RedisServer, queue: str
) -> None:
    """`--history 0` (and ARDIQ_HISTORY=0) turn the app's history off, in the binary and
    in `python -m ardiq` alike; bad values are usage errors."""
    if command == "ardiq":
        binary = native_binary()
        if binary is None:
            pytest.fail("the native `ardiq` binary is not built: run `make build` first")
        argv = [binary]
    else:
        argv = [sys.executable, "-m", "ardiq"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARDIQ_", "VIRTUAL_ENV"))}
    env.update(
        ARDIQ_REDIS_URL=redis_server.url,
        ARDIQ_TEST_QUEUE=queue,
        ARDIQ_HANDOVER="0",  # `python -m ardiq` stays in Python
        VIRTUAL_ENV=sys.prefix,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "python")]),
    )

    def run(*flags: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "run", APP, "--burst", "-q", *flags],
            env={**env, **extra},
            cwd=ROOT / "tests",
            capture_output=True,
            text=True,
            timeout=60,
        )

    app = Ardiq(redis_server.url, queue_name=queue, priorities=LANES)
    try:
        jobs = []
        for flags, extra in ((["--history", "0"], {}), ([], {"ARDIQ_HISTORY": "0"})):
            jobs.append(app.ref("fails_twice").enqueue_sync())
            out = run(*flags, **extra)
            assert out.returncode == 0, out.stderr
        for job in jobs:
            r = job.result_sync()
            assert r is not None and r.success and job.attempts_sync() == []
        assert app.history_sync() == []
        for bad in (["--history", "-1"], ["--history", "x"], ["--history-ttl", "0"]):
            out = run(*bad)
            assert out.returncode == 2 and bad[1] in out.stderr, (bad, out.stderr)
        out = run(**{"ARDIQ_HISTORY_TTL": "-5"})
        assert out.returncode == 2 and "-5" in out.stderr, out.stderr
    finally:
        app.close_sync()


# ------------------------------------------------------------------------ ACL
async def test_readme_acl_users_keep_and_read_history(
    own_redis: Callable[..., RedisServer],
    queue: str,
    worker_kind: str,
    tmp_path: Path,
) -> None:
    """The README's least-privilege users may write (worker), trim (worker) and read
    (producer) the history: nothing refused, no warning."""
    section = (ROOT / "README.md").read_text().split("## Security", 1)[1].split("\n## ", 1)[0]
    args: list[str] = []
    for line in section.splitlines():
        if line.startswith(("ACL SETUSER ardiq-producer ", "ACL SETUSER ardiq-worker ")):
            words = line.split()[2:]
            args += ["--user", *(f">{words[0]}-pw" if w.startswith(">") else w for w in words)]
    server = own_redis(*args)

    def url(user: str) -> str:
        return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"

    app = Ardiq(url("ardiq-producer"), queue_name=queue, priorities=LANES)
    admin = aioredis.Redis.from_url(server.url)
    try:
        ok = await app.ref("noop").enqueue()
        flaky = await app.ref("fails_twice").enqueue()
        env = {"ARDIQ_REDIS_URL": url("ardiq-worker"), "ARDIQ_TEST_QUEUE": queue}
        worker = WorkerProcess(worker_kind, APP, "--burst", env=env, log_dir=tmp_path)
        try:
            assert exit_code(worker, 60) == 0, worker.output()
            assert "cannot trim" not in worker.output()
        finally:
            worker.close()
        assert {e.task_id for e in await app.history()} == {ok.id, flaky.id}
        assert [a.kind for a in await flaky.attempts()] == ["retry", "retry"]
        assert await admin.hlen(app.keys.stats) >= 2
        denied = []
        for e in await admin.execute_command("ACL", "LOG"):
            pairs = e.items() if isinstance(e, dict) else zip(e[::2], e[1::2], strict=True)
            fields = {_text(k): _text(v) for k, v in pairs}
            if fields["object"] != "config|get":  # the optional eviction-policy probe
                denied.append(fields)
        assert denied == [], denied
    finally:
        await admin.aclose()
        await app.aclose()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# ------------------------------------------------------- lifetimes (the scripts')
async def test_attempts_take_the_result_lifetime(
    make_app: Callable[..., Ardiq], admin: Any
) -> None:
    """Kept with the result (forever: no TTL; results off: deleted); live again after a
    retry: an earlier run's TTL is cleared. The scripts decide, so one engine shows it."""
    for ttl in (0, -1):
        app = make_app(history=1000, result_ttl_ms=ttl, queue_name=f"h-{ttl}-{time.monotonic_ns()}")

        @app.task(max_retries=0)
        async def fails() -> None:
            raise ValueError("no")

        job = await fails.enqueue()
        app.burst = True
        await app.run(engine="python")
        key = app.keys.attempts(job.id)
        if ttl == 0:
            assert not await admin.exists(key)
        else:
            assert await admin.llen(key) == 1 and await admin.pttl(key) == -1

    app = make_app(history=1000, queue_name=f"h-live-{time.monotonic_ns()}")

    @app.task(max_retries=1, backoff_ms=60_000)
    async def fails_once() -> None:
        raise ValueError("later")

    key = app.keys.attempts("given")
    await admin.rpush(key, '{"n":1,"k":"fail","w":"old","st":0,"fin":1,"err":"old run"}')
    await admin.pexpire(key, 60_000)
    job = await fails_once.options(task_id="given").enqueue()
    worker = asyncio.ensure_future(app.run(engine="python"))

    async def scheduled() -> bool:  # the first attempt failed; the retry waits a minute
        return str(await job.status()) == "scheduled"

    await wait_until(scheduled, 20, "the retry")
    app.stop()
    await worker
    assert [a.error for a in await job.attempts()] == ["old run", "ValueError('later')"]
    assert await admin.pttl(key) == -1
