"""Waiting for results: one pub/sub subscription per process (per loop), shared by every
waiter, woken by Redis when a task someone waits for finishes (PROTOCOL.md, "Results").

The subscription holds one of the loop's pooled connections. Each waiter's checks (the
`wait` script) go through the loop's Batcher, so 10,000 waiters woken at once (a
resubscribe wakes them all) re-check in a few pipelines, not 10,000 round trips."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from .errors import BrokerError
from .settings import mask_url

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("ardiq")

# A waiter that learns nothing re-checks this often: it covers a task that does not
# exist yet (a custom id enqueued later) and a wake-up lost while the connection was down.
RECHECK_S = 1.0
REGISTERED_RECHECK_S = 30.0
# How long a subscribe attempt may take before the waiter gives up on Redis.
SUBSCRIBE_TIMEOUT_S = 10.0


class ResultWaiter:
    """Routes `P done` messages to the waiters of this process."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._waiters: dict[bytes, set[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = False
        # Resolved when the current subscribe attempt ends: None when it worked, else
        # the error. After a failure the reader puts a fresh future here for its next try.
        self._attempt: asyncio.Future[BaseException | None] | None = None
        self._users = 0  # wait_raw calls in progress: the reader stops when there are none
        self._closed = False

    async def wait_raw(self, task_id: str, timeout: float | None) -> bytes:
        """The result record of `task_id`, waiting up to `timeout` seconds (forever if None).

        Raises TimeoutError when nothing arrives in time, BrokerError when Redis cannot be
        reached."""
        self._users += 1
        try:
            return await self._wait_raw(task_id, timeout)
        finally:
            self._users -= 1

    async def _wait_raw(self, task_id: str, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = task_id.encode()
        keys = self.broker.keys
        script_keys = [keys.job(task_id), keys.wait(task_id), keys.result(task_id)]
        while True:
            # Subscribed before asking, so a finish between the two cannot be missed.
            await self._ensure_subscribed()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, set()).add(fut)
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                # Registered waiters sleep until the wake-up (or a long safety re-check).
                pause = REGISTERED_RECHECK_S if left is None else left
                reply = await self.broker.batch.script(
                    "wait", script_keys, [int(pause * 1000) + 5000]
                )
                if reply[0] == 1:
                    return bytes(reply[1])
                if reply[0] == -1:  # not enqueued (yet): nothing will publish for it
                    pause = min(pause, RECHECK_S)
                if pause <= 0:
                    raise TimeoutError(f"no result for task {task_id!r} within {timeout}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), pause)
            finally:
                group = self._waiters.get(key)
                if group is not None:
                    group.discard(fut)
                    if not group:
                        del self._waiters[key]
            if deadline is not None and time.monotonic() >= deadline:
                # One last look: the result may have landed just as time ran out.
                reply = await self.broker.batch.script("wait", script_keys, [1])
                if reply[0] == 1:
                    return bytes(reply[1])
                raise TimeoutError(f"no result for task {task_id!r} within {timeout}s")

    async def _ensure_subscribed(self) -> None:
        if self._subscribed:
            return
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader.done():
            self._attempt = loop.create_future()
            self._reader = loop.create_task(self._read(), name="ardiq-results")
        attempt = self._attempt
        assert attempt is not None
        try:
            error = await asyncio.wait_for(asyncio.shield(attempt), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            raise BrokerError(
                f"could not subscribe to results at {mask_url(self.broker.url)}: no answer"
            ) from None
        self._check_open()
        if error is not None:
            raise BrokerError(
                f"Redis at {mask_url(self.broker.url)} unreachable: could not subscribe to "
                f"results: {error}"
            ) from error

    def _check_open(self) -> None:
        # Subscribing again after close() would open a connection in a pool that nobody
        # closes any more.
        if self._closed:
            from .batching import CLOSED

            raise BrokerError(CLOSED)

    def _attempt_ended(self, error: BaseException | None) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(error)

    async def _read(self) -> None:
        channel = self.broker.keys.done_channel
        backoff = 0.05
        while True:
            pubsub = self.broker.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._subscribed = True
                        self._attempt_ended(None)
                        backoff = 0.05
                    elif msg["type"] == "message":
                        self._wake(msg["data"])
            except (rexc.RedisError, OSError) as exc:
                log.debug("result subscription lost (%s); resubscribing", type(exc).__name__)
                self._subscribed = False
                self._attempt_ended(exc)
                self._attempt = asyncio.get_running_loop().create_future()
                self._wake_all()  # wake-ups may have been missed: everyone re-checks
                if self._users == 0:
                    return  # nobody waits: the next waiter starts a new reader
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, task_id: Any) -> None:
        for fut in self._waiters.get(bytes(task_id), ()):
            if not fut.done():
                fut.set_result(None)

    def _wake_all(self) -> None:
        for group in self._waiters.values():
            for fut in group:
                if not fut.done():
                    fut.set_result(None)

    async def close(self) -> None:
        """Unsubscribe; waiters still waiting wake up and fail with BrokerError."""
        self._closed = True
        reader, self._reader = self._reader, None
        self._subscribed = False
        self._attempt_ended(BrokerError("closed"))  # those waiting on it see _closed
        self._wake_all()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
