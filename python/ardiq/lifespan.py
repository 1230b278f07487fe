"""``@app.lifespan`` and ``app.state``: the lifespan generator run around a worker (the
one copy every worker kind uses) and the namespace its yielded mapping lands in."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .app import Ardiq

__all__ = ["State", "lifespan"]


class State(SimpleNamespace):
    """``app.state``: the entries of the mapping an ``@app.lifespan`` function yields, as
    attributes. Reading one that was never set says where state comes from."""

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup failed: the attribute was never set.
        raise AttributeError(
            f"app.state has no attribute {name!r}: state is set by the mapping an "
            "@app.lifespan function yields, while a worker runs"
        )


def lifespan_factory(fn: object) -> Callable[[Ardiq], AsyncIterator[Any]]:
    """What ``@app.lifespan`` keeps for `fn`: a call that takes the app, whichever form
    `fn` has. Raises TypeError unless `fn` is an async generator function callable with
    no argument or with the app alone (a function that can take the app gets it)."""
    if not inspect.isasyncgenfunction(fn):
        raise TypeError(
            "@app.lifespan needs an async generator function (an `async def` with one "
            f"`yield`), got {fn!r}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read: take the documented form
        signature = None
    if signature is not None and _accepts(signature, None):
        return lambda app: fn(app)
    if signature is None or _accepts(signature):
        return lambda app: fn()
    raise TypeError(
        f"@app.lifespan function {getattr(fn, '__name__', fn)!r} must take no argument or "
        f"the app alone, not {signature}"
    )


def _accepts(signature: inspect.Signature, *args: object) -> bool:
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True


@contextlib.asynccontextmanager
async def lifespan(app: Ardiq) -> AsyncIterator[None]:
    """Enter the app's lifespan generator, copy a mapping it yields onto ``app.state``,
    and finish the generator when the worker is done (it must yield exactly once)."""
    factory = app._lifespan
    if factory is None:
        yield
        return
    gen = cast(AsyncGenerator[Any, None], factory(app))
    state = await gen.__anext__()
    if state is not None:
        if not isinstance(state, Mapping):
            # Its teardown still runs: what it set up before the yield is released.
            with contextlib.suppress(Exception):
                await gen.aclose()
            raise TypeError(
                "@app.lifespan may yield a mapping (copied onto app.state) or None, "
                f"not {type(state).__name__}"
            )
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
