"""Lanes: a worker drains higher lanes first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code
from ardiq import Ardiq
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_high_lane_drained_first(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)
    task = app.ref("lane_order")
    prepared = []
    # Interleaved, lowest first, so insertion order alone would give the wrong answer.
    for i in range(4):
        for lane in LANES:
            prepared.append(task.options(priority=lane).prepare(f"{lane}-{i}"))
    await app.enqueue_many(prepared)

    worker = start_worker("apps.basic:app", "--burst", "--concurrency", "1")
    assert exit_code(worker, 30) == 0, worker.output()

    order = await ledger.items("order")
    lanes_run = [tag.split("-")[0] for tag in order]
    assert lanes_run == ["high"] * 4 + ["default"] * 4 + ["low"] * 4, (order, worker.output())
    # Within one lane, first in first out.
    assert order[:4] == [f"high-{i}" for i in range(4)]
    assert order[-4:] == [f"low-{i}" for i in range(4)]
