"""Cron: with three workers running, each occurrence fires exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import Ledger, stop_code
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_cron_fires_once_per_occurrence_across_three_workers(
    start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    workers = [start_worker("apps.cron:app") for _ in range(3)]
    await ledger.wait_for("cron", 1, timeout=10)  # every worker is up by now, give or take
    await asyncio.sleep(3.6)
    for w in workers:
        assert stop_code(w) == 0, w.output()

    ids = await ledger.items("cron")
    runs = Counter(ids)
    assert all(n == 1 for n in runs.values()), runs
    occurrences = sorted(int(i.split(":")[2]) for i in runs)
    assert all(i.startswith("cron:tick:") for i in runs)
    # Aligned to whole seconds, none missed while the workers ran.
    assert all(ms % 1000 == 0 for ms in occurrences)
    assert occurrences == list(range(occurrences[0], occurrences[-1] + 1000, 1000))
    assert 4 <= len(occurrences) <= 6, occurrences
