"""The app of the dashboard API tests (tests/test_dashboard_api.py).

Settings come from the environment: ARDIQ_TEST_QUEUE (queue name), ARDIQ_REDIS_URL (read
by the app itself). `flaky(path)` fails until the file `path` exists, so a dead letter of
it succeeds once replayed after the test creates the file.
"""

from __future__ import annotations

import os

from ardiq import Ardiq

app = Ardiq(
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "dashboard"),
    priorities=["low", "default", "high"],
    poll_block_ms=100,
    history=1000,
)


@app.task
async def ok(n: int) -> int:
    return n


@app.task(max_retries=0)
async def flaky(path: str) -> str:
    if not os.path.exists(path):
        raise RuntimeError(f"<b>not yet</b>: {path}")
    return "done"


@app.task(max_retries=3, backoff_ms=600_000)
async def later(n: int) -> int:
    """Fails once, then waits ten minutes in the delayed set: a retry waiting."""
    raise ValueError(n)


@app.cron("*/5 * * * *")
async def every_five() -> None:
    return None


@app.cron(every=60, name="<i>minutely</i>")
async def minutely() -> None:
    return None
