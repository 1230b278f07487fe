"""Redis access for one app on one event loop: clients, scripts, error translation.

redis-py's asyncio clients belong to the loop they were made on, and users call an app
from several loops (their web server's, a test's, the blocking twins' private loop), so
each loop gets its own :class:`Broker`. Making one never connects; the first command does.

A broker opens at most ``max_connections`` connections (default :data:`MAX_CONNECTIONS`),
pub/sub subscriptions included: a caller that finds them all busy waits for one instead
of failing, so any fan-out works and Redis sees a known number of clients.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ConstantBackoff
from redis.commands.core import AsyncScript

from .errors import ArdiqError, BrokerError
from .protocol import SCRIPT_NAMES, Keys, function_name, library, script_source
from .settings import DEFAULT_MAX_CONNECTIONS, mask_url

EncodableArg = str | bytes | int | float

# Connections one app opens per event loop, pub/sub subscriptions included (the default of
# the `max_connections` setting). Callers beyond it wait for a free connection; concurrent
# producer calls share pipelines (batching.py), so a few connections serve any fan-out.
MAX_CONNECTIONS = DEFAULT_MAX_CONNECTIONS
# Of those, the pool of the client that never resends (fresh enqueues, `script_once`):
# as many as enqueue calls in flight at once (client.SENDERS; concurrent callers share).
ONCE_CONNECTIONS = 2


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn redis-py's exceptions into ArdiqError/BrokerError that say where and what."""
    try:
        yield
    except (rexc.RedisError, OSError) as exc:
        raise translated(exc, url) from exc


def translated(exc: rexc.RedisError | OSError, url: str) -> ArdiqError:
    """The ArdiqError/BrokerError that says where and what for a redis-py exception."""
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | rexc.BusyLoadingError | OSError):
        if is_certificate_error(exc):
            return BrokerError(
                f"Redis at {mask_url(url)} presented a certificate that is not trusted: "
                f"{exc} (trust its CA with `?ssl_ca_certs=PATH` on the rediss:// URL)"
            )
        if is_auth_error(exc):
            return BrokerError(f"Redis at {mask_url(url)} refused the credentials: {exc}")
        return BrokerError(f"Redis at {mask_url(url)} unreachable: {exc}")
    if isinstance(exc, rexc.ResponseError):
        text = str(exc)
        # redis-py raises OutOfMemoryError (its text has no "OOM" prefix any more).
        if (
            isinstance(exc, rexc.OutOfMemoryError)
            or text.startswith("OOM")
            or ("used memory > 'maxmemory'" in text)
        ):
            return BrokerError(f"Redis at {mask_url(url)} refused the write: out of memory")
        if text.startswith("NOPERM") or "NOPERM" in text:
            return BrokerError(f"Redis user lacks a permission: {text}")
        return ArdiqError(f"Redis error: {text}")
    return BrokerError(f"Redis at {mask_url(url)} error: {exc}")


def is_certificate_error(exc: BaseException | None) -> bool:
    """True when `exc` (or what it wraps) is a failed TLS certificate check: retrying
    cannot help until the settings change."""
    import ssl

    return _caused_by(exc, ssl.SSLCertVerificationError)


def is_auth_error(exc: BaseException | None) -> bool:
    """True when `exc` (or what it wraps) is Redis refusing the credentials: retrying
    cannot help until the settings change."""
    return _caused_by(exc, rexc.AuthenticationError)


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Is `exc`, or one of the first few exceptions it was raised from, a `kind`?"""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def make_client(
    url: str,
    *,
    socket_timeout: float | None,
    resend: bool = True,
    max_connections: int = MAX_CONNECTIONS,
) -> aioredis.Redis:
    """A client for `url` that returns bytes and never connects before its first command.

    `resend`: retry a command once on a dropped connection (a restarted Redis, CLIENT
    KILL): the pooled socket is dead, a fresh one usually works. Safe for a call whose
    repeat finds its work done (finish, renew, reads); not for a fresh enqueue, which goes
    through a client without it (see `Broker.script_once`).

    Its pool holds at most `max_connections`; a command that finds them all busy waits
    for one (no time limit: every command has its own socket timeout, so a connection is
    always given back). redis-py's default pool fails such a command instead.
    """
    retry = RedisRetry(ConstantBackoff(0.05), 1 if resend else 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[rexc.ConnectionError] if resend else [],
    )
    client = aioredis.Redis(connection_pool=pool)
    # The client owns its pool: closing the client disconnects every pooled connection
    # (set as an attribute: redis-py 5.0's constructor ignores it with a given pool).
    client.auto_close_connection_pool = True
    return client


# How scripts reach Redis (README, "Security"): `functions` calls the library an
# administrator installed (`ardiq functions install`) with FCALL, `eval` sends EVALSHA and
# loads the script on NOSCRIPT, `auto` (the default) tries FCALL first and falls back to
# EVALSHA for good when Redis has no such function or the user may not FCALL.
SCRIPTS_ENV = "ARDIQ_SCRIPTS"
SCRIPTS_SETTINGS = ("auto", "functions", "eval")
# Per Redis URL, what `auto` settled on ("functions" or "eval"); decided on first use.
_script_modes: dict[str, str] = {}


def scripts_setting() -> str:
    """`ARDIQ_SCRIPTS`: auto (default), functions or eval."""
    value = os.environ.get(SCRIPTS_ENV, "").strip().lower() or "auto"
    if value not in SCRIPTS_SETTINGS:
        raise ArdiqError(f"{SCRIPTS_ENV}={value!r}: expected one of {', '.join(SCRIPTS_SETTINGS)}")
    return value


def script_mode(url: str) -> str | None:
    """How this process calls scripts on `url`: "functions", "eval", or None before the
    first call under `auto`."""
    setting = scripts_setting()
    return _script_modes.get(url) if setting == "auto" else setting


def function_missing(exc: rexc.ResponseError) -> bool:
    """Did Redis refuse an FCALL before running anything because there is no such
    function (or no FCALL at all, before Redis 7), or because the user may not FCALL?
    An error raised inside a function is none of these."""
    text = str(exc)
    return (
        text.startswith("Function not found")
        or ("unknown command" in text and "fcall" in text.lower())
        or (isinstance(exc, rexc.NoPermissionError) and "'fcall'" in text)
    )


def library_hint(url: str) -> str:
    return (
        f"ArdiQ's function library {library()[0]} is not loaded in Redis at {mask_url(url)}: "
        "an administrator installs it with `ardiq functions install` or "
        "`ardiq.functions.install(url)` (README, Security)"
    )


async def call_script(
    url: str,
    client: aioredis.Redis,
    scripts: dict[str, AsyncScript],
    name: str,
    keys: Sequence[str],
    args: Sequence[EncodableArg],
) -> Any:
    """Run script `name` as a function or with EVALSHA, as `script_mode` says."""
    setting = scripts_setting()
    mode = _script_modes.get(url) if setting == "auto" else setting
    if mode != "eval":
        try:
            reply = await client.fcall(function_name(name), len(keys), *keys, *args)
        except rexc.ResponseError as exc:
            if not function_missing(exc):
                raise
            if setting == "functions":
                raise BrokerError(f"{library_hint(url)} ({SCRIPTS_ENV}=functions)") from exc
            # auto: nothing ran; EVALSHA from now on (also after the library went away).
            _script_modes[url] = "eval"
        else:
            if setting == "auto":
                _script_modes[url] = "functions"
            return reply
    try:
        return await scripts[name](keys=list(keys), args=list(args))
    except rexc.NoPermissionError as exc:
        text = str(exc)
        if "'evalsha'" in text or "'script" in text:
            hint = library_hint(url)
            raise BrokerError(f"Redis user lacks a permission: {text}; {hint}") from exc
        raise


class Broker:
    """The Redis client and scripts of one app on one event loop."""

    # Commands other than the blocking read answer fast; a slower answer means a sick
    # or unreachable Redis, and the caller should hear about it.
    COMMAND_TIMEOUT_S = 10.0

    def __init__(
        self,
        url: str,
        keys: Keys,
        lanes: Sequence[str],
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        from .batching import Batcher

        self.url = url
        self.keys = keys
        self.lanes = list(lanes)
        self.client = make_client(
            url,
            socket_timeout=self.COMMAND_TIMEOUT_S,
            max_connections=max_connections - ONCE_CONNECTIONS,
        )
        self.scripts: dict[str, AsyncScript] = {
            name: self.client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self.loop = asyncio.get_running_loop()
        self._waiter: Any = None
        # The client whose commands are never resent by redis-py (made on first use).
        self._once: tuple[aioredis.Redis, dict[str, AsyncScript]] | None = None
        self._in_flight = 0
        # Producer calls made concurrently (status, info, abort, result checks) share
        # pipelines through this.
        self.batch = Batcher(self)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[EncodableArg]) -> Any:
        """Run one protocol script, translating Redis errors."""
        with self._tracked(), translate_errors(self.url):
            return await call_script(self.url, self.client, self.scripts, name, keys, args)

    async def script_once(
        self, name: str, keys: Sequence[str], args: Sequence[EncodableArg]
    ) -> Any:
        """Run one protocol script that is never sent twice behind the caller's back: a
        dropped connection raises BrokerError and the caller decides how to go again
        (the first call may have landed; only its reply was lost). Falling back from
        FCALL to EVALSHA is no resend: Redis ran nothing when it had no such function."""
        if self._once is None:
            client = make_client(
                self.url,
                socket_timeout=self.COMMAND_TIMEOUT_S,
                resend=False,
                max_connections=ONCE_CONNECTIONS,
            )
            scripts = {n: client.register_script(script_source(n)) for n in SCRIPT_NAMES}
            self._once = (client, scripts)
        with self._tracked(), translate_errors(self.url):
            return await call_script(self.url, *self._once, name, keys, args)

    async def command(self, *args: EncodableArg) -> Any:
        """Run one plain command, translating Redis errors."""
        with self._tracked(), translate_errors(self.url):
            return await self.client.execute_command(*args)  # type: ignore[no-untyped-call,unused-ignore]

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        # Counted so that close() lets them end first: one cut off by the pool closing
        # under it could reconnect (its one retry) into a pool nobody closes any more.
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def lane_streams(self) -> list[str]:
        return [self.keys.stream(lane) for lane in self.lanes]

    @property
    def waiter(self) -> Any:
        """The process-wide (per loop) result waiter, made on first use."""
        if self._waiter is None:
            from .results import ResultWaiter

            self._waiter = ResultWaiter(self)
        return self._waiter

    async def close(self) -> None:
        """Close every connection: producer calls still waiting fail with BrokerError,
        commands on the wire get their answer (each has COMMAND_TIMEOUT_S at most)."""
        await self.batch.close()
        if self._waiter is not None:
            await self._waiter.close()
        deadline = self.loop.time() + self.COMMAND_TIMEOUT_S
        while self._in_flight and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        if self._once is not None:
            await self._once[0].aclose()
            self._once = None
        await self.client.aclose()
