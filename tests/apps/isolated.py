"""Isolated tasks (tests/test_worker_isolated.py): bodies that run in child processes.

Settings from the environment: ARDIQ_REDIS_URL, ARDIQ_TEST_QUEUE, and ISO_MAX_TASKS /
ISO_MAX_MEMORY for the app's `max_tasks_per_child` / `max_memory_per_child`. Tasks
record what they did in `ledger:<queue>:<kind>` lists (see apps/ledger.py).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

import redis
from ardiq import Ardiq, ErrorContext, Retry, current_task


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "test"),
    poll_block_ms=200,
    result_ttl_ms=60_000,
    concurrency=4,
    max_tasks_per_child=_env_int("ISO_MAX_TASKS"),
    max_memory_per_child=_env_int("ISO_MAX_MEMORY"),
)

if os.environ.get("ISO_SLOW_IMPORT") and sys.argv[0].endswith("_isolated.py"):
    time.sleep(float(os.environ["ISO_SLOW_IMPORT"]))  # a slow import, in children only

_ledger = redis.Redis.from_url(app.redis_url)
_hoard: list[bytearray] = []  # what `hog` keeps alive in its child


def record(kind: str, value: object) -> None:
    _ledger.rpush(f"ledger:{app.queue_name}:{kind}", str(value))


@app.on_error
def hook(ctx: ErrorContext) -> None:
    assert ctx.name != "fail" or isinstance(ctx.exc, ValueError)
    record("hook", f"{ctx.name}:{type(ctx.exc).__name__}:{ctx.will_retry}")


@app.task(isolated=True)
def whoami(x: int, *, y: int = 0) -> dict[str, Any]:
    """Its context, process and arguments, from inside the child."""
    ctx = current_task()
    assert ctx is not None
    return {
        "pid": os.getpid(),
        "worker": os.getppid(),
        "task_id": ctx.task_id,
        "name": ctx.name,
        "tries": ctx.tries,
        "sum": x + y,
        "data": b"\x00bytes",
        "python": sys.executable,
    }


@app.task(isolated=True, max_retries=0)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(isolated=True, max_retries=2, backoff_ms=10)
def retry_once() -> int:
    ctx = current_task()
    assert ctx is not None
    if ctx.tries == 1:
        raise Retry("again", delay_ms=10)
    return ctx.tries


@app.task(isolated=True, timeout=1, max_retries=0)
def stuck_in_c(seconds: int) -> None:
    """Sleeps inside one C call (libc's sleep): no Python code runs until it returns."""
    record("stuck", os.getpid())
    ctypes.CDLL(None).sleep(seconds)
    record("woke", os.getpid())


@app.task(isolated=True, max_retries=0)
def stuck_no_timeout(seconds: int) -> None:
    record("stuck", os.getpid())
    ctypes.CDLL(None).sleep(seconds)
    record("woke", os.getpid())


@app.task(isolated=True, max_retries=0)
def stuck_with_grandchild(seconds: int) -> None:
    """Starts a process of its own, then sleeps inside a C call."""
    import subprocess

    helper = subprocess.Popen(["sleep", str(seconds)])
    record("grandchild", helper.pid)
    record("stuck", os.getpid())
    ctypes.CDLL(None).sleep(seconds)


@app.task(isolated=True, max_retries=1, backoff_ms=10)
def segfault() -> None:
    record("crash", os.getpid())
    ctypes.string_at(0)  # reads address 0: SIGSEGV


@app.task(isolated=True, max_retries=0)
def hard_exit(code: int) -> None:
    os._exit(code)


@app.task(isolated=True)
def pid() -> int:
    return os.getpid()


@app.task(isolated=True)
def slow_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.task(isolated=True, timeout=1, max_retries=0)
def quick() -> str:
    return "in time"


@app.task(isolated=True)
def hog(mb: int) -> int:
    """Keeps `mb` MB alive in its child (touched, so it is resident)."""
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _hoard.append(block)
    return os.getpid()


@app.task(isolated=True)
def report() -> str:
    ctx = current_task()
    assert ctx is not None
    ctx.progress(40, "almost half")
    ctx.progress({"done": 7}, "seven")
    return "reported"


@app.task
def plain(x: int) -> int:
    return x * 2
