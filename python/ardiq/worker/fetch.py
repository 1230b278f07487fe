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


def quotas(weights: list[int], credit: list[int], active: list[int], count: int) -> list[int]:
    """Shares `count` slots among the `active` lanes (indexes into `weights`) by smooth
    weighted round-robin: per slot each active lane gains its weight, the richest takes
    the slot and pays the active total. `credit` carries over between calls, so small
    fetches add up to the weights' shares. Returns one quota per active lane."""
    total = sum(weights[i] for i in active)
    out = [0] * len(active)
    for _ in range(count):
        best = 0
        for j, i in enumerate(active):
            credit[i] += weights[i]
            if credit[i] > credit[active[best]]:
                best = j
        credit[active[best]] -= total
        out[best] += 1
    return out


def active_lanes(w: Worker) -> list[int]:
    """Indexes (into `w.lanes`, highest first) of the lanes not paused."""
    if not w.paused:
        return list(range(len(w.lanes)))
    return [i for i, lane in enumerate(w.lanes) if lane not in w.paused]


async def fetch(w: Worker, count: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
    if w.paused or w.weights is not None:
        return await _fetch_planned(w, count)
    reply = await w.broker.script("fetch", w.streams, [GROUP, w.worker_id, count])
    out = []
    for i in range(0, len(reply), 3):
        lane = w.lanes[int(reply[i]) - 1]
        flat = reply[i + 2]
        out.append((lane, reply[i + 1].decode(), as_fields(flat)))
    return out


async def _fetch_planned(w: Worker, count: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """`fetch` over the lanes not paused, with per-lane quotas when lanes are weighted."""
    active = active_lanes(w)
    if not active or count <= 0:
        return []
    args: list[Any] = [GROUP, w.worker_id, count]
    if w.weights is not None:
        args += quotas(w.weights, w.credit, active, count)
    reply = await w.broker.script("fetch", [w.streams[i] for i in active], args)
    out = []
    for i in range(0, len(reply), 3):
        lane = w.lanes[active[int(reply[i]) - 1]]
        out.append((lane, reply[i + 1].decode(), as_fields(reply[i + 2])))
    return out


async def block_read(w: Worker) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """Wait for new work on any lane not paused (one entry per lane at most), on the
    dedicated connection. A stop is noticed when the read returns (at most
    poll_block_ms). With every lane paused it only waits for a change (a second)."""
    active = active_lanes(w)
    if not active:
        await w.wait_changed()
        return []
    streams: dict[Any, Any] = {w.streams[i]: ">" for i in active}
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
