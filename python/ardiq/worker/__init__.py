"""The in-code worker behind ``await app.run()``.

Its modules mirror the engine's duties in ``crates/ardiq-core/src/`` (same names:
``fetch``, ``finish``, ``lease``, ``reclaim``, ``started``, ``promote``, ``scheduler``,
``abort``, ``heartbeat``, ``shutdown``, ``entry``, ``backoff``; ``engine`` holds the
worker's state and its dispatcher), so each duty's two copies can be read side by side.
"""

from .engine import Worker
from .entry import as_fields, parse_entry

__all__ = ["Worker", "as_fields", "parse_entry"]
