"""Flow control: entries of limited tasks go through the `admit` script before they are
buffered, and parked ones come back with `unpark` (the engine's `limits.rs`; PROTOCOL.md,
Limits). A worker whose app declares no limit never calls either."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..protocol import GROUP
from .backoff import Backoff
from .promote import move_due

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

Entry = tuple[str, str, dict[bytes, bytes]]
# Unparking looks at least this often (sooner when the next due time is sooner), as
# promotion does.
UNPARK_MAX_SLEEP_S = 0.1


async def admit(w: Worker, entries: list[Entry]) -> list[Entry]:
    """The entries that may run now; the rest were parked by `admit` and are no longer
    ours. Entries of unlimited tasks (and malformed ones) pass untouched. A failed call is
    retried (the entries stay leased to us meanwhile: a stall longer than the lease is
    caught by the start check, as after any stall)."""
    limits = w.limits
    chosen: list[int] = []
    app = w.app
    keys = app.keys
    lanes = app.priorities  # lowest first: the lane index of a holder
    args: list[str | int] = [GROUP, len(lanes)]
    call_keys = [keys.stream(lane) for lane in lanes]
    call_keys.append(keys.parked)
    for i, (lane, eid, fields) in enumerate(entries):
        raw_fn, raw_id = fields.get(b"fn"), fields.get(b"id")
        if raw_fn is None or not raw_id:
            continue
        try:
            name, task_id = raw_fn.decode(), raw_id.decode()
            lk_raw = fields.get(b"lk")
            lk = lk_raw.decode() if lk_raw else None
        except UnicodeDecodeError:
            continue  # refused as malformed by the usual path
        limit = limits.get(name)
        if limit is None:
            continue
        chosen.append(i)
        call_keys += [keys.limit(name, lk), keys.job(task_id)]
        args += [
            lanes.index(lane),
            eid,
            task_id,
            "1" if fields.get(b"ad") == b"1" else "0",
            repr(limit.rate_per_ms),
            repr(limit.burst),
            limit.max_concurrency,
            lk or "",
        ]
    if not chosen:
        return entries
    backoff = Backoff("admitting limited tasks")
    while True:
        try:
            verdicts = await w.broker.script("admit", call_keys, args)
            break
        except ArdiqError as exc:
            if w.stops:
                return entries  # stopping: the drain hands them back unrun
            await backoff.wait(exc)
    parked = {i for i, v in zip(chosen, verdicts, strict=True) if int(v) == 0}
    if not parked:
        return entries
    log.debug("parked by a limit count=%d worker=%s", len(parked), w.worker_id)
    return [e for i, e in enumerate(entries) if i not in parked]


async def report(w: Worker, ids: list[str] | None = None) -> tuple[int, int, int, list[str]]:
    """One `unpark` call: without ids it reports the due ids; with ids it moves them.
    Returns (moved, server now ms, next due ms or -1, due ids not yet moved)."""
    k = w.app.keys
    ids = ids or []
    keys = [k.parked, *w.streams, *(k.job(i) for i in ids)]
    args: list[str | int] = [len(w.lanes), *w.lanes, 200, *ids]
    reply = await w.broker.script("unpark", keys, args)
    return int(reply[0]), int(reply[1]), int(reply[2]), [i.decode() for i in reply[3]]


async def run(w: Worker) -> None:
    """Move parked entries back to their streams when due, as promotion does for delayed
    ones: sleep until the next due time, at most 100 ms."""
    await move_due(w, report, "unparking limited tasks", UNPARK_MAX_SLEEP_S)
