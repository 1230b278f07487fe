"""Jittered backoff for the worker's duties, telling a passing Redis failure from a lasting
one, and stopping background tasks for sure (the engine's `backoff.rs` and
`connection::is_transient`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ..errors import ArdiqError, BrokerError

log = logging.getLogger("ardiq")


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until they ended. On Python 3.11 a cancellation
    can be swallowed (asyncio.wait_for inside redis-py, when the inner call completes at
    the same moment), leaving a loop running on: cancel again until every task is done."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(20):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    log.error("%d worker duties did not stop; leaving them", len(pending))


class Backoff:
    """Jittered exponential backoff that logs a failure once per interval, not per try."""

    def __init__(self, what: str, *, base: float = 0.05, cap: float = 5.0) -> None:
        self.what = what
        self.base = base
        self.cap = cap
        self.delay = base
        self.last_log = 0.0

    def reset(self) -> None:
        self.delay = self.base

    async def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self.last_log >= 10.0:
            log.warning("%s failed (%s); retrying with backoff", self.what, exc)
            self.last_log = now
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.5))
        self.delay = min(self.delay * 2, self.cap)


# Server replies that mean "not now" rather than "never", as the engine's is_transient
# reads them: a call refused with one of these is retried as it is, never split.
_TRANSIENT_CODES = frozenset(
    {"BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "LOADING", "OOM", "NOSCRIPT"}
)


def is_transient(exc: ArdiqError) -> bool:
    """Worth retrying as is: the connection or the server is in trouble for now. Anything
    else (a script error, a key of the wrong type) would fail the same way again."""
    if isinstance(exc, BrokerError):
        return True
    text = str(exc).removeprefix("Redis error: ")
    return text.split(" ", 1)[0] in _TRANSIENT_CODES
