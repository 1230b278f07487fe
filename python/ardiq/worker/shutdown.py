"""Graceful shutdown: hand the buffer back, let running tasks end, flush outcomes,
retire (the engine's `shutdown.rs`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..protocol import GROUP

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")


async def drain(w: Worker) -> None:
    """Hand the buffer back, let running tasks end, and flush every outcome."""
    await hand_back(w)
    deadline = w.settings.shutdown_timeout_s
    started = time.monotonic()
    while w.running and not w.hard_stop.is_set():
        if deadline is not None and time.monotonic() - started > deadline:
            log.warning(
                "drain deadline passed; leaving %d running tasks for reclaim", len(w.running)
            )
            w.hard_stop_now()
            break
        await w.wait_changed(while_stopping=True)
    if w.running:
        await asyncio.gather(*w.running.values(), return_exceptions=True)
    flush_started = time.monotonic()
    while w.outcomes and not w.hard_stop.is_set():
        w.outcome_ready.set()
        if time.monotonic() - flush_started > 30:
            log.error(
                "could not finish %d outcomes before exit; their tasks will be reclaimed",
                len(w.outcomes),
            )
            break
        await asyncio.sleep(0.01)


async def hand_back(w: Worker) -> None:
    waiting = [ref for _, _, ref in w.buffer if ref in w.held and ref not in w.running]
    w.buffer.clear()
    if not waiting:
        return
    k = w.app.keys
    keys: list[str] = []
    for ref in waiting:
        d = w.held[ref]
        keys += [k.stream(d.lane), k.job(d.task_id)]
    eids = [eid for _, eid in waiting]
    try:
        count = await w.broker.script("handback", keys, [GROUP, w.worker_id, *eids])
        log.info("handed back %d prefetched tasks worker=%s", count, w.worker_id)
    except ArdiqError as exc:
        log.warning("could not hand back prefetched tasks (%s); they will be reclaimed", exc)
    for ref in waiting:
        d = w.held.pop(ref)
        w.by_task.pop(d.task_id, None)


async def retire(w: Worker) -> None:
    await w.broker.script("retire", [w.app.keys.workers, *w.streams], [GROUP, w.worker_id])
