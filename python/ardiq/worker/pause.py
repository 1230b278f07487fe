"""Pausing: which lanes this worker must not take from (the engine's `pause.rs`).

`P paused` (PROTOCOL.md, Pausing) names paused lanes, and `*` for the whole queue. The
worker reads it with one HGETALL at start and then once a second, never per fetch: the
fetch and the blocking read leave paused lanes out, and buffered (prefetched, not
started) entries of a paused lane are handed back for any worker to take once resumed.
Running tasks finish.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..protocol import GROUP

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

# How often `P paused` is read.
POLL_S = 1.0
# The field that pauses the whole queue.
ALL = "*"


async def run(w: Worker) -> None:
    while not w.closing:
        await asyncio.sleep(POLL_S)
        try:
            await refresh(w)
        except ArdiqError as exc:
            log.debug("reading paused lanes failed: %s", exc)


async def refresh(w: Worker) -> None:
    """Read `P paused` once; on a change, wake the consume loop. Hands back what the
    buffer holds of paused lanes."""
    reply = await w.broker.command("HKEYS", w.app.keys.paused)
    names = {k.decode() if isinstance(k, bytes) else str(k) for k in reply}
    paused = set(w.lanes) if ALL in names else names & set(w.lanes)
    if paused != w.paused:
        added, removed = paused - w.paused, w.paused - paused
        w.paused = paused
        if added:
            log.info("lanes paused: %s worker=%s", ",".join(sorted(added)), w.worker_id)
        if removed:
            log.info("lanes resumed: %s worker=%s", ",".join(sorted(removed)), w.worker_id)
        w.changed.set()
        w.dispatch()
    if paused:
        await hand_back_paused(w)


async def hand_back_paused(w: Worker) -> None:
    """Returns the buffered entries of paused lanes to their streams (`handback`)."""
    if not w.buffer or w.stops:
        return
    keep, items = [], []
    for item in w.buffer:
        ref = item[2]
        if ref[0] in w.paused and ref in w.held and ref not in w.running:
            items.append(item)
        else:
            keep.append(item)
    if not items:
        return
    back = [ref for _, _, ref in sorted(items)]  # in arrival order: FIFO survives a pause
    w.buffer[:] = keep
    heapq.heapify(w.buffer)
    k = w.app.keys
    keys: list[str] = []
    for ref in back:
        d = w.held[ref]
        keys += [k.stream(d.lane), k.job(d.task_id)]
    try:
        count = await w.broker.script("handback", keys, [GROUP, w.worker_id, *(e for _, e in back)])
    except ArdiqError as exc:
        # Still held and renewed: try again at the next poll.
        log.warning("could not hand back tasks of paused lanes (%s); retrying", exc)
        for ref in back:
            heapq.heappush(w.buffer, (w.buffer_rank(ref[0]), next(w.seq), ref))
        return
    for ref in back:
        if ref not in w.held:
            continue
        d = w.held.pop(ref)
        if w.by_task.get(d.task_id) == ref:
            del w.by_task[d.task_id]
    w.changed.set()
    log.info("handed back %d prefetched tasks of paused lanes worker=%s", count, w.worker_id)
