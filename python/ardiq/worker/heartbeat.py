"""The worker's heartbeat in `P workers` (the engine's `heartbeat.rs`), which also
trims the task history about once a minute (`history.py`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..runtime import now_ms
from .history import Upkeep

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

HEARTBEAT_S = 5.0
# Heartbeats this old are forgotten, about once a minute, by every worker: a worker that
# never retired (killed, its host lost) would otherwise stay in `P workers` for good
# (as the engine's FORGET_AFTER_MS).
FORGET_AFTER_MS = 10 * 60 * 1000
PRUNE_EVERY_S = 60.0


async def run(w: Worker) -> None:
    pruned_at: float | None = None
    may_prune = True
    history = Upkeep(w)
    while not w.closing:
        now = now_ms()
        beat = False
        try:
            await w.broker.command("ZADD", w.app.keys.workers, now, w.worker_id)
            beat = True
            if may_prune and (pruned_at is None or time.monotonic() - pruned_at >= PRUNE_EVERY_S):
                await w.broker.command(
                    "ZREMRANGEBYSCORE", w.app.keys.workers, "-inf", f"({now - FORGET_AFTER_MS}"
                )
                pruned_at = time.monotonic()
        except ArdiqError as exc:
            if "NOPERM" in str(exc) and may_prune:
                # An ACL user set up before pruning existed: say so once, go on beating.
                log.warning(
                    "cannot forget long-gone workers' heartbeats (allow `zremrangebyscore` "
                    "to the worker's ACL user); they stay listed"
                )
                may_prune = False
        if beat:
            await history.run_if_due(now)
        await asyncio.sleep(HEARTBEAT_S)
