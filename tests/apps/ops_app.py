"""The app of the deploy, health and ops tests (tests/test_deploy.py, test_health.py,
test_ops.py).

Settings come from the environment: ARDIQ_TEST_QUEUE (queue name), ARDIQ_REDIS_URL (read
by the app itself), OPS_IMPORT_MARK (a file written once the module is imported, with the
time), OPS_IMPORT_DELAY (seconds to sleep while importing).
"""

from __future__ import annotations

import asyncio
import os
import time

from ardiq import Ardiq

if os.environ.get("OPS_IMPORT_DELAY"):
    time.sleep(float(os.environ["OPS_IMPORT_DELAY"]))

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "ops"),
    priorities=["low", "default", "high"],
    poll_block_ms=100,
    history=1000,  # the dashboard tests read what workers record
    idle_timeout_ms=int(os.environ.get("OPS_IDLE_MS", "60000")),
)


@app.task
async def ok(n: int) -> int:
    return n


@app.task(max_retries=2, backoff_ms=20)
async def fails(message: str) -> None:
    raise ValueError(message)


@app.task
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(max_retries=0)
async def append(path: str) -> int:
    """Opens a file: fails at once when the worker has no file descriptor left."""
    with open(path, "a") as f:
        return f.write("x")


@app.task
async def block_loop(seconds: float) -> float:
    """Blocks the worker's event loop: a bug the liveness probe must catch."""
    time.sleep(seconds)
    return seconds


if os.environ.get("OPS_IMPORT_MARK"):
    with open(os.environ["OPS_IMPORT_MARK"], "w") as f:
        f.write(str(time.time()))
