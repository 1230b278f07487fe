"""ASGI/FastAPI: the lifespan opens and closes the app's connections, the dependency hands
endpoints the app, and a request enqueues a task that a worker runs and awaits its result."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and
# the dependency's alias is local to make_api.
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import pytest
from ardiq import Ardiq, BrokerError
from ardiq.contrib.asgi import ardiq_dependency, ardiq_lifespan
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from support.workers import WorkerProcess

LANES = ["low", "default", "high"]


def make_api(queue: Ardiq, **lifespan: Any) -> FastAPI:
    """The README's example, give or take: an endpoint enqueues `add` and awaits it."""
    api = FastAPI(lifespan=ardiq_lifespan(queue, **lifespan))
    QueueDep = Annotated[Ardiq, Depends(ardiq_dependency(queue))]

    @api.post("/add")
    async def add(a: int, b: int, q: QueueDep) -> dict[str, Any]:
        job = await q.send("add", a, b)
        result = await job.result(timeout=30)
        assert result is not None
        return {"id": job.id, "sum": result.value, "tries": result.tries}

    @api.get("/connected")
    async def connected(q: QueueDep, request: Request) -> dict[str, Any]:
        return {"clients": len(q._clients), "state": request.state.ardiq is q}

    return api


def test_a_request_enqueues_a_task_and_awaits_its_result(
    start_worker: Callable[..., WorkerProcess], redis_url: str, queue: str
) -> None:
    app = Ardiq(redis_url, queue, LANES)
    start_worker("apps.basic:app")
    with TestClient(make_api(app)) as client:
        # Connected at startup, in the loop the requests run in.
        assert len(app._clients) == 1
        assert client.get("/connected").json() == {"clients": 1, "state": True}
        reply = client.post("/add", params={"a": 2, "b": 40})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["sum"] == 42 and body["tries"] == 1
    # Shutdown closed the connections.
    assert app._clients == {}
    # It ran on the worker: the job is complete in Redis, not in this process.
    assert app.status_sync(body["id"]) == "complete"
    app.close_sync()


def test_the_web_apps_own_lifespan_runs_inside(redis_url: str, queue: str) -> None:
    app = Ardiq(redis_url, queue, LANES)
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append(f"start connected={len(app._clients)}")
        yield {"greeting": "hi"}
        events.append(f"stop connected={len(app._clients)}")

    api = make_api(app, inner=own)

    @api.get("/greeting")
    async def greeting(request: Request) -> str:
        return str(request.state.greeting)

    with TestClient(api) as client:
        assert client.get("/greeting").json() == "hi"
        assert client.get("/connected").json() == {"clients": 1, "state": True}
    assert events == ["start connected=1", "stop connected=1"]
    assert app._clients == {}


def test_an_unreachable_redis_stops_the_startup() -> None:
    app = Ardiq("redis://127.0.0.1:1", "nowhere")
    with pytest.raises(BrokerError), TestClient(make_api(app)):
        pass
    assert app._clients == {}
    # connect=False: the server starts, and connects on first use.
    with TestClient(make_api(app, connect=False)) as client:
        assert client.get("/connected").json() == {"clients": 0, "state": True}
