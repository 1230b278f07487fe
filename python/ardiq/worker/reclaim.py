"""Reclaim: take over entries whose worker stopped renewing them, following the
XAUTOCLAIM cursor (the engine's `reclaim.rs`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import ArdiqError
from ..protocol import GROUP
from .backoff import Backoff
from .entry import as_fields

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

# Entries per XAUTOCLAIM page.
RECLAIM_COUNT = 100


async def run(w: Worker) -> None:
    interval = min(w.settings.idle_timeout_ms / 4000, 1.0)
    cursors = dict.fromkeys(w.streams, "0-0")
    backoff = Backoff("reclaiming tasks")
    while not w.closing:
        await asyncio.sleep(interval)
        try:
            for stream, lane in zip(w.streams, w.lanes, strict=True):
                cursors[stream] = await poll_lane(w, stream, lane, cursors[stream])
            backoff.reset()
        except ArdiqError as exc:
            if "NOGROUP" not in str(exc):
                await backoff.wait(exc)


async def poll_lane(w: Worker, stream: str, lane: str, cursor: str) -> str:
    app = w.app
    reply = await w.broker.command(
        "XAUTOCLAIM",
        stream,
        GROUP,
        w.worker_id,
        w.settings.idle_timeout_ms,
        cursor,
        "COUNT",
        RECLAIM_COUNT,
    )
    next_cursor: str = reply[0].decode()
    claimed = [(eid.decode(), fields) for eid, fields in reply[1] if eid is not None]
    if not claimed:
        return next_cursor
    k = app.keys
    keys = [k.dead]
    args: list[Any] = [
        k.prefix,
        GROUP,
        w.worker_id,
        w.settings.result_ttl_ms,
        w.settings.max_deliveries,
        len(claimed),
    ]
    for eid, raw_fields in claimed:
        fields = as_fields(raw_fields)
        raw_id = fields.get(b"id")
        task_id = raw_id.decode(errors="replace") if raw_id else f"entry:{eid}"
        keys += [
            stream,
            k.job(task_id),
            k.wait(task_id),
            k.result(task_id),
            k.dead_letter(task_id),
        ]
        args += [eid, task_id, lane]
    requeued, buried, aborted = await w.broker.script("reclaim", keys, args)
    log.warning(
        "reclaimed tasks of a lost worker lane=%s requeued=%d dead=%d aborted=%d worker=%s",
        lane,
        requeued,
        buried,
        aborted,
        w.worker_id,
    )
    return next_cursor
