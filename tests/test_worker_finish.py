"""Finishing outcomes: one outcome that Redis rejects (a script error) never stalls the
others; an unreachable Redis is waited out without losing any."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, stop_code
from ardiq import Ardiq
from ardiq.errors import ArdiqError, BrokerError
from ardiq.runtime import OK, Delivery, Outcome
from ardiq.worker import Worker, finish
from ardiq.worker.backoff import Backoff
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_an_outcome_finish_rejects_does_not_stall_the_others(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    worker = start_worker("apps.basic:app")
    # Run together, so the poisoned outcome shares finish batches with the others.
    prepared = [app.ref("count").prepare(n) for n in range(30)]
    prepared.insert(5, app.ref("corrupt_own_job").prepare())
    jobs = await app.enqueue_many(prepared)
    await ledger.wait_for("corrupted", 1)
    jobs += await app.enqueue_many([app.ref("count").prepare(n) for n in range(30, 50)])
    for job in jobs[:5] + jobs[6:]:
        r = await job.result(timeout=15)
        assert r is not None and r.success, (job, worker.output())
    assert sorted(int(x) for x in await ledger.items("count")) == list(range(50))
    assert "finish rejected this outcome" in worker.output()
    assert stop_code(worker) == 0, worker.output()


def outcome(n: int) -> Outcome:
    return Outcome(f"{n}-0", f"id-{n}", OK, b"", 1, 0, 0, "default")


@pytest.fixture
def worker(make_app: Callable[..., Ardiq]) -> Worker:
    w = Worker(make_app())
    for n in range(4):
        o = outcome(n)
        w.held[("default", o.entry_id)] = Delivery(o.entry_id, "default", o.task_id, "f", b"", 0, 0)
        w.by_task[o.task_id] = ("default", o.entry_id)
    return w


async def test_finisher_splits_a_rejected_batch_and_releases_the_bad_outcome(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    async def call_finish(_w: Worker, batch: list[Outcome]) -> list[int]:
        calls.append([o.task_id for o in batch])
        if any(o.task_id == "id-2" for o in batch):
            raise ArdiqError("Redis error: WRONGTYPE Operation against a key")
        return [1] * len(batch)

    monkeypatch.setattr(finish, "call_finish", call_finish)
    await finish.finish_batch(worker, [outcome(n) for n in range(4)], Backoff("test", base=0.001))
    assert calls == [["id-0", "id-1", "id-2", "id-3"], ["id-0"], ["id-1"], ["id-2"], ["id-3"]]
    assert worker.held == {} and worker.by_task == {}


@pytest.mark.parametrize(
    "error",
    [
        BrokerError("Redis at redis://x unreachable: connection refused"),
        ArdiqError("Redis error: BUSY Redis is busy running a script"),
        ArdiqError("Redis error: READONLY You can't write against a read only replica."),
    ],
)
async def test_finisher_retries_a_batch_while_redis_is_unreachable(
    worker: Worker, error: ArdiqError, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    async def call_finish(_w: Worker, batch: list[Outcome]) -> list[int]:
        calls.append([o.task_id for o in batch])
        if len(calls) < 3:
            raise error
        return [1] * len(batch)

    monkeypatch.setattr(finish, "call_finish", call_finish)
    await finish.finish_batch(worker, [outcome(n) for n in range(4)], Backoff("test", base=0.001))
    # Never split and never dropped: the whole batch again until Redis takes it.
    assert calls == [["id-0", "id-1", "id-2", "id-3"]] * 3
    assert worker.held == {} and worker.by_task == {}
