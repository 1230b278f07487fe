"""Validation of the app's settings: the Redis URL, lanes and numbers."""

from __future__ import annotations

import os
from urllib.parse import SplitResult, urlsplit

from .errors import ArdiqError

DEFAULT_REDIS_URL = "redis://localhost:6379"
_SCHEMES = ("redis", "rediss", "unix")


def default_redis_url() -> str:
    """`ARDIQ_REDIS_URL`, else `REDIS_URL`, else the local default."""
    return os.environ.get("ARDIQ_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def check_redis_url(url: object) -> str:
    """Return `url` if it is a Redis URL ArdiQ can use; raise a clear error otherwise."""
    if not isinstance(url, str):
        raise TypeError(f"redis_url must be a string, not {type(url).__name__}")
    if url == "":
        raise ValueError("redis_url must not be empty (use e.g. 'redis://localhost:6379')")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ArdiqError(f"malformed redis_url {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ArdiqError(
            f"malformed redis_url {mask_url(url)!r}: scheme must be one of "
            f"redis://, rediss:// or unix://"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ArdiqError(f"malformed redis_url {mask_url(url)!r}: no socket path")
    elif not parts.hostname:
        raise ArdiqError(f"malformed redis_url {mask_url(url)!r}: no host")
    if port is not None and not 0 < port < 65536:
        raise ArdiqError(f"malformed redis_url {mask_url(url)!r}: bad port")
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:***@{host}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def check_lanes(priorities: object) -> list[str]:
    """Lane names, lowest first: non-empty, unique strings."""
    if priorities is None:
        return ["default"]
    if isinstance(priorities, str) or not hasattr(priorities, "__iter__"):
        raise TypeError("priorities must be a list of lane names, lowest first")
    lanes = list(priorities)  # type: ignore[call-overload,unused-ignore]
    if not lanes:
        raise ValueError("priorities must name at least one lane")
    for lane in lanes:
        if not isinstance(lane, str) or not lane:
            raise ValueError(f"lane names must be non-empty strings, got {lane!r}")
    if len(set(lanes)) != len(lanes):
        raise ValueError(f"lane names must be unique, got {lanes}")
    return lanes


def check_lane(lane: str, lanes: list[str], what: str = "priority") -> str:
    """`lane` if it is one of `lanes`; otherwise a ValueError listing them."""
    if lane not in lanes:
        raise ValueError(
            f"unknown {what} {lane!r}: no worker reads that lane (lanes: {', '.join(lanes)})"
        )
    return lane


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


# The default and the floor of the `max_connections` setting (see broker.py, which must
# not be imported here: `import ardiq` stays free of redis-py).
DEFAULT_MAX_CONNECTIONS = 32
MIN_MAX_CONNECTIONS = 6


def check_max_connections(value: object) -> int:
    """Redis connections per event loop: an int of at least MIN_MAX_CONNECTIONS (two are
    kept for enqueues; of the rest, a loop may hold two for good, its result and abort
    subscriptions, and still needs some for commands)."""
    if value is None:
        return DEFAULT_MAX_CONNECTIONS
    number = check_positive_int("max_connections", value)
    if number < MIN_MAX_CONNECTIONS:
        raise ValueError(f"max_connections must be at least {MIN_MAX_CONNECTIONS}, got {number}")
    return number


def check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value
