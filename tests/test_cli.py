"""The `ardiq` binary on its own: options and their environment twins, the Python
environments it must run in, signals, start-up errors, and `--workers`.

Behaviour shared with the in-code worker is covered by tests/test_worker_*.py for both
kinds; this file covers what only the binary has.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from ardiq import Ardiq
from support.redis_server import REDIS_SERVER, free_port
from support.workers import ROOT, TESTS, native_binary

APP = "apps.cli_app:app"


def binary() -> str:
    path = native_binary()
    if path is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ARDIQ_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARDIQ_", "CLI_"))}
    env["VIRTUAL_ENV"] = sys.prefix  # the test venv, where `ardiq` is installed
    env.update(extra)
    return env


class Proc:
    """An `ardiq` process with stderr+stdout captured to a file."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        exe: str | None = None,
        cwd: Path = TESTS,
    ) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [exe or binary(), *args], env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ardiq did not exit in {timeout}s:\n{self.output()}") from None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in the output:\n{self.output()}")
            time.sleep(0.02)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def env(redis_url: str, queue: str) -> dict[str, str]:
    return clean_env(ARDIQ_TEST_QUEUE=queue, CLI_APP_REDIS_URL=redis_url, CLI_LEDGER_URL=redis_url)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*args: str, env: dict[str, str], exe: str | None = None, cwd: Path = TESTS) -> Proc:
        proc = Proc(list(args), env, tmp_path / f"ardiq-{len(procs)}.log", exe, cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


def run(
    *args: str, env: dict[str, str], timeout: float = 30, exe: str | None = None, cwd: Path = TESTS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe or binary(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


async def ledger(redis_url: str, queue: str, kind: str) -> list[str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [x.decode() for x in await client.lrange(f"ledger:{queue}:{kind}", 0, -1)]
    finally:
        await client.aclose()


async def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def starting_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if "worker starting" in ln]
    assert len(lines) == 1, output
    return lines[0]


# --------------------------------------------------------------------- basics
def test_version_and_help() -> None:
    out = run("--version", env=clean_env())
    assert out.returncode == 0 and re.fullmatch(r"ardiq \d+\.\d+\.\d+\n", out.stdout)
    out = run("run", "--help", env=clean_env())
    assert out.returncode == 0
    assert "Exit codes:" in out.stdout and "ARDIQ_CONCURRENCY" in out.stdout
    for flag in (
        "--burst",
        "--verbose",
        "--quiet",
        "--workers",
        "--concurrency",
        "--prefetch",
        "--redis-url",
        "--shutdown-timeout",
        "--log-format",
        "--python",
    ):
        assert flag in out.stdout, flag
    bad = run("run", APP, "--concurrency", "0", env=clean_env())
    assert bad.returncode == 2 and "error:" in bad.stderr


# ------------------------------------------------------- options and env twins
TWINS = [
    ("--concurrency", "3", "ARDIQ_CONCURRENCY", r"concurrency=3 prefetch=6"),
    ("--prefetch", "11", "ARDIQ_PREFETCH", r"concurrency=8 prefetch=11"),
    ("--burst", None, "ARDIQ_BURST", r"burst=true"),
]


@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.parametrize(("flag", "value", "twin", "expect"), TWINS)
def test_setting_overrides_and_env_twins(
    env: dict[str, str], via: str, flag: str, value: str | None, twin: str, expect: str
) -> None:
    # Every run must end by itself: --burst, unless --burst is what is being tested.
    args = ["run", APP] if flag == "--burst" else ["run", APP, "--burst"]
    if via == "flag":
        args += [flag] + ([value] if value else [])
    else:
        env[twin] = value or "1"
    out = run(*args, env=env)
    assert out.returncode == 0, out.stderr
    assert re.search(expect, starting_line(out.stderr)), out.stderr


def test_command_line_beats_environment(env: dict[str, str]) -> None:
    env["ARDIQ_CONCURRENCY"] = "9"
    out = run("run", APP, "--burst", "--concurrency", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert "concurrency=2 prefetch=4" in starting_line(out.stderr)
    env["ARDIQ_BURST"] = "false"
    env["ARDIQ_CONCURRENCY"] = "5"
    out = run("run", APP, "--burst", env=env)
    assert "concurrency=5" in starting_line(out.stderr)


@pytest.mark.parametrize("via", ["flag", "env"])
async def test_redis_url_override_and_masking(
    env: dict[str, str], redis_url: str, make_app: Callable[..., Ardiq], via: str
) -> None:
    # The app's own URL has a password and points nowhere; the override is the real one.
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}"
    env["CLI_APP_REDIS_URL"] = dead
    app = make_app()
    job = await app.ref("environment").enqueue()
    if via == "flag":
        out = run("run", APP, "--burst", "--redis-url", redis_url, env=env, timeout=90)
    else:
        env["ARDIQ_REDIS_URL"] = redis_url
        out = run("run", APP, "--burst", env=env, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stderr
    r = await job.result()
    assert r is not None and r.success, r
    assert r.value["settings"][3] == redis_url  # task code sees the override too


@pytest.mark.parametrize("via", ["flag", "env"])
async def test_verbose_and_quiet(
    env: dict[str, str], make_app: Callable[..., Ardiq], via: str
) -> None:
    app = make_app()
    job = await app.ref("echo").enqueue("x")
    args = ["run", APP, "--burst"]
    verbose = run(
        *args,
        *(["-v"] if via == "flag" else []),
        env={**env, **({"ARDIQ_VERBOSE": "1"} if via == "env" else {})},
    )
    assert verbose.returncode == 0, verbose.stderr
    assert re.search(
        rf"DEBUG +ardiq: task started id={job.id} name=echo worker=\S+ try=1", verbose.stderr
    ), verbose.stderr
    assert "INFO    cli_app: echo ran" in verbose.stderr  # Python logging, same format
    assert "ardiq 0." in verbose.stderr  # the banner

    await app.ref("echo").enqueue("y")
    quiet = run(
        *args,
        *(["-q"] if via == "flag" else []),
        env={**env, **({"ARDIQ_QUIET": "1"} if via == "env" else {})},
    )
    assert quiet.returncode == 0, quiet.stderr
    # No banner; the INFO lines stay, the starting one saying what the banner would have.
    assert "ardiq 0." not in quiet.stderr, quiet.stderr
    assert re.search(r"burst=true tasks=\d+ crons=\d+", starting_line(quiet.stderr)), quiet.stderr
    assert "worker stopped" in quiet.stderr and "DEBUG" not in quiet.stderr

    normal = run(*args, env=env)
    assert "INFO" in normal.stderr and "DEBUG" not in normal.stderr


@pytest.mark.parametrize("via", ["flag", "env"])
async def test_json_logs(env: dict[str, str], make_app: Callable[..., Ardiq], via: str) -> None:
    app = make_app()
    await app.ref("echo").enqueue("x")
    if via == "flag":
        out = run("run", APP, "--burst", "--log-format", "json", "-v", env=env)
    else:
        out = run("run", APP, "--burst", "-v", env={**env, "ARDIQ_LOG_FORMAT": "json"})
    assert out.returncode == 0, out.stderr
    records = [json.loads(ln) for ln in out.stderr.splitlines()]  # every line, no banner
    assert any(r["target"] == "cli_app" and r["message"] == "echo ran" for r in records)
    assert any("worker starting" in r["message"] and r["level"] == "INFO" for r in records)
    assert all({"ts", "level", "target", "message"} <= r.keys() for r in records)


@pytest.mark.parametrize("via", ["flag", "env"])
async def test_shutdown_timeout_leaves_running_tasks(
    env: dict[str, str],
    spawn: Callable[..., Proc],
    redis_url: str,
    queue: str,
    make_app: Callable[..., Ardiq],
    via: str,
) -> None:
    app = make_app()
    await app.ref("slow").enqueue(1, 30)
    if via == "flag":
        worker = spawn("run", APP, "--shutdown-timeout", "0.5", env=env)
    else:
        worker = spawn("run", APP, env={**env, "ARDIQ_SHUTDOWN_TIMEOUT": "0.5"})
    await wait_for(lambda: ledger(redis_url, queue, "started"), 15, "the task to start")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.output()
    assert time.monotonic() - t0 < 3, worker.output()
    assert "drain deadline passed" in worker.output()
    assert await ledger(redis_url, queue, "finished") == []


def test_python_flag_and_env(env: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "nothing-here"
    for extra_args, extra_env in (([f"--python={fake}"], {}), ([], {"ARDIQ_PYTHON": str(fake)})):
        out = run("run", APP, "--burst", *extra_args, env={**env, **extra_env})
        assert out.returncode == 3, out.stderr
        assert f"`--python {fake}` is not a Python interpreter" in out.stderr
    out = run("run", APP, "--burst", "--python", sys.executable, env=env)
    assert out.returncode == 0, out.stderr
    assert f"python       {sys.executable} (from --python)" in out.stderr


def test_another_python_version_is_refused(env: dict[str, str]) -> None:
    """The worker embeds one Python version: another is refused, naming both."""
    import glob

    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    others = [
        p
        for p in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*")))
        + sorted(glob.glob("/usr/bin/python3.*"))
        if re.fullmatch(r"python3\.\d+", os.path.basename(p)) and not p.endswith(f"python{mine}")
    ]
    if not others:
        pytest.skip("no Python of another version on this machine")
    other = others[0]
    out = run("run", APP, "--burst", "--python", other, env=env)
    assert out.returncode == 2, out.stderr  # a usage error: point at the right Python
    version = os.path.basename(other).removeprefix("python")
    assert f"is Python {version}, but this `ardiq` embeds Python {mine}" in out.stderr, out.stderr


def test_the_worker_carries_no_path_into_the_build_python() -> None:
    """No RUNPATH/RPATH: libpython is found through the launcher, which links none."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    launcher = Path(binary())
    worker = launcher.with_name("ardiq-embedded")
    dynamic = subprocess.run(
        [readelf, "-d", str(worker)], capture_output=True, text=True, check=True
    ).stdout
    assert "libpython" in dynamic and "PATH" not in dynamic, dynamic
    dynamic = subprocess.run(
        [readelf, "-d", str(launcher)], capture_output=True, text=True, check=True
    ).stdout
    assert "libpython" not in dynamic, dynamic


async def test_library_path_is_the_users_again_in_task_code(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    v = await probe(binary(), {**env, "LD_LIBRARY_PATH": "/nonexistent/lib"}, make_app)
    assert v["ld_library_path"] == "/nonexistent/lib" and v["launch_vars"] == [], v
    (lib,) = v["libpython"]
    assert same(os.path.dirname(lib), sysconfig.get_config_var("LIBDIR")), v
    v = await probe(binary(), env, make_app)
    assert v["ld_library_path"] is None, v


# ----------------------------------------------------------- start-up errors
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("apps.nope:app", "error: no module named `apps.nope`"),
        ("nopkg_x.tasks:app", "error: no module named `nopkg_x`"),
        ("apps.cli_app:nope", "error: module `apps.cli_app` has no attribute `nope`"),
        (
            "apps.cli_notapp:app",
            "error: `apps.cli_notapp:app` is a `int`, not an `ardiq.Ardiq` app",
        ),
        ("not a target", "error: `not a target` is not of the form `MODULE:ATTR`"),
    ],
)
def test_bad_targets_exit_2_with_one_line(env: dict[str, str], target: str, message: str) -> None:
    out = run("run", target, env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    verbose = run("run", target, "-v", env=env)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


BAD_SECONDS = ["1e308", "1e300", "1e20", "31536001", "nan", "NaN", "inf", "-inf", "-1", "0"]
# Every duration option of every subcommand, as a flag and (where it has one) its env twin.
DURATIONS = [
    (["run", APP], "--shutdown-timeout", "ARDIQ_SHUTDOWN_TIMEOUT"),
    (["run", APP], "--liveness-threshold", "ARDIQ_LIVENESS_THRESHOLD"),
    (["run", APP], "--history-ttl", "ARDIQ_HISTORY_TTL"),
    (["run", APP, "--workers", "2"], "--shutdown-timeout", "ARDIQ_SHUTDOWN_TIMEOUT"),
    (["check", APP], "--timeout", None),
]


@pytest.mark.parametrize(("args", "flag", "env_name"), DURATIONS)
def test_out_of_range_durations_are_usage_errors(
    env: dict[str, str], args: list[str], flag: str, env_name: str | None
) -> None:
    def one_usage_error(out: subprocess.CompletedProcess[str], value: str) -> None:
        assert out.returncode == 2, (value, out.returncode, out.stderr)
        assert "panicked" not in out.stderr, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and value in errors[0], out.stderr

    for value in BAD_SECONDS:
        one_usage_error(run(*args, f"{flag}={value}", env=env, timeout=10), value)
        if env_name:
            one_usage_error(run(*args, env={**env, env_name: value}, timeout=10), value)
    # Numbers that do not fit the option's type are usage errors too.
    out = run("purge", "--queue", "q", "--result-ttl-ms", "1e300", env=env, timeout=10)
    one_usage_error(out, "1e300")
    out = run("purge", "--queue", "q", "--result-ttl-ms", "9" * 30, env=env, timeout=10)
    one_usage_error(out, "9" * 30)


def test_app_setting_out_of_range_is_refused() -> None:
    for bad in (1e300, float("nan"), float("inf"), -1.0, 0):
        with pytest.raises(ValueError, match="shutdown_timeout_s"):
            Ardiq(redis_url="redis://h", shutdown_timeout_s=bad)


def test_module_that_raises_shows_its_traceback(env: dict[str, str]) -> None:
    out = run("run", "apps.cli_raises:app", env=env)
    assert out.returncode == 2, out.stderr
    assert "Traceback (most recent call last)" in out.stderr
    assert 'cli_raises.py", line 8' in out.stderr and "cli_raises exploded on import" in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: importing `apps.cli_raises:app` raised RuntimeError")
    )


def test_redis_unreachable_names_masked_url_and_retries(
    env: dict[str, str], spawn: Callable[..., Proc]
) -> None:
    url = f"redis://:topsecret@127.0.0.1:{free_port()}/0"
    worker = spawn("run", APP, "--redis-url", url, env=env)
    worker.wait_for_output("retrying", 10)
    time.sleep(0.5)
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0, worker.output()
    out = worker.output()
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in out
    assert "topsecret" not in out
    assert len([ln for ln in out.splitlines() if "redis unreachable" in ln]) <= 2, out


# ------------------------------------------------------------------ signals
async def test_sigterm_during_work_loses_nothing_and_hands_back_at_once(
    env: dict[str, str],
    spawn: Callable[..., Proc],
    redis_url: str,
    queue: str,
    make_app: Callable[..., Ardiq],
) -> None:
    app = make_app()
    jobs = await app.enqueue_many([app.ref("slow").prepare(i, 1.0) for i in range(8)])
    worker = spawn("run", APP, "--concurrency", "2", "--prefetch", "6", env=env)

    async def two_started() -> bool:
        return len(await ledger(redis_url, queue, "started")) == 2

    await wait_for(two_started, 15, "two running tasks")

    async def buffered() -> bool:
        return await app.queue_size() == 2  # 6 held: 2 running, 4 prefetched

    await wait_for(buffered, 5, "a full prefetch buffer")
    worker.signal(signal.SIGTERM)
    t0 = time.monotonic()

    async def handed_back() -> bool:
        return await app.queue_size() == 6

    await wait_for(handed_back, 1.0, "prefetched tasks handed back")
    assert time.monotonic() - t0 < 1.0
    assert worker.wait(10) == 0, worker.output()
    assert sorted(await ledger(redis_url, queue, "finished")) == sorted(
        await ledger(redis_url, queue, "started")
    )
    rest = run("run", APP, "--burst", env=env)
    assert rest.returncode == 0, rest.stderr
    for job in jobs:
        r = await job.result()
        assert r is not None and r.success and r.tries == 1
    assert sorted(Counter(await ledger(redis_url, queue, "finished")).values()) == [1] * 8


@pytest.mark.parametrize("task", ["slow", "sync_slow"])
async def test_second_sigint_exits_at_once_and_tasks_are_reclaimed(
    env: dict[str, str],
    spawn: Callable[..., Proc],
    redis_url: str,
    queue: str,
    make_app: Callable[..., Ardiq],
    task: str,
) -> None:
    env["CLI_APP_IDLE_MS"] = "500"
    app = make_app()
    jobs = await app.enqueue_many([app.ref(task).prepare(i, 3) for i in range(2)])
    worker = spawn("run", APP, env=env)

    async def started() -> bool:
        return len(await ledger(redis_url, queue, "started")) == 2

    await wait_for(started, 15, "two running tasks")
    worker.signal(signal.SIGINT)
    worker.wait_for_output("signal again to exit at once", 5)
    t0 = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 0, worker.output()
    assert time.monotonic() - t0 < 4, worker.output()
    out = worker.output()
    assert "stopping at once" in out
    assert "panicked" not in out and "Fatal Python error" not in out, out
    assert await ledger(redis_url, queue, "finished") == []
    for job in jobs:
        assert await job.status() == "running"  # still pending: left for reclaim
    # Another worker reclaims them once the lease runs out; nothing is lost.
    other = spawn("run", APP, env=env)
    for job in jobs:
        r = await job.result(timeout=20)
        assert r is not None and r.success, other.output()
    other.signal(signal.SIGTERM)
    assert other.wait(15) == 0, other.output()


# -------------------------------------------------------- start/stop cycles
def handler_installed(pid: int, timeout: float = 10.0) -> None:
    """Wait until process `pid` catches SIGTERM (its SigCgt mask in /proc shows it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return  # already gone: the caller sees its exit code
        for line in status.splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) & (
                1 << (signal.SIGTERM - 1)
            ):
                return
        time.sleep(0.002)


async def test_hundred_start_stop_cycles_under_load(
    env: dict[str, str], redis_url: str, queue: str, make_app: Callable[..., Ardiq], tmp_path: Path
) -> None:
    app = make_app()
    total = 3000
    await app.enqueue_many([app.ref("count").prepare(i) for i in range(total)])
    exe = binary()

    def cycle(i: int) -> tuple[int, int, str]:
        log = tmp_path / f"cycle-{i}.log"
        with log.open("wb") as f:
            p = subprocess.Popen(
                [exe, "run", APP, "-q", "--concurrency", "4"],
                env=env,
                cwd=TESTS,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
            # Some stop during start-up, some while serving. The moments after exec,
            # before any program can install a handler, are left out: wait until the
            # kernel shows SIGTERM caught (the binary registers it before Python starts).
            handler_installed(p.pid)
            time.sleep((i % 10) * 0.03)
            p.send_signal(signal.SIGTERM)
            try:
                code = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                code = -999
        return i, code, log.read_text(errors="replace")

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(cycle, range(100)))
    elapsed = time.monotonic() - t0
    bad = [
        (i, code, out)
        for i, code, out in results
        if code != 0 or "panicked" in out or "Fatal Python" in out or "Traceback" in out
    ]
    assert not bad, bad[:3]
    assert elapsed < 100, elapsed
    # Nothing was lost or run twice: a last worker finishes the rest.
    rest = run("run", APP, "--burst", "-q", "--concurrency", "16", env=env, timeout=120)
    assert rest.returncode == 0, rest.stderr
    runs = Counter(int(x) for x in await ledger(redis_url, queue, "count"))
    assert sorted(runs) == list(range(total))
    assert set(runs.values()) == {1}


# ------------------------------------------------------------------ --workers
@pytest.mark.parametrize("via", ["flag", "env"])
async def test_workers_supervisor(
    env: dict[str, str],
    spawn: Callable[..., Proc],
    redis_url: str,
    queue: str,
    make_app: Callable[..., Ardiq],
    via: str,
) -> None:
    app = make_app()
    if via == "flag":
        sup = spawn("run", APP, "--workers", "2", env=env)
    else:
        sup = spawn("run", APP, env={**env, "ARDIQ_WORKERS": "2"})
    jobs = await app.enqueue_many([app.ref("slow").prepare(i, 0.5) for i in range(8)])

    async def all_done() -> bool:
        return len(await ledger(redis_url, queue, "finished")) == 8

    await wait_for(all_done, 20, "all tasks")

    async def both_started() -> bool:
        # On a loaded machine the second worker may log its start after the first
        # worker already ran every task: wait for the line rather than race it.
        return sup.output().count("worker starting") >= 2

    await wait_for(both_started, 20, "both workers' start lines")
    out = sup.output()
    starting = [ln for ln in out.splitlines() if "worker starting" in ln]
    ids = {re.search(r"worker=(\S+)", ln).group(1) for ln in starting}  # type: ignore[union-attr]
    assert len(starting) == 2 and len(ids) == 2, out
    assert out.count("ardiq 0.") == 1, out  # one banner
    sup.signal(signal.SIGTERM)
    assert sup.wait(15) == 0, sup.output()
    out = sup.output()
    assert len([ln for ln in out.splitlines() if "reason=signal" in ln]) == 2, out
    assert out.count("stopping: no new work") == 2 and "stopping at once" not in out, out
    for job in jobs:
        r = await job.result()
        assert r is not None and r.success


def test_workers_failure_stops_the_rest(env: dict[str, str], spawn: Callable[..., Proc]) -> None:
    sup = spawn("run", "apps.cli_lifespan:app", "-w", "3", env={**env, "CLI_FAIL_WORKER": "1"})
    assert sup.wait(30) == 1, sup.output()
    out = sup.output()
    assert "lifespan refuses to start" in out
    assert "a worker failed; stopping the others" in out


# ----------------------------------------------------- Python environments
@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with `ardiq`, `ardiq-worker` and `ardiq-native` installed from
    wheels, as users install them (once per session)."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(ROOT)], check=True, timeout=600)
    maturin = Path(sys.executable).with_name("maturin")
    wheels = root / "wheels"
    # The target directories `make build` uses (Makefile, NATIVE_TARGET_DIR), so these
    # builds find their crates compiled.
    builds = (
        ("ardiq-worker", "ardiq_worker", ROOT / "target"),
        ("ardiq-native", "ardiq_native", ROOT / "target" / "native"),
    )
    for crate, name, target in builds:
        subprocess.run(
            [
                str(maturin),
                "build",
                "--release",
                "-q",
                "-i",
                sys.executable,
                "-o",
                str(wheels),
                "-m",
                str(ROOT / "crates" / crate / "Cargo.toml"),
            ],
            check=True,
            timeout=900,
            env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        )
        (wheel,) = wheels.glob(f"{name}-*.whl")
        subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=300)
    assert (venv / "bin" / "ardiq").is_file()
    return venv


async def probe(
    exe: str, env: dict[str, str], make_app: Callable[..., Ardiq], cwd: Path = TESTS, *args: str
) -> dict[str, Any]:
    app = make_app()
    job = await app.ref("environment").enqueue()
    out = run("run", APP, "--burst", *args, env=env, exe=exe, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    r = await job.result()
    assert r is not None and r.success, (r, out.stderr)
    value: dict[str, Any] = r.value
    return value


def same(a: str, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


# The first test to use `fresh_venv` pays for its wheel build: a cold release build
# of the worker takes minutes on 2 cores.
@pytest.mark.timeout(1200)
async def test_activated_venv(
    fresh_venv: Path, env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    env = {
        **env,
        "VIRTUAL_ENV": str(fresh_venv),
        "PATH": f"{fresh_venv / 'bin'}:{os.environ.get('PATH', '')}",
    }
    exe = shutil.which("ardiq", path=env["PATH"])
    assert exe == str(fresh_venv / "bin" / "ardiq")
    v = await probe(exe, env, make_app)
    assert v["executable"] == str(fresh_venv / "bin" / "python")
    assert same(v["prefix"], fresh_venv) and not same(v["base_prefix"], fresh_venv)
    assert same(v["path0"], TESTS) and same(v["cwd"], TESTS)
    assert v["spawn"][0] == v["executable"] and same(v["spawn"][1], fresh_venv)
    assert same(v["subprocess_prefix"], fresh_venv)


# The first test to use `fresh_venv` pays for its wheel build: a cold release build
# of the worker takes minutes on 2 cores.
@pytest.mark.timeout(1200)
async def test_absolute_path_from_empty_environment(
    fresh_venv: Path, redis_url: str, queue: str, make_app: Callable[..., Ardiq]
) -> None:
    # As systemd runs it: `env -i /path/to/venv/bin/ardiq ...`, settings in the command.
    env = {"ARDIQ_TEST_QUEUE": queue, "CLI_APP_REDIS_URL": redis_url, "CLI_LEDGER_URL": redis_url}
    v = await probe(str(fresh_venv / "bin" / "ardiq"), env, make_app)
    assert v["executable"] == str(fresh_venv / "bin" / "python")
    assert same(v["prefix"], fresh_venv)
    assert v["spawn"][0] == v["executable"] and same(v["spawn"][1], fresh_venv)
    assert same(v["subprocess_prefix"], fresh_venv)


@pytest.mark.timeout(1200)
async def test_app_run_in_a_fresh_venv_uses_the_native_engine_from_its_wheel(
    fresh_venv: Path, env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    """The `ardiq_native` wheel loads into a Python that did not build it (no libpython
    linked in, nothing from the build's environment), and `app.run()` picks it."""
    app = make_app()
    job = await app.ref("environment").enqueue()
    code = (
        "import asyncio, logging; from apps.cli_app import app; "
        "logging.basicConfig(level=logging.INFO); "
        "from ardiq.worker.native import choose; "
        "assert choose(None)[0] == 'native', choose(None); "
        "app.burst = True; asyncio.run(app.run())"
    )
    out = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", code],
        env={**env, "PYTHONPATH": str(TESTS)},
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "worker stopped" in out.stderr and "reason=burst" in out.stderr, out.stderr
    r = await job.result(timeout=10)
    assert r is not None and r.success, (r, out.stderr)
    assert r.value["executable"] == str(fresh_venv / "bin" / "python")


async def test_plain_python_on_path(
    redis_url: str, queue: str, make_app: Callable[..., Ardiq], tmp_path: Path
) -> None:
    """A Python that is not a virtualenv (system or pyenv), found as `python3` on PATH;
    the packages come from PYTHONPATH."""
    base = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(base)
    # A copy of the binary outside any environment, so discovery falls through to PATH.
    exe = tmp_path / "ardiq"
    shutil.copy2(binary(), exe)
    shutil.copy2(Path(binary()).with_name("ardiq-embedded"), tmp_path / "ardiq-embedded")
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    env = {
        "ARDIQ_TEST_QUEUE": queue,
        "CLI_APP_REDIS_URL": redis_url,
        "CLI_LEDGER_URL": redis_url,
        "PATH": f"{bindir}:/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'python'}:{site}",
    }
    v = await probe(str(exe), env, make_app)
    assert same(v["executable"], base)
    assert v["ld_library_path"] is None and v["launch_vars"] == []
    (lib,) = v["libpython"]
    assert same(os.path.dirname(lib), sysconfig.get_config_var("LIBDIR")), v
    assert same(v["prefix"], sys.base_prefix) and same(v["base_prefix"], sys.base_prefix)
    assert same(v["spawn"][0], base)
    assert same(v["subprocess_prefix"], sys.base_prefix)


# ------------------------------------------------------------- runtime failures
def test_wrong_password_exits_1_without_leaking_it(env: dict[str, str], tmp_path: Path) -> None:
    # Started here: the harness's readiness check does not authenticate.
    port = free_port()
    server = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "right-one",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password="right-one")
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        client.close()
        url = f"redis://:wrong-one@127.0.0.1:{port}"
        out = run("run", APP, "--redis-url", url, env=env)
        assert out.returncode == 1, out.stderr
        assert "refused the credentials" in out.stderr
        assert "wrong-one" not in out.stderr
        assert f"redis://:***@127.0.0.1:{port}" in out.stderr
    finally:
        server.kill()
        server.wait()


async def test_lifespan_wraps_the_worker_and_its_failure_exits_1(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    app = make_app()
    job = await app.ref("ping").enqueue()
    out = run("run", "apps.cli_lifespan:app", "--burst", env=env)
    assert out.returncode == 0, out.stderr
    r = await job.result()
    assert r is not None and r.value == "yes"  # state the lifespan yielded

    failed = run("run", "apps.cli_lifespan:app", "--burst", env={**env, "CLI_FAIL_WORKER": ""})
    assert failed.returncode == 1, failed.stderr
    assert "RuntimeError: lifespan refuses to start" in failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == "error: the app's lifespan failed to start"
