"""Log lines that text from Redis cannot forge: control characters in ArdiQ's own records
(task ids and names come from stream entries anyone with write access to Redis can
write) are escaped, so a task name with a newline cannot add a fake line and one with
`ESC [2J` cannot clear a terminal. The same escapes as the native binary's text logs
(``crates/ardiq-worker/src/escape.rs``): ``\\n``, ``\\r``, ``\\t`` and ``\\xNN`` for the
other C0 controls, DEL and the C1 controls.

Tracebacks (``exc_info``) are left as they are: the formatter adds them, not the message.
"""

from __future__ import annotations

import logging
import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
_TABLE = str.maketrans({c: _NAMED.get(c, f"\\x{ord(c):02x}") for c in _CONTROLS})
_ANY = re.compile("[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (see the module doc)."""
    return text.translate(_TABLE) if _ANY.search(text) else text


class EscapeControls(logging.Filter):
    """Rewrites a record whose message holds control characters (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # the handler reports the broken format string itself
        if _ANY.search(message):
            record.msg = message.translate(_TABLE)
            record.args = None
        return True


def install() -> None:
    """Puts the filter on the `ardiq` logger (every module of the package logs there)."""
    logger = logging.getLogger("ardiq")
    if not any(isinstance(f, EscapeControls) for f in logger.filters):
        logger.addFilter(EscapeControls())
