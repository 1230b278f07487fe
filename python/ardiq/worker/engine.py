"""The in-code worker behind ``await app.run()``: the consumer-group loop in asyncio.

It follows PROTOCOL.md exactly as the native engine does; the task bodies run through the
shared :mod:`ardiq.runtime`. Each duty lives in the module named like the engine's
(``crates/ardiq-core/src/<duty>.rs`` beside ``python/ardiq/worker/<duty>.py``), so the two
copies of a duty can be read side by side. This module is the engine's ``engine.rs``:
the worker's state and the dispatcher. One worker is a handful of cooperating loops:

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
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ..broker import Broker, is_auth_error, is_certificate_error, make_client
from ..errors import ArdiqError
from ..lifespan import lifespan
from ..runtime import FAIL, Delivery, Outcome, Runtime, now_ms
from ..settings import mask_url
from ..worker_settings import WorkerSettings
from . import (
    abort,
    fetch,
    finish,
    heartbeat,
    lease,
    limits,
    pause,
    promote,
    reclaim,
    scheduler,
    shutdown,
    started,
)
from .backoff import Backoff, cancel_all
from .entry import Ref, parse_entry, ref_of

if TYPE_CHECKING:
    from ..app import Ardiq

log = logging.getLogger("ardiq")


class Worker:
    """One consumer of an app's queue, inside the caller's event loop. The duty modules
    share its state, as the engine's tasks share `Ctx`."""

    def __init__(self, app: Ardiq) -> None:
        self.app = app
        # Read once, as the engine reads its Config (`app.burst` alone is read live: users
        # flip it while the worker runs to make it return once the queue is drained).
        self.settings = WorkerSettings.of(app)
        self.worker_id = self.settings.worker_id
        self.lanes = list(reversed(app.priorities))  # highest first: the fetch order
        self.rank = {lane: i for i, lane in enumerate(self.lanes)}
        # Lane weights, highest lane first like `lanes` (None: strict priorities), and the
        # smooth weighted round-robin's running credit per lane (carried between fetches).
        w = self.settings.weights
        self.weights: list[int] | None = None if w is None else list(reversed(w))
        self.credit = [0] * len(self.lanes)
        # Lanes `P paused` names (all of them when the whole queue is): not read.
        self.paused: set[str] = set()
        self.runtime = Runtime(app, self.worker_id)
        # Tasks with a rate limit or concurrency cap, by name: their entries go through
        # `admit` before the buffer (PROTOCOL.md, Limits). Empty: no call is ever made.
        self.limits = {lim.name: lim for lim in self.settings.limits}
        self.held: dict[Ref, Delivery] = {}  # every entry we hold: buffered, running, finishing
        # When the last renewal round that succeeded began (time.monotonic()).
        self.renewed_at = time.monotonic()
        self.by_task: dict[str, Ref] = {}  # task id -> its entry, for aborts
        self.buffer: list[tuple[int, int, Ref]] = []  # heap of (lane rank, seq, entry)
        self.running: dict[Ref, asyncio.Task[None]] = {}
        self.outcomes: list[Outcome] = []
        # Attempts that reported progress, until their outcome is finished: `finish` keeps
        # (or deletes) their record; the rest have none and cost nothing there.
        self.progressed: set[Ref] = set()
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

    def set_burst(self, on: bool) -> None:
        """``app.burst`` changed (it is read live): wake the consume loop to look at it.
        Thread-safe."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.changed.set)

    def _on_stop(self) -> None:
        self.stops += 1
        self.changed.set()
        if self.stops >= 2:
            self.hard_stop_now()

    def hard_stop_now(self) -> None:
        self.hard_stop.set()
        for task in list(self.running.values()):
            task.cancel()

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.renewed_at = time.monotonic()
        if self.stops >= 2:
            self.hard_stop.set()
        app = self.app
        self.broker: Broker = app._client().broker
        self.runtime.write_progress_with(self.loop, self._write_progress)
        self.streams = [app.keys.stream(lane) for lane in self.lanes]
        settings = self.settings
        self.block_client = make_client(
            settings.redis_url, socket_timeout=settings.poll_block_ms / 1000 + 10
        )
        log.info(
            "worker starting worker=%s queue=%s lanes=%s concurrency=%d prefetch=%d redis=%s "
            "burst=%s tasks=%d crons=%d",
            self.worker_id,
            settings.queue_name,
            ",".join(self.lanes),
            settings.concurrency,
            settings.prefetch,
            mask_url(settings.redis_url),
            "true" if self.app.burst else "false",
            settings.tasks,
            len(settings.crons),
        )
        reason = "stop"
        background: list[asyncio.Task[None]] = []
        try:
            async with lifespan(self.app):
                await self._wait_for_redis()
                try:
                    await pause.refresh(self)  # before the first fetch
                except ArdiqError as exc:
                    log.warning(
                        "could not read the paused lanes (%s); reading them again in a second",
                        exc,
                    )
                background = [self._spawn(c) for c in self._duties()]
                await asyncio.wait_for(self.abort_ready.wait(), 10)
                reason = await self._consume()
                await shutdown.drain(self)
        finally:
            self.closing = True
            await cancel_all(background)
            with contextlib.suppress(Exception):
                await shutdown.retire(self)
            with contextlib.suppress(Exception):
                await self.block_client.aclose()
            self.runtime.close()
            log.info("worker stopped worker=%s reason=%s", self.worker_id, reason)

    def _duties(self) -> list[Callable[[Worker], Awaitable[None]]]:
        duties: list[Callable[[Worker], Awaitable[None]]] = [
            finish.run,
            lease.run,
            reclaim.run,
            promote.run,
            heartbeat.run,
            abort.run,
            pause.run,
        ]
        if self.app.crons and not self.app.burst:
            duties.append(scheduler.run)
        if self.limits:
            duties.append(limits.run)
        return duties

    def _spawn(self, duty: Callable[[Worker], Awaitable[None]]) -> asyncio.Task[None]:
        """Run a duty for the worker's whole life: one that fails unexpectedly is logged
        and started again (with backoff), never left dead while the worker goes on."""
        name = duty.__module__.rsplit(".", 1)[-1]

        async def guarded() -> None:
            backoff = Backoff(f"worker duty {name}", base=0.2)
            while not self.closing:
                try:
                    await duty(self)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "internal error in worker duty %s: %s; restarting it",
                        name,
                        type(exc).__name__,
                        exc_info=exc,
                    )
                    await backoff.wait(exc)

        return asyncio.get_running_loop().create_task(guarded(), name=f"ardiq-{name}")

    async def _wait_for_redis(self) -> None:
        backoff = Backoff(f"connecting to Redis at {mask_url(self.settings.redis_url)}", cap=2.0)
        while not self.stops:
            try:
                await self.broker.command("PING")
            except ArdiqError as exc:
                if is_certificate_error(exc) or is_auth_error(exc):
                    # An untrusted certificate stays untrusted and refused credentials stay
                    # refused: say so and stop, as the engine does.
                    raise
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
        if finishing >= self.settings.prefetch:
            return 0
        return self.settings.prefetch - max(0, len(self.held) - finishing)

    async def _consume(self) -> str:
        app = self.app
        backoff = Backoff("fetching tasks")
        while not self.stops:
            free = self._free_slots()
            if free <= 0:
                await self.wait_changed()
                continue
            try:
                entries = await fetch.fetch(self, free)
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)
                continue
            if entries:
                if self.limits:
                    entries = await limits.admit(self, entries)
                self._accept(entries)
                continue
            if app.burst:
                if self.held:
                    await self.wait_changed()
                    continue
                try:
                    if await self._burst_done():
                        return "burst"
                except ArdiqError as exc:
                    await backoff.wait(exc)
                    continue
            try:
                entries = await fetch.block_read(self)
                if self.limits and entries:
                    entries = await limits.admit(self, entries)
                self._accept(entries)
                backoff.reset()
            except ArdiqError as exc:
                await backoff.wait(exc)
        return "stop"

    async def wait_changed(self, *, while_stopping: bool = False) -> None:
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
        report = await promote.report(self)
        if report[3] and (await promote.report(self, report[3]))[0]:
            return False  # moved due tasks to the streams: read them next
        if self.limits:
            # Parked tasks are queued, waiting for a token or a slot: not drained yet.
            # Before the fetch, so what the unpark loop moved meanwhile is read below (a
            # fetch that parks anything returns False there).
            _, now, next_due, due = await limits.report(self)
            if due:
                await limits.report(self, due)
                return False
            if next_due >= 0:
                await asyncio.sleep(min(0.1, max(0.001, (next_due - now) / 1000)))
                return False
        # The promoter may have moved a due task into a stream since our last fetch: read
        # once more, so nothing that was due when we checked is left behind.
        entries = await fetch.fetch(self, self._free_slots())
        if entries:
            if self.limits:
                entries = await limits.admit(self, entries)
            self._accept(entries)
            return False
        # Nothing waiting and nothing due: what a dead worker left pending past its lease
        # is all that can still be ours. Take it over before calling the queue drained, or
        # it would sit there after every burst worker exited. Entries a live worker keeps
        # renewing are never idle that long: they do not hold the burst up.
        claimed, more = await reclaim.reclaim_all(self, dict.fromkeys(self.streams, "0-0"))
        if claimed or more:
            log.info(
                "burst: took over %d entries of a lost worker before finishing worker=%s",
                claimed,
                self.worker_id,
            )
            return False
        if self.paused:
            waiting = 0
            for lane in self.paused:
                with contextlib.suppress(ArdiqError):
                    waiting += int(await self.broker.command("XLEN", self.app.keys.stream(lane)))
            log.info(
                "burst: done; %d entries wait in paused lanes (%s) worker=%s",
                waiting,
                ",".join(sorted(self.paused)),
                self.worker_id,
            )
        return True

    def _accept(self, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        for lane, eid, fields in entries:
            parsed = parse_entry(lane, eid, fields)
            if isinstance(parsed, str):
                log.error("%s entry=%s lane=%s", parsed, eid, lane)
                d = Delivery(eid, lane, f"entry:{eid}", "", b"", 0, 0)
                self.held[(lane, eid)] = d
                self.submit(Outcome(eid, d.task_id, FAIL, parsed.encode(), 0, 0, 0, lane))
                continue
            ref = (lane, eid)
            self.held[ref] = parsed
            limit = self.settings.max_payload_bytes
            if len(parsed.payload) > limit:
                # Refused before the runtime (and its deserializer) sees a byte, as the
                # engine refuses it.
                reason = (
                    f"payload too large: {len(parsed.payload)} bytes, over the limit of "
                    f"{limit} (max_payload_bytes)"
                )
                log.error("entry refused; dead-lettered id=%s reason=%s", parsed.task_id, reason)
                d = parsed
                self.submit(
                    Outcome(eid, d.task_id, FAIL, reason.encode(), d.tries, d.enqueue_ms, 0, lane)
                )
                continue
            self.by_task[parsed.task_id] = ref
            if self.early_aborts.pop(parsed.task_id, None) is not None:
                # Held back (leased, not startable) until its job's flag is checked.
                self.spawn_once(abort.check_flag(self, ref, parsed))
                continue
            heapq.heappush(self.buffer, (self.buffer_rank(lane), next(self.seq), ref))
        self.dispatch()

    def buffer_rank(self, lane: str) -> int:
        """Start order in the buffer: highest lane first with strict priorities; arrival
        order with weights (the fetch already shared the slots by weight)."""
        return 0 if self.weights is not None else self.rank[lane]

    def dispatch(self) -> None:
        if self.stops:
            return
        loop = asyncio.get_running_loop()
        suspects: list[Delivery] = []
        gate: asyncio.Future[set[Ref]] | None = None
        deferred: list[tuple[int, int, Ref]] = []
        check_ownership = self._lease_may_have_lapsed()
        # A signing worker checks every delivery against its live job record (PROTOCOL.md,
        # Signed payloads): the same `started` call reports the job's `e` and `n`.
        signing = self.app._signer.enabled
        while self.buffer and len(self.running) < self.settings.concurrency:
            item = heapq.heappop(self.buffer)
            ref = item[2]
            d = self.held.get(ref)
            if d is None or ref in self.running:
                continue  # dropped (lease lost or aborted) while it waited
            if self.paused and ref[0] in self.paused:
                deferred.append(item)  # handed back by the pause duty
                continue
            if self._last_chance(d) and any(
                self._last_chance(self.held[r]) for r in self.running if r in self.held
            ):
                # One last-chance task at a time (PROTOCOL.md, Reclaim): a task that kills
                # its worker must not take another last-chance task down with it.
                deferred.append(item)
                continue
            if d.reclaims >= 1 or check_ownership or signing:
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
            self.spawn_once(started.mark(self, suspects, gate))

    def _lease_may_have_lapsed(self) -> bool:
        """Is the last good renewal round two thirds of a lease old (rounds run every
        third)? Then the process stalled (SIGSTOP, a frozen VM) or Redis was unreachable,
        and another worker may have reclaimed what this one holds."""
        return time.monotonic() - self.renewed_at > self.settings.idle_timeout_ms * 2 / 3000

    def _last_chance(self, d: Delivery) -> bool:
        """A suspect whose next counted loss reaches the delivery cap."""
        return d.reclaims >= 1 and d.reclaims + 1 >= self.settings.max_deliveries

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
        self.submit(outcome)
        self.dispatch()

    async def _write_progress(self, d: Delivery, tries: int, value: str, message: str) -> None:
        """One progress record, with the `progress` script (the runtime throttles and
        orders the calls). Best effort: a failed write is logged and dropped."""
        keys = self.app.keys
        self.progressed.add((d.lane, d.entry_id))
        try:
            written = await self.broker.script(
                "progress",
                [keys.job(d.task_id), keys.progress(d.task_id)],
                [d.entry_id, value, message, tries],
            )
        except ArdiqError as exc:
            log.warning(
                "progress could not be written; dropped id=%s worker=%s error=%s",
                d.task_id,
                self.worker_id,
                exc,
            )
            return
        if not written:
            log.debug("progress of a stale attempt not written id=%s", d.task_id)

    def submit(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.outcome_ready.set()

    def release(self, outcome: Outcome) -> None:
        """The entry of `outcome` is no longer ours to renew."""
        held = self.held.pop(ref_of(outcome), None)
        if self.progressed:
            self.progressed.discard(ref_of(outcome))
        # A dropped entry's outcome names `entry:<id>`, not its task.
        task_id = outcome.task_id if held is None else held.task_id
        if self.by_task.get(task_id) == ref_of(outcome):
            del self.by_task[task_id]

    def spawn_once(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.one_offs.add(task)
        task.add_done_callback(self.one_offs.discard)
