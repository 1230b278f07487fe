"""The in-code worker behind ``await app.run()``: the consumer-group loop in asyncio.

It follows PROTOCOL.md exactly as the native engine does; the task bodies run through the
shared :mod:`ardiq.runtime`. One worker is a handful of cooperating loops:

- consume: fetch with free slots, block for new work when there is none, start tasks;
- finish: send outcomes to Redis in batches, keeping each entry leased until its
  outcome landed;
- renew / reclaim / promote / cron / heartbeat: the periodic duties;
- abort listener: cancels a running task or drops a prefetched one.

Shutdown: the first stop ends fetching, hands the buffer back, lets running tasks finish
(their leases still renewed), flushes outcomes and retires; a second stop (or the drain
deadline) cancels running tasks without an outcome, leaving them for reclaim.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from .broker import Broker, is_certificate_error, make_client, translate_errors
from .errors import ArdiqError, BrokerError
from .lifespan import lifespan
from .protocol import GROUP
from .runtime import ABORT, FAIL, RETRY, Delivery, Outcome, Runtime, now_ms
from .settings import mask_url

if TYPE_CHECKING:
    from .app import Ardiq

log = logging.getLogger("ardiq")

FINISH_BATCH = 500
RECLAIM_COUNT = 100
# Pages per lane in one reclaim round while each comes back full (as the engine): drains a
# backlog quickly without letting one round run unbounded.
RECLAIM_PAGES = 10
HEARTBEAT_S = 5.0
PROMOTE_MAX_SLEEP_S = 0.1


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until they ended. On Python 3.11 a cancellation
    can be swallowed (asyncio.wait_for inside redis-py, when the inner call completes at
    the same moment), leaving a loop running on: cancel again until every task is done."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(20):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    log.error("%d worker duties did not stop; leaving them", len(pending))


class Backoff:
    """Jittered exponential backoff that logs a failure once per interval, not per try."""

    def __init__(self, what: str, *, base: float = 0.05, cap: float = 5.0) -> None:
        self.what = what
        self.base = base
        self.cap = cap
        self.delay = base
        self.last_log = 0.0

    def reset(self) -> None:
        self.delay = self.base

    async def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self.last_log >= 10.0:
            log.warning("%s failed (%s); retrying with backoff", self.what, exc)
            self.last_log = now
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.5))
        self.delay = min(self.delay * 2, self.cap)


# An entry we hold is named by its lane and entry id together: entry ids are unique only
# within one stream (two lanes written in the same millisecond both get `<ms>-0`).
Ref = tuple[str, str]


def ref_of(x: Delivery | Outcome) -> Ref:
    return (x.lane, x.entry_id)


def as_fields(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields as a dict, whether redis-py parsed them already or not."""
    if isinstance(raw, Mapping):
        return dict(raw)
    flat = list(raw or [])
    return {flat[j]: flat[j + 1] for j in range(0, len(flat) - 1, 2)}


def parse_entry(lane: str, eid: str, fields: Mapping[bytes, bytes]) -> Delivery | str:
    """A stream entry as a Delivery, or the reason it is malformed."""
    for name in (b"id", b"fn", b"p"):
        if name not in fields:
            return f"malformed entry: missing field {name.decode()!r}"
    if not fields[b"id"]:
        return "malformed entry: empty id"

    def number(name: bytes) -> int:
        # As the native engine reads them: an unreadable number is 0, so a garbled `t` or
        # `enq` does not cost the task its run.
        return entry_int(fields.get(name, b"0"))

    def count(name: bytes) -> int:
        return min(max(0, number(name)), U32_MAX)

    # Text fields as the engine reads them: invalid UTF-8 is replaced, not refused.
    return Delivery(
        entry_id=eid,
        lane=lane,
        task_id=fields[b"id"].decode(errors="replace"),
        name=fields[b"fn"].decode(errors="replace"),
        payload=bytes(fields[b"p"]),
        tries=count(b"t"),
        enqueue_ms=number(b"enq"),
        expire_ms=number(b"x"),
        reclaims=count(b"r"),
    )


_ENTRY_INT = re.compile(rb"[+-]?[0-9]+")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
U32_MAX = 2**32 - 1


def entry_int(raw: bytes) -> int:
    """A number field of an entry as the engine reads it: an optionally signed decimal
    (surrounding spaces allowed) within 64 bits, else 0."""
    text = bytes(raw).strip(_ASCII_SPACE)
    if not _ENTRY_INT.fullmatch(text):
        return 0
    value = int(text)
    return value if -(2**63) <= value < 2**63 else 0


# Server replies that mean "not now" rather than "never", as the engine's is_transient
# reads them: a call refused with one of these is retried as it is, never split.
_TRANSIENT_CODES = frozenset(
    {"BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "LOADING", "OOM", "NOSCRIPT"}
)


def is_transient(exc: ArdiqError) -> bool:
    """Worth retrying as is: the connection or the server is in trouble for now. Anything
    else (a script error, a key of the wrong type) would fail the same way again."""
    if isinstance(exc, BrokerError):
        return True
    text = str(exc).removeprefix("Redis error: ")
    return text.split(" ", 1)[0] in _TRANSIENT_CODES


class Worker:
    """One consumer of an app's queue, inside the caller's event loop."""

    def __init__(self, app: Ardiq) -> None:
        self.app = app
        self.worker_id = app.worker_id
        self.lanes = list(reversed(app.priorities))  # highest first: the fetch order
        self.rank = {lane: i for i, lane in enumerate(self.lanes)}
        self.runtime = Runtime(app, self.worker_id)
        self.held: dict[Ref, Delivery] = {}  # every entry we hold: buffered, running, finishing
        # When the last renewal round that succeeded began (time.monotonic()).
        self.renewed_at = time.monotonic()
        self.by_task: dict[str, Ref] = {}  # task id -> its entry, for aborts
        self.buffer: list[tuple[int, int, Ref]] = []  # heap of (lane rank, seq, entry)
        self.running: dict[Ref, asyncio.Task[None]] = {}
        self.outcomes: list[Outcome] = []
        self.one_offs: set[asyncio.Task[None]] = set()
        # Set when the worker ends: duty loops stop at their next turn even if a
        # cancellation was swallowed on the way (see cancel_all).
        self.closing = False
        # Abort requests for tasks we did not hold when they came (task id -> when): the
        # request can overtake the fetch reply that delivers the task to us.
        self.early_aborts: dict[str, float] = {}
        self.seq = itertools.count()
        self.stops = 0
        self.retry_due_ms = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.changed = asyncio.Event()  # a slot freed, an outcome landed, or a stop
        self.outcome_ready = asyncio.Event()
        self.abort_ready = asyncio.Event()
        self.hard_stop = asyncio.Event()

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """First call: drain. Second: exit now. Thread- and signal-safe."""
        loop = self.loop
        if loop is None:
            self.stops += 1  # not started yet: it will not take work when it starts
            return
        if loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._on_stop()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(self._on_stop)

    def _on_stop(self) -> None:
        self.stops += 1
        self.changed.set()
        if self.stops >= 2:
            self._hard_stop()

    def _hard_stop(self) -> None:
        self.hard_stop.set()
        for task in list(self.running.values()):
            task.cancel()

    # ---------------------------------------------------------------- main loop
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.renewed_at = time.monotonic()
        if self.stops >= 2:
            self.hard_stop.set()
        app = self.app
        self.broker: Broker = app._client().broker
        self.streams = [app.keys.stream(lane) for lane in self.lanes]
        self.block_client = make_client(app.redis_url, socket_timeout=app.poll_block_ms / 1000 + 10)
        log.info(
            "worker starting worker=%s queue=%s lanes=%s concurrency=%d prefetch=%d redis=%s",
            self.worker_id,
            app.queue_name,
            ",".join(self.lanes),
            app.concurrency,
            app.prefetch,
            mask_url(app.redis_url),
        )
        reason = "stop"
        background: list[asyncio.Task[None]] = []
        try:
            async with lifespan(self.app):
                await self._wait_for_redis()
                background = [self._spawn(c) for c in self._duties()]
                await asyncio.wait_for(self.abort_ready.wait(), 10)
                reason = await self._consume()
                await self._drain()
        finally:
            self.closing = True
            await cancel_all(background)
            with contextlib.suppress(Exception):
                await self._retire()
            with contextlib.suppress(Exception):
                await self.block_client.aclose()
            self.runtime.close()
            log.info("worker stopped worker=%s reason=%s", self.worker_id, reason)

    def _duties(self) -> list[Callable[[], Awaitable[None]]]:
        duties: list[Callable[[], Awaitable[None]]] = [
            self._finisher,
            self._renewer,
            self._reclaimer,
            self._promoter,
            self._heartbeat,
            self._abort_listener,
        ]
        if self.app.crons and not self.app.burst:
            duties.append(self._cron)
        return duties

    def _spawn(self, duty: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run a duty for the worker's whole life: one that fails unexpectedly is logged
        and started again (with backoff), never left dead while the worker goes on."""

        async def guarded() -> None:
            backoff = Backoff(f"worker duty {duty.__name__}", base=0.2)
            while not self.closing:
                try:
                    await duty()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "internal error in worker duty %s: %s; restarting it",
                        duty.__name__,
                        type(exc).__name__,
                        exc_info=exc,
                    )
                    await backoff.wait(exc)

        return asyncio.get_running_loop().create_task(guarded(), name=f"ardiq-{duty.__name__}")

    async def _wait_for_redis(self) -> None:
        backoff = Backoff(f"connecting to Redis at {mask_url(self.app.redis_url)}", cap=2.0)
        while not self.stops:
            try:
                await self.broker.command("PING")
            except ArdiqError as exc:
                if is_certificate_error(exc):
                    raise  # an untrusted certificate stays untrusted: say so and stop
                await backoff.wait(exc)
                continue
            try:
                policy = await self.broker.command("CONFIG", "GET", "maxmemory-policy")
            except ArdiqError:
                # A least-privilege ACL user may not run CONFIG (README, "Security"):
                # the check is advice, not a condition to start.
                return
            # redis-py answers CONFIG GET with a mapping (older versions: a flat list).
            if isinstance(policy, Mapping):
                value = policy.get(b"maxmemory-policy", policy.get("maxmemory-policy"))
            else:
                value = policy[1] if policy and len(policy) == 2 else None
            if isinstance(value, str):
                value = value.encode()
            if value is not None and value != b"noeviction":
                log.warning(
                    "Redis maxmemory-policy is %s: Redis may evict queued tasks; use noeviction",
                    value.decode(),
                )
            return

    def _free_slots(self) -> int:
        """How many entries to fetch: prefetch minus those buffered or running. Entries
        whose outcome waits for its ack do not count (their work is done), unless acks
        fall a whole prefetch behind (Redis slow to take them)."""
        finishing = len(self.outcomes)
        if finishing >= self.app.prefetch:
            return 0
        return self.app.prefetch - max(0, len(self.held) - finishing)

    async def _consume(self) -> str:
        app = self.app
        backoff = Backoff("fetching tasks")
        while not self.stops:
            free = self._free_slots()
            if free <= 0:
                await self._wait_changed()
                continue
            try:
                entries = await self._fetch(free)
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)
                continue
            if entries:
                self._accept(entries)
                continue
            if app.burst:
                if self.held:
                    await self._wait_changed()
                    continue
                try:
                    if await self._burst_done():
                        return "burst"
                except ArdiqError as exc:
                    await backoff.wait(exc)
                    continue
            try:
                self._accept(await self._block_read())
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)
        return "stop"

    async def _wait_changed(self, *, while_stopping: bool = False) -> None:
        """Wait (at most a second) for a slot to free, an outcome to land or a stop. Once
        stopping, only `while_stopping` callers (the drain) wait: the rest return at once."""
        self.changed.clear()
        if self.stops and not while_stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), 1.0)

    async def _burst_done(self) -> bool:
        """True when nothing is due (no past-due delayed task, no retry of ours pending)
        and nothing is reclaimable (no entry pending past its lease)."""
        if now_ms() < self.retry_due_ms:
            await asyncio.sleep(min(0.05, (self.retry_due_ms - now_ms()) / 1000))
            return False
        if self.outcomes:
            return False
        report = await self._promote_report()
        if report[3] and (await self._promote_report(report[3]))[0]:
            return False  # moved due tasks to the streams: read them next
        # The promoter may have moved a due task into a stream since our last fetch: read
        # once more, so nothing that was due when we checked is left behind.
        entries = await self._fetch(self._free_slots())
        if entries:
            self._accept(entries)
            return False
        # Nothing waiting and nothing due: what a dead worker left pending past its lease
        # is all that can still be ours. Take it over before calling the queue drained, or
        # it would sit there after every burst worker exited. Entries a live worker keeps
        # renewing are never idle that long: they do not hold the burst up.
        claimed, more = await self._reclaim_round(dict.fromkeys(self.streams, "0-0"))
        if claimed or more:
            log.info(
                "burst: took over %d entries of a lost worker before finishing worker=%s",
                claimed,
                self.worker_id,
            )
            return False
        return True

    # ------------------------------------------------------------------ reading
    async def _fetch(self, count: int) -> list[tuple[str, str, dict[bytes, bytes]]]:
        reply = await self.broker.script("fetch", self.streams, [GROUP, self.worker_id, count])
        out = []
        for i in range(0, len(reply), 3):
            lane = self.lanes[int(reply[i]) - 1]
            flat = reply[i + 2]
            out.append((lane, reply[i + 1].decode(), as_fields(flat)))
        return out

    async def _block_read(self) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """Wait for new work on any lane (one entry per lane at most), on the dedicated
        connection. A stop is noticed when the read returns (at most poll_block_ms)."""
        streams: dict[Any, Any] = dict.fromkeys(self.streams, ">")
        try:
            with translate_errors(self.app.redis_url):
                reply: Any = await self.block_client.xreadgroup(
                    GROUP, self.worker_id, streams, count=1, block=self.app.poll_block_ms
                )
        except ArdiqError as exc:
            if "NOGROUP" in str(exc):
                await self._fetch(0)  # the fetch script creates missing groups
                return []
            raise
        out = []
        by_stream = {s: lane for s, lane in zip(self.streams, self.lanes, strict=True)}
        for stream, entries in reply or []:
            lane = by_stream[stream.decode() if isinstance(stream, bytes) else stream]
            for eid, fields in entries:
                out.append((lane, eid.decode(), as_fields(fields)))
        return out

    def _accept(self, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        for lane, eid, fields in entries:
            parsed = parse_entry(lane, eid, fields)
            if isinstance(parsed, str):
                log.error("%s entry=%s lane=%s", parsed, eid, lane)
                d = Delivery(eid, lane, f"entry:{eid}", "", b"", 0, 0)
                self.held[(lane, eid)] = d
                self._submit(Outcome(eid, d.task_id, FAIL, parsed.encode(), 0, 0, 0, lane))
                continue
            ref = (lane, eid)
            self.held[ref] = parsed
            self.by_task[parsed.task_id] = ref
            if self.early_aborts.pop(parsed.task_id, None) is not None:
                # Held back (leased, not startable) until its job's flag is checked.
                self._spawn_once(self._check_abort_flag(ref, parsed))
                continue
            heapq.heappush(self.buffer, (self.rank[lane], next(self.seq), ref))
        self._dispatch()

    def _dispatch(self) -> None:
        if self.stops:
            return
        loop = asyncio.get_running_loop()
        suspects: list[Delivery] = []
        gate: asyncio.Future[set[Ref]] | None = None
        deferred: list[tuple[int, int, Ref]] = []
        check_ownership = self._lease_may_have_lapsed()
        while self.buffer and len(self.running) < self.app.concurrency:
            item = heapq.heappop(self.buffer)
            ref = item[2]
            d = self.held.get(ref)
            if d is None or ref in self.running:
                continue  # dropped (lease lost or aborted) while it waited
            if self._last_chance(d) and any(
                self._last_chance(self.held[r]) for r in self.running if r in self.held
            ):
                # One last-chance task at a time (PROTOCOL.md, Reclaim): a task that kills
                # its worker must not take another last-chance task down with it.
                deferred.append(item)
                continue
            if d.reclaims >= 1 or check_ownership:
                # A suspect (reclaimed before): marked as started before it runs, so a
                # worker death blames it only if it really ran (PROTOCOL.md, Reclaim).
                # After a stall, every start checks the same way that this worker still
                # owns the entry: another worker may have reclaimed it meanwhile.
                gate = gate or loop.create_future()
                suspects.append(d)
                self.runtime.admit(d)  # an abort from now on finds it
                self.running[ref] = loop.create_task(self._run_one(d, gate))
            else:
                self.runtime.admit(d)
                self.running[ref] = loop.create_task(self._run_one(d))
        for item in deferred:
            heapq.heappush(self.buffer, item)
        if gate is not None:
            self._spawn_once(self._mark_started(suspects, gate))

    def _lease_may_have_lapsed(self) -> bool:
        """Is the last good renewal round two thirds of a lease old (rounds run every
        third)? Then the process stalled (SIGSTOP, a frozen VM) or Redis was unreachable,
        and another worker may have reclaimed what this one holds."""
        return time.monotonic() - self.renewed_at > self.app.idle_timeout_ms * 2 / 3000

    def _last_chance(self, d: Delivery) -> bool:
        """A suspect whose next counted loss reaches the delivery cap."""
        return d.reclaims >= 1 and d.reclaims + 1 >= self.app.max_deliveries

    async def _mark_started(self, suspects: list[Delivery], gate: asyncio.Future[set[Ref]]) -> None:
        """One `started` call for a batch of suspects; opens `gate` with the ones this worker
        still holds (the rest were reclaimed elsewhere meanwhile and must not run here)."""
        k = self.app.keys
        keys: list[str] = []
        for d in suspects:
            keys += [k.stream(d.lane), k.job(d.task_id)]
        args = [GROUP, self.worker_id, *(d.entry_id for d in suspects)]
        backoff = Backoff("marking reclaimed tasks as started")
        reply: list[Any] = []  # none may run if this is cancelled (the worker is torn down)
        try:
            while True:
                try:
                    reply = list(await self.broker.script("started", keys, args))
                    break
                except BrokerError as exc:
                    await backoff.wait(exc)  # leases stay renewed meanwhile
                except ArdiqError as exc:
                    log.warning("could not mark reclaimed tasks as started (%s); running them", exc)
                    reply = [1] * len(suspects)
                    break
        finally:
            if not gate.done():
                allowed = {ref_of(d) for d, ok in zip(suspects, reply, strict=False) if ok}
                gate.set_result(allowed)

    async def _run_one(self, d: Delivery, gate: asyncio.Future[set[Ref]] | None = None) -> None:
        try:
            if gate is not None and ref_of(d) not in await gate:
                log.warning(
                    "reclaimed elsewhere before it started; not run here id=%s worker=%s",
                    d.task_id,
                    self.worker_id,
                )
                self.held.pop(ref_of(d), None)
                if self.by_task.get(d.task_id) == ref_of(d):
                    del self.by_task[d.task_id]
                self.runtime.release(d)
                return
            outcome = await self.runtime.execute(d)
        except asyncio.CancelledError:
            # Hard stop: no outcome, the entry stays pending for another worker's reclaim.
            self.held.pop(ref_of(d), None)
            self.runtime.release(d)
            return
        finally:
            self.running.pop(ref_of(d), None)
            self.changed.set()
        self._submit(outcome)
        self._dispatch()

    # ---------------------------------------------------------------- finishing
    def _submit(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.outcome_ready.set()

    async def _finisher(self) -> None:
        backoff = Backoff("finishing tasks")
        while not self.closing:
            await self.outcome_ready.wait()
            self.outcome_ready.clear()
            while self.outcomes:
                batch = self.outcomes[:FINISH_BATCH]
                await self._finish_batch(batch, backoff)
                # New outcomes are only ever appended: the batch is still the head.
                del self.outcomes[: len(batch)]
                self.changed.set()

    async def _finish_batch(self, batch: list[Outcome], backoff: Backoff) -> None:
        """Finish `batch`, retrying while Redis is unreachable (the outcomes stay queued
        and their leases renewed). A batch the server rejects (a script error: some key
        of the wrong type, say) is split, as the engine does, so one poisoned outcome
        cannot wedge every other: each is then tried alone, and one that still fails is
        logged and released. Its entry stays pending, is reclaimed once its lease runs
        out, and ends in the dead letters at the delivery cap."""
        while True:
            try:
                reply = await self._finish(batch)
            except ArdiqError as exc:
                if is_transient(exc):
                    await backoff.wait(exc)
                    continue
                if len(batch) > 1:
                    log.warning(
                        "finish rejected a batch (%s); finishing one by one outcomes=%d",
                        exc,
                        len(batch),
                    )
                    for outcome in batch:
                        await self._finish_batch([outcome], backoff)
                    return
                outcome = batch[0]
                log.error(
                    "finish rejected this outcome; leaving the entry for reclaim "
                    "id=%s worker=%s try=%d error=%s",
                    outcome.task_id,
                    self.worker_id,
                    outcome.tries,
                    exc,
                )
                self._release(outcome)
                return
            backoff.reset()
            for outcome, recorded in zip(batch, reply, strict=True):
                self._release(outcome)
                if not recorded:
                    log.warning(
                        "stale outcome dropped: another worker holds the task now id=%s worker=%s",
                        outcome.task_id,
                        self.worker_id,
                    )
                elif outcome.kind == RETRY:
                    self.retry_due_ms = max(self.retry_due_ms, now_ms() + outcome.delay_ms)
            return

    def _release(self, outcome: Outcome) -> None:
        """The entry of `outcome` is no longer ours to renew."""
        self.held.pop(ref_of(outcome), None)
        if self.by_task.get(outcome.task_id) == ref_of(outcome):
            del self.by_task[outcome.task_id]

    async def _finish(self, batch: list[Outcome]) -> list[int]:
        k = self.app.keys
        keys = [k.delayed, k.dead]
        args: list[Any] = [k.prefix, GROUP, self.worker_id, self.app.result_ttl_ms, len(batch)]
        for o in batch:
            keys += [
                k.stream(o.lane),
                k.job(o.task_id),
                k.wait(o.task_id),
                k.result(o.task_id),
                k.dead_letter(o.task_id),
            ]
            args += [
                o.entry_id,
                o.task_id,
                o.kind,
                o.value,
                o.tries,
                o.enqueue_ms,
                o.start_ms,
                o.lane,
                o.delay_ms,
            ]
        return list(await self.broker.script("finish", keys, args))

    async def _drain(self) -> None:
        """Hand the buffer back, let running tasks end, and flush every outcome."""
        await self._hand_back()
        deadline = self.app.shutdown_timeout_s
        started = time.monotonic()
        while self.running and not self.hard_stop.is_set():
            if deadline is not None and time.monotonic() - started > deadline:
                log.warning(
                    "drain deadline passed; leaving %d running tasks for reclaim", len(self.running)
                )
                self._hard_stop()
                break
            await self._wait_changed(while_stopping=True)
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        flush_started = time.monotonic()
        while self.outcomes and not self.hard_stop.is_set():
            self.outcome_ready.set()
            if time.monotonic() - flush_started > 30:
                log.error(
                    "could not finish %d outcomes before exit; their tasks will be reclaimed",
                    len(self.outcomes),
                )
                break
            await asyncio.sleep(0.01)

    async def _hand_back(self) -> None:
        waiting = [ref for _, _, ref in self.buffer if ref in self.held and ref not in self.running]
        self.buffer.clear()
        if not waiting:
            return
        k = self.app.keys
        keys: list[str] = []
        for ref in waiting:
            d = self.held[ref]
            keys += [k.stream(d.lane), k.job(d.task_id)]
        eids = [eid for _, eid in waiting]
        try:
            count = await self.broker.script("handback", keys, [GROUP, self.worker_id, *eids])
            log.info("handed back %d prefetched tasks worker=%s", count, self.worker_id)
        except ArdiqError as exc:
            log.warning("could not hand back prefetched tasks (%s); they will be reclaimed", exc)
        for ref in waiting:
            d = self.held.pop(ref)
            self.by_task.pop(d.task_id, None)

    async def _retire(self) -> None:
        await self.broker.script(
            "retire", [self.app.keys.workers, *self.streams], [GROUP, self.worker_id]
        )

    # ------------------------------------------------------------------- duties
    async def _renewer(self) -> None:
        interval = self.app.idle_timeout_ms / 3000
        backoff = Backoff("renewing leases")
        while not self.closing:
            await asyncio.sleep(interval)
            began = time.monotonic()
            renewed = True
            # One call per lane: the script answers with bare entry ids, which are unique
            # only within one stream.
            by_lane: dict[str, list[str]] = {}
            for lane, eid in self.held:
                by_lane.setdefault(lane, []).append(eid)
            for lane, eids in by_lane.items():
                index = self.rank[lane] + 1
                args: list[Any] = [GROUP, self.worker_id]
                for eid in eids:
                    args += [index, eid]
                try:
                    lost = await self.broker.script("renew", self.streams, args)
                    backoff.reset()
                except ArdiqError as exc:
                    renewed = False
                    await backoff.wait(exc)
                    break
                for raw in lost:
                    self._lease_lost((lane, raw.decode()))
            if renewed:
                self.renewed_at = began

    def _lease_lost(self, ref: Ref) -> None:
        d = self.held.get(ref)
        if d is None:
            return
        if ref in self.running:
            log.warning(
                "lease lost while running; its outcome will be dropped id=%s worker=%s",
                d.task_id,
                self.worker_id,
            )
        elif all(ref_of(o) != ref for o in self.outcomes):
            self.held.pop(ref, None)
            if self.by_task.get(d.task_id) == ref:
                del self.by_task[d.task_id]

    async def _reclaimer(self) -> None:
        app = self.app
        interval = min(app.idle_timeout_ms / 4000, 1.0)
        # Follow the cursor XAUTOCLAIM returns from one round to the next: restarting at
        # 0-0 every round would rescan the head of the pending list and starve its tail.
        cursors = dict.fromkeys(self.streams, "0-0")
        backoff = Backoff("reclaiming tasks")
        while not self.closing:
            await asyncio.sleep(interval)
            try:
                await self._reclaim_round(cursors)
                backoff.reset()
            except ArdiqError as exc:
                if "NOGROUP" not in str(exc):
                    await backoff.wait(exc)

    async def _reclaim_round(self, cursors: dict[str, str]) -> tuple[int, bool]:
        """One round over every lane, as the engine does: pages of RECLAIM_COUNT, up to
        RECLAIM_PAGES per lane while they come back full. Returns how many entries were
        taken over, and whether some lane stopped at the page limit (more may wait).
        A lane that fails does not stop the others; the first error is raised after."""
        claimed = 0
        more = False
        error: ArdiqError | None = None
        for stream, lane in zip(self.streams, self.lanes, strict=True):
            for page in range(RECLAIM_PAGES):
                try:
                    cursors[stream], n = await self._reclaim_lane(stream, lane, cursors[stream])
                except ArdiqError as exc:
                    if "NOGROUP" in str(exc):
                        # No group yet (or Redis lost its data): nothing to reclaim here;
                        # the fetch recreates it.
                        cursors[stream] = "0-0"
                    elif error is None:
                        error = exc
                    break
                claimed += n
                if n < RECLAIM_COUNT or cursors[stream] == "0-0":
                    break
                if page == RECLAIM_PAGES - 1:
                    more = True
        if error is not None:
            raise error
        return claimed, more

    async def _reclaim_lane(self, stream: str, lane: str, cursor: str) -> tuple[str, int]:
        """One XAUTOCLAIM page and its `reclaim` call: the next cursor and how many
        entries were claimed. On a failed `reclaim` the cursor is not moved: the same
        entries (now ours and idle) come back next round."""
        app = self.app
        reply = await self.broker.command(
            "XAUTOCLAIM",
            stream,
            GROUP,
            self.worker_id,
            app.idle_timeout_ms,
            cursor,
            "COUNT",
            RECLAIM_COUNT,
        )
        next_cursor: str = reply[0].decode()
        claimed = [(eid.decode(), fields) for eid, fields in reply[1] if eid is not None]
        if not claimed:
            return next_cursor, 0
        k = app.keys
        keys = [k.dead]
        args: list[Any] = [
            k.prefix,
            GROUP,
            self.worker_id,
            app.result_ttl_ms,
            app.max_deliveries,
            len(claimed),
        ]
        for eid, raw_fields in claimed:
            fields = as_fields(raw_fields)
            raw_id = fields.get(b"id")
            task_id = raw_id.decode(errors="replace") if raw_id else f"entry:{eid}"
            keys += [
                stream,
                k.job(task_id),
                k.wait(task_id),
                k.result(task_id),
                k.dead_letter(task_id),
            ]
            args += [eid, task_id, lane]
        requeued, buried, aborted = await self.broker.script("reclaim", keys, args)
        log.warning(
            "reclaimed tasks of a lost worker lane=%s requeued=%d dead=%d aborted=%d worker=%s",
            lane,
            requeued,
            buried,
            aborted,
            self.worker_id,
        )
        return next_cursor, len(claimed)

    async def _promote_report(self, ids: list[str] | None = None) -> list[Any]:
        k = self.app.keys
        ids = ids or []
        keys = [k.delayed, *self.streams, *(k.job(i) for i in ids)]
        args: list[Any] = [len(self.lanes), *self.lanes, 200, *ids]
        reply = list(await self.broker.script("promote", keys, args))
        reply[3] = [i.decode() for i in reply[3]]
        return reply

    async def _promoter(self) -> None:
        backoff = Backoff("promoting delayed tasks")
        while not self.closing:
            try:
                _, now, next_due, due = await self._promote_report()
                # Go again at once only while ids move: a due id this worker cannot move
                # (its lane is not one of ours) must not make the loop spin.
                if due and (await self._promote_report(due))[0]:
                    continue
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)
                continue
            pause = PROMOTE_MAX_SLEEP_S
            if next_due >= 0 and not due:
                pause = min(pause, max(0.001, (next_due - now) / 1000))
            await asyncio.sleep(pause)

    async def _heartbeat(self) -> None:
        while not self.closing:
            with contextlib.suppress(ArdiqError):
                await self.broker.command("ZADD", self.app.keys.workers, now_ms(), self.worker_id)
            await asyncio.sleep(HEARTBEAT_S)

    async def _cron(self) -> None:
        app = self.app
        start = now_ms()
        upcoming = {c.name: c.schedule.next_after(start) for c in app.crons}
        k = app.keys
        while not self.closing:
            due = [(t, n) for n, t in upcoming.items() if t is not None]
            if not due:
                return
            when, name = min(due)
            wait = (when - now_ms()) / 1000
            if wait > 0:
                await asyncio.sleep(min(wait, app.cron_poll_s))
                continue
            job = app._crons[name]
            task_id = f"cron:{name}:{when}"
            try:
                payload = app._signer.seal(task_id, name, app.serializer([[], {}, None]))
                fired = await self.broker.script(
                    "cron",
                    [k.crons, k.stream(job.task.priority), k.job(task_id), k.result(task_id)],
                    [name, when, task_id, name, payload, job.task.priority],
                )
                if fired:
                    log.debug("cron fired name=%s id=%s worker=%s", name, task_id, self.worker_id)
            except ArdiqError as exc:
                log.warning(
                    "cron %s could not be enqueued (%s); skipping this occurrence", name, exc
                )
            upcoming[name] = job.schedule.next_after(max(when, now_ms()))

    async def _abort_listener(self) -> None:
        channel = self.app.keys.abort_channel
        backoff = Backoff("listening for aborts")
        while not self.closing:
            pubsub = self.broker.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self.abort_ready.set()
                        backoff.reset()
                    elif msg["type"] == "message":
                        self._abort(msg["data"].decode())
            except (rexc.RedisError, OSError) as exc:
                self.abort_ready.set()  # do not hold the worker back on a flaky Redis
                await backoff.wait(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _spawn_once(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.one_offs.add(task)
        task.add_done_callback(self.one_offs.discard)

    async def _check_abort_flag(self, ref: Ref, d: Delivery) -> None:
        """An abort request overtook this delivery: finish it as aborted, without running
        it, if its job is flagged (a fresh enqueue under the same id is not); otherwise
        let it start. Should Redis fail now it starts: a retry or reclaim of the task
        still finds the flag."""
        flagged = False
        with contextlib.suppress(ArdiqError):
            flagged = await self.broker.command("HGET", self.app.keys.job(d.task_id), "a") == b"1"
        if self.held.get(ref) is not d or any(ref_of(o) == ref for o in self.outcomes):
            return  # lost meanwhile (its lease), or aborted by a request that came since
        if flagged:
            log.warning("task aborted before it started id=%s worker=%s", d.task_id, self.worker_id)
            self._submit(
                Outcome(d.entry_id, d.task_id, ABORT, b"aborted", d.tries, d.enqueue_ms, 0, d.lane)
            )
            return
        heapq.heappush(self.buffer, (self.rank[d.lane], next(self.seq), ref))
        self._dispatch()

    def _abort(self, task_id: str) -> None:
        ref = self.by_task.get(task_id)
        if ref is None:
            now = time.monotonic()
            self.early_aborts = {t: at for t, at in self.early_aborts.items() if now - at < 30}
            self.early_aborts[task_id] = now
            return
        if ref in self.running:
            self.runtime.abort(task_id, *ref)
            return
        d = self.held.get(ref)
        if d is not None and all(ref_of(o) != ref for o in self.outcomes):
            log.warning("task aborted before it started id=%s worker=%s", task_id, self.worker_id)
            self.buffer = [item for item in self.buffer if item[2] != ref]
            heapq.heapify(self.buffer)
            self._submit(
                Outcome(d.entry_id, task_id, ABORT, b"aborted", d.tries, d.enqueue_ms, 0, d.lane)
            )
