"""Isolated tasks (`@app.task(isolated=True)`): sync bodies in child processes, on every
worker kind. A timeout or an abort kills the child, a crash fails the attempt and the
worker goes on, children are recycled by count and memory, and none outlives its worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from apps.ledger import Ledger, stop_code, wait_until
from ardiq import Ardiq, IsolatedTaskError
from support.workers import WorkerProcess

APP = "apps.isolated:app"


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, timeout: float = 5.0) -> None:
    async def dead() -> bool:
        return not alive(pid)

    await wait_until(dead, timeout, f"process {pid} to be gone")


async def test_results_exceptions_and_context_round_trip(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app()
    worker = start_worker(APP)
    job = await app.ref("whoami").enqueue(2, y=3)
    r = await job.result(timeout=20)
    assert r is not None and r.success, r
    value = r.value
    assert value["pid"] != worker.pid and value["worker"] == worker.pid  # a child of it
    assert value["task_id"] == job.id and value["name"] == "whoami" and value["tries"] == 1
    assert value["sum"] == 5 and value["data"] == b"\x00bytes"
    # The environment's own interpreter (inside `ardiq run` too, not the binary).
    assert Path(value["python"]).parent == Path(sys.executable).parent

    failed = await app.ref("fail").enqueue("bad input")
    r = await failed.result(timeout=10)
    assert r is not None and not r.success and r.value == "ValueError('bad input')"
    (letter,) = await app.dead_letters()
    assert letter.task_id == failed.id and letter.error == "ValueError('bad input')"
    assert await ledger.items("hook") == ["fail:ValueError:False"]

    retried = await app.ref("retry_once").enqueue()
    r = await retried.result(timeout=10)
    assert r is not None and r.success and r.value == 2 and r.tries == 2

    reported = await app.ref("report").enqueue()
    r = await reported.result(timeout=10)
    assert r is not None and r.value == "reported"
    p = await reported.progress()
    assert p is not None and p.value == {"done": 7} and p.message == "seven" and p.tries == 1

    plain = await app.ref("plain").enqueue(21)
    r = await plain.result(timeout=10)
    assert r is not None and r.value == 42
    assert stop_code(worker) == 0, worker.output()


async def test_stuck_in_c_is_killed_at_its_timeout(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app()
    worker = start_worker(APP)
    job = await app.ref("stuck_in_c").enqueue(60)
    (pid,) = await ledger.wait_for("stuck", 1, timeout=20)
    r = await job.result(timeout=10)
    assert r is not None and not r.success and r.value == "timed out after 1s"
    assert r.duration_ms < 5000, r
    await gone(int(pid))
    # The worker goes on, on a new child.
    after = await app.ref("pid").enqueue()
    r2 = await after.result(timeout=20)
    assert r2 is not None and r2.success and r2.value != int(pid)
    assert await ledger.items("woke") == []
    assert stop_code(worker) == 0, worker.output()


async def test_timeout_counts_from_the_body_start(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    # Importing the task's module in a new child takes 1.5 s, longer than the task's
    # timeout of 1 s: the body still gets its whole second.
    app = make_app()
    worker = start_worker(APP, env={"ISO_SLOW_IMPORT": "1.5"})
    r = await (await app.ref("quick").enqueue()).result(timeout=20)
    assert r is not None and r.success and r.value == "in time", r
    assert r.duration_ms >= 1500
    assert stop_code(worker) == 0, worker.output()


async def test_crashing_child_fails_its_attempt_and_the_worker_keeps_serving(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app()
    worker = start_worker(APP)
    crash = await app.ref("segfault").enqueue()
    others = [await app.ref("plain").enqueue(i) for i in range(5)]
    r = await crash.result(timeout=30)
    assert r is not None and not r.success and r.tries == 2  # retried like a failure
    assert "killed by signal SIGSEGV" in r.value, r.value
    assert len(await ledger.items("crash")) == 2
    for i, job in enumerate(others):
        ri = await job.result(timeout=10)
        assert ri is not None and ri.value == 2 * i
    (letter,) = await app.dead_letters()
    assert "SIGSEGV" in letter.error

    exited = await app.ref("hard_exit").enqueue(3)
    r = await exited.result(timeout=20)
    assert r is not None and not r.success and "exited with code 3" in r.value

    # Still serving isolated tasks, on a fresh child.
    again = await app.ref("whoami").enqueue(1)
    r = await again.result(timeout=20)
    assert r is not None and r.success and r.value["sum"] == 1
    assert worker.proc.poll() is None
    assert stop_code(worker) == 0, worker.output()


async def test_abort_kills_the_child(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app()
    worker = start_worker(APP)
    job = await app.ref("stuck_with_grandchild").enqueue(60)
    (pid,) = await ledger.wait_for("stuck", 1, timeout=20)
    (grandchild,) = await ledger.items("grandchild")
    assert await job.abort() is True
    r = await job.result(timeout=5)
    assert r is not None and r.aborted and r.value == "aborted"
    await gone(int(pid))
    await gone(int(grandchild))  # what the body started went with it
    assert await ledger.items("hook") == []
    assert stop_code(worker) == 0, worker.output()


async def test_pool_is_bounded_by_the_concurrency(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app()
    worker = start_worker(APP)  # concurrency 4
    slow = app.ref("slow_pid")
    jobs = await app.enqueue_many([slow.prepare(0.3) for _ in range(12)])
    pids = set()
    for job in jobs:
        r = await job.result(timeout=30)
        assert r is not None and r.success, r
        pids.add(r.value)
    assert 2 <= len(pids) <= 4, pids  # ran side by side, on at most 4 children
    assert stop_code(worker) == 0, worker.output()


async def test_children_are_recycled_after_max_tasks(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app()
    worker = start_worker(APP, "--max-tasks-per-child", "3")
    pids = []
    for _ in range(7):  # one at a time: each reuses the idle child while it may
        r = await (await app.ref("pid").enqueue()).result(timeout=20)
        assert r is not None and r.success
        pids.append(r.value)
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    assert len(set(pids)) == 3
    await gone(pids[0])
    await gone(pids[3])
    assert stop_code(worker) == 0, worker.output()


async def test_children_are_recycled_above_max_memory(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app()
    worker = start_worker(APP, env={"ISO_MAX_MEMORY": "150"})

    async def run(name: str, *args: int) -> int:
        r = await (await app.ref(name).enqueue(*args)).result(timeout=20)
        assert r is not None and r.success, r
        value: int = r.value
        return value

    first = await run("pid")
    assert await run("pid") == first  # well below the limit: kept
    assert await run("hog", 200) == first  # this task takes it above
    await gone(first)
    second = await run("pid")
    assert second != first
    assert stop_code(worker) == 0, worker.output()


async def test_no_child_outlives_its_worker(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app()
    # A graceful stop ends the idle children.
    worker = start_worker(APP)
    r = await (await app.ref("pid").enqueue()).result(timeout=20)
    assert r is not None and r.success
    idle = r.value
    assert alive(idle)
    assert stop_code(worker) == 0, worker.output()
    await gone(idle)

    # SIGKILL of the worker ends a child stuck in C code.
    worker = start_worker(APP)
    await app.ref("stuck_no_timeout").enqueue(60)
    (pid,) = await ledger.wait_for("stuck", 1, timeout=20)
    worker.kill()
    await gone(int(pid))


async def test_inline_runs_isolated_tasks_in_a_child(make_app: Callable[..., Ardiq]) -> None:
    from apps import isolated
    from ardiq import testing

    async with testing.inline(isolated.app):
        r = await (await isolated.whoami.enqueue(4)).result()
        assert r is not None and r.success and r.value["worker"] == os.getpid()
        assert r.value["pid"] != os.getpid()


def test_isolated_needs_a_sync_module_level_function(make_app: Callable[..., Ardiq]) -> None:
    app = make_app()

    async def body() -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        app.task(isolated=True)(body)
    with pytest.raises(TypeError, match="async def"):
        app.cron(every=60, isolated=True)(body)

    def nested() -> None:
        pass

    with pytest.raises(TypeError, match="module level"):
        app.task(isolated=True)(nested)
    assert app.tasks == []


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("max_tasks_per_child", 0, ValueError),
        ("max_tasks_per_child", "10", TypeError),
        ("max_memory_per_child", -1, ValueError),
        ("max_memory_per_child", 1.5, TypeError),
    ],
)
def test_recycling_settings_are_checked(
    make_app: Callable[..., Ardiq], setting: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=setting):
        make_app(**{setting: value})


def test_isolated_task_error_reads_as_the_original() -> None:
    from ardiq.isolation import remote_error

    exc = IsolatedTaskError("KeyError", "KeyError('k')")
    assert repr(exc) == "KeyError('k')" and exc.type_name == "KeyError"
    builtin = remote_error("KeyError", "KeyError('k')")
    assert isinstance(builtin, KeyError) and isinstance(builtin, IsolatedTaskError)
    assert type(builtin).__name__ == "KeyError" and repr(builtin) == "KeyError('k')"
    own = remote_error("PaymentDeclined", "PaymentDeclined('card')")
    assert type(own) is IsolatedTaskError and own.type_name == "PaymentDeclined"
    assert type(remote_error("StopIteration", "StopIteration()")) is IsolatedTaskError


async def test_settings_default_off(make_app: Callable[..., Ardiq]) -> None:
    app = make_app(max_tasks_per_child=5, max_memory_per_child=300)
    assert (app.max_tasks_per_child, app.max_memory_per_child) == (5, 300)
    other = make_app()
    assert other.max_tasks_per_child is None and other.max_memory_per_child is None
    await asyncio.sleep(0)


def test_recycling_overrides_reach_the_app(make_app: Callable[..., Ardiq]) -> None:
    from ardiq._bridge import configure
    from ardiq._cli import parser

    app = make_app(max_tasks_per_child=9)
    settings = configure(app, {"max_memory_per_child": 256}, "w-1")
    assert (settings.max_tasks_per_child, settings.max_memory_per_child) == (9, 256)
    assert (app.max_tasks_per_child, app.max_memory_per_child) == (9, 256)
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        configure(app, {"max_tasks_per_child": 0}, "w-1")
    args = parser().parse_args(
        ["run", "m:app", "--max-tasks-per-child", "5", "--max-memory-per-child", "64"]
    )
    assert (args.max_tasks_per_child, args.max_memory_per_child) == (5, 64)


def test_children_start_on_a_real_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from ardiq.isolation import python_executable

    assert python_executable() == sys.executable
    # Where sys.executable is the `ardiq` binary itself, the environment's python3.
    monkeypatch.setattr(sys, "executable", str(Path(sys.prefix) / "bin" / "ardiq"))
    assert python_executable() == str(Path(sys.prefix) / "bin" / "python3")


def test_exit_descriptions() -> None:
    from ardiq.isolation import describe_exit

    assert describe_exit(-11) == "killed by signal SIGSEGV (11)"
    assert describe_exit(-9) == "killed by signal SIGKILL (9)"
    assert describe_exit(3) == "exited with code 3"
