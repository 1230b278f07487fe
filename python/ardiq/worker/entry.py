"""Turning stream entries (as XREADGROUP, `fetch` and XAUTOCLAIM return them) into
deliveries, without trusting their contents (the engine's `entry.rs`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..runtime import Delivery, Outcome

# An entry we hold is named by its lane and entry id together: entry ids are unique only
# within one stream (two lanes written in the same millisecond both get `<ms>-0`).
Ref = tuple[str, str]


def ref_of(x: Delivery | Outcome) -> Ref:
    return (x.lane, x.entry_id)


def as_fields(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields as a dict, whether redis-py parsed them already or not."""
    if isinstance(raw, Mapping):
        return dict(raw)
    flat = list(raw or [])
    return {flat[j]: flat[j + 1] for j in range(0, len(flat) - 1, 2)}


# The dead-letter reasons of entries that cannot run, as the native engine
# (crates/ardiq-core/src/entry.rs) and reclaim.lua write them.
MALFORMED = "malformed entry (needs id, fn and p)"


def parse_entry(lane: str, eid: str, fields: Mapping[bytes, bytes]) -> Delivery | str:
    """A stream entry as a Delivery, or the reason it is malformed."""
    for name in (b"id", b"fn", b"p"):
        if name not in fields:
            return MALFORMED
    if not fields[b"id"]:
        return MALFORMED

    def number(name: bytes) -> int:
        # As the native engine reads them: an unreadable number is 0, so a garbled `t` or
        # `enq` does not cost the task its run.
        return entry_int(fields.get(name, b"0"))

    def count(name: bytes) -> int:
        return min(max(0, number(name)), U32_MAX)

    # Never a lossy decode: a task must not run (nor its result be stored) under an id
    # or a name other than the one written (the engine refuses them the same way).
    try:
        task_id = fields[b"id"].decode()
    except UnicodeDecodeError:
        return "malformed entry (id is not UTF-8)"
    try:
        fn_name = fields[b"fn"].decode()
    except UnicodeDecodeError:
        return "malformed entry (fn is not UTF-8)"
    return Delivery(
        entry_id=eid,
        lane=lane,
        task_id=task_id,
        name=fn_name,
        payload=bytes(fields[b"p"]),
        tries=count(b"t"),
        enqueue_ms=number(b"enq"),
        expire_ms=number(b"x"),
        reclaims=count(b"r"),
        limit_key=_limit_key(fields.get(b"lk")),
    )


def _limit_key(raw: bytes | None) -> str | None:
    """The entry's `lk` (None: absent, empty or not UTF-8, as the engine reads it)."""
    if not raw:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


_ENTRY_INT = re.compile(rb"[+-]?[0-9]+")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
U32_MAX = 2**32 - 1


def entry_int(raw: bytes) -> int:
    """A number field of an entry as the engine reads it: an optionally signed decimal
    (surrounding spaces allowed) within 64 bits, else 0."""
    text = bytes(raw).strip(_ASCII_SPACE)
    if not _ENTRY_INT.fullmatch(text):
        return 0
    value = int(text)
    return value if -(2**63) <= value < 2**63 else 0
