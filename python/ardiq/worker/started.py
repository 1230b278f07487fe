"""Marking suspects (and, after a stall or when signing, every delivery) as started
right before they run, with one `started` call per batch (the engine's `started.rs`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..errors import ArdiqError, BrokerError
from ..protocol import GROUP
from ..runtime import Delivery
from .backoff import Backoff
from .entry import Ref, ref_of

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")


async def mark(w: Worker, suspects: list[Delivery], gate: asyncio.Future[set[Ref]]) -> None:
    """One `started` call for a batch of suspects; opens `gate` with the ones this worker
    still holds (the rest were reclaimed elsewhere meanwhile and must not run here)."""
    k = w.app.keys
    keys: list[str] = []
    for d in suspects:
        keys += [k.stream(d.lane), k.job(d.task_id)]
    args = [GROUP, w.worker_id, *(d.entry_id for d in suspects)]
    backoff = Backoff("marking reclaimed tasks as started")
    reply: list[Any] = []  # none may run if this is cancelled (the worker is torn down)
    try:
        while True:
            try:
                reply = list(await w.broker.script("started", keys, args))
                break
            except BrokerError as exc:
                await backoff.wait(exc)  # leases stay renewed meanwhile
            except ArdiqError as exc:
                log.warning("could not mark reclaimed tasks as started (%s); running them", exc)
                reply = [[1, None, None]] * len(suspects)
                break
    finally:
        if not gate.done():
            allowed = set()
            for d, (held, job_entry, job_nonce) in zip(suspects, reply, strict=False):
                if held:
                    # What the live job says, for a signing runtime's check.
                    d.job_entry = None if job_entry is None else job_entry.decode()
                    d.job_nonce = None if job_nonce is None else job_nonce.decode()
                    allowed.add(ref_of(d))
            gate.set_result(allowed)
