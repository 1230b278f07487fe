"""Progress reported from inside a task (PROTOCOL.md, "Progress").

A body calls ``current_task().progress(value, message=None)``. The runtime checks and
encodes the value in the caller (a bad one raises there), and one :class:`Reporter` per
attempt throttles the writes: at most one every :data:`INTERVAL_S`, the latest value
replacing a waiting one, and the attempt's last value written before its outcome is
handed to ``finish``. Where the write goes depends on the worker: the pure loop sends the
``progress`` script itself, the native engines take it through the bridge, and
``ardiq.testing.inline`` keeps it in memory. Readers get a :class:`Progress` from
``job.progress()``.
"""

from __future__ import annotations

import asyncio
import json
import math
import numbers
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ArdiqError

if TYPE_CHECKING:
    from .runtime import Delivery

__all__ = ["Progress"]

INTERVAL_S = 0.5
"""At most one write per attempt in this many seconds."""
MAX_RECORD_BYTES = 64 * 1024
"""The largest progress record (its whole JSON text), as PROTOCOL.md allows."""
# What the `progress` script adds around the value and message: `{"v":`, `,"m":`,
# `,"t":` with up to 10 digits, `,"at":` with up to 16, `}`.
_RECORD_OVERHEAD = 5 + 5 + 5 + 10 + 6 + 16 + 1

ProgressWriter = Callable[["Delivery", int, str, str], Awaitable[None] | None]
"""Writes one record: (delivery, tries, value JSON text, message JSON text). Returns an
awaitable when the write is asynchronous (the pure loop), else None."""


@dataclass(frozen=True, slots=True)
class Progress:
    """The last progress a task reported (``await job.progress()``).

    ``value`` is what the task passed (a number from 0 to 100, or a mapping, as JSON
    gives it back: tuples become lists), ``message`` its message or ``None``, ``tries``
    the attempt that reported it (from 1) and ``updated_ms`` when it was written (Redis
    server time, epoch ms).
    """

    value: float | dict[str, Any]
    message: str | None
    tries: int
    updated_ms: int


def encode(value: object, message: object) -> tuple[str, str]:
    """The JSON texts of a value and a message the ``progress`` script takes. Raises
    ``TypeError`` or ``ValueError`` saying what is wrong with them."""
    kind = type(value)
    if kind is int or kind is float:  # the common case, quickly (NaN fails the range)
        if not 0 <= value <= 100:  # type: ignore[operator]
            raise ValueError(f"progress value must be a number from 0 to 100, got {value!r}")
        text = repr(value)
        if message is None:
            return text, "null"
    elif isinstance(value, bool) or not isinstance(value, numbers.Real | Mapping):
        raise TypeError(
            "progress value must be a number from 0 to 100 or a mapping, "
            f"not {type(value).__name__}"
        )
    elif isinstance(value, numbers.Real):
        number = value if isinstance(value, int) else float(value)
        if not math.isfinite(number) or not 0 <= number <= 100:
            raise ValueError(f"progress value must be a number from 0 to 100, got {value!r}")
        text = json.dumps(number)
    else:
        data = dict(value)
        _check_keys(data)
        try:
            text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            raise ValueError(f"progress value cannot be JSON: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"progress value cannot be JSON: {exc}") from None
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress message must be a str or None, not {type(message).__name__}")
    message_text = json.dumps(message, ensure_ascii=False)
    size = len(text.encode()) + len(message_text.encode()) + _RECORD_OVERHEAD
    if size > MAX_RECORD_BYTES:
        raise ValueError(
            f"progress record too large: about {size} bytes of JSON, over the limit of "
            f"{MAX_RECORD_BYTES} (64 KiB)"
        )
    return text, message_text


def _check_keys(data: Any) -> None:
    """Every mapping inside has str keys (json.dumps would turn others into text)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"progress value keys must be str, not {type(key).__name__} ({key!r})"
                    )
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def decode(raw: bytes, task_id: str) -> Progress:
    """A stored progress record; :class:`~ardiq.ArdiqError` when it is not one."""
    try:
        record = json.loads(raw)
        value, message, tries, at = record["v"], record["m"], record["t"], record["at"]
        if not (isinstance(value, int | float | dict) and not isinstance(value, bool)):
            raise ValueError("v is neither a number nor an object")
        if message is not None and not isinstance(message, str):
            raise ValueError("m is not a string")
        if type(tries) is not int or type(at) is not int:
            raise ValueError("t and at must be integers")
    except Exception as exc:
        raise ArdiqError(f"progress record of task {task_id!r} is malformed: {exc}") from None
    return Progress(value, message, tries, at)


class Reporter:
    """One attempt's progress writes: throttled, thread-safe (sync bodies report from
    their thread), the last one written by :meth:`close` before the outcome.

    :meth:`offer` is called from any thread; everything else runs on the event loop.
    """

    __slots__ = (
        "_closed",
        "_d",
        "_inflight",
        "_last",
        "_lock",
        "_loop",
        "_pending",
        "_timer",
        "_tries",
        "_write",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, write: ProgressWriter, d: Delivery, tries: int
    ) -> None:
        self._loop = loop
        self._write = write
        self._d = d
        self._tries = tries
        self._lock = threading.Lock()
        self._pending: tuple[str, str] | None = None
        self._last = -math.inf  # time.monotonic() of the last write
        self._timer = False  # a flush is scheduled
        self._closed = False
        self._inflight: asyncio.Future[None] | None = None

    def offer(self, value: str, message: str) -> None:
        """The latest value (JSON texts): written now, or when the interval is up."""
        with self._lock:
            if self._closed:
                return  # a body abandoned by a timeout or an abort, still reporting
            self._pending = (value, message)
            if self._timer:
                return  # the scheduled flush takes the latest value
            self._timer = True
            delay = max(0.0, self._last + INTERVAL_S - time.monotonic())
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        try:
            if on_loop:
                self._loop.call_later(delay, self._flush)
            else:
                self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._flush)
        except RuntimeError:
            pass  # the loop is closed: the worker is gone

    def _flush(self) -> None:
        with self._lock:
            self._timer = False
            pending = self._pending
            if pending is None or self._closed:
                return
            busy = self._inflight is not None and not self._inflight.done()
            if busy:
                self._timer = True  # one write at a time, in order: try again later
            else:
                self._pending = None
                self._last = time.monotonic()
        if busy:
            self._loop.call_later(INTERVAL_S, self._flush)
            return
        self._send(pending)

    def _send(self, pending: tuple[str, str]) -> None:
        result = self._write(self._d, self._tries, *pending)
        if result is not None:
            self._inflight = asyncio.ensure_future(result)

    async def close(self) -> None:
        """The attempt ended: write its last value (after a write in flight, so they
        land in order) and accept no more."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            await asyncio.wait([inflight])
        if pending is not None:
            result = self._write(self._d, self._tries, *pending)
            if result is not None:
                await result
