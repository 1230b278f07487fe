"""Crons: fires each occurrence once across all workers (the engine's `scheduler.rs`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import ArdiqError
from ..runtime import now_ms
from ..signing import Binding

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")


async def run(w: Worker) -> None:
    app = w.app
    start = now_ms()
    upcoming = {c.name: c.schedule.next_after(start) for c in app.cron_jobs}
    k = app.keys
    while not w.closing:
        due = [(t, n) for n, t in upcoming.items() if t is not None]
        if not due:
            return
        when, name = min(due)
        wait = (when - now_ms()) / 1000
        if wait > 0:
            await asyncio.sleep(min(wait, app.cron_poll_s))
            continue
        job = app._crons[name]
        task_id = f"cron:{name}:{when}"
        try:
            lane = job.task.priority
            # Sealed with a nonce of its own, kept by the job record: a replayed
            # occurrence finds none (PROTOCOL.md, Signed payloads).
            payload, nonce = app._signer.seal(
                Binding(w.settings.queue_name, lane, task_id, name),
                app.serializer([[], {}, None]),
                when,
            )
            fired = await w.broker.script(
                "cron",
                [k.crons, k.stream(lane), k.job(task_id), k.result(task_id), k.crons_paused],
                [name, when, task_id, name, payload, lane, nonce],
            )
            if fired == 1:
                log.debug("cron fired name=%s id=%s worker=%s", name, task_id, w.worker_id)
            elif fired == 2:
                log.debug("cron paused name=%s occurrence=%s skipped", name, when)
        except ArdiqError as exc:
            log.warning("cron %s could not be enqueued (%s); skipping this occurrence", name, exc)
        upcoming[name] = job.schedule.next_after(max(when, now_ms()))
