"""Delayed promotion: moves due tasks from `P delayed` to their streams (the engine's
`promote.rs`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ArdiqError
from .backoff import Backoff

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

# Promotion looks at least this often (sooner when the next due time is sooner).
PROMOTE_MAX_SLEEP_S = 0.1


async def report(w: Worker, ids: list[str] | None = None) -> list[Any]:
    k = w.app.keys
    ids = ids or []
    keys = [k.delayed, *w.streams, *(k.job(i) for i in ids)]
    args: list[Any] = [len(w.lanes), *w.lanes, 200, *ids]
    reply = list(await w.broker.script("promote", keys, args))
    reply[3] = [i.decode() for i in reply[3]]
    return reply


async def run(w: Worker) -> None:
    await move_due(w, report, "promoting delayed tasks", PROMOTE_MAX_SLEEP_S)


Report = Callable[["Worker", "list[str] | None"], Awaitable[Sequence[Any]]]


async def move_due(w: Worker, report: Report, what: str, max_sleep_s: float) -> None:
    """The loop shared by `promote` and `unpark` (two-step scripts of the same shape):
    ask for the due ids, move them, and sleep until the next due time, at most
    `max_sleep_s`."""
    backoff = Backoff(what)
    while not w.closing:
        try:
            _, now, next_due, due = await report(w, None)
            # Go again at once only while ids move: a due id this worker cannot move
            # (its lane is not one of ours) must not make the loop spin.
            if due and (await report(w, due))[0]:
                continue
            backoff.reset()
        except ArdiqError as exc:
            await backoff.wait(exc)
            continue
        pause = max_sleep_s
        if next_due >= 0 and not due:
            pause = min(pause, max(0.001, (next_due - now) / 1000))
        await asyncio.sleep(pause)
