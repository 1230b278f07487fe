"""Payload signing: an HMAC-SHA256 tag that ties a payload to its task id and name.

With ``Ardiq(signing_key=...)`` (or ``ARDIQ_SIGNING_KEY``) a producer seals every payload
it writes, and a worker refuses, before anything is decoded, a payload whose tag does not
verify ("signature mismatch") or that carries none ("unsigned payload"). Someone who can
write to Redis but does not hold the key cannot make a worker run anything, nor move a
signed payload to another task id or task name.

The tag travels inside the payload field (PROTOCOL.md, "Signed payloads"), so every path
that copies a payload (retries, reclaims, hand-backs, delays, dead letters and replays)
keeps it without knowing about it::

    MAGIC (5 bytes) | tag (32 bytes) | the serializer's bytes

    tag = HMAC-SHA256(key, b"ardiq-sig1\\0" | u32be(len id) | id | u32be(len name) | name
                           | the serializer's bytes)

``MAGIC`` starts with 0xc1, a byte msgpack never uses, so a sealed payload can never be
mistaken for a plain msgpack one. The Rust engine seals cron occurrences with the same
construction (``crates/ardiq-core/src/sign.rs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _secrets
from .errors import ArdiqError

__all__ = ["MAGIC", "SignatureError", "Signer", "check_signing_keys"]

MAGIC = b"\xc1AQS1"
TAG_LEN = 32
HEADER_LEN = len(MAGIC) + TAG_LEN
MIN_KEY_LEN = 16
_DOMAIN = b"ardiq-sig1\x00"

UNSIGNED = "unsigned payload"
MISMATCH = "signature mismatch"


class SignatureError(ArdiqError):
    """A payload was refused: its tag does not verify, or it has none."""


def check_signing_keys(value: object) -> tuple[bytes, ...]:
    """The keys from the ``signing_key`` setting: a key (bytes or str), or a sequence of
    them where the first signs and every one verifies (key rotation). Empty: signing is
    off. When it is None, ``ARDIQ_SIGNING_KEY`` (or the file ``ARDIQ_SIGNING_KEY_FILE``
    names; see ``ardiq._secrets``): comma-separated keys, the first signs."""
    if value is None:
        env = _secrets.lookup(_secrets.SIGNING_KEY)
        if not env:
            return ()
        value = [part.strip() for part in env.split(",")]
    items: Sequence[object]
    if isinstance(value, str | bytes | bytearray):
        items = [value]
    elif isinstance(value, list | tuple):
        items = value
        if not items:
            raise ValueError("signing_key must name at least one key")
    else:
        raise TypeError(
            f"signing_key must be bytes, str or a list of them, not {type(value).__name__}"
        )
    keys = []
    for item in items:
        if isinstance(item, str):
            key = item.encode()
        elif isinstance(item, bytes | bytearray):
            key = bytes(item)
        else:
            raise TypeError(f"a signing key must be bytes or str, not {type(item).__name__}")
        if len(key) < MIN_KEY_LEN:
            # The message never quotes the key.
            raise ValueError(
                f"signing_key must be at least {MIN_KEY_LEN} bytes long (got {len(key)}); "
                "use e.g. secrets.token_hex(32)"
            )
        keys.append(key)
    return tuple(keys)


def _message(task_id: str, name: str) -> bytes:
    tid, fn = task_id.encode(), name.encode()
    return b"".join((_DOMAIN, len(tid).to_bytes(4, "big"), tid, len(fn).to_bytes(4, "big"), fn))


class Signer:
    """Seals and opens payloads with an app's keys (no keys: seal is the identity)."""

    __slots__ = ("_compare", "_macs")

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._macs: list[Any] = []
        self._compare: Any = None
        if keys:
            # Imported only when signing is on: OpenSSL's hashes cost `import ardiq` ~8 ms.
            import hashlib
            import hmac

            # Keyed once: each seal or check copies the prepared state.
            self._macs = [hmac.new(key, digestmod=hashlib.sha256) for key in keys]
            self._compare = hmac.compare_digest

    def __repr__(self) -> str:
        return f"Signer(keys={len(self._macs)})"

    @property
    def enabled(self) -> bool:
        return bool(self._macs)

    def _tag(self, index: int, task_id: str, name: str, body: bytes) -> bytes:
        mac = self._macs[index].copy()
        mac.update(_message(task_id, name))
        mac.update(body)
        digest: bytes = mac.digest()
        return digest

    def seal(self, task_id: str, name: str, body: bytes) -> bytes:
        """The payload to store for `body` of task `task_id` named `name`."""
        if not self._macs:
            return body
        return MAGIC + self._tag(0, task_id, name, body) + body

    def open(self, task_id: str, name: str, payload: bytes) -> bytes:
        """The serializer's bytes inside `payload`, checked against `task_id` and `name`.

        Raises :class:`SignatureError` when this app signs and the payload is unsigned or
        its tag does not verify (compared in constant time). Without keys a sealed payload
        is unwrapped unchecked, so producers can start signing before workers enforce it.
        """
        sealed = payload[: len(MAGIC)] == MAGIC
        if not self._macs:
            return bytes(payload[HEADER_LEN:]) if sealed else payload
        if not sealed:
            raise SignatureError(UNSIGNED)
        if len(payload) < HEADER_LEN:
            raise SignatureError(MISMATCH)
        tag = bytes(payload[len(MAGIC) : HEADER_LEN])
        body = bytes(payload[HEADER_LEN:])
        ok = False
        for i in range(len(self._macs)):
            # Every key is tried, so the time taken does not say which one matched.
            ok |= bool(self._compare(self._tag(i, task_id, name, body), tag))
        if not ok:
            raise SignatureError(MISMATCH)
        return body
