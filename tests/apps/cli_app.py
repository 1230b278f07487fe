"""The app the binary-only tests (tests/test_cli.py) run.

Settings come from the environment: ARDIQ_TEST_QUEUE, CLI_APP_REDIS_URL (the app's own
URL, which `--redis-url` may override), CLI_APP_CONCURRENCY, CLI_APP_IDLE_MS. Tasks
record what happened in Redis lists (`ledger:<queue>:<kind>`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import sys
import time

import redis
from ardiq import Ardiq, current_task

app = Ardiq(
    redis_url=os.environ.get("CLI_APP_REDIS_URL") or None,
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "cli"),
    concurrency=int(os.environ.get("CLI_APP_CONCURRENCY", "8")),
    idle_timeout_ms=int(os.environ.get("CLI_APP_IDLE_MS", "60000")),
    poll_block_ms=100,
)

log = logging.getLogger("cli_app")
_ledger: redis.Redis | None = None


def record(kind: str, value: str) -> None:
    global _ledger
    if _ledger is None:
        _ledger = redis.Redis.from_url(os.environ["CLI_LEDGER_URL"])
    _ledger.rpush(f"ledger:{app.queue_name}:{kind}", value)


@app.task
async def echo(value: object) -> object:
    log.info("echo ran")
    return value


@app.task
async def count(n: int) -> int:
    record("count", str(n))
    return n


@app.task
async def slow(n: int, seconds: float) -> int:
    task = current_task()
    assert task is not None
    record("started", str(n))
    await asyncio.sleep(seconds)
    record("finished", str(n))
    return n


@app.task
def sync_slow(n: int, seconds: float) -> int:
    record("started", str(n))
    time.sleep(seconds)
    record("finished", str(n))
    return n


def _child_prefix(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put([sys.executable, sys.prefix])


@app.task
def environment() -> dict[str, object]:
    """Where the worker runs, and whether spawn and subprocess find the same Python."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_prefix, args=(q,))
    p.start()
    child = q.get(timeout=60)
    p.join(60)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, msgpack; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "path0": sys.path[0],
        "cwd": os.getcwd(),
        "spawn": child,
        "subprocess_prefix": out,
        "settings": [app.concurrency, app.prefetch, app.burst, app.redis_url],
        # What the launcher changed to load libpython must be undone before Python starts.
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
        "launch_vars": sorted(k for k in os.environ if k.startswith("ARDIQ_LAUNCH")),
        "libpython": sorted(
            {ln.split()[-1] for ln in open("/proc/self/maps") if "libpython" in ln}
        ),
    }
