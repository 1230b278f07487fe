"""Blocking twins: run the app's coroutines from code that is not async.

One private event loop on a daemon thread per app serves every blocking call, so a
Django view or a script pays for one Redis connection pool, not one per call. The loop
and its connections are closed by :meth:`SyncRunner.close` (``app.close_sync()``) or,
at the latest, when the app is garbage collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncRunner:
    """Runs coroutines on a private loop thread and blocks the caller for the answer."""

    def __init__(self, name: str, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self._name = name
        self._on_close = on_close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed() or not self._loop.is_running():
                loop = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(
                    target=_serve,
                    args=(loop, started),
                    name=f"ardiq-sync-{self._name}",
                    daemon=True,
                )
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _check_caller(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is loop:
            raise RuntimeError("a blocking ardiq call was made from the app's own sync loop")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to completion on the private loop and return its result."""
        loop = self._ensure_loop()
        try:
            self._check_caller(loop)
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self, timeout: float = 10.0) -> None:
        """Close the private loop's connections and stop its thread (blocking)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return
        self._check_caller(loop)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(loop), loop).result(timeout)
        if thread is not None:
            thread.join(timeout)

    def close_soon(self) -> None:
        """Like :meth:`close` without waiting; safe from a finalizer on any thread."""
        loop, self._loop, self._thread = self._loop, None, None
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(lambda: loop.create_task(self._shutdown(loop)))

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            if self._on_close is not None:
                with contextlib.suppress(Exception):
                    await self._on_close()
        finally:
            loop.call_soon(loop.stop)


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
    finally:
        # Calls still in flight when the runner closed end with CancelledError, not never.
        with contextlib.suppress(Exception):
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
