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
from .backoff import Backoff, is_transient

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
            await finish_batch(w, batch, backoff)
            # New outcomes are only ever appended: the batch is still the head.
            del w.outcomes[: len(batch)]
            w.changed.set()


async def finish_batch(w: Worker, batch: list[Outcome], backoff: Backoff) -> None:
    """Finish `batch`, retrying while Redis is unreachable (the outcomes stay queued
    and their leases renewed). A batch the server rejects (a script error: some key
    of the wrong type, say) is split, as the engine does, so one poisoned outcome
    cannot wedge every other: each is then tried alone, and one that still fails is
    logged and released. Its entry stays pending, is reclaimed once its lease runs
    out, and ends in the dead letters at the delivery cap."""
    while True:
        try:
            reply = await call_finish(w, batch)
        except ArdiqError as exc:
            if is_transient(exc):
                await backoff.wait(exc)
                continue
            if len(batch) > 1:
                log.warning(
                    "finish rejected a batch (%s); finishing one by one outcomes=%d",
                    exc,
                    len(batch),
                )
                for outcome in batch:
                    await finish_batch(w, [outcome], backoff)
                return
            outcome = batch[0]
            log.error(
                "finish rejected this outcome; leaving the entry for reclaim "
                "id=%s worker=%s try=%d error=%s",
                outcome.task_id,
                w.worker_id,
                outcome.tries,
                exc,
            )
            w.release(outcome)
            return
        backoff.reset()
        for outcome, recorded in zip(batch, reply, strict=True):
            w.release(outcome)
            if not recorded:
                log.warning(
                    "stale outcome dropped: another worker holds the task now id=%s worker=%s",
                    outcome.task_id,
                    w.worker_id,
                )
            elif outcome.kind == RETRY:
                w.retry_due_ms = max(w.retry_due_ms, now_ms() + outcome.delay_ms)
        return


async def call_finish(w: Worker, batch: list[Outcome]) -> list[int]:
    k = w.app.keys
    s = w.settings
    keys = [k.delayed, k.dead, k.history, k.stats]
    args: list[Any] = [k.prefix, GROUP, w.worker_id, s.result_ttl_ms, len(batch), s.history]
    for o in batch:
        keys += [
            k.stream(o.lane),
            k.job(o.task_id),
            k.wait(o.task_id),
            k.result(o.task_id),
            k.dead_letter(o.task_id),
            k.attempts(o.task_id),
        ]
        args += o.fields()
    reported = w.progressed
    if reported:
        # The outcomes whose attempt reported progress (the rest have none to keep).
        args.append(
            " ".join(str(i) for i, o in enumerate(batch, 1) if (o.lane, o.entry_id) in reported)
        )
    return list(await w.broker.script("finish", keys, args))
