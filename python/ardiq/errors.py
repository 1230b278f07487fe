"""Exceptions users catch or raise."""

from __future__ import annotations

__all__ = ["ArdiqError", "BrokerError", "IsolatedTaskError", "NativeUnavailable", "Retry"]


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


class IsolatedTaskError(Exception):
    """What the body of an isolated task (``@app.task(isolated=True)``) raised, as the
    worker sees it: the exception itself stayed in the child process. ``type_name`` is
    its class's name and ``text`` its ``repr``, which is also this error's ``repr``, so
    the failure stored in the result and the dead letters reads as for a task that is not
    isolated (``ValueError('bad input')``). ``on_error`` hooks get this error."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(text)
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text
