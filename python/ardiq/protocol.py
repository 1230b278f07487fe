"""Key names, field names and scripts of the Redis protocol (see PROTOCOL.md).

Everything that names a Redis key lives here, so the layout is written down once on the
Python side; the Rust engine follows the same PROTOCOL.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
GROUP = "ardiq"
PROTOCOL_VERSION = 1

SCRIPT_NAMES = (
    "abort",
    "admit",
    "cron",
    "delete_dead",
    "enqueue",
    "fetch",
    "finish",
    "handback",
    "inspect",
    "progress",
    "promote",
    "purge",
    "queue_size",
    "reclaim",
    "renew",
    "replay",
    "retire",
    "run_now",
    "started",
    "unpark",
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


# The scripts as one Redis 7 function library (`ardiq functions install`, README
# "Security"): an administrator loads it once and producers and workers call its functions
# with FCALL, so they need no right to load Lua of their own. Same sources as the scripts;
# Python and the Rust engine generate it byte for byte alike (tests/vectors/functions/).
LIBRARY_PREFIX = "ardiq_"


def library_text(lib: str, scripts: Sequence[tuple[str, str]], tag: str) -> str:
    """The library named `ardiq_<tag>`: `lib` once, then each (name, body) wrapped in a
    local function whose parameters are KEYS and ARGV (the bodies read them as globals
    and return at top level, which a function body allows), registered as
    `ardiq_<tag>_<name>`. Every function but those in OOM_REFUSED may run out of memory:
    the ack must land (PROTOCOL.md, "Finishing"); enqueue is refused whole, as its
    shebang makes the script refused."""
    name = LIBRARY_PREFIX + tag
    parts = [f"#!lua name={name}\n", lib, "\n"]
    for script, body in scripts:
        flags = "" if script in OOM_REFUSED else ", flags={'allow-oom'}"
        parts.append(
            f"local function run_{script}(KEYS, ARGV)\n{body}\nend\n"
            f"redis.register_function{{function_name='{name}_{script}', "
            f"callback=run_{script}{flags}}}\n"
        )
    return "".join(parts)


def library_tag(lib: str, scripts: Sequence[tuple[str, str]]) -> str:
    """The first 12 hex digits of the SHA-1 of the library text generated with an empty
    tag: it changes with any source, flag or wrapping change, so two versions of ArdiQ
    each find their own library and can be loaded side by side."""
    text = library_text(lib, scripts, "")
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


@cache
def library() -> tuple[str, str]:
    """(name, text) of this package's function library."""
    lib = (LUA_DIR / "_lib.lua").read_text(encoding="utf-8")
    scripts = [(n, (LUA_DIR / f"{n}.lua").read_text(encoding="utf-8")) for n in SCRIPT_NAMES]
    tag = library_tag(lib, scripts)
    return LIBRARY_PREFIX + tag, library_text(lib, scripts, tag)


def function_name(script: str) -> str:
    """The name under which the library registers `script`."""
    return f"{library()[0]}_{script}"


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

    def progress(self, task_id: str) -> str:
        return f"{self.prefix}progress:{task_id}"

    def dead_letter(self, task_id: str) -> str:
        return f"{self.prefix}dead:{task_id}"

    def attempts(self, task_id: str) -> str:
        """The task's failed attempts (PROTOCOL.md, History)."""
        return f"{self.prefix}attempts:{task_id}"

    @property
    def history(self) -> str:
        """The stream of completed tasks (PROTOCOL.md, History)."""
        return f"{self.prefix}history"

    @property
    def stats(self) -> str:
        """Throughput counters per kind and minute (PROTOCOL.md, History)."""
        return f"{self.prefix}stats"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def parked(self) -> str:
        """Tasks parked by a rate limit or concurrency cap (PROTOCOL.md, Limits)."""
        return f"{self.prefix}parked"

    def limit(self, task: str, limit_key: str | None = None) -> str:
        """A task's limit hash, per limit key when it has one (PROTOCOL.md, Limits)."""
        if limit_key is None:
            return f"{self.prefix}limit:{task}"
        return f"{self.prefix}limit:{task}:{limit_key}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def crons(self) -> str:
        return f"{self.prefix}crons"

    @property
    def crons_paused(self) -> str:
        """Paused crons: name -> when it was paused, epoch ms (PROTOCOL.md, Cron)."""
        return f"{self.prefix}crons:paused"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def paused(self) -> str:
        """Paused lanes (``*``: the whole queue) -> paused-at ms (PROTOCOL.md, Pausing)."""
        return f"{self.prefix}paused"

    @property
    def done_channel(self) -> str:
        return f"{self.prefix}done"

    @property
    def abort_channel(self) -> str:
        return f"{self.prefix}abort"
