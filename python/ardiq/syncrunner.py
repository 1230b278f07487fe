"""Blocking twins: run the app's coroutines from code that is not async.

One private event loop on a daemon thread per app serves every blocking call, so a
Django view or a script pays for one Redis connection pool, not one per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncRunner:
    """Runs coroutines on a private loop thread and blocks the caller for the answer."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"ardiq-sync-{self._name}", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to completion on the private loop and return its result."""
        loop = self._ensure_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("a blocking ardiq call was made from the app's own sync loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
