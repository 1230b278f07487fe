"""`await app.run()` inside a program: burst returns, stop() drains, and a second run()
in the same process works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ardiq import Ardiq, current_task


async def test_run_twice_in_one_process(make_app: Callable[..., Ardiq]) -> None:
    app = make_app(burst=True, poll_block_ms=200)
    seen: list[tuple[str, int]] = []

    @app.task
    async def double(x: int) -> int:
        task = current_task()
        assert task is not None
        seen.append((task.task_id, x))
        return 2 * x

    @app.task
    def triple(x: int) -> int:
        return 3 * x

    first = await double.enqueue(1)
    await asyncio.wait_for(app.run(), 10)
    r = await first.result()
    assert r is not None and r.value == 2

    second = await double.enqueue(2)
    sync = await triple.enqueue(3)
    await asyncio.wait_for(app.run(), 10)
    r = await second.result()
    assert r is not None and r.value == 4
    r = await sync.result()
    assert r is not None and r.value == 9
    assert seen == [(first.id, 1), (second.id, 2)]

    # Not in burst: runs until stop(), then returns; and once more after that.
    app.burst = False
    for n in (10, 20):
        runner = asyncio.create_task(app.run())
        job = await double.enqueue(n)
        r = await job.result(timeout=5)
        assert r is not None and r.value == 2 * n
        app.stop()
        await asyncio.wait_for(runner, 5)
    assert await app.queue_size() == 0
