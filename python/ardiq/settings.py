"""Validation of the app's settings: the Redis URL, lanes and numbers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from . import _secrets
from .errors import ArdiqError

DEFAULT_REDIS_URL = "redis://localhost:6379"
# The longest duration setting (a year), as the native binary's options (cli.rs MAX_SECONDS).
MAX_SECONDS = 365.0 * 86_400.0
_SCHEMES = ("redis", "rediss", "unix")


def default_redis_url() -> str:
    """`ARDIQ_REDIS_URL` (as the native binary handed it over, else from the environment,
    else the file `ARDIQ_REDIS_URL_FILE` names), else `REDIS_URL`, else the local default."""
    return _secrets.lookup(_secrets.REDIS_URL) or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def check_redis_url(url: object) -> str:
    """Return `url` if it is a Redis URL ArdiQ can use; raise a clear error otherwise."""
    if not isinstance(url, str):
        raise TypeError(f"redis_url must be a string, not {type(url).__name__}")
    if not url.strip():
        raise ValueError(f"redis_url is empty ({url!r}): pass a URL like 'redis://localhost:6379'")
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
    check_tls_policy(url, parts.query)
    return url


# The values under which certificate and host name checks stay on, as the native worker
# reads them (crates/ardiq-core/src/connection.rs `split_tls`).
_CERT_REQS_ON = ("required",)
_CHECK_HOSTNAME_ON = ("true", "True", "1")


def check_tls_policy(url: str, query: str) -> None:
    """One TLS policy for both workers and producers: verification cannot be turned off.
    `ssl_cert_reqs` other than `required` and `ssl_check_hostname` other than true are
    refused, as the native binary refuses them."""
    for key, value in parse_qsl(query, keep_blank_values=True):
        refused = (key == "ssl_cert_reqs" and value.lower() not in _CERT_REQS_ON) or (
            key == "ssl_check_hostname" and value not in _CHECK_HOSTNAME_ON
        )
        if refused:
            raise ArdiqError(
                f"redis_url {mask_url(url)!r}: `{key}={value}` is refused: ArdiQ always "
                "verifies the server's certificate and host name; trust a private CA with "
                "`ssl_ca_certs=PATH`"
            )


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to log: the userinfo's password
    (or a userinfo without a colon, which some clients read as a password alone) and the
    `pass=`/`password=` query parameters (any case). Works on malformed URLs too, so errors
    can quote them. The same rules as the Rust side's (`ardiq_core::mask_url`)."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    rest = url[scheme_end + 3 :]
    # The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    auth_end = min(ends) if ends else len(rest)
    authority = rest[:auth_end]
    at = authority.rfind("@")
    if at < 0:
        return _mask_query(url)
    userinfo = authority[:at]
    user, colon, _ = userinfo.partition(":")
    # `redis://secret@host` is a password alone in some clients' reading.
    masked = f"{user}:***" if colon else ("***" if userinfo else "")
    return _mask_query(f"{url[: scheme_end + 3]}{masked}@{authority[at + 1 :]}{rest[auth_end:]}")


def _mask_query(url: str) -> str:
    """`unix:///run/redis.sock?pass=secret` carries the password as a query parameter."""
    q = url.find("?")
    if q < 0:
        return url
    params = []
    for kv in url[q + 1 :].split("&"):
        key, eq, _ = kv.partition("=")
        params.append(f"{key}=***" if eq and key.lower() in ("pass", "password") else kv)
    return f"{url[:q]}?{'&'.join(params)}"


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


def check_weights(priorities: object) -> tuple[list[str], list[int] | None]:
    """Lane names (lowest first) and, when `priorities` is a mapping, their weights.

    A mapping ``{"low": 1, "default": 3, "high": 6}`` asks for lane weights (insertion
    order is lowest first, as with a list); each weight is a positive int. Anything else
    goes through :func:`check_lanes` (strict priorities, no weights).
    """
    if not isinstance(priorities, Mapping):
        return check_lanes(priorities), None
    lanes = check_lanes(list(priorities))
    weights = []
    for lane in lanes:
        w = priorities[lane]
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ValueError(f"the weight of lane {lane!r} must be a positive int, got {w!r}")
        weights.append(w)
    return lanes, weights


def check_lane(lane: str, lanes: list[str], what: str = "priority") -> str:
    """`lane` if it is one of `lanes`; otherwise a ValueError listing them."""
    if lane not in lanes:
        raise ValueError(
            f"{what} {lane!r} is not one of the lanes ({', '.join(lanes)}): "
            "no worker reads that lane"
        )
    return lane


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_optional_positive_int(name: str, value: object) -> int | None:
    """None (the feature is off) or an int > 0."""
    return None if value is None else check_positive_int(name, value)


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


# Task history (PROTOCOL.md, History): entries kept (0 = off) and their lifetime.
DEFAULT_HISTORY = 0
DEFAULT_HISTORY_TTL_S = 86_400.0


def check_history(value: object) -> int:
    """`history`: how many completed tasks the history keeps, an int >= 0 (0: none)."""
    return check_positive_int("history", value, allow_zero=True)


def check_history_ttl_s(value: object) -> float:
    """`history_ttl_s`: seconds above 0 and at most MAX_SECONDS (a year), as the
    binary's `--history-ttl`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"history_ttl_s must be a number of seconds, not {type(value).__name__}")
    if not 0 < value <= MAX_SECONDS:  # also refuses NaN
        raise ValueError(
            f"history_ttl_s must be above 0 and at most {MAX_SECONDS:g} (a year), got {value!r}"
        )
    return float(value)


def check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value
