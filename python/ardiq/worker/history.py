"""Upkeep of the task history (PROTOCOL.md, History; the engine's `history.rs`).

`finish` and `reclaim` write the history as they record outcomes. What ages out is
removed here, about once a minute, next to the heartbeat's pruning: history entries older
than `history_ttl_s` (`XTRIM MINID ~`) and the `P stats` counters of older minutes (one
`HKEYS` sweep: a day of counters is a few thousand fields at most).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ArdiqError

if TYPE_CHECKING:
    from .engine import Worker

log = logging.getLogger("ardiq")

TRIM_EVERY_S = 60.0
# Most `P stats` fields in one HDEL.
HDEL_CHUNK = 1000


def stale_fields(fields: Iterable[str], cutoff_minute: int) -> list[str]:
    """The `<kind>:<minute>` fields whose minute is before `cutoff_minute`. A field that
    does not end in a minute is not ours to judge and is left alone."""
    stale = []
    for field in fields:
        _, colon, minute = field.rpartition(":")
        try:
            if colon and int(minute) < cutoff_minute:
                stale.append(field)
        except ValueError:
            continue
    return stale


class Upkeep:
    """When the history was last trimmed, and whether this worker may trim at all (a
    worker with `history` = 0 writes none of it)."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.trimmed_at: float | None = None
        self.allowed = w.settings.history > 0

    async def run_if_due(self, now: int) -> None:
        """Trim when the last trim is TRIM_EVERY_S old (or never ran). Failures are
        retried at the next beat; a refusal by the ACL is said once and trimming stops."""
        if not self.allowed:
            return
        if self.trimmed_at is not None and time.monotonic() - self.trimmed_at < TRIM_EVERY_S:
            return
        try:
            entries, fields = await self.trim(now - self.w.settings.history_ttl_ms)
        except ArdiqError as exc:
            if "NOPERM" in str(exc):
                log.warning(
                    "cannot trim the task history (allow `xtrim`, `hkeys` and `hdel` to the "
                    "worker's ACL user, README Security); it is kept as written error=%s",
                    exc,
                )
                self.allowed = False
            else:
                log.debug("trimming the task history failed error=%s", exc)
            return
        self.trimmed_at = time.monotonic()
        if entries or fields:
            log.debug("trimmed old task history entries=%d counters=%d", entries, fields)

    async def trim(self, cutoff_ms: int) -> tuple[int, int]:
        """Remove history entries before `cutoff_ms` and the counters of minutes before
        it; return how many of each went."""
        broker, keys = self.w.broker, self.w.app.keys
        entries = int(await broker.command("XTRIM", keys.history, "MINID", "~", max(0, cutoff_ms)))
        raw = await broker.command("HKEYS", keys.stats)
        names = [bytes(f).decode("utf-8", "replace") for f in raw]
        stale = stale_fields(names, cutoff_ms // 60_000)
        removed = 0
        for i in range(0, len(stale), HDEL_CHUNK):
            removed += int(await broker.command("HDEL", keys.stats, *stale[i : i + HDEL_CHUNK]))
        return entries, removed
