"""Lease renewal: keeps every held entry (running, buffered, finishing) from looking idle
to other workers' XAUTOCLAIM (the engine's `lease.rs`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import ArdiqError
from ..protocol import GROUP
from .backoff import Backoff
from .entry import Ref, ref_of

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

# Entries per `renew` call, as the engine sends them.
RENEW_CHUNK = 500


async def run(w: Worker) -> None:
    interval = w.settings.idle_timeout_ms / 3000
    backoff = Backoff("renewing leases")
    while not w.closing:
        await asyncio.sleep(interval)
        began = time.monotonic()
        renewed = True
        held = list(w.held)
        for start in range(0, len(held), RENEW_CHUNK):
            args: list[Any] = [GROUP, w.worker_id]
            for lane, eid in held[start : start + RENEW_CHUNK]:
                args += [w.rank[lane] + 1, eid]  # KEYS are w.streams, highest first
            try:
                lost = await w.broker.script("renew", w.streams, args)
                backoff.reset()
            except ArdiqError as exc:
                renewed = False
                await backoff.wait(exc)
                break
            # Flat (lane index, entry id) pairs: entry ids repeat across streams.
            for j in range(0, len(lost) - 1, 2):
                lost(w, (w.lanes[int(lost[j]) - 1], lost[j + 1].decode()))
        if renewed:
            w.renewed_at = began


def lost(w: Worker, ref: Ref) -> None:
    d = w.held.get(ref)
    if d is None:
        return
    if ref in w.running:
        log.warning(
            "lease lost while running; its outcome will be dropped id=%s worker=%s",
            d.task_id,
            w.worker_id,
        )
    elif all(ref_of(o) != ref for o in w.outcomes):
        w.held.pop(ref, None)
        if w.by_task.get(d.task_id) == ref:
            del w.by_task[d.task_id]
