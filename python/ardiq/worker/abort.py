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
from ..runtime import ABORT, Delivery, Outcome
from .backoff import Backoff
from .entry import Ref, ref_of

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


async def check_flag(w: Worker, ref: Ref, d: Delivery) -> None:
    """An abort request overtook this delivery: finish it as aborted, without running
    it, if its job is flagged (a fresh enqueue under the same id is not); otherwise
    let it start. Should Redis fail now it starts: a retry or reclaim of the task
    still finds the flag."""
    flagged = False
    with contextlib.suppress(ArdiqError):
        flagged = await w.broker.command("HGET", w.app.keys.job(d.task_id), "a") == b"1"
    if w.held.get(ref) is not d or any(ref_of(o) == ref for o in w.outcomes):
        return  # lost meanwhile (its lease), or aborted by a request that came since
    if flagged:
        log.warning("task aborted before it started id=%s worker=%s", d.task_id, w.worker_id)
        w.submit(
            Outcome(d.entry_id, d.task_id, ABORT, b"aborted", d.tries, d.enqueue_ms, 0, d.lane)
        )
        return
    heapq.heappush(w.buffer, (w.rank[d.lane], next(w.seq), ref))
    w.dispatch()


def handle(w: Worker, task_id: str) -> None:
    ref = w.by_task.get(task_id)
    if ref is None:
        now = time.monotonic()
        w.early_aborts = {t: at for t, at in w.early_aborts.items() if now - at < 30}
        w.early_aborts[task_id] = now
        return
    if ref in w.running:
        w.runtime.abort(task_id, *ref)
        return
    d = w.held.get(ref)
    if d is not None and all(ref_of(o) != ref for o in w.outcomes):
        log.warning("task aborted before it started id=%s worker=%s", task_id, w.worker_id)
        w.buffer = [item for item in w.buffer if item[2] != ref]
        heapq.heapify(w.buffer)
        w.submit(Outcome(d.entry_id, task_id, ABORT, b"aborted", d.tries, d.enqueue_ms, 0, d.lane))
