"""``await app.run()`` on the Rust engine (the ``ardiq_native`` extension module).

The engine is the one ``ardiq run`` runs (``crates/ardiq-core``): fetch, finish, leases,
reclaim, promotion, crons, aborts and burst, on a thread of its own (``ardiq-engine``)
that never takes the GIL for them. Task bodies run here, on the caller's event loop,
through the same :class:`~ardiq._bridge.Bridge` and :class:`~ardiq.runtime.Runtime` the
binary uses; the hand-over between the two is a socket the loop watches.

Which engine ``app.run()`` uses (:func:`choose`): ``engine=`` if given, else the
``ARDIQ_ENGINE`` environment variable, else ``auto``: this one when the extension is
installed and speaks this package's bridge version, the pure-Python loop
(:mod:`ardiq.worker.engine`) otherwise. Both follow PROTOCOL.md and behave alike; the
differential test (tests/test_differential.py) holds them to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from .._bridge import Bridge
from ..errors import ArdiqError, NativeUnavailable
from ..lifespan import lifespan
from ..worker_settings import WorkerSettings

if TYPE_CHECKING:
    from ..app import Ardiq

log = logging.getLogger("ardiq")

EngineChoice = Literal["auto", "native", "python"]
ENGINE_ENV = "ARDIQ_ENGINE"
# The version of the calls between this module and the extension (its BRIDGE_VERSION).
BRIDGE_VERSION = 2
# How long a cancelled run waits for the engine to let go of its entries.
_CANCEL_GRACE_S = 5.0


def load() -> ModuleType | str:
    """The extension module, or why it cannot be used (a one-line reason)."""
    try:
        import ardiq_native  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        return (
            f"the `ardiq_native` extension is not installed ({exc}); "
            "install `ardiq-native` for this Python"
        )
    version = getattr(ardiq_native, "BRIDGE_VERSION", None)
    if version != BRIDGE_VERSION:
        return (
            f"the installed `ardiq_native` speaks bridge version {version}, this `ardiq` "
            f"speaks {BRIDGE_VERSION}: install matching versions"
        )
    module: ModuleType = ardiq_native
    return module


def choose(engine: str | None) -> tuple[str, ModuleType | None]:
    """``("native", module)`` or ``("python", None)`` for ``engine`` (``None``: the
    ``ARDIQ_ENGINE`` variable, else ``auto``). Raises :class:`NativeUnavailable` when
    ``native`` is required and cannot be had, ``ValueError`` for an unknown choice."""
    choice = engine if engine is not None else (os.environ.get(ENGINE_ENV) or "auto")
    choice = choice.strip().lower()
    if choice not in ("auto", "native", "python"):
        source = "engine=" if engine is not None else ENGINE_ENV
        raise ValueError(f"{source} must be 'auto', 'native' or 'python', got {choice!r}")
    if choice == "python":
        return "python", None
    found = load()
    if isinstance(found, str):
        if choice == "native":
            raise NativeUnavailable(found)
        log.debug("using the pure-Python worker loop: %s", found)
        return "python", None
    return "native", found


class NativeWorker:
    """One run of the Rust engine for `app`, on the running event loop; the same
    interface as the pure loop's :class:`~ardiq.worker.engine.Worker`."""

    def __init__(self, app: Ardiq, module: ModuleType) -> None:
        self.app = app
        self.settings = WorkerSettings.of(app)
        self.worker_id = self.settings.worker_id
        # Checks the settings as the binary does (ValueError); connects nothing yet.
        self._engine: Any = module.Engine(self.settings)
        self.bridge = Bridge(app, self.worker_id, self._engine.outcomes())

    def request_stop(self) -> None:
        """First call: drain. Second: exit now. Thread- and signal-safe, and before the
        run starts (it then drains at once)."""
        self._engine.stop()

    def set_burst(self, on: bool) -> None:
        """``app.burst`` changed while the worker runs."""
        self._engine.set_burst(on)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.bridge.bind(loop)
        done: asyncio.Future[tuple[str, int, str | None]] = loop.create_future()

        def on_done(reason: str, abandoned: int, error: str | None) -> None:
            # The engine's thread, as its last act.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_settle, done, (reason, abandoned, error))

        try:
            async with lifespan(self.app):
                self._engine.start(self.bridge, on_done)
                try:
                    reason, abandoned, error = await asyncio.shield(done)
                except asyncio.CancelledError:
                    # The caller gave up on the run: leave what runs for reclaim, but let
                    # the engine end (it owns the entries' leases) before returning.
                    self._engine.stop_now()
                    self.bridge.cancel_all()
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(asyncio.shield(done), _CANCEL_GRACE_S)
                    raise
                hard = bool(abandoned) or reason in ("forced", "drain_timeout", "error")
                await self.bridge.wind_down(hard)
        finally:
            await loop.run_in_executor(None, self._engine.join)
            self.bridge.runtime.close()
        if error is not None:
            raise ArdiqError(f"the worker cannot go on: {error}")


def _settle(
    future: asyncio.Future[tuple[str, int, str | None]], value: tuple[str, int, str | None]
) -> None:
    if not future.done():
        future.set_result(value)
