"""The app's ``@app.lifespan``, run around a worker: the one copy both worker kinds use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Ardiq


@contextlib.asynccontextmanager
async def lifespan(app: Ardiq) -> AsyncIterator[None]:
    """Enter the app's lifespan generator, copy a mapping it yields onto ``app.state``,
    and finish the generator when the worker is done (it must yield exactly once)."""
    factory = app._lifespan
    if factory is None:
        yield
        return
    gen = factory(app)
    state = await gen.__anext__()
    if state is not None:
        if not isinstance(state, Mapping):
            raise TypeError("@app.lifespan may yield a mapping (copied onto app.state) or None")
        for key, value in state.items():
            setattr(app._state, key, value)
    try:
        yield
    finally:
        try:
            await gen.__anext__()
        except StopAsyncIteration:
            pass
        else:
            raise RuntimeError("@app.lifespan must yield exactly once")
