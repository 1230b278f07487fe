"""Where the Redis URL and the signing keys come from when the code does not pass them.

Looked up in this order: what the native ``ardiq`` binary handed over (it reads them at
start and removes them from its environment before Python starts, so task code and the
processes it spawns do not inherit them), then ``NAME``, then the file that ``NAME_FILE``
names (systemd ``LoadCredential=``, Docker secrets: its content, trailing newlines
stripped). Setting both ``NAME`` and ``NAME_FILE`` is an error.
"""

from __future__ import annotations

import os

from .errors import ArdiqError

REDIS_URL = "ARDIQ_REDIS_URL"
SIGNING_KEY = "ARDIQ_SIGNING_KEY"

# Filled by the native binary (`provide`) before the app is imported; empty otherwise.
_provided: dict[str, str] = {}


def provide(values: dict[str, str]) -> None:
    """Called by the native binary: the secrets it took out of its environment."""
    _provided.update({k: v for k, v in values.items() if k in (REDIS_URL, SIGNING_KEY) and v})


def lookup(name: str) -> str | None:
    """The value of secret `name` (see the module's docstring), or None when unset."""
    if name in _provided:
        return _provided[name]
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value and path:
        raise ArdiqError(f"both {name} and {name}_FILE are set; set one of them")
    if path:
        return read_secret_file(name, path)
    return value or None


def read_secret_file(name: str, path: str) -> str:
    """The content of `path` without its trailing newlines; a clear error if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ArdiqError(f"cannot read {name}_FILE {path!r}: {reason}") from None
    content = content.rstrip("\r\n")
    if not content:
        raise ArdiqError(f"{name}_FILE {path!r} is empty")
    return content
