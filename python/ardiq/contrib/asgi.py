"""ArdiQ in an ASGI app (FastAPI, Starlette, ...): a lifespan and a dependency.

Needs nothing beyond ArdiQ: no ASGI framework is imported here.

    queue = Ardiq(queue_name="mail")
    api = FastAPI(lifespan=ardiq_lifespan(queue))

    @api.post("/send")
    async def send(q: Annotated[Ardiq, Depends(ardiq_dependency(queue))]) -> dict[str, str]:
        job = await q.send("send_mail", "to@example.com")
        return {"id": job.id}

The lifespan connects at startup (a Redis that cannot be reached stops the server from
starting, with the `BrokerError` saying why) and closes the app's connections at
shutdown, in the server's event loop, the loop the requests run in.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Ardiq

__all__ = ["STATE_KEY", "ardiq_dependency", "ardiq_lifespan"]

STATE_KEY = "ardiq"
"""The key of the lifespan state (``request.state.ardiq`` in Starlette/FastAPI)."""

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def ardiq_lifespan(
    app: Ardiq, inner: Lifespan | None = None, *, connect: bool = True
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for an ASGI framework (``FastAPI(lifespan=...)``): open `app`'s Redis
    connections at startup (``connect=False``: on first use instead), close them at
    shutdown (``app.aclose()``).

    `inner` is the web app's own lifespan, if it has one: it runs inside ours (Redis is
    reachable throughout), and the state it yields is passed on along with
    ``{"ardiq": app}``."""

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            if connect:
                await app._client().broker.command("PING")
            if inner is None:
                yield {STATE_KEY: app}
                return
            async with inner(asgi_app) as state:
                yield {**(state or {}), STATE_KEY: app}
        finally:
            await app.aclose()

    return lifespan


def ardiq_dependency(app: Ardiq) -> Callable[[], Ardiq]:
    """A dependency that hands a request `app`: ``Depends(ardiq_dependency(app))``.

    Endpoints that take the app through it can be given another one in tests
    (``api.dependency_overrides``), for example an app under ``ardiq.testing.inline``."""

    def dependency() -> Ardiq:
        return app

    dependency.__name__ = "ardiq_app"
    return dependency
