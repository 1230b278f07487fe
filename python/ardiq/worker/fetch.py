"""Reading new entries: the `fetch` script, and the blocking read that waits for work
(the engine's `fetch.rs`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..broker import translate_errors
from ..errors import ArdiqError
from ..protocol import GROUP
from .entry import as_fields

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")


async def fetch(w: Worker, count: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
    reply = await w.broker.script("fetch", w.streams, [GROUP, w.worker_id, count])
    out = []
    for i in range(0, len(reply), 3):
        lane = w.lanes[int(reply[i]) - 1]
        flat = reply[i + 2]
        out.append((lane, reply[i + 1].decode(), as_fields(flat)))
    return out


async def block_read(w: Worker) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """Wait for new work on any lane (one entry per lane at most), on the dedicated
    connection. A stop is noticed when the read returns (at most poll_block_ms)."""
    streams: dict[Any, Any] = dict.fromkeys(w.streams, ">")
    try:
        with translate_errors(w.settings.redis_url):
            reply: Any = await w.block_client.xreadgroup(
                GROUP, w.worker_id, streams, count=1, block=w.settings.poll_block_ms
            )
    except ArdiqError as exc:
        if "NOGROUP" in str(exc):
            await fetch(w, 0)  # the fetch script creates missing groups
            return []
        raise
    out = []
    by_stream = {s: lane for s, lane in zip(w.streams, w.lanes, strict=True)}
    for stream, entries in reply or []:
        lane = by_stream[stream.decode() if isinstance(stream, bytes) else stream]
        for eid, fields in entries:
            out.append((lane, eid.decode(), as_fields(fields)))
    return out
