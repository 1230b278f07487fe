"""Finishing: outcomes in, one `finish` call per batch out (the engine's `finish.rs`).

Every outcome is retried until Redis takes it, keeping its entry leased meanwhile; a
batch the server rejects is split so that one poisoned outcome cannot wedge the rest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import ArdiqError
from ..protocol import GROUP
from ..runtime import RETRY, Outcome, now_ms
from .backoff import Backoff
from .entry import ref_of

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

# Most outcomes in one `finish` call, as the engine sends them.
FINISH_BATCH = 500


async def run(w: Worker) -> None:
    backoff = Backoff("finishing tasks")
    while not w.closing:
        await w.outcome_ready.wait()
        w.outcome_ready.clear()
        while w.outcomes:
            batch = w.outcomes[:FINISH_BATCH]
            try:
                reply = await call_finish(w, batch)
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)  # outcomes stay queued; leases stay renewed
                continue
            del w.outcomes[: len(batch)]
            for outcome, recorded in zip(batch, reply, strict=True):
                held = w.held.pop(ref_of(outcome), None)
                # A dropped entry's outcome names `entry:<id>`, not its task.
                task_id = outcome.task_id if held is None else held.task_id
                if w.by_task.get(task_id) == ref_of(outcome):
                    del w.by_task[task_id]
                if not recorded:
                    log.warning(
                        "stale outcome dropped: another worker holds the task now id=%s worker=%s",
                        outcome.task_id,
                        w.worker_id,
                    )
                elif outcome.kind == RETRY:
                    w.retry_due_ms = max(w.retry_due_ms, now_ms() + outcome.delay_ms)
            w.changed.set()


async def call_finish(w: Worker, batch: list[Outcome]) -> list[int]:
    k = w.app.keys
    keys = [k.delayed, k.dead]
    args: list[Any] = [k.prefix, GROUP, w.worker_id, w.settings.result_ttl_ms, len(batch)]
    for o in batch:
        keys += [
            k.stream(o.lane),
            k.job(o.task_id),
            k.wait(o.task_id),
            k.result(o.task_id),
            k.dead_letter(o.task_id),
        ]
        args += [
            o.entry_id,
            o.task_id,
            o.kind,
            o.value,
            o.tries,
            o.enqueue_ms,
            o.start_ms,
            o.lane,
            o.delay_ms,
            o.retry_payload,
        ]
    return list(await w.broker.script("finish", keys, args))
