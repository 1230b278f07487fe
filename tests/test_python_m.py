"""`python -m ardiq`: the pure package's `ardiq` command (the in-code worker with the
binary's flags, banner and exit codes), and its hand-over to the native worker when that
is installed beside the interpreter."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from ardiq import Ardiq
from ardiq._cli import native_worker
from support.workers import TESTS

APP = "apps.cli_app:app"
PURE = {"ARDIQ_HANDOVER": "0"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARDIQ_", "CLI_"))}
    env.update(extra)
    return env


@pytest.fixture
def env(redis_url: str, queue: str) -> dict[str, str]:
    return clean_env(
        ARDIQ_TEST_QUEUE=queue, CLI_APP_REDIS_URL=redis_url, CLI_LEDGER_URL=redis_url, **PURE
    )


def python_m(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ardiq", *args],
        env=env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_help_and_usage_errors() -> None:
    env = clean_env(**PURE)
    out = python_m("--version", env=env)
    assert out.returncode == 0 and out.stdout.startswith("ardiq 0."), out
    out = python_m("run", "--help", env=env)
    assert out.returncode == 0 and "--burst" in out.stdout and "Exit codes:" in out.stdout
    for bad in (["run"], ["run", APP, "--workers", "0"], ["run", APP, "-v", "-q"]):
        out = python_m(*bad, env=env)
        assert out.returncode == 2, (bad, out)
    out = python_m("info", env=env)
    assert out.returncode == 2 and "needs the native worker" in out.stderr, out
    # Recycling is the native worker's: refused, never silently ignored.
    for args, extra in (
        (["run", APP, "--max-tasks", "5"], {}),
        (["run", APP], {"ARDIQ_MAX_MEMORY": "512"}),
    ):
        out = python_m(*args, env={**env, **extra})
        assert out.returncode == 2 and "recycling" in out.stderr, out
        assert "needs the native worker" in out.stderr, out


async def test_burst_runs_the_queue_with_the_banner(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    app = make_app()
    job = await app.ref("echo").enqueue("hello")
    out = python_m("run", APP, "--burst", env=env)
    assert out.returncode == 0, out.stderr
    r = await job.result(timeout=5)
    assert r is not None and r.success and r.value == "hello"
    assert "ardiq 0." in out.stderr and "  app          apps.cli_app:app" in out.stderr
    assert "mode         burst" in out.stderr
    # The banner says the native worker is faster and how to get it.
    assert 'pip install "ardiq[cli]"' in out.stderr and "faster" in out.stderr
    assert "INFO" in out.stderr and "DEBUG" not in out.stderr


async def test_verbose_quiet_and_env_twins(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    app = make_app()
    await app.ref("echo").enqueue("x")
    verbose = python_m("run", APP, "-b", "-v", env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG" in verbose.stderr and "ardiq 0." in verbose.stderr
    await app.ref("echo").enqueue("y")
    quiet = python_m("run", APP, "-b", "-q", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "ardiq 0." not in quiet.stderr and "DEBUG" not in quiet.stderr, quiet.stderr
    # No banner, but the start and stop lines, as `ardiq run -q`.
    assert "worker starting" in quiet.stderr and "worker stopped" in quiet.stderr, quiet.stderr
    await app.ref("echo").enqueue("z")
    twin = python_m("run", APP, env={**env, "ARDIQ_BURST": "1", "ARDIQ_QUIET": "true"})
    assert twin.returncode == 0 and "ardiq 0." not in twin.stderr, twin.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("apps.nope:app", "error: no module named `apps.nope`"),
        ("apps.cli_app:nope", "error: module `apps.cli_app` has no attribute `nope`"),
        ("apps.cli_notapp:app", "error: `apps.cli_notapp:app` is a `int`, not an `ardiq.Ardiq`"),
        ("apps.cli_raises:app", "error: importing `apps.cli_raises:app` raised"),
    ],
)
def test_bad_targets_exit_2(env: dict[str, str], target: str, message: str) -> None:
    out = python_m("run", target, "--burst", env=env)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr


def test_invalid_settings_exit_2(env: dict[str, str]) -> None:
    out = python_m("run", APP, "-b", "--concurrency", "8", "--prefetch", "2", env=env)
    assert out.returncode == 2, out.stderr
    assert "error: invalid settings:" in out.stderr, out.stderr


def test_lifespan_failure_exits_1(env: dict[str, str]) -> None:
    out = python_m("run", "apps.cli_lifespan:app", "-b", env={**env, "CLI_FAIL_WORKER": ""})
    assert out.returncode == 1, out.stderr
    assert "lifespan refuses to start" in out.stderr


async def test_workers_supervise_and_the_first_failure_is_the_exit_code(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    app = make_app()
    jobs = [await app.ref("echo").enqueue(i) for i in range(6)]
    out = python_m("run", APP, "-b", "--workers", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert "workers      2 processes" in out.stderr, out.stderr
    for job in jobs:
        r = await job.result(timeout=5)
        assert r is not None and r.success
    failed = python_m(
        "run", "apps.cli_lifespan:app", "-w", "2", env={**env, "CLI_FAIL_WORKER": "1"}
    )
    assert failed.returncode == 1, failed.stderr


async def test_sigterm_drains_and_exits_0(
    env: dict[str, str], make_app: Callable[..., Ardiq], redis_url: str, queue: str, tmp_path: Path
) -> None:
    app = make_app()
    job = await app.ref("slow").enqueue(1, 1.0)
    log = (tmp_path / "out.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardiq", "run", APP], env=env, cwd=TESTS, stdout=log, stderr=log
    )
    with log:
        await _stop_while_running(proc, redis_url, queue)
    r = await job.result(timeout=5)
    assert r is not None and r.success and r.value == 1  # drained: the task finished


async def _stop_while_running(proc: subprocess.Popen[bytes], redis_url: str, queue: str) -> None:
    try:
        client = aioredis.Redis.from_url(redis_url)
        try:
            for _ in range(1500):
                if await client.lrange(f"ledger:{queue}:started", 0, -1):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the task did not start")
        finally:
            await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_hands_over_to_the_native_worker_when_installed(
    env: dict[str, str], make_app: Callable[..., Ardiq]
) -> None:
    if native_worker() is None:
        pytest.skip("no native `ardiq` beside this interpreter")
    app = make_app()
    job = await app.ref("echo").enqueue("native")
    handed = {k: v for k, v in env.items() if k != "ARDIQ_HANDOVER"}
    out = python_m("run", APP, "-b", env=handed)
    assert out.returncode == 0, out.stderr
    # The binary's banner: its interpreter is the one `python -m` ran under.
    assert f"python       {sys.executable} (from --python)" in out.stderr, out.stderr
    assert "in-code worker" not in out.stderr
    r = await job.result(timeout=5)
    assert r is not None and r.success
