"""An app whose lifespan fails in the supervised worker number CLI_FAIL_WORKER."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from ardiq import Ardiq

app = Ardiq(
    redis_url=os.environ.get("CLI_APP_REDIS_URL") or None,
    queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "cli"),
    poll_block_ms=100,
)


@app.lifespan
async def lifespan(app: Ardiq) -> AsyncIterator[dict[str, str]]:
    if os.environ.get("ARDIQ_SUPERVISED", "") == os.environ.get("CLI_FAIL_WORKER", "-"):
        raise RuntimeError("lifespan refuses to start")
    yield {"ready": "yes"}


@app.task
async def ping() -> str:
    return str(app.state.ready)
