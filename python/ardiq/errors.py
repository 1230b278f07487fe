"""Exceptions users catch or raise."""

from __future__ import annotations

__all__ = ["ArdiqError", "BrokerError", "NativeUnavailable", "Retry"]


class ArdiqError(RuntimeError):
    """Base class of every error ArdiQ raises."""


class BrokerError(ArdiqError):
    """Redis is unreachable, or the connection dropped mid-call."""


class NativeUnavailable(ArdiqError):
    """``app.run(engine="native")`` (or ``ARDIQ_ENGINE=native``) was asked for, and the
    ``ardiq_native`` extension is not installed or is of another version."""


class Retry(Exception):
    """Raise inside a task to ask for another attempt.

    ``delay_ms`` overrides the task's backoff for this retry. Retries still count against
    ``max_retries``; once they are spent the task fails with this exception.
    """

    def __init__(self, message: str = "retry requested", *, delay_ms: int | None = None) -> None:
        # Only the message is an exception argument, so ``repr`` (the failure value once
        # the retries are spent) is ``Retry('message')``, as with ardiq 1.2; the delay is
        # an attribute beside it.
        super().__init__(message)
        self.message = message
        self.delay_ms = delay_ms
