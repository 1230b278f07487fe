"""The record a Django task keeps beside ArdiQ's own: what Django's result API shows that
an ArdiQ result does not hold (the task's path, arguments, each attempt's worker and
error).

One hash per task, ``ardiq:{<queue>}:django:<id>`` (same slot as the queue's keys):

- ``name``: the task's module path; ``call``: msgpack ``[args, kwargs]``; ``enq``: enqueue
  time (epoch ms). Written by the producer before the task is enqueued.
- ``s``: first start, ``l``: last start (epoch ms); ``w<n>``: worker id of attempt n;
  ``e<n>``: msgpack ``[exception class path, traceback]`` of attempt n when it raised.
  Written by the worker.

The record outlives the result by an hour (then it expires); a task that never ran keeps
it for ``PENDING_TTL_MS`` after its due time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]

PENDING_TTL_MS = 7 * 24 * 3600 * 1000
MARGIN_MS = 3600 * 1000


def key(queue: str, task_id: str) -> str:
    return f"ardiq:{{{queue}}}:django:{task_id}"


def finished_ttl_ms(result_ttl_ms: int) -> int | None:
    """How long the record lives once an attempt ended (None: as long as the result,
    forever)."""
    if result_ttl_ms < 0:
        return None
    return result_ttl_ms + MARGIN_MS


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


@dataclass
class Record:
    """A decoded record (missing fields stay empty)."""

    name: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    enqueued_ms: int | None = None
    first_start_ms: int | None = None
    last_start_ms: int | None = None
    workers: list[str] = field(default_factory=list)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: Mapping[Any, Any]) -> Record:
        """From HGETALL's reply (bytes, as ArdiQ's clients answer)."""
        record = cls()
        workers: dict[int, str] = {}
        for k, v in raw.items():
            name = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
            if name == "name":
                record.name = v.decode("utf-8", "replace")
            elif name == "call":
                args, kwargs = msgpack.unpackb(v, raw=False)
                record.args, record.kwargs = list(args), dict(kwargs)
            elif name in ("enq", "s", "l"):
                ms = int(v)
                if name == "enq":
                    record.enqueued_ms = ms
                elif name == "s":
                    record.first_start_ms = ms
                else:
                    record.last_start_ms = ms
            elif name[:1] in ("w", "e") and name[1:].isdigit():
                attempt = int(name[1:])
                if name[0] == "w":
                    workers[attempt] = v.decode("utf-8", "replace")
                else:
                    path, tb = msgpack.unpackb(v, raw=False)
                    record.errors[attempt] = (str(path), str(tb))
        record.workers = [workers[n] for n in sorted(workers)]
        return record
