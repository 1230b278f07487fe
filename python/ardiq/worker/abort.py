"""Abort requests: the `P abort` subscription and acting on the ids this worker holds
(the engine's `abort.rs`).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from typing import TYPE_CHECKING

from redis import exceptions as rexc

from ..errors import ArdiqError
from ..runtime import ABORT, Outcome
from .backoff import Backoff
from .entry import ref_of

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")


async def run(w: Worker) -> None:
    channel = w.app.keys.abort_channel
    backoff = Backoff("listening for aborts")
    while not w.closing:
        pubsub = w.broker.client.pubsub()
        try:
            await pubsub.subscribe(channel)
            while True:
                msg = await pubsub.get_message(timeout=5.0)
                if msg is None:
                    continue
                if msg["type"] == "subscribe":
                    w.abort_ready.set()
                    backoff.reset()
                elif msg["type"] == "message":
                    handle(w, msg["data"].decode())
        except (rexc.RedisError, OSError) as exc:
            w.abort_ready.set()  # do not hold the worker back on a flaky Redis
            await backoff.wait(exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def check_flag(w: Worker, task_id: str) -> None:
    """An abort request overtook this task's delivery: abort it if its job is flagged
    (a fresh enqueue under the same id is not)."""
    with contextlib.suppress(ArdiqError):
        if await w.broker.command("HGET", w.app.keys.job(task_id), "a") == b"1":
            handle(w, task_id)


def handle(w: Worker, task_id: str) -> None:
    ref = w.by_task.get(task_id)
    if ref is None:
        now = time.monotonic()
        w.early_aborts = {t: at for t, at in w.early_aborts.items() if now - at < 30}
        w.early_aborts[task_id] = now
        return
    if ref in w.running:
        w.runtime.abort(task_id)
        return
    d = w.held.get(ref)
    if d is not None and all(ref_of(o) != ref for o in w.outcomes):
        log.warning("task aborted before it started id=%s worker=%s", task_id, w.worker_id)
        w.buffer = [item for item in w.buffer if item[2] != ref]
        heapq.heapify(w.buffer)
        w.submit(Outcome(d.entry_id, task_id, ABORT, b"aborted", d.tries, d.enqueue_ms, 0, d.lane))
