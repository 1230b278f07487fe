"""ArdiQ's scripts as a Redis 7 function library, for people without the `ardiq` binary.

An administrator loads the library once (`install`); producers and workers then call its
functions with FCALL and need no right to load Lua of their own (README, "Security").
Each ArdiQ version has its own library (`ardiq_<hash>`), so versions load side by side.

    python -c "import ardiq.functions as f; f.install('redis://admin:pw@host:6379/0')"
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from .broker import translate_errors
from .protocol import LIBRARY_PREFIX, library
from .settings import default_redis_url

__all__ = ["FunctionsStatus", "install", "status"]


@dataclass(frozen=True, slots=True)
class FunctionsStatus:
    """What Redis holds: this package's library name, whether it is loaded, and every
    ArdiQ library loaded (other versions included)."""

    library: str
    loaded: bool
    libraries: list[str]


def install(redis_url: str | None = None) -> str:
    """Load this package's library with `FUNCTION LOAD REPLACE` (needs a user allowed
    `FUNCTION LOAD`); returns its name. Loading it again changes nothing."""
    url = redis_url or default_redis_url()
    name, text = library()
    client = redis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=10.0)
    try:
        with translate_errors(url):
            client.execute_command("FUNCTION", "LOAD", "REPLACE", text)  # type: ignore[no-untyped-call,unused-ignore]
    finally:
        client.close()
    return name


def status(redis_url: str | None = None) -> FunctionsStatus:
    """Which ArdiQ libraries Redis holds (`FUNCTION LIST LIBRARYNAME ardiq_*`)."""
    url = redis_url or default_redis_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=10.0)
    try:
        with translate_errors(url):
            reply = client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_PREFIX + "*"
            )
    finally:
        client.close()
    names = sorted(n for n in map(_library_name, reply) if n.startswith(LIBRARY_PREFIX))
    name = library()[0]
    return FunctionsStatus(library=name, loaded=name in names, libraries=names)


def _library_name(entry: object) -> str:
    """The `library_name` of one FUNCTION LIST entry (a flat list in RESP2, a map in
    RESP3)."""
    if isinstance(entry, dict):
        items = list(entry.items())
    else:
        flat = list(entry)  # type: ignore[call-overload]
        items = list(zip(flat[::2], flat[1::2], strict=True))
    for key, value in items:
        if key in (b"library_name", "library_name"):
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""
