"""The default payload serializer: msgpack. Pickle is only ever used when passed in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


def msgpack_dumps(value: Any) -> bytes:
    """Encode with msgpack; bytes stay bytes, tuples become lists."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def msgpack_loads(data: bytes) -> Any:
    """Decode msgpack produced by :func:`msgpack_dumps`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
