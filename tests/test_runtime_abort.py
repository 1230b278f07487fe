"""Runtime.abort: it says whether it cancelled anything, and an abort never outlives the
attempt it was meant for (the next delivery of the same task id runs normally)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from ardiq import Ardiq
from ardiq.runtime import ABORT, OK, Delivery, Runtime
from ardiq.signing import Binding


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    app = Ardiq(redis_url="redis://127.0.0.1:1", queue_name="rt-abort")

    @app.task
    async def quick() -> str:
        return "done"

    @app.task
    async def slow() -> str:
        await asyncio.sleep(5)
        return "slept"

    rt = Runtime(app, "tester")
    yield rt
    rt.close()


def delivery(rt: Runtime, name: str, entry_id: str, task_id: str = "same-id") -> Delivery:
    app = rt.app
    binding = Binding(app.queue_name, "default", task_id, name)
    payload, _ = app._signer.seal(binding, app.serializer([[], {}, None]), 0)
    return Delivery(entry_id, "default", task_id, name, payload, 0, 0)


async def test_abort_of_an_id_never_here_is_refused_and_forgotten(runtime: Runtime) -> None:
    assert runtime.abort("same-id") is False
    outcome = await runtime.execute(delivery(runtime, "quick", "1-0"))
    assert outcome.kind == OK


async def test_abort_after_the_body_ended_does_not_touch_the_next_delivery(
    runtime: Runtime,
) -> None:
    first = await runtime.execute(delivery(runtime, "quick", "1-0"))
    assert first.kind == OK
    # The request came between the end of the body and the engine taking the outcome.
    assert runtime.abort("same-id") is False
    again = await runtime.execute(delivery(runtime, "quick", "2-0"))
    assert again.kind == OK


async def test_abort_of_an_admitted_delivery_stops_it_before_its_body(runtime: Runtime) -> None:
    d = delivery(runtime, "quick", "1-0")
    runtime.admit(d)
    assert runtime.abort("same-id") is True
    outcome = await runtime.execute(d)
    assert outcome.kind == ABORT
    # Spent on that attempt: the next delivery of the id runs.
    assert runtime.abort("same-id") is False
    assert (await runtime.execute(delivery(runtime, "quick", "2-0"))).kind == OK


async def test_abort_names_the_attempt_when_given(runtime: Runtime) -> None:
    d = delivery(runtime, "quick", "1-0")
    runtime.admit(d)
    assert runtime.abort("same-id", "default", "9-0") is False
    assert (await runtime.execute(d)).kind == OK
    released = delivery(runtime, "quick", "3-0")
    runtime.admit(released)
    runtime.release(released)
    assert runtime.abort("same-id") is False


async def test_abort_mid_flight_cancels_the_body(runtime: Runtime) -> None:
    running = asyncio.create_task(runtime.execute(delivery(runtime, "slow", "1-0")))
    await asyncio.sleep(0.05)
    assert runtime.running_ids == ["same-id"]
    assert runtime.abort("same-id") is True
    assert runtime.abort("same-id") is True  # a repeated request: still on its way
    outcome = await asyncio.wait_for(running, 2)
    assert running.cancelling() == 0  # no cancellation left over in the worker's task
    assert outcome.kind == ABORT
    assert runtime.running_ids == []
    assert runtime.abort("same-id") is False
    assert (await runtime.execute(delivery(runtime, "quick", "2-0"))).kind == OK
