"""The in-code worker behind ``await app.run()``.

Its modules mirror the engine's duties in ``crates/ardiq-core/src/`` (same names:
``fetch``, ``finish``, ``lease``, ``reclaim``, ``started``, ``promote``, ``scheduler``,
``abort``, ``heartbeat``, ``shutdown``, ``entry``, ``backoff``; ``engine`` holds the
worker's state and its dispatcher), so each duty's two copies can be read side by side.

``Worker`` (the pure-Python loop) is imported on first use: ``app.run()`` on the Rust
engine imports :mod:`ardiq.worker.native` alone, without the loop and the Redis client
it needs.
"""

from typing import TYPE_CHECKING, Any

from .entry import as_fields, parse_entry

if TYPE_CHECKING:
    from .engine import Worker

__all__ = ["Worker", "as_fields", "parse_entry"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from .engine import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
