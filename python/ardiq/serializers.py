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
    """Decode msgpack produced by :func:`msgpack_dumps`.

    The limits are explicit: no string, byte string, array, map or extension may claim
    more elements (or bytes) than the payload has bytes, so a few bytes can never make
    the decoder reserve gigabytes. What a payload may cost at most is set by the app's
    ``max_payload_bytes``, which workers check before this runs.
    """
    n = len(data)
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        max_str_len=n,
        max_bin_len=n,
        max_array_len=n,
        max_map_len=n // 2,
        max_ext_len=n,
    )
