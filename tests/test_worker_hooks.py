"""What a task body experiences: lifespan state, current_task() (async and sync),
middleware order, on_enqueue headers, and the concurrency limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from apps.ledger import LANES, Ledger, exit_code, stop_code
from ardiq import Ardiq
from ardiq.context import EnqueueContext
from support.workers import WorkerProcess


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def test_task_context_middleware_headers_and_lifespan(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    app = make_app(priorities=LANES)

    @app.on_enqueue
    def tag(ctx: EnqueueContext) -> None:
        if ctx.name == "read_headers":
            ctx.headers["trace"] = f"t-{ctx.task_id}"

    sync_who = await app.ref("whoami").enqueue()
    async_who = await app.ref("whoami_async").enqueue()
    headers = await app.ref("read_headers").enqueue()
    traced = await app.ref("mw_trace").enqueue()
    state = await app.ref("read_state").enqueue()

    worker = start_worker("apps.basic:app")
    assert await ledger.wait_for("lifespan", 1) == ["start"]
    for job, name in ((sync_who, "whoami"), (async_who, "whoami_async")):
        r = await job.result(timeout=5)
        assert r is not None and r.success and r.value == [job.id, name, 1]
    r = await headers.result(timeout=5)
    assert r is not None and r.value == {"trace": f"t-{headers.id}"}
    r = await traced.result(timeout=5)
    assert r is not None and r.value == "traced"
    # The first registered middleware is the outermost.
    assert await ledger.items("mw") == ["outer-in", "inner-in", "body", "inner-out", "outer-out"]
    r = await state.result(timeout=5)
    assert r is not None and r.value == "hello from lifespan"
    assert await ledger.items("lifespan") == ["start"]  # still running
    assert stop_code(worker) == 0, worker.output()
    assert await ledger.items("lifespan") == ["start", "stop"]


@pytest.mark.parametrize("limit", [1, 3])
async def test_concurrency_limit_is_respected(
    limit: int,
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
) -> None:
    app = make_app(priorities=LANES)
    jobs = await app.enqueue_many([app.ref("gauge").prepare(0.15) for _ in range(3 * limit)])
    worker = start_worker("apps.basic:app", "--burst", "--concurrency", str(limit))
    assert exit_code(worker, 20) == 0, worker.output()
    for job in jobs:
        r = await job.result()
        assert r is not None and r.success
    seen = [int(x) for x in await ledger.items("gauge")]
    assert len(seen) == 3 * limit
    assert max(seen) == limit, seen  # reached, never exceeded
