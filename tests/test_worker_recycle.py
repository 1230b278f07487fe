"""Recycling workers (`ardiq run --max-tasks N --max-memory MB`, the binary only): a
worker that reaches either limit drains as on SIGTERM and its supervisor, which runs even
for one worker, replaces it at once; nothing is lost or run twice, signals still stop
everything, a real failure still stops the rest."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from ardiq import Ardiq
from support.ops_cli import binary, env_for
from support.redis_server import free_port
from support.workers import TESTS

APP = "apps.recycle_app:app"


class Supervisor:
    """`ardiq run ...` with its output (the supervisor's and its workers') in a file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, pid_var: str | None = None
    ) -> None:
        self.log_path = log
        self._log = log.open("wb")
        command = [binary(), "run", *args]
        if pid_var:
            # Through a shell that execs it: `pid_var` holds the supervisor's own pid.
            command = ["sh", "-c", f'{pid_var}=$$ exec "$@"', "sh", *command]
        self.proc = subprocess.Popen(
            command, cwd=TESTS, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (out := self.output()).count(needle) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"not {count} x {needle!r} in the output:\n{out}")
            time.sleep(0.02)
        return out

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ardiq did not exit in {timeout}s:\n{self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def env(redis_url: str, queue: str) -> dict[str, str]:
    return {**env_for(redis_url, queue), "RECYCLE_LEDGER_URL": redis_url}


@pytest.fixture
def start(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., Supervisor]]:
    procs: list[Supervisor] = []

    def go(
        *args: str, extra: dict[str, str] | None = None, exec_as_pid_of: str | None = None
    ) -> Supervisor:
        log = tmp_path / f"run-{len(procs)}.log"
        p = Supervisor(list(args), {**env, **(extra or {})}, log, exec_as_pid_of)
        procs.append(p)
        return p

    yield go
    for p in procs:
        p.close()


@pytest.fixture
def ran(redis_url: str, queue: str) -> Iterator[Callable[[], list[tuple[int, int]]]]:
    """What the tasks recorded: (n, pid) in the order they ran."""
    r = redis.Redis.from_url(redis_url)

    def read() -> list[tuple[int, int]]:
        rows = (x.decode().split() for x in r.lrange(f"ledger:{queue}:ran", 0, -1))
        return [(int(n), int(pid)) for n, pid in rows]

    yield read
    r.close()


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("flag", "env_name"), [("--max-tasks", "ARDIQ_MAX_TASKS"), ("--max-memory", "ARDIQ_MAX_MEMORY")]
)
def test_bad_values_are_usage_errors(env: dict[str, str], flag: str, env_name: str) -> None:
    def one_usage_error(out: subprocess.CompletedProcess[str], value: str) -> None:
        assert out.returncode == 2, (value, out.returncode, out.stderr)
        assert "panicked" not in out.stderr, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and f"`{value}`" in errors[0], out.stderr

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary(), "run", APP, *args],
            cwd=TESTS,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=30,
        )

    for value in ["0", "-1", "1.5", "lots", "99999999999999999999999"]:
        one_usage_error(run(f"{flag}={value}"), value)
        one_usage_error(run(extra={env_name: value}), value)


def test_a_memory_limit_below_the_start_is_refused_once(env: dict[str, str]) -> None:
    # Below what the worker holds before any task: a usage error, not a worker replaced
    # for ever.
    out = subprocess.run(
        [binary(), "run", APP, "--max-memory", "1"],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("error: `--max-memory 1` is below what this worker holds") == 1
    assert "replacing worker" not in out.stderr


# ------------------------------------------------------------------ --max-tasks
@pytest.mark.parametrize("total", [40, 50])
async def test_a_burst_recycles_and_goes_on_until_drained(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
    total: int,
) -> None:
    app = make_app()
    await app.enqueue_many([app.ref("count").prepare(n) for n in range(total)])
    sup = start(APP, "--burst", "--max-tasks", "20")
    assert sup.wait(60) == 0, sup.output()
    out = sup.output()
    rows = ran()
    assert sorted(n for n, _ in rows) == list(range(total)), out  # each ran once
    per_process = Counter(pid for _, pid in rows)
    # Each recycled process ran exactly its 20; the last one drained the rest.
    assert sorted(per_process.values(), reverse=True) == [20, 20, *([10] if total == 50 else [])]
    assert out.count("reason=recycle (max_tasks=20)") == 2, out
    assert out.count("replacing worker 0") == 2, out
    # A burst worker after the last recycle found the queue drained (or drained the rest).
    assert out.count("reason=burst") == 1, out
    assert "a worker failed" not in out
    assert await app.queue_size() == 0


async def test_workers_recycle_in_turn_and_a_signal_stops_them_all(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
) -> None:
    app = make_app()
    sup = start(APP, "--workers", "2", "--max-tasks", "5", extra={"ARDIQ_MAX_TASKS": "7"})
    sup.wait_for("worker starting", 2)
    jobs = await app.enqueue_many([app.ref("count").prepare(n) for n in range(30)])
    wait_until(lambda: len(ran()) == 30, 30, "30 tasks")
    # The command line wins over the environment: six processes ran five each.
    wait_until(lambda: sup.output().count("replacing worker") >= 6, 30, "six replacements")
    sup.wait_for("worker starting", 8)
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output()
    out = sup.output()
    rows = ran()
    assert sorted(n for n, _ in rows) == list(range(30))
    assert sorted(Counter(pid for _, pid in rows).values()) == [5] * 6, out
    assert out.count("reason=recycle (max_tasks=5)") == 6, out
    assert out.count("reason=signal") == 2, out  # the two last workers, once each
    assert "a worker failed" not in out and "stopping at once" not in out, out
    for job in jobs:
        r = await job.result()
        assert r is not None and r.success


async def test_a_signal_while_the_last_task_runs_stops_and_replaces_nobody(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
    redis_url: str,
    queue: str,
) -> None:
    app = make_app()
    sup = start(APP, "--max-tasks", "1")
    sup.wait_for("worker starting")
    job = await app.ref("slow").enqueue(1, 1.5)
    r = redis.Redis.from_url(redis_url)
    # Its one task runs: the worker takes nothing more and recycles once it finished.
    wait_until(lambda: r.llen(f"ledger:{queue}:started") == 1, 15, "the task to start")
    r.close()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output()
    out = sup.output()
    assert "replacing worker" not in out, out
    assert "stopping at once" not in out and "a worker failed" not in out, out
    assert "reason=signal" in out, out
    result = await job.result()
    assert result is not None and result.success, out
    assert [n for n, _ in ran()] == [1]


def test_a_failing_worker_still_stops_the_rest(start: Callable[..., Supervisor]) -> None:
    sup = start(
        "apps.cli_lifespan:app",
        "-w",
        "2",
        "--max-tasks",
        "5",
        extra={"CLI_FAIL_WORKER": "1"},
    )
    assert sup.wait(30) == 1, sup.output()
    out = sup.output()
    assert "lifespan refuses to start" in out
    assert "a worker failed; stopping the others" in out
    assert "replacing worker" not in out


# ------------------------------------------------------------------ --max-memory
async def test_a_leaking_worker_is_replaced(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
) -> None:
    app = make_app()
    sup = start(APP, "--max-memory", "200")
    sup.wait_for("worker starting")
    await app.ref("count").enqueue(0)
    wait_until(lambda: len(ran()) == 1, 15, "a first task")
    leak = await app.ref("hog").enqueue(1, 300)
    out = sup.wait_for("replacing worker 0", timeout=15)
    assert "reason=recycle (max_memory=200MB rss=" in out, out
    after = await app.ref("count").enqueue(2)
    wait_until(lambda: len(ran()) == 3, 15, "a task after the leak")
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output()
    (first, leaker, fresh) = [pid for _, pid in ran()]
    assert first == leaker and fresh != leaker, sup.output()
    for job in (leak, after):
        r = await job.result()
        assert r is not None and r.success


# ------------------------------------------------------------------ systemd
async def test_under_systemd_a_recycle_is_not_a_stop(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
) -> None:
    # systemd (`NotifyAccess=all`) hears READY=1 from each worker and their watchdog pets
    # (its WATCHDOG_PID names the supervisor), but STOPPING=1 only when asked to stop.
    name = f"ardiq-test-{uuid.uuid4().hex[:12]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.05)
    heard: list[str] = []

    def pump(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                heard.append(sock.recv(4096).decode())

    try:
        app = make_app()
        sup = start(
            APP,
            "--max-tasks",
            "3",
            extra={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "400000"},
            exec_as_pid_of="WATCHDOG_PID",
        )
        sup.wait_for("worker starting")
        await app.enqueue_many([app.ref("count").prepare(n) for n in range(9)])
        while sup.output().count("replacing worker 0") < 3:
            assert sup.proc.poll() is None, sup.output()
            pump(0.1)
        sup.wait_for("worker starting", 4)
        pump(1.0)
        assert "STOPPING=1" not in heard, heard
        assert heard.count("READY=1") >= 3, heard
        assert "WATCHDOG=1" in heard[-5:], heard  # the fourth worker pets
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.wait(20) == 0, sup.output()
        pump(0.3)
        assert heard.count("STOPPING=1") == 1, heard
        assert sorted(n for n, _ in ran()) == list(range(9))
    finally:
        sock.close()


async def test_each_replacement_serves_the_health_port(
    make_app: Callable[..., Ardiq],
    start: Callable[..., Supervisor],
    ran: Callable[[], list[tuple[int, int]]],
) -> None:
    # `--health-port` goes to the one recycled worker, and every replacement binds it.
    port = free_port()
    app = make_app()
    sup = start(APP, "--max-tasks", "2", "--health-port", str(port))
    sup.wait_for("worker starting")
    await app.enqueue_many([app.ref("count").prepare(n) for n in range(4)])
    sup.wait_for("replacing worker 0", 2)
    sup.wait_for("worker starting", 3)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_until(ready, 15, "the third worker's /readyz")
    assert "cannot serve the health endpoint" not in sup.output()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0, sup.output()
    assert sorted(n for n, _ in ran()) == [0, 1, 2, 3]
