"""Seals: HMAC-SHA256 tags that tie a payload to where it may run, and a result to its task.

With ``Ardiq(signing_key=...)`` (or ``ARDIQ_SIGNING_KEY``) a producer seals every payload
it writes, and a worker refuses, before anything is decoded, a payload whose seal does not
verify ("signature mismatch"), that carries none ("unsigned payload"), whose time is up
("signature expired"), or that no live job holds (a replay). Someone who can write to
Redis but does not hold the key cannot make a worker run anything, move a signed payload
to another queue, lane, task id or task name, or run a finished task again. Workers seal
the success values they store, and producers refuse a success value whose seal is
missing or wrong, so a forged result never reaches the deserializer (PROTOCOL.md, "Signed
payloads" and "Sealed results")::

    payload = MAGIC (5) | tag (32) | nonce (16) | not_after (8, big-endian ms) | body
    tag     = HMAC-SHA256(key, b"ardiq-sig2\\0" | framed(queue, lane, id, name)
                               | nonce | not_after | body)
    result  = RESULT_MAGIC (5) | HMAC-SHA256(key, b"ardiq-res2\\0" | framed(queue, id)
                                             | body) | body

``framed`` writes each string as a 4-byte big-endian length and its UTF-8 bytes. Both
magics start with 0xc1, a byte msgpack never uses. The Rust engine seals cron occurrences
and re-seals replayed dead letters with the same construction (``crates/ardiq-core/src/
sign.rs``; the shared vector is ``tests/vectors/seal_v2.hex``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import _secrets
from .errors import ArdiqError

__all__ = [
    "MAGIC",
    "RESULT_MAGIC",
    "Binding",
    "Opened",
    "ResultSealError",
    "SignatureError",
    "Signer",
    "check_signing_keys",
]

MAGIC = b"\xc1AQS2"
MAGIC_V1 = b"\xc1AQS1"
RESULT_MAGIC = b"\xc1AQR2"
TAG_LEN = 32
NONCE_LEN = 16
HEADER_LEN = len(MAGIC) + TAG_LEN + NONCE_LEN + 8
HEADER_LEN_V1 = len(MAGIC_V1) + TAG_LEN
MIN_KEY_LEN = 16
DEFAULT_TTL_MS = 7 * 24 * 3600 * 1000
# Producers set not_after from their clock, workers compare with theirs.
SKEW_MS = 5 * 60 * 1000
_DOMAIN = b"ardiq-sig2\x00"
_DOMAIN_V1 = b"ardiq-sig1\x00"
_RESULT_DOMAIN = b"ardiq-res2\x00"

UNSIGNED = "unsigned payload"
MISMATCH = "signature mismatch"
EXPIRED = "signature expired"


class SignatureError(ArdiqError):
    """A payload was refused: its seal does not verify, or it has none."""


class ResultSealError(ArdiqError):
    """A success value was refused: this app signs and its seal is missing or wrong, so it
    was not written by a worker that holds the key (or belongs to another task)."""


class Binding(NamedTuple):
    """Where a sealed payload may run."""

    queue: str
    lane: str
    task_id: str
    name: str


class Opened(NamedTuple):
    """A payload whose seal verified (or that needed none)."""

    body: bytes
    nonce: str | None
    """The sealed nonce, hex (what the live job's ``n`` must hold); None: none sealed."""
    not_after: int | None
    """Epoch ms after which the payload is dead; None: no limit sealed."""


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


def _framed(*parts: str) -> bytes:
    out = []
    for part in parts:
        raw = part.encode()
        out.append(len(raw).to_bytes(4, "big"))
        out.append(raw)
    return b"".join(out)


class Signer:
    """Seals and opens payloads and results with an app's keys (no keys: seal is the
    identity and open strips any seal unchecked)."""

    __slots__ = ("_compare", "_macs", "legacy", "queue", "ttl_ms")

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        queue: str = "",
        ttl_ms: int = DEFAULT_TTL_MS,
        legacy: bool = False,
    ) -> None:
        self._macs: list[Any] = []
        self._compare: Any = None
        self.queue = queue
        self.ttl_ms = ttl_ms
        # During an upgrade from protocol v1: v1 seals still run, results go unsealed and
        # unsealed results are accepted (PROTOCOL.md, Versioning).
        self.legacy = legacy
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

    def _digest(self, index: int, *parts: bytes) -> bytes:
        mac = self._macs[index].copy()
        for part in parts:
            mac.update(part)
        digest: bytes = mac.digest()
        return digest

    def _verify(self, tag: bytes, *parts: bytes) -> bool:
        ok = False
        for i in range(len(self._macs)):
            # Every key is tried, so the time taken does not say which one matched.
            ok |= bool(self._compare(self._digest(i, *parts), tag))
        return ok

    # ------------------------------------------------------------------ payloads
    def new_nonce(self) -> bytes:
        return os.urandom(NONCE_LEN)

    def seal_raw(self, b: Binding, nonce: bytes, not_after: int, body: bytes) -> bytes:
        """``MAGIC | tag | nonce | not_after | body`` under the first key."""
        stamp = not_after.to_bytes(8, "big", signed=True)
        head = _DOMAIN + _framed(b.queue, b.lane, b.task_id, b.name)
        return MAGIC + self._digest(0, head, nonce, stamp, body) + nonce + stamp + body

    def seal(self, b: Binding, body: bytes, due_ms: int) -> tuple[bytes, str]:
        """The payload to store for `body` and the nonce the job record keeps (hex; ""
        without keys). The payload is dead `ttl_ms` after `due_ms`."""
        if not self._macs:
            return body, ""
        nonce = self.new_nonce()
        return self.seal_raw(b, nonce, due_ms + self.ttl_ms, body), nonce.hex()

    def open(self, b: Binding, payload: bytes) -> Opened:
        """The serializer's bytes inside `payload`, checked against `b`.

        Raises :class:`SignatureError` when this app signs and the payload is unsigned or
        its tag does not verify (compared in constant time). Without keys a sealed payload
        is unwrapped unchecked, so producers can start signing before workers enforce it.
        The nonce and not-after are for the caller to check (the live job, the clock).
        """
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        if not self._macs:
            return self.strip(payload)
        v2 = payload[: len(MAGIC)] == MAGIC
        v1 = not v2 and payload[: len(MAGIC_V1)] == MAGIC_V1
        if v1 and self.legacy:
            if len(payload) < HEADER_LEN_V1:
                raise SignatureError(MISMATCH)
            tag, body = payload[len(MAGIC_V1) : HEADER_LEN_V1], payload[HEADER_LEN_V1:]
            fn = _framed(b.task_id, b.name)
            if not self._verify(tag, _DOMAIN_V1, fn, body):
                raise SignatureError(MISMATCH)
            return Opened(body, None, None)
        if v1:
            raise SignatureError(MISMATCH)  # protocol v1 seals are replayable: refused
        if not v2:
            raise SignatureError(UNSIGNED)
        if len(payload) < HEADER_LEN:
            raise SignatureError(MISMATCH)
        at = len(MAGIC)
        tag = payload[at : at + TAG_LEN]
        nonce = payload[at + TAG_LEN : at + TAG_LEN + NONCE_LEN]
        stamp = payload[at + TAG_LEN + NONCE_LEN : HEADER_LEN]
        body = payload[HEADER_LEN:]
        head = _DOMAIN + _framed(b.queue, b.lane, b.task_id, b.name)
        if not self._verify(tag, head, nonce, stamp, body):
            raise SignatureError(MISMATCH)
        return Opened(body, nonce.hex(), int.from_bytes(stamp, "big", signed=True))

    @staticmethod
    def strip(payload: bytes) -> Opened:
        """What a process without keys runs: the body, any seal taken off unchecked."""
        if payload[:1] != b"\xc1":  # msgpack never starts so: the common case, no copy
            return Opened(payload, None, None)
        if payload[: len(MAGIC)] == MAGIC:
            return Opened(payload[HEADER_LEN:], None, None)
        if payload[: len(MAGIC_V1)] == MAGIC_V1:
            return Opened(payload[HEADER_LEN_V1:], None, None)
        return Opened(payload, None, None)

    def reseal(self, b: Binding, opened: Opened, due_ms: int) -> bytes:
        """`opened` sealed again for a later run (a retry): same nonce, not-after
        `ttl_ms` after `due_ms`."""
        nonce = bytes.fromhex(opened.nonce) if opened.nonce else self.new_nonce()
        return self.seal_raw(b, nonce, due_ms + self.ttl_ms, opened.body)

    # ------------------------------------------------------------------- results
    def seal_result(self, task_id: str, body: bytes) -> bytes:
        """The success value to store for `body` of task `task_id`."""
        if not self._macs or self.legacy:
            return body
        tag = self._digest(0, _RESULT_DOMAIN, _framed(self.queue, task_id), body)
        return RESULT_MAGIC + tag + body

    def open_result(self, task_id: str, value: bytes) -> bytes:
        """The serializer's bytes of a stored success value, checked when this app signs.

        Raises :class:`ResultSealError` when the seal is missing (unless ``legacy``) or
        does not verify for this queue and task id."""
        value = bytes(value)
        sealed = value[: len(RESULT_MAGIC)] == RESULT_MAGIC
        if not self._macs:
            return value[len(RESULT_MAGIC) + TAG_LEN :] if sealed else value
        if not sealed:
            if self.legacy:
                return value
            raise ResultSealError(
                f"result of task {task_id!r} is not sealed: it was not stored by a worker "
                "that holds the signing key"
            )
        at = len(RESULT_MAGIC)
        tag, body = value[at : at + TAG_LEN], value[at + TAG_LEN :]
        if len(tag) != TAG_LEN or not self._verify(
            tag, _RESULT_DOMAIN, _framed(self.queue, task_id), body
        ):
            raise ResultSealError(
                f"result of task {task_id!r} has a seal that does not verify (forged, "
                "altered, or copied from another task)"
            )
        return body
