"""The worker's heartbeat in `P workers` (the engine's `heartbeat.rs`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..runtime import now_ms

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

HEARTBEAT_S = 5.0


async def run(w: Worker) -> None:
    while not w.closing:
        with contextlib.suppress(ArdiqError):
            await w.broker.command("ZADD", w.app.keys.workers, now_ms(), w.worker_id)
        await asyncio.sleep(HEARTBEAT_S)
