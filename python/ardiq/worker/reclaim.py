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
# Pages per lane in one reclaim round while each comes back full (as the engine): drains a
# backlog quickly without letting one round run unbounded.
RECLAIM_PAGES = 10


async def run(w: Worker) -> None:
    interval = min(w.settings.idle_timeout_ms / 4000, 1.0)
    # Follow the cursor XAUTOCLAIM returns from one round to the next: restarting at
    # 0-0 every round would rescan the head of the pending list and starve its tail.
    cursors = dict.fromkeys(w.streams, "0-0")
    backoff = Backoff("reclaiming tasks")
    while not w.closing:
        await asyncio.sleep(interval)
        try:
            await reclaim_all(w, cursors)
            backoff.reset()
        except ArdiqError as exc:
            if "NOGROUP" not in str(exc):
                await backoff.wait(exc)


async def reclaim_all(w: Worker, cursors: dict[str, str]) -> tuple[int, bool]:
    """One round over every lane, as the engine does: pages of RECLAIM_COUNT, up to
    RECLAIM_PAGES per lane while they come back full. Returns how many entries were
    taken over, and whether some lane stopped at the page limit (more may wait).
    A lane that fails does not stop the others; the first error is raised after."""
    claimed = 0
    more = False
    error: ArdiqError | None = None
    for stream, lane in zip(w.streams, w.lanes, strict=True):
        for page in range(RECLAIM_PAGES):
            try:
                cursors[stream], n = await poll_lane(w, stream, lane, cursors[stream])
            except ArdiqError as exc:
                if "NOGROUP" in str(exc):
                    # No group yet (or Redis lost its data): nothing to reclaim here;
                    # the fetch recreates it.
                    cursors[stream] = "0-0"
                elif error is None:
                    error = exc
                break
            claimed += n
            if n < RECLAIM_COUNT or cursors[stream] == "0-0":
                break
            if page == RECLAIM_PAGES - 1:
                more = True
    if error is not None:
        raise error
    return claimed, more


async def poll_lane(w: Worker, stream: str, lane: str, cursor: str) -> tuple[str, int]:
    """One XAUTOCLAIM page and its `reclaim` call: the next cursor and how many
    entries were claimed. On a failed `reclaim` the cursor is not moved: the same
    entries (now ours and idle) come back next round."""
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
        return next_cursor, 0
    k = app.keys
    keys = [k.dead, k.history, k.stats]
    args: list[Any] = [
        k.prefix,
        GROUP,
        w.worker_id,
        w.settings.result_ttl_ms,
        w.settings.max_deliveries,
        len(claimed),
        w.settings.history,
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
            k.attempts(task_id),
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
    return next_cursor, len(claimed)
