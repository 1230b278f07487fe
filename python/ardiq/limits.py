"""Flow control: a task's rate limit and concurrency cap (PROTOCOL.md, Limits).

The limits live in Redis and are enforced by the ``admit`` script wherever a worker
fetches, so they hold across every worker of the queue. This module only parses and checks
what ``@app.task`` is given, and computes a call's limit key at enqueue.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LIMIT_KEY_HEADER",
    "MAX_LIMIT_KEY_BYTES",
    "TaskLimits",
    "limit_key_text",
    "parse_limits",
]

MAX_LIMIT_KEY_BYTES = 200
LIMIT_KEY_HEADER = "ardiq.lk"
"""The header a signing producer seals the limit key in (PROTOCOL.md, Limits)."""
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([smh])\s*$")
_PERIOD_MS = {"s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """A task's limits, as the workers pass them to ``admit``."""

    rate_per_ms: float
    """Tokens per millisecond (0: no rate limit)."""
    burst: float
    """Tokens that may be spent at once (at least 1 when there is a rate limit)."""
    max_concurrency: int
    """Attempts running at once across all workers (0: no cap)."""
    limit_key: str | None
    """The argument whose value keys the limits (None: one limit for the whole task)."""

    @property
    def active(self) -> bool:
        return self.rate_per_ms > 0 or self.max_concurrency > 0


def parse_rate(rate: object) -> float:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` (N a positive number) as tokens per ms."""
    if not isinstance(rate, str):
        raise ValueError(f'rate_limit must be a string like "100/s", "5/m" or "2/h", got {rate!r}')
    m = _RATE.match(rate)
    if m is None:
        raise ValueError(f'rate_limit must look like "100/s", "5/m" or "2/h", got {rate!r}')
    n = float(m.group(1))
    if not (n > 0 and math.isfinite(n)):
        raise ValueError(f"rate_limit needs a positive number of starts, got {rate!r}")
    return n / _PERIOD_MS[m.group(2)]


def parse_limits(
    name: str,
    fn: Any,
    rate_limit: object,
    burst: object,
    max_concurrency: object,
    limit_key: object,
) -> TaskLimits | None:
    """Check ``@app.task``'s limit options (ValueError on a bad one); None when the task
    has no limit."""
    rate = 0.0 if rate_limit is None else parse_rate(rate_limit)
    tokens = 0.0
    if burst is not None:
        if rate_limit is None:
            raise ValueError(f"task {name!r}: burst needs a rate_limit")
        if isinstance(burst, bool) or not isinstance(burst, int | float):
            raise ValueError(f"task {name!r}: burst must be a number of tokens, got {burst!r}")
        if not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"task {name!r}: burst must be at least 1, got {burst!r}")
        tokens = float(burst)
    elif rate > 0:
        tokens = max(1.0, rate * 1000)  # one second's worth, at least one token
    cap = 0
    if max_concurrency is not None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ValueError(
                f"task {name!r}: max_concurrency must be a positive int, got {max_concurrency!r}"
            )
        if max_concurrency < 1:
            raise ValueError(
                f"task {name!r}: max_concurrency must be at least 1, got {max_concurrency}"
            )
        cap = max_concurrency
    if limit_key is not None:
        if not isinstance(limit_key, str) or not limit_key.isidentifier():
            raise ValueError(
                f"task {name!r}: limit_key must name an argument of the task, got {limit_key!r}"
            )
        if rate == 0 and cap == 0:
            raise ValueError(f"task {name!r}: limit_key needs rate_limit or max_concurrency")
        if fn is not None:
            _check_parameter(name, fn, limit_key)
    if rate == 0 and cap == 0:
        return None
    return TaskLimits(rate, tokens, cap, limit_key)


def _check_parameter(name: str, fn: Any, arg: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to check against: the key is looked up at enqueue
    params = sig.parameters
    p = params.get(arg)
    if p is None or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        if p is None and any(q.kind is q.VAR_KEYWORD for q in params.values()):
            return  # may arrive through **kwargs
        raise ValueError(f"task {name!r}: limit_key {arg!r} is not a parameter of the function")


def limit_key_text(task: str, arg: str, value: object) -> str:
    """A limit key's value as the text that keys the limit: an int or a str, at most
    MAX_LIMIT_KEY_BYTES bytes of UTF-8."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"task {task!r}: the limit key argument {arg!r} must be an int or a str, "
            f"got {type(value).__name__}"
        )
    text = str(value)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(
            f"task {task!r}: the limit key argument {arg!r} is not valid text (lone surrogate)"
        ) from None
    if size > MAX_LIMIT_KEY_BYTES:
        raise ValueError(
            f"task {task!r}: the limit key argument {arg!r} is longer than "
            f"{MAX_LIMIT_KEY_BYTES} bytes"
        )
    return text
