"""Concurrent producer calls share round trips.

A web handler or batch script that awaits 10,000 results, statuses or aborts at once
makes 10,000 calls on one loop. Sent one by one they would each wait for one of the
pool's few connections and pay a round trip of their own; here a lone call goes at once,
and the calls that arrive while SENDERS round trips are in flight wait and then go
together, BATCH at a time, as one pipeline. Each caller gets its own reply or error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from .broker import script_mode, translate_errors, translated
from .errors import BrokerError
from .protocol import function_name

if TYPE_CHECKING:
    from .broker import Broker, EncodableArg

# Round trips in flight at once per loop; callers beyond them queue and share the next.
SENDERS = 2
# Calls per pipeline: enough to make a fan-out a few round trips, few enough that one
# pipeline's scripts do not hold Redis up for long.
BATCH = 500
CLOSED = "the app's Redis connections were closed (app.aclose()) during this call"


@dataclass(slots=True)
class _Call:
    script: str | None  # a protocol script's name, or None for a plain command
    args: tuple[EncodableArg, ...]  # the command, or the script's KEYS count, KEYS, ARGV
    fut: asyncio.Future[Any] = field(default_factory=lambda: _loop().create_future())


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class Batcher:
    """Sends one loop's concurrent script calls and commands in shared pipelines."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._sending = 0
        self._queued: deque[_Call] = deque()
        self._senders: set[asyncio.Task[None]] = set()
        self._closed = False

    async def script(self, name: str, keys: Sequence[str], args: Sequence[EncodableArg]) -> Any:
        """Run one protocol script (like Broker.script), sharing a round trip if busy."""
        self._check_open()
        # Alone, or while this process has not yet learnt how Redis runs the scripts
        # (functions or EVALSHA: the first call finds out), the call goes by itself.
        if self._sending < SENDERS or script_mode(self.broker.url) is None:
            self._sending += 1
            try:
                return await self.broker.script(name, keys, args)
            finally:
                self._sending -= 1
                self._send_queued()
        return await self._queue(_Call(name, (len(keys), *keys, *args)))

    async def command(self, *args: EncodableArg) -> Any:
        """Run one plain command (like Broker.command), sharing a round trip if busy."""
        self._check_open()
        if self._sending < SENDERS:
            self._sending += 1
            try:
                return await self.broker.command(*args)
            finally:
                self._sending -= 1
                self._send_queued()
        return await self._queue(_Call(None, args))

    def _check_open(self) -> None:
        # A call that began before app.aclose() holds this closed broker; were it sent,
        # it would open a connection in a pool that nobody closes any more.
        if self._closed:
            raise BrokerError(CLOSED)

    async def _queue(self, call: _Call) -> Any:
        self._queued.append(call)
        return await call.fut

    def _send_queued(self) -> None:
        while self._queued and self._sending < SENDERS:
            batch: list[_Call] = []
            while self._queued and len(batch) < BATCH:
                call = self._queued.popleft()
                if not call.fut.done():  # a caller cancelled while it waited is not sent
                    batch.append(call)
            if not batch:
                return
            self._sending += 1
            task = _loop().create_task(self._send(batch), name="ardiq-batch")
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._pipeline(batch)
        except asyncio.CancelledError:
            _fail(batch, BrokerError(CLOSED))
            raise
        except Exception as exc:
            # Redis unreachable: every caller in the pipeline hears it.
            _fail(batch, exc)
            return
        finally:
            self._sending -= 1
            self._send_queued()
        for call, reply in zip(batch, replies, strict=True):
            if call.fut.done():
                continue
            if isinstance(reply, rexc.RedisError):
                call.fut.set_exception(translated(reply, self.broker.url))
            else:
                call.fut.set_result(reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """Every call's reply or its own error, in one round trip (two after Redis lost
        its script cache: a restart or SCRIPT FLUSH answers NOSCRIPT, and those calls,
        which did not run, go again once the scripts are loaded)."""
        replies = await self._execute(batch)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, rexc.NoScriptError)]
        if missing:
            scripts = self.broker.scripts
            with translate_errors(self.broker.url):
                for name in {batch[i].script for i in missing}:
                    assert name is not None
                    await self.broker.client.script_load(scripts[name].script)
            again = await self._execute([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        scripts = self.broker.scripts
        functions = script_mode(self.broker.url) == "functions"
        pipe = self.broker.client.pipeline(transaction=False)
        for call in batch:
            if call.script is None:
                pipe.execute_command(*call.args)  # type: ignore[no-untyped-call,unused-ignore]
            elif functions:
                # An administrator loaded the library: no script cache to miss.
                pipe.execute_command("FCALL", function_name(call.script), *call.args)  # type: ignore[no-untyped-call,unused-ignore]
            else:
                sha = scripts[call.script].sha
                pipe.execute_command("EVALSHA", sha, *call.args)  # type: ignore[no-untyped-call,unused-ignore]
        with translate_errors(self.broker.url):
            return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        """Fail the calls still waiting and stop the pipelines in flight; later calls
        fail too (the app makes a new broker for its next call)."""
        self._closed = True
        queued, self._queued = list(self._queued), deque()
        _fail(queued, BrokerError(CLOSED))
        senders = list(self._senders)
        for task in senders:
            task.cancel()
        if senders:
            await asyncio.gather(*senders, return_exceptions=True)


def _fail(calls: Sequence[_Call], exc: BaseException) -> None:
    for call in calls:
        if not call.fut.done():
            call.fut.set_exception(exc)
