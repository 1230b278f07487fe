"""Key names, field names and scripts of the Redis protocol (see PROTOCOL.md).

Everything that names a Redis key lives here, so the layout is written down once on the
Python side; the Rust engine follows the same PROTOCOL.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
GROUP = "ardiq"
PROTOCOL_VERSION = 1

SCRIPT_NAMES = (
    "abort",
    "cron",
    "delete_dead",
    "enqueue",
    "fetch",
    "finish",
    "handback",
    "inspect",
    "promote",
    "queue_size",
    "reclaim",
    "renew",
    "replay",
    "retire",
    "started",
    "wait",
)


# Scripts Redis must refuse while it is out of memory (maxmemory under noeviction). A
# script without a shebang runs in Redis's compatibility mode, where writes inside it are
# never refused: the right thing for `finish` (the ack must land) but not for producers,
# who must hear "out of memory" instead of growing Redis past its limit. The shebang
# (no `allow-oom` flag) makes Redis deny the whole call up front: nothing half-done.
OOM_REFUSED = frozenset({"enqueue"})
SHEBANG = "#!lua\n"


@cache
def script_source(name: str) -> str:
    """The full source of a script: the shared helpers followed by the script itself
    (after the shebang for the scripts in OOM_REFUSED)."""
    folder = LUA_DIR
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    head = SHEBANG if name in OOM_REFUSED else ""
    return head + lib + "\n" + body


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys and channels of one queue."""

    queue: str

    @property
    def prefix(self) -> str:
        # The braces are a Redis Cluster hash tag: every key of a queue shares one slot.
        return f"ardiq:{{{self.queue}}}:"

    def stream(self, lane: str) -> str:
        return f"{self.prefix}stream:{lane}"

    def job(self, task_id: str) -> str:
        return f"{self.prefix}job:{task_id}"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}result:{task_id}"

    def wait(self, task_id: str) -> str:
        return f"{self.prefix}wait:{task_id}"

    def dead_letter(self, task_id: str) -> str:
        return f"{self.prefix}dead:{task_id}"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def crons(self) -> str:
        return f"{self.prefix}crons"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def done_channel(self) -> str:
        return f"{self.prefix}done"

    @property
    def abort_channel(self) -> str:
        return f"{self.prefix}abort"
