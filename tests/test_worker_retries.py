"""Retries: attempt counts, backoff, Retry(delay_ms), the default growing delay, timeouts,
and the on_error hooks (apps.basic records every hook call; its first hook always raises)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, stop_code
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


def attempts(items: list[str], name: str) -> list[list[str]]:
    """The ledger's `attempt` records of one task, split into fields after the name."""
    return [x.split(":")[1:] for x in items if x.split(":")[0] == name]


def hooks(items: list[str], name: str) -> list[tuple[int, bool, str]]:
    """(tries, will_retry, exception type) of each hook call for task `name`."""
    out = []
    for x in items:
        fn, _task_id, tries, will_retry, exc = x.split(":")[-5:]
        if fn == name:
            out.append((int(tries), will_retry == "True", exc))
    return out


async def test_attempt_counts_backoff_and_hooks(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    fails = await app.ref("always_fails").enqueue("boom")  # max_retries=2, backoff 50 ms
    backoff = await app.ref("backoff_fails").enqueue()  # max_retries=2, backoff 300 ms
    retry_ok = await app.ref("retry_then_ok").enqueue(3)  # Retry(delay_ms=30) twice, then ok
    retry_delay = await app.ref("retry_delay").enqueue()  # Retry(delay_ms=400) once
    forever = await app.ref("retry_forever").enqueue()  # Retry every time, max_retries=1
    worker = start_worker("apps.basic:app")

    r = await fails.result(timeout=10)
    assert r is not None and not r.success and not r.aborted
    assert r.tries == 3 and r.value == "ValueError('boom')"
    rb = await backoff.result(timeout=10)
    assert rb is not None and not rb.success and rb.tries == 3
    ro = await retry_ok.result(timeout=10)
    assert ro is not None and ro.success and ro.value == 3 and ro.tries == 3
    rd = await retry_delay.result(timeout=10)
    assert rd is not None and rd.success and rd.value == 2 and rd.tries == 2
    rf = await forever.result(timeout=10)
    assert rf is not None and not rf.success and rf.tries == 2
    assert rf.value.startswith("Retry('again'")

    items = await ledger.items("attempt")
    # max_retries + 1 attempts in all, numbered from 1.
    assert attempts(items, "always_fails") == [["1"], ["2"], ["3"]]
    assert await ledger.items("tries") == ["1", "2", "3"]
    assert attempts(items, "retry_forever") == [["1"], ["2"]]

    # backoff_ms=300 between attempts; Retry(delay_ms=400) overrides it.
    times = [int(t) for _, t in attempts(items, "backoff_fails")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 2 and all(300 <= g <= 300 + 400 for g in gaps), gaps
    (_, t1), (_, t2) = attempts(items, "retry_delay")
    assert 400 <= int(t2) - int(t1) <= 400 + 400, int(t2) - int(t1)

    # Failed attempts end in the dead letters, with their tries.
    dead = {d.task_id: d for d in await app.dead_letters()}
    assert set(dead) == {fails.id, backoff.id, forever.id}
    assert dead[fails.id].error == "ValueError('boom')" and dead[fails.id].tries == 3
    assert dead[fails.id].args == ["boom"]

    # Hooks: every failed attempt, with will_retry; a Retry that runs again fires none,
    # the last one does; the first hook raising changes nothing.
    calls = await ledger.items("hook")
    assert hooks(calls, "always_fails") == [
        (1, True, "ValueError"),
        (2, True, "ValueError"),
        (3, False, "ValueError"),
    ]
    assert hooks(calls, "retry_then_ok") == []
    assert hooks(calls, "retry_delay") == []
    assert hooks(calls, "retry_forever") == [(2, False, "Retry")]
    assert all(f":{fails.id}:" in c for c in calls if c.startswith("always_fails:"))
    assert stop_code(worker) == 0
    out = worker.output()
    assert "exploding_hook" in out  # the raising hook was logged...
    assert "recording_hook" not in out  # ...and the next hook still ran


async def test_default_backoff_grows_and_retry_waits_scheduled(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    job = await app.ref("default_backoff").enqueue()  # fails once, no backoff_ms: waits 1 s
    worker = start_worker("apps.basic:app")
    await ledger.wait_for("attempt", 1)
    # While it waits out the backoff it is scheduled, with one attempt made.
    info = await job.info()
    for _ in range(50):
        info = await job.info()
        if info is not None and info.status == "scheduled":
            break
    assert info is not None and info.status == "scheduled", info
    assert info.tries == 1 and info.scheduled_at is not None
    r = await job.result(timeout=10)
    assert r is not None and r.success and r.value == 2 and r.tries == 2
    (_, t1), (_, t2) = attempts(await ledger.items("attempt"), "default_backoff")
    assert 1000 <= int(t2) - int(t1) <= 1000 + 400, int(t2) - int(t1)
    assert hooks(await ledger.items("hook"), "default_backoff") == [(1, True, "KeyError")]
    assert stop_code(worker) == 0


async def test_timeout_fails_attempt_and_is_retried(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    too_slow = await app.ref("too_slow").enqueue()  # timeout=0.2, max_retries=0
    slow_then_fast = await app.ref("slow_then_fast").enqueue()  # times out once, then ok
    worker = start_worker("apps.basic:app")

    r = await too_slow.result(timeout=10)
    assert r is not None and not r.success and r.tries == 1
    assert "timed out after 0.2s" in r.value
    assert r.duration_ms < 2000
    r2 = await slow_then_fast.result(timeout=10)
    assert r2 is not None and r2.success and r2.value == 2 and r2.tries == 2
    assert attempts(await ledger.items("attempt"), "slow_then_fast") == [["1"], ["2"]]

    calls = await ledger.items("hook")
    assert hooks(calls, "too_slow") == [(1, False, "TimeoutError")]
    assert hooks(calls, "slow_then_fast") == [(1, True, "TimeoutError")]
    dead = await app.dead_letters()
    assert [d.task_id for d in dead] == [too_slow.id]
    assert "timed out after 0.2s" in dead[0].error
    assert stop_code(worker) == 0
