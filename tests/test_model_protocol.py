"""A model-based test of the Lua protocol: random sequences of transitions, from producers
and from simulated workers that behave as python/ardiq/worker.py does, run against this
test's own redis-server, with faults injected, and every step checked against a model of
each task kept here in plain Python.

What a step can be:
- producers: enqueue (plain, delayed, custom id, unique id, fresh random id, batches),
  abort, replay, wait;
- workers (consumers): fetch, start (with `started` for suspects and after a stall, and
  the one-last-chance-task rule), finish with any outcome kind, abort notices, renew,
  reclaim (XAUTOCLAIM + the script), hand back and retire, stall / wake, kill -9;
- faults: a lost reply (the script ran, the caller never saw the answer and resends it
  as redis-py's retry or the worker's backoff loop does), CLIENT KILL of the test's
  connections, a consumer that stops renewing (its leases lapse);
- the clock: scripts read Redis `TIME`, so time is moved where it matters instead of
  waited for. A lease lapses when the model says so: the holder's entries get an idle
  time past the lease (`XCLAIM ... IDLE ... JUSTID`, the owner unchanged), and reclaim
  runs `XAUTOCLAIM` with that lease as min-idle, so exactly the lapsed entries are taken
  (live consumers renew every third of a lease; no step of this test comes near one).
  Delays are far in the future in real time; the model's virtual clock decides when one
  is due and moves its score in the delayed set to the past.

After every step: Redis must equal the model (stream entries and their fields, the
pending lists and their owners, job records, the delayed set, results, dead letters,
wait keys, every key of the queue, and `inspect` of every id), and the safety rules hold:
nothing starts after its task ended (an abort confirmed, a result stored), no task starts
on a consumer that is not its entry's live holder, a stale owner's finish changes
nothing, a task id never has two entries. At explicit settle steps (and at the end of
every sequence): after leases lapse and reclaim and promotion run, every accepted task
ended exactly once (ok, failed, expired, aborted or dead-lettered), nothing is pending,
and Redis holds only results, dead letters and the streams/groups.

Seeded: ARDIQ_MODEL_SEED picks the seed (a fixed one by default), ARDIQ_MODEL_EXAMPLES
and ARDIQ_MODEL_STEPS the size. A failure prints the seed and the step list.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from ardiq.broker import Broker
from ardiq.client import EncodedTask
from ardiq.errors import ArdiqError
from ardiq.protocol import GROUP, Keys
from ardiq.runtime import ABORT, EXPIRED, FAIL, OK, RETRY, Delivery, Outcome
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

sys.path.insert(0, str(Path(__file__).parent))
from support.protocol_driver import (
    Malformed,
    ProtocolDriver,
    ResultRecord,
    decode_result,
    make_task,
    resend_of,
)
from support.redis_server import RedisServer

T = TypeVar("T")
STATS: Counter[str] = Counter()  # what the sequences exercised (printed by the test)

PRIORITIES = ["low", "high"]  # lowest first, as an app's `priorities`
LANES = list(reversed(PRIORITIES))  # the fetch order
RANK = {lane: i for i, lane in enumerate(LANES)}
CAP = 2  # max_deliveries (2: a suspect that ran and is lost again is buried)
CONCURRENCY = 2
PREFETCH = 4
LEASE_MS = 10_000_000  # XAUTOCLAIM min-idle: only entries the model let lapse reach it
FAR_MS = 10**11  # real delays: never due unless the model moves them
RESULT_TTL_MS = 3_600_000
WAIT_TTL_MS = 600_000
CUSTOM_IDS = ["c0", "c1", "c2", "c3", "u:aa", "u:bb"]  # custom ids and unique-derived ids
MAX_CONSUMERS = 5

SEED = int(os.environ.get("ARDIQ_MODEL_SEED", "20261203"))
EXAMPLES = int(os.environ.get("ARDIQ_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("ARDIQ_MODEL_STEPS", "50"))
SHRINK = os.environ.get("ARDIQ_MODEL_SHRINK", "1") == "1"


# ------------------------------------------------------------------------ the model
@dataclass(eq=False)
class MTask:
    """One accepted run of a task id (a generation): from enqueue or replay to its end."""

    id: str
    gen: int
    fn: str
    lane: str
    payload: bytes
    expire: bool
    state: str  # 'd' scheduled, 'q' has a stream entry
    t: int = 0
    entry: MEntry | None = None
    due_v: int = 0  # virtual due time while scheduled
    due_now: bool = False  # its score in the delayed set was moved into the past
    a: bool = False  # abort requested while delivered
    st: str | None = None  # the job's `st` mark


@dataclass(eq=False)
class MEntry:
    task: MTask
    lane: str
    t: int
    r: int
    eid: str | None = None  # learned from Redis (fetch reply, or the stream after the step)
    holder: str | None = None  # the consumer whose pending list has it (None: undelivered)
    known: bool = False  # the holder knows it holds it (False: a fetch/claim reply was lost)
    lapsed: bool = False  # its idle time was pushed past the lease


Expected = ResultRecord


@dataclass
class MConsumer:
    """A simulated worker: what `Worker` keeps (held, running, outcomes in flight)."""

    name: str
    state: str = "live"  # live, stalled, stopping, dead, retired
    held: dict[tuple[str, str], tuple[MEntry, Delivery]] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)  # fetch order (buffer seq)
    running: set[tuple[str, str]] = field(default_factory=set)
    unsent: list[Outcome] = field(default_factory=list)  # finish reply lost: sent again
    stale_check: bool = False  # the last good renewal is older than 2/3 of a lease
    cursors: dict[str, str] = field(default_factory=dict)
    inbox: list[tuple[str, int]] = field(default_factory=list)  # abort messages (id, gen)

    @property
    def acting(self) -> bool:
        return self.state in ("live", "stopping")

    def unsent_refs(self) -> set[tuple[str, str]]:
        return {(o.lane, o.entry_id) for o in self.unsent}

    def buffer(self) -> list[tuple[str, str]]:
        busy = self.running | self.unsent_refs()
        waiting = [ref for ref in self.order if ref in self.held and ref not in busy]
        seq = {ref: i for i, ref in enumerate(self.order)}
        return sorted(waiting, key=lambda ref: (RANK[ref[0]], seq[ref]))


class ModelError(AssertionError):
    pass


blob_of = decode_result


class ProtocolModel(RuleBasedStateMachine):
    """Producers and simulated workers against a real Redis, checked against the model."""

    redis_url = ""
    seed = SEED

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.queue = f"m-{uuid.uuid4().hex[:10]}"
        self.keys = Keys(self.queue)
        self.steps: list[str] = []
        self.broker: Broker = self.run(self._make_broker())
        self.admin: aioredis.Redis = aioredis.Redis.from_url(self.redis_url)
        self.d = ProtocolDriver(
            self.broker, priorities=PRIORITIES, result_ttl_ms=RESULT_TTL_MS, max_deliveries=CAP
        )
        self.vt = 0  # virtual clock, ms
        self.gens = 0
        self.fresh_n = 0
        self.live: dict[str, MTask] = {}
        self.streams: dict[str, list[MEntry]] = {lane: [] for lane in LANES}
        self.results: dict[str, Expected] = {}
        self.dead: dict[str, tuple[str, bytes, str, bytes, int]] = {}  # fn, p, lane, err, t
        self.waits: set[str] = set()
        self.ended: set[tuple[str, int]] = set()
        self.ids: list[str] = []  # every id used (checked after each step)
        self.consumers: list[MConsumer] = []
        self.resends: list[
            tuple[list[EncodedTask], list[int]]
        ] = []  # producer enqueues whose reply was lost
        self.n_consumers = 0

    async def _make_broker(self) -> Broker:
        return Broker(self.redis_url, self.keys, PRIORITIES)

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def note(self, text: str) -> None:
        self.steps.append(text)

    def count(self, what: str, n: int = 1) -> None:
        STATS[what] += n

    def fail(self, text: str) -> None:
        raise ModelError(f"{text}\nseed={self.seed} steps:\n  " + "\n  ".join(self.steps[-80:]))

    def expect(self, cond: bool, text: str) -> None:
        if not cond:
            self.fail(text)

    def teardown(self) -> None:
        try:
            self.settle_all()
        finally:
            self.run(self._close())
            self.loop.close()

    async def _close(self) -> None:
        keys = [k async for k in self.admin.scan_iter(match=self.keys.prefix + "*", count=1000)]
        if keys:
            await self.admin.delete(*keys)
        await self.admin.aclose()
        await self.broker.close()

    # ---------------------------------------------------------------- model steps
    def add_entry(self, task: MTask, lane: str, t: int, r: int) -> MEntry:
        e = MEntry(task, lane, t, r)
        self.streams[lane].append(e)
        task.entry = e
        task.state = "q"
        return e

    def drop_entry(self, e: MEntry) -> None:
        self.streams[e.lane].remove(e)
        e.holder = None

    def find(self, lane: str, eid: str) -> MEntry | None:
        for e in self.streams[lane]:
            if e.eid == eid:
                return e
        return None

    def finalize(self, task: MTask, rec: Expected) -> None:
        self.expect(self.live.get(task.id) is task, f"finalize of a task not live: {task.id}")
        self.expect((task.id, task.gen) not in self.ended, f"{task.id} ended twice")
        del self.live[task.id]
        self.ended.add((task.id, task.gen))
        self.results[task.id] = rec
        self.waits.discard(task.id)
        if task.entry is not None and task.entry in self.streams[task.lane]:
            self.fail(f"{task.id} finalized with its entry still in the stream")
        task.entry = None

    def bury(self, task: MTask, payload: bytes, lane: str, err: bytes, tries: int) -> None:
        self.dead[task.id] = (task.fn, payload, lane, err, tries)

    def new_task(
        self, tid: str, fn: str, lane: str, payload: bytes, *, expire: bool = False
    ) -> MTask:
        self.gens += 1
        if tid not in self.ids:
            self.ids.append(tid)
        return MTask(tid, self.gens, fn, lane, payload, expire, "q")

    def m_enqueue(self, spec: EncodedTask, delay_v: int, resend: bool = False) -> bool:
        fresh = spec.task_id.startswith("f")
        if resend and fresh:
            # A fresh id sent again after a lost reply: skipped when its job or result
            # exists (the first call landed). Given and unique ids are checked as usual:
            # a resend of a finished one is a new enqueue (PROTOCOL.md, `enqueue`).
            if spec.task_id in self.live or spec.task_id in self.results:
                return False
            fresh = False
        if spec.task_id in self.live:
            if fresh:
                self.fail(f"fresh id {spec.task_id} enqueued while live (duplicate run)")
            return False
        if not fresh:
            self.results.pop(spec.task_id, None)
        task = self.new_task(
            spec.task_id, spec.name, spec.lane, spec.payload, expire=spec.expire_ms > 0
        )
        self.live[task.id] = task
        if spec.delay_ms > 0:
            task.state = "d"
            task.due_v = self.vt + delay_v
        else:
            self.add_entry(task, spec.lane, 0, 0)
        return True

    def m_finish(self, c: str, o: Outcome, delay_v: int) -> int:
        e = self.find(o.lane, o.entry_id)
        if e is None or e.holder is None:
            return 0  # XACK finds nothing: stale
        task = e.task
        self.expect(task.id == o.task_id, f"outcome for {o.task_id} acks an entry of {task.id}")
        kind = o.kind
        if kind == RETRY and task.a:
            kind = ABORT
        self.drop_entry(e)
        task.entry = None
        if kind == OK:
            self.finalize(task, Expected(True, o.value, o.tries, False))
        elif kind == FAIL:
            self.bury(task, task.payload, o.lane, o.value, o.tries)
            self.finalize(task, Expected(False, o.value, o.tries, False))
        elif kind == EXPIRED:
            self.finalize(task, Expected(False, o.value, o.tries, False))
        elif kind == ABORT:
            self.finalize(task, Expected(False, b"aborted", o.tries, True))
        else:
            task.t = o.tries
            if o.delay_ms <= 0:
                self.add_entry(task, o.lane, o.tries, 0)
            else:
                task.state = "d"
                task.due_v = self.vt + delay_v
                task.due_now = False
        return 1

    def m_reclaim(self, c: str, e: MEntry) -> str:
        task = e.task
        self.drop_entry(e)
        counted = e.r == 0 or task.st == e.eid
        deliveries = e.r + 1 if counted else e.r
        if task.a:
            task.entry = None
            self.finalize(task, Expected(False, b"aborted", e.t, True))
            return "aborted"
        if counted and deliveries >= CAP:
            err = f"worker lost (delivered {deliveries} times)".encode()
            task.entry = None
            self.bury(task, task.payload, e.lane, err, e.t + 1)
            self.finalize(task, Expected(False, err, e.t + 1, False))
            return "buried"
        new = MEntry(task, e.lane, e.t, deliveries)
        self.streams[e.lane].append(new)
        if task.entry is e:
            task.entry = new
        return "requeued"

    # ------------------------------------------------------------- helpers: consumers
    def consumer(self, i: int, *states: str, busy: bool = False) -> MConsumer | None:
        """The i-th consumer (modulo) in one of `states`; with `busy`, one running a task
        when there is one (faults that hit a running task are the interesting ones)."""
        pool = [c for c in self.consumers if c.state in states]
        if busy and any(c.running for c in pool):
            pool = [c for c in pool if c.running]
        return pool[i % len(pool)] if pool else None

    def new_consumer(self) -> MConsumer:
        self.n_consumers += 1
        c = MConsumer(f"w{self.n_consumers}")
        self.consumers.append(c)
        return c

    # ---------------------------------------------------------------- the rules
    @initialize()
    def start(self) -> None:
        self.new_consumer()
        self.new_consumer()
        self.note("start: consumers w1, w2")

    def enqueue(self, tasks: list[tuple[str, int, str, int, bool]], lost: int) -> None:
        specs, delays = [], []
        for kind, i, lane, delay_v, expires in tasks:
            if kind == "fresh":
                self.fresh_n += 1
                tid, fresh = f"f{self.fresh_n}-{uuid.uuid4().hex[:6]}", True
            else:
                tid, fresh = CUSTOM_IDS[i], False
            payload = f"{tid}#{self.gens + len(specs) + 1}".encode()
            specs.append(
                make_task(
                    tid,
                    "work",
                    payload,
                    lane,
                    delay_ms=FAR_MS if delay_v else 0,
                    expire_ms=FAR_MS if expires else 0,
                    fresh=fresh,
                )
            )
            delays.append(delay_v)
        lost_reply = lost == 0
        self.note(
            f"enqueue {[(s.task_id, s.lane, d) for s, d in zip(specs, delays, strict=True)]}"
            + (" (reply lost)" if lost_reply else "")
        )
        added = self.run(self.d.enqueue(specs))
        want = [self.m_enqueue(s, d) for s, d in zip(specs, delays, strict=True)]
        if lost_reply:
            # Every lost enqueue reply is resent (fresh ids in RESEND mode).
            self.resends.append((specs, delays))
            return
        self.expect(added == want, f"enqueue replied {added}, model {want}")

    def resend_enqueue(self) -> None:
        if not self.resends:
            return
        specs, delays = self.resends.pop(0)
        self.note(f"resend enqueue {[s.task_id for s in specs]}")
        added = self.run(self.d.enqueue(resend_of(specs)))
        want = [self.m_enqueue(s, d, resend=True) for s, d in zip(specs, delays, strict=True)]
        self.expect(added == want, f"resent enqueue replied {added}, model {want}")
        # The first send's task ended before this one came: it runs again (reported: only
        # a per-call nonce can tell a resend from a new enqueue of the same id).
        self.count("resend ran a finished id again", sum(want))

    def abort(self, i: int, lost: int) -> None:
        if not self.ids:
            return
        tid = self.ids[i % len(self.ids)]
        self.note(f"abort {tid}" + (" (reply lost, resent)" if lost == 0 else ""))
        got = self.run(self.d.abort(tid))
        want = self.m_abort(tid)
        if lost == 0:
            got = self.run(self.d.abort(tid))
            want = self.m_abort(tid)
        self.expect(got == want, f"abort {tid} replied {got}, model {want}")

    def m_abort(self, tid: str) -> int:
        task = self.live.get(tid)
        if task is None:
            return 0
        if task.state == "d":
            self.finalize(task, Expected(False, b"aborted", task.t, True))
            return 1
        e = task.entry
        assert e is not None
        if e.holder is None:
            self.drop_entry(e)
            task.entry = None
            self.finalize(task, Expected(False, b"aborted", task.t, True))
            return 1
        task.a = True
        for c in self.consumers:
            if c.state in ("live", "stalled", "stopping"):
                c.inbox.append((tid, task.gen))
        return 2

    def replay(self, i: int, lost: int) -> None:
        if not self.dead:
            return
        ids = sorted(self.dead)
        tid = ids[i % len(ids)]
        self.note(f"replay {tid}" + (" (reply lost, resent)" if lost == 0 else ""))
        got = self.run(self.d.replay(tid))
        want = self.m_replay(tid)
        if lost == 0:
            got = self.run(self.d.replay(tid))
            want = self.m_replay(tid)
        self.expect(got == want, f"replay {tid} replied {got}, model {want}")

    def m_replay(self, tid: str) -> int:
        if tid not in self.dead:
            return 0
        if tid in self.live:
            return -1
        fn, payload, lane, _, _ = self.dead.pop(tid)
        task = self.new_task(tid, fn, lane, payload)
        self.live[tid] = task
        self.add_entry(task, lane, 0, 0)
        self.results.pop(tid, None)
        return 1

    def wait(self, i: int) -> None:
        if not self.ids:
            return
        tid = self.ids[i % len(self.ids)]
        self.note(f"wait {tid}")
        code, blob = self.run(self.d.wait(tid, WAIT_TTL_MS))
        if tid in self.results:
            self.expect(code == 1 and blob is not None, f"wait {tid}: {code}, model has a result")
            assert blob is not None
            self.expect(blob_of(blob) == self.results[tid], f"wait {tid}: wrong result")
        elif tid in self.live:
            self.expect(code == 0, f"wait {tid}: {code}, model: live")
            self.waits.add(tid)
        else:
            self.expect(code == -1, f"wait {tid}: {code}, model: unknown")

    def add_consumer(self) -> None:
        if (
            len(self.consumers) >= MAX_CONSUMERS + 3
            or sum(c.state in ("live", "stalled", "stopping") for c in self.consumers)
            >= MAX_CONSUMERS
        ):
            return
        c = self.new_consumer()
        self.note(f"new consumer {c.name}")

    # --------------------------------------------------------------- worker duties
    def fetch(self, i: int, count: int, lost: int) -> None:
        c = self.consumer(i, "live")
        if c is None:
            return
        self.do_fetch(c, count, lost == 0)

    def do_fetch(self, c: MConsumer, count: int, lost: bool) -> None:
        finishing = len(c.unsent)
        free = PREFETCH - max(0, len(c.held) - finishing)
        count = min(count, free)
        if count <= 0:
            return
        self.note(f"{c.name} fetch {count}" + (" (reply lost)" if lost else ""))
        got = self.run(self.d.fetch(c.name, count))
        want: list[MEntry] = []
        left = count
        for lane in LANES:
            for e in self.streams[lane]:
                if left and e.holder is None:
                    want.append(e)
                    left -= 1
        self.expect(len(got) == len(want), f"fetch got {len(got)} entries, model {len(want)}")
        for d, e in zip(got, want, strict=True):
            self.expect(not isinstance(d, Malformed), f"malformed entry fetched: {d}")
            assert isinstance(d, Delivery)
            self.expect(
                (d.lane, d.task_id, d.tries, d.reclaims, d.payload)
                == (e.lane, e.task.id, e.t, e.r, e.task.payload),
                f"fetched {d}, model {e.task.id} t={e.t} r={e.r} lane={e.lane}",
            )
            if e.eid is None:
                e.eid = d.entry_id
            self.expect(e.eid == d.entry_id, f"fetched entry {d.entry_id}, model {e.eid}")
            e.holder, e.known, e.lapsed = c.name, not lost, False
            if not lost:
                ref = (d.lane, d.entry_id)
                c.held[ref] = (e, d)
                c.order.append(ref)

    def start_tasks(self, i: int, n: int, lost: int) -> None:
        c = self.consumer(i, "live")
        if c is None:
            return
        self.do_start(c, n, lost == 0)

    def last_chance(self, r: int) -> bool:
        return r >= 1 and r + 1 >= CAP

    def do_start(self, c: MConsumer, n: int, lost: bool = False) -> None:
        """As `Worker._dispatch`: start up to `n` buffered entries (concurrency permitting),
        one last-chance entry at a time; suspects and, after a stall, every entry go
        through one `started` call first."""
        marked: list[tuple[str, str]] = []
        direct: list[tuple[str, str]] = []
        for ref in c.buffer():
            if len(c.running) + len(marked) + len(direct) >= CONCURRENCY or n <= 0:
                break
            e, _ = c.held[ref]
            if self.last_chance(e.r) and any(
                self.last_chance(c.held[r][0].r) for r in [*c.running, *marked, *direct]
            ):
                continue
            n -= 1
            if e.r >= 1 or c.stale_check:
                marked.append(ref)
            else:
                direct.append(ref)
        if not marked and not direct:
            return
        self.note(
            f"{c.name} start {[c.held[r][0].task.id for r in direct]} marked "
            f"{[c.held[r][0].task.id for r in marked]}" + (" (started reply lost)" if lost else "")
        )
        allowed = list(direct)
        if marked:
            ds = [c.held[r][1] for r in marked]
            got = self.run(self.d.started(c.name, ds))
            if lost:  # the worker's backoff loop sends it again
                got = self.run(self.d.started(c.name, ds))
            for ref, ok in zip(marked, got, strict=True):
                e, _ = c.held[ref]
                held = e.holder == c.name and e in self.streams[e.lane]
                self.expect(ok == held, f"started {e.task.id} on {c.name}: {ok}, model {held}")
                if ok:
                    e.lapsed = False
                    if e.task.id in self.live:
                        e.task.st = e.eid
                    allowed.append(ref)
                else:
                    self.count("started refused")
                    del c.held[ref]  # reclaimed elsewhere: not run here
        for ref in allowed:
            e, _ = c.held[ref]
            # Safety: the task has not ended (an abort confirmed, a result stored) and this
            # consumer is the live holder of its entry.
            self.expect(
                (e.task.id, e.task.gen) not in self.ended, f"{e.task.id} starts after its end"
            )
            self.expect(
                e.holder == c.name and e in self.streams[e.lane],
                f"{e.task.id} starts on {c.name}, which does not hold its entry",
            )
            c.running.add(ref)

    def complete(self, i: int, picks: list[tuple[int, str, int]], lost: int) -> None:
        c = self.consumer(i, "live", "stopping")
        if c is None or not c.running:
            return
        running = sorted(c.running)
        chosen: dict[tuple[str, str], tuple[str, int]] = {}
        for j, kind, delay_v in picks:
            ref = running[j % len(running)]
            if kind == EXPIRED and not c.held[ref][0].task.expire:
                kind = OK
            chosen.setdefault(ref, (kind, delay_v))
        outcomes = []
        delays = []
        for ref, (kind, delay_v) in chosen.items():
            e, d = c.held[ref]
            value = {
                OK: f"ok:{d.task_id}:{e.task.gen}:{c.name}".encode(),
                FAIL: f"boom on {c.name}".encode(),
                EXPIRED: b"expired",
                RETRY: f"retry on {c.name}".encode(),
            }[kind]
            delay_ms = FAR_MS if kind == RETRY and delay_v else 0
            outcomes.append(
                Outcome(d.entry_id, d.task_id, kind, value, d.tries + 1, 0, 0, d.lane, delay_ms)
            )
            delays.append(delay_v)
            c.running.discard(ref)
        self.send_outcomes(c, outcomes, delays, lost == 0)

    def send_outcomes(
        self, c: MConsumer, outcomes: list[Outcome], delays: list[int], lost: bool
    ) -> None:
        self.note(
            f"{c.name} finish {[(o.task_id, o.kind, o.delay_ms > 0) for o in outcomes]}"
            + (" (reply lost)" if lost else "")
        )
        got = self.run(self.d.finish(c.name, outcomes))
        want = [self.m_finish(c.name, o, dv) for o, dv in zip(outcomes, delays, strict=True)]
        self.count("outcomes recorded", sum(want))
        self.count("stale outcomes dropped", len(want) - sum(want))
        if lost:
            c.unsent += outcomes
            return
        self.expect(got == want, f"finish replied {got}, model {want}")
        for o in outcomes:
            c.held.pop((o.lane, o.entry_id), None)

    def resend_outcomes(self, i: int, lost: int) -> None:
        c = self.consumer(i, "live", "stopping")
        if c is None or not c.unsent:
            return
        outcomes, c.unsent = c.unsent, []
        self.send_outcomes(c, outcomes, [0] * len(outcomes), lost == 0)

    def abort_notices(self, i: int, lost: int) -> None:
        """The abort listener: a running task is cancelled (kind abort, tries + 1), a
        buffered one is dropped (kind abort, tries unchanged), as `Worker._abort` does."""
        c = self.consumer(i, "live", "stopping")
        if c is None or not c.inbox:
            return
        self.do_abort_notices(c, lost == 0)

    def do_abort_notices(self, c: MConsumer, lost: bool) -> None:
        inbox, c.inbox = c.inbox, []
        busy = c.unsent_refs()
        outcomes = []
        for tid, gen in inbox:
            for ref, (e, d) in list(c.held.items()):
                if e.task.id != tid or e.task.gen != gen or ref in busy:
                    continue
                tries = d.tries + 1 if ref in c.running else d.tries
                c.running.discard(ref)
                outcomes.append(Outcome(d.entry_id, tid, ABORT, b"aborted", tries, 0, 0, d.lane))
                busy.add(ref)
        if outcomes:
            self.send_outcomes(c, outcomes, [0] * len(outcomes), lost)

    def renew(self, i: int, lost: int) -> None:
        c = self.consumer(i, "live", "stopping")
        if c is None:
            return
        self.do_renew(c, lost == 0)

    def do_renew(self, c: MConsumer, lost: bool = False) -> None:
        refs = list(c.held)
        self.note(f"{c.name} renew {len(refs)}" + (" (reply lost)" if lost else ""))
        got = set(self.run(self.d.renew(c.name, refs))) if refs else set()
        want = set()
        for ref in refs:
            e, _ = c.held[ref]
            if e.holder == c.name and e in self.streams[e.lane]:
                e.lapsed = False
            else:
                want.add(ref)
        if lost:
            return
        self.expect(got == want, f"renew lost {sorted(got)}, model {sorted(want)}")
        c.stale_check = False
        busy = c.unsent_refs()
        for ref in want:  # Worker._lease_lost
            if ref not in c.running and ref not in busy:
                del c.held[ref]

    def reclaim(self, i: int, lost: str) -> None:
        c = self.consumer(i, "live", "stopping")
        if c is None:
            return
        self.do_reclaim(c, lost)

    def do_reclaim(self, c: MConsumer, lost: str = "") -> None:
        self.note(f"{c.name} reclaim" + (f" (reply of {lost} lost)" if lost else ""))
        for lane in LANES:
            cursor = c.cursors.get(lane, "0-0")
            try:
                claimed = self.run(self.d.autoclaim(c.name, lane, LEASE_MS, cursor))
            except ArdiqError as exc:
                # As Worker._reclaimer: a lane nobody read yet has no group; the round ends.
                self.expect("NOGROUP" in str(exc), f"reclaim: {exc}")
                self.expect(
                    not any(e.holder for e in self.streams[lane]), f"{lane}: no group, pending"
                )
                return
            want = [e for e in self.streams[lane] if e.holder is not None and e.lapsed]
            if cursor == "0-0":
                self.expect(
                    [eid for eid, _ in claimed.entries] == [e.eid for e in want],
                    f"XAUTOCLAIM {lane} took {[eid for eid, _ in claimed.entries]}, model "
                    f"{[(e.task.id, e.eid) for e in want]}",
                )
            else:
                self.expect(
                    {eid for eid, _ in claimed.entries} <= {e.eid for e in want},
                    "XAUTOCLAIM took an entry that had not lapsed",
                )
            by_eid = {e.eid: e for e in want}
            taken = [by_eid[eid] for eid, _ in claimed.entries]
            for e in taken:
                e.holder, e.known, e.lapsed = c.name, False, False
            if lost == "claim":
                return
            c.cursors[lane] = claimed.cursor
            got = self.run(self.d.reclaim_claimed(c.name, claimed))
            counts = {"requeued": 0, "buried": 0, "aborted": 0}
            for e in taken:
                counts[self.m_reclaim(c.name, e)] += 1
            for what, n in counts.items():
                self.count(f"reclaim {what}", n)
            if lost == "script":
                return
            want_counts = (counts["requeued"], counts["buried"], counts["aborted"])
            self.expect(got == want_counts, f"reclaim {lane} replied {got}, model {want_counts}")

    def promote(self, lost: int) -> None:
        self.note("promote" + (" (reply of the move lost)" if lost == 0 else ""))
        moved_total = 0
        _, _, _, due = self.run(self.d.promote_report())
        want = sorted(t.id for t in self.live.values() if t.state == "d" and t.due_now)
        self.expect(due == want, f"promote reports due {due}, model {want}")
        if not due:
            return
        moved_total = self.run(self.d.promote_report(due))[0]
        for tid in due:
            task = self.live[tid]
            task.due_now = False
            self.add_entry(task, task.lane, task.t, 0)
        if lost != 0:
            self.expect(moved_total == len(due), f"promote moved {moved_total}, model {len(due)}")

    def advance(self, v: int) -> None:
        """Virtual time passes: delayed tasks whose virtual due time came are made due."""
        self.vt += v
        due = [
            t for t in self.live.values() if t.state == "d" and not t.due_now and t.due_v <= self.vt
        ]
        self.note(f"advance {v} ms (virtual now {self.vt}): due {[t.id for t in due]}")
        for t in due:
            self.run(self.admin.zadd(self.keys.delayed, {t.id: 1}, xx=True))
            t.due_now = True

    def lapse(self) -> None:
        """A lease passes: entries of stalled and dead consumers, and entries whose holder
        never saw them (a lost fetch or claim reply), are idle past the lease. A stalled
        consumer's last good renewal is then old: it checks ownership before starting."""
        self.do_lapse()

    def do_lapse(self) -> None:
        states = {c.name: c.state for c in self.consumers}
        hit = []
        for lane in LANES:
            for e in self.streams[lane]:
                if e.holder is None or e.lapsed:
                    continue
                if states.get(e.holder) in ("stalled", "dead", "retired") or not e.known:
                    assert e.eid is not None
                    self.run(
                        self.admin.xclaim(
                            self.keys.stream(lane),
                            GROUP,
                            e.holder,
                            0,
                            [e.eid],
                            idle=LEASE_MS + 1,
                            justid=True,
                        )
                    )
                    e.lapsed = True
                    hit.append(e.task.id)
        for c in self.consumers:
            if c.state == "stalled":
                c.stale_check = True
        self.note(f"lapse: {hit}")

    # ---------------------------------------------------------------- process faults
    def stall(self, i: int) -> None:
        c = self.consumer(i, "live", busy=True)
        if c is not None:
            c.state = "stalled"
            self.note(f"{c.name} stalls")

    def wake(self, i: int) -> None:
        c = self.consumer(i, "stalled")
        if c is not None:
            c.state = "live"
            self.note(f"{c.name} wakes")

    def kill(self, i: int) -> None:
        c = self.consumer(i, "live", "stalled", "stopping", busy=True)
        if c is not None:
            c.state = "dead"
            self.note(f"{c.name} killed (-9)")

    def crash(self, i: int, j: int) -> None:
        """A worker dies mid-task (kill -9), a lease passes, another worker reclaims: the
        usual sequence, as one step, so that deliveries lost in a row (suspects, the
        delivery cap) come up often."""
        c = self.consumer(i, "live", "stalled", "stopping", busy=True)
        if c is not None and not c.running and c.state == "live":
            self.do_fetch(c, PREFETCH, False)
            self.do_start(c, CONCURRENCY)
        if c is None or not c.running:
            return
        c.state = "dead"
        self.note(f"{c.name} crashes mid-task")
        self.do_lapse()
        other = self.consumer(j, "live", "stopping")
        if other is not None:
            self.do_reclaim(other)

    def stop(self, i: int, lost: int) -> None:
        """SIGTERM: stop fetching, hand the buffer back (the worker forgets it whatever the
        reply), let running tasks finish, then retire (rule `retire`)."""
        c = self.consumer(i, "live")
        if c is None:
            return
        c.state = "stopping"
        waiting = c.buffer()
        self.note(
            f"{c.name} stops, hands back {len(waiting)}" + (" (reply lost)" if lost == 0 else "")
        )
        if not waiting:
            return
        ds = [c.held[ref][1] for ref in waiting]
        got = self.run(self.d.handback(c.name, ds))
        n = 0
        for ref in waiting:
            e, _ = c.held.pop(ref)
            if e.holder == c.name and e in self.streams[e.lane]:
                n += 1
                task = e.task
                self.drop_entry(e)
                new = MEntry(task, e.lane, e.t, e.r)
                self.streams[e.lane].append(new)
                if task.entry is e:
                    task.entry = new
        if lost != 0:
            self.expect(got == n, f"handback replied {got}, model {n}")

    def retire(self, i: int) -> None:
        c = self.consumer(i, "stopping")
        if c is None or c.running or c.unsent:
            return
        self.note(f"{c.name} retires")
        self.run(self.d.retire(c.name))
        c.state = "retired"
        c.held.clear()

    def client_kill(self) -> None:
        """Drop every connection but the checker's: the next call of each client meets a
        dead socket and is sent again on a new one (redis-py's one retry)."""
        self.note("CLIENT KILL TYPE normal")
        self.run(self.admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))

    # -------------------------------------------------------------------- settle
    def settle(self) -> None:
        self.settle_all()

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One transition, drawn by weight (a rule per transition would draw the rare ones
        as often as enqueue and fetch), its arguments drawn after it."""
        name = data.draw(st.sampled_from(WEIGHTED), label="action")
        kwargs = {arg: data.draw(strategy, label=arg) for arg, strategy in ACTIONS[name][1].items()}
        STATS[name] += 1
        getattr(self, name)(**kwargs)

    def settle_all(self) -> None:
        """Run to quiescence as workers would (every outcome ok), then check liveness."""
        self.note("settle")
        while self.resends:
            self.resend_enqueue()
        for c in self.consumers:
            if c.state == "stalled":
                c.state = "live"
        for _ in range(60):
            for c in self.consumers:
                if not c.acting:
                    continue
                if c.inbox:
                    self.do_abort_notices(c, False)
                if c.unsent:
                    outcomes, c.unsent = c.unsent, []
                    self.send_outcomes(c, outcomes, [0] * len(outcomes), False)
                self.do_renew(c)
                self.complete_all(c)
                if c.state == "stopping" and not c.running and not c.unsent:
                    self.run(self.d.retire(c.name))
                    c.state = "retired"
                    c.held.clear()
            self.do_lapse()
            live = [c for c in self.consumers if c.state == "live"]
            if not live:
                live = [self.new_consumer()]
            self.do_reclaim(live[0])
            due = [t for t in self.live.values() if t.state == "d"]
            if due:
                self.vt = max(self.vt, *(t.due_v for t in due))
                for t in due:
                    if not t.due_now:
                        self.run(self.admin.zadd(self.keys.delayed, {t.id: 1}, xx=True))
                        t.due_now = True
                self.promote(1)
            for c in live:
                self.do_fetch(c, PREFETCH, False)
                while c.buffer() or c.running:
                    self.do_start(c, CONCURRENCY)
                    if not c.running:
                        break
                    self.complete_all(c)
            self.check()
            if not self.live and not any(c.unsent or c.running for c in self.consumers):
                break
        self.expect(not self.live, f"settle left live tasks: {sorted(self.live)}")
        self.run(self.liveness())

    def complete_all(self, c: MConsumer) -> None:
        running = sorted(c.running)
        if not running:
            return
        outcomes = []
        for ref in running:
            e, d = c.held[ref]
            value = f"ok:{d.task_id}:{e.task.gen}:{c.name}".encode()
            outcomes.append(Outcome(d.entry_id, d.task_id, OK, value, d.tries + 1, 0, 0, d.lane))
        c.running.clear()
        self.send_outcomes(c, outcomes, [0] * len(outcomes), False)

    async def liveness(self) -> None:
        r = self.admin
        for lane in LANES:
            stream = self.keys.stream(lane)
            if await r.exists(stream):
                self.expect(await r.xlen(stream) == 0, f"{lane}: entries left after settle")
                for g in await r.xinfo_groups(stream):
                    self.expect(int(g["pending"]) == 0, f"{lane}: pending left after settle")
        allowed = ("stream:", "result:", "dead", "crons")
        async for key in r.scan_iter(match=self.keys.prefix + "*", count=1000):
            name = key.decode()[len(self.keys.prefix) :]
            self.expect(name.startswith(allowed), f"key {name} left after settle")

    # ------------------------------------------------------------------- the check
    @invariant()
    def check(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        r = self.admin
        k = self.keys
        pipe = r.pipeline(transaction=False)
        for lane in LANES:
            pipe.xrange(k.stream(lane))
            pipe.xpending_range(k.stream(lane), GROUP, "-", "+", 1000)
        pipe.zrange(k.delayed, 0, -1, withscores=True)
        pipe.zrange(k.dead, 0, -1)
        for tid in self.ids:
            pipe.hgetall(k.job(tid))
            pipe.get(k.result(tid))
            pipe.hgetall(k.dead_letter(tid))
            pipe.exists(k.wait(tid))
        pipe.keys(k.prefix + "*")
        replies = await pipe.execute(raise_on_error=False)
        inspects = await asyncio.gather(*(self.d.inspect(tid) for tid in self.ids))
        size = await self.d.queue_size()
        want_size = sum(e.holder is None for lane in LANES for e in self.streams[lane]) + sum(
            t.state == "d" for t in self.live.values()
        )
        self.expect(size == want_size, f"queue_size {size}, model {want_size}")
        it = iter(replies)
        seen: dict[str, int] = {}
        for lane in LANES:
            entries = next(it)
            pel = next(it)
            model = self.streams[lane]
            self.expect(
                len(entries) == len(model),
                f"{lane}: {len(entries)} stream entries, model {len(model)} "
                f"({[e.task.id for e in model]} vs {[f[b'id'] for _, f in entries]})",
            )
            for (eid, f), e in zip(entries, model, strict=True):
                eid = eid.decode()
                if e.eid is None:
                    e.eid = eid
                got = (eid, f[b"id"].decode(), int(f[b"t"]), int(f[b"r"]), f[b"p"], f[b"x"] != b"0")
                want = (e.eid, e.task.id, e.t, e.r, e.task.payload, e.task.expire)
                self.expect(got == want, f"{lane}: entry {got}, model {want}")
                seen[e.task.id] = seen.get(e.task.id, 0) + 1
            pel_map = {}
            if not isinstance(pel, Exception):
                for p in pel:
                    pel_map[p["message_id"].decode()] = (
                        p["consumer"].decode(),
                        int(p["time_since_delivered"]),
                    )
            want_pel = {e.eid: e for e in model if e.holder is not None}
            self.expect(
                set(pel_map) == set(want_pel),
                f"{lane}: pending {sorted(pel_map)}, model {sorted(want_pel)}",
            )
            for eid, (owner, idle) in pel_map.items():
                e = want_pel[eid]
                self.expect(
                    owner == e.holder, f"{lane}: {eid} pending under {owner}, model {e.holder}"
                )
                self.expect(
                    (idle > LEASE_MS) == e.lapsed, f"{lane}: {eid} idle {idle}, lapsed={e.lapsed}"
                )
        # Safety: one entry per task id, across lanes.
        for tid, n in seen.items():
            self.expect(n == 1, f"{tid} has {n} stream entries")
        delayed = {m.decode(): s for m, s in next(it)}
        want_delayed = {t.id for t in self.live.values() if t.state == "d"}
        self.expect(
            set(delayed) == want_delayed, f"delayed {sorted(delayed)}, model {sorted(want_delayed)}"
        )
        for tid, score in delayed.items():
            self.expect((score == 1) == self.live[tid].due_now, f"{tid}: delayed score {score}")
        dead_ids = {m.decode() for m in next(it)}
        self.expect(
            dead_ids == set(self.dead), f"dead {sorted(dead_ids)}, model {sorted(self.dead)}"
        )
        for tid, status in zip(self.ids, inspects, strict=True):
            job, res, dead, wait = next(it), next(it), next(it), next(it)
            task = self.live.get(tid)
            if task is None:
                self.expect(not job, f"{tid}: job record {job} for a task the model ended")
            else:
                self.expect(bool(job), f"{tid}: no job record for a live task")
                self.expect(
                    job.get(b"s", b"").decode() == task.state,
                    f"{tid}: job {job}, model {task.state}",
                )
                self.expect(int(job[b"t"]) == task.t, f"{tid}: job t {job[b't']}, model {task.t}")
                if task.state == "q":
                    assert task.entry is not None
                    self.expect(
                        job.get(b"e", b"").decode() == task.entry.eid,
                        f"{tid}: job e {job.get(b'e')}, model {task.entry.eid}",
                    )
                self.expect(
                    (job.get(b"a") == b"1") == task.a,
                    f"{tid}: abort flag {job.get(b'a')}, model {task.a}",
                )
                st_mark = job.get(b"st")
                self.expect(
                    (st_mark.decode() if st_mark else None) == task.st,
                    f"{tid}: st {st_mark}, model {task.st}",
                )
            want_res = self.results.get(tid)
            if want_res is None:
                self.expect(res is None, f"{tid}: result {res!r}, model none")
            else:
                self.expect(res is not None, f"{tid}: no result, model {want_res}")
                got_res = blob_of(res)
                self.expect(got_res == want_res, f"{tid}: result {got_res}, model {want_res}")
            want_dead = self.dead.get(tid)
            if want_dead is None:
                self.expect(not dead, f"{tid}: dead letter {dead}, model none")
            else:
                fn, payload, lane, err, tries = want_dead
                got_dead = (
                    dead.get(b"fn"),
                    dead.get(b"p"),
                    dead.get(b"l"),
                    dead.get(b"err"),
                    int(dead.get(b"t", -1)),
                )
                want_d = (fn.encode(), payload, lane.encode(), err, tries)
                self.expect(got_dead == want_d, f"{tid}: dead letter {got_dead}, model {want_d}")
            self.expect(
                bool(wait) == (tid in self.waits),
                f"{tid}: wait key {wait}, model {tid in self.waits}",
            )
            if task is None:
                want_status = "complete" if tid in self.results else "not_found"
            elif task.state == "d":
                want_status = "scheduled"
            else:
                assert task.entry is not None
                want_status = "running" if task.entry.holder is not None else "queued"
            self.expect(
                status[0] == want_status, f"inspect {tid}: {status[0]}, model {want_status}"
            )
        names = {key.decode()[len(k.prefix) :] for key in next(it)}
        for name in names:
            kind, _, rest = name.partition(":")
            ok = (
                (kind == "stream" and rest in LANES)
                or (kind == "delayed" and not rest)
                or (kind == "dead" and (not rest or rest in self.dead))
                or (kind == "job" and rest in self.live)
                or (kind == "result" and rest in self.results)
                or (kind == "wait" and rest in self.waits)
            )
            self.expect(ok, f"unexpected key {name}")


# The transitions a step draws from: name -> (weight, its arguments).
LOST = st.integers(0, 9)  # 0: the reply is lost
WHO = st.integers(0, 20)  # which consumer (or id), modulo the candidates
ACTIONS: dict[str, tuple[int, dict[str, st.SearchStrategy[Any]]]] = {
    "enqueue": (
        6,
        {
            "tasks": st.lists(
                st.tuples(
                    st.sampled_from(["custom", "custom", "fresh"]),
                    st.integers(0, len(CUSTOM_IDS) - 1),
                    st.sampled_from(PRIORITIES),
                    st.sampled_from([0, 0, 0, 5, 20]),  # virtual delay
                    st.booleans(),  # expires
                ),
                min_size=1,
                max_size=4,
            ),
            "lost": LOST,
        },
    ),
    "resend_enqueue": (1, {}),
    "abort": (2, {"i": WHO, "lost": LOST}),
    "replay": (1, {"i": WHO, "lost": LOST}),
    "wait": (1, {"i": WHO}),
    "add_consumer": (1, {}),
    "fetch": (6, {"i": WHO, "count": st.integers(1, PREFETCH), "lost": LOST}),
    "start_tasks": (6, {"i": WHO, "n": st.integers(1, CONCURRENCY), "lost": LOST}),
    "complete": (
        6,
        {
            "i": WHO,
            "picks": st.lists(
                st.tuples(
                    st.integers(0, 20),
                    st.sampled_from([OK, OK, FAIL, RETRY, RETRY, EXPIRED]),
                    st.sampled_from([0, 0, 10]),  # retry: virtual delay (0: to the stream)
                ),
                min_size=1,
                max_size=3,
            ),
            "lost": LOST,
        },
    ),
    "resend_outcomes": (2, {"i": WHO, "lost": LOST}),
    "abort_notices": (2, {"i": WHO, "lost": LOST}),
    "renew": (2, {"i": WHO, "lost": LOST}),
    "reclaim": (5, {"i": WHO, "lost": st.sampled_from(["", "", "", "", "claim", "script"])}),
    "promote": (2, {"lost": LOST}),
    "advance": (2, {"v": st.sampled_from([1, 5, 10, 30])}),
    "lapse": (4, {}),
    "stall": (3, {"i": WHO}),
    "wake": (2, {"i": WHO}),
    "kill": (2, {"i": WHO}),
    "crash": (3, {"i": WHO, "j": WHO}),
    "stop": (1, {"i": WHO, "lost": LOST}),
    "retire": (1, {"i": WHO}),
    "client_kill": (1, {}),
    "settle": (1, {}),
}
WEIGHTED = [name for name, (weight, _) in ACTIONS.items() for _ in range(weight)]


# ------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def model_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def run_model(machine: type[ProtocolModel], url: str, examples: int, steps: int, at: int) -> None:
    machine.redis_url = url
    machine.seed = at

    def factory() -> ProtocolModel:
        return machine()

    print(f"model seed={at} examples={examples} steps={steps} (ARDIQ_MODEL_SEED to replay)")
    STATS.clear()
    run_state_machine_as_test(
        seed(at)(factory),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            # No `explain` phase (it traces every line: far too slow here); shrinking can
            # be turned off to see a failure at once (ARDIQ_MODEL_SHRINK=0).
            phases=[Phase.explicit, Phase.reuse, Phase.generate]
            + ([Phase.shrink] if SHRINK else []),
        ),
    )
    print("exercised:", ", ".join(f"{k} {v}" for k, v in sorted(STATS.items())))


@pytest.mark.timeout(300)
def test_protocol_model(model_redis: RedisServer) -> None:
    run_model(ProtocolModel, model_redis.url, EXAMPLES, STEPS, SEED)


def test_lost_reply_of_a_fresh_enqueue_adds_the_task_once(model_redis: RedisServer) -> None:
    """Issue 10, defect 6, at the protocol level: the enqueue script ran, the connection
    dropped before its reply, the call is sent again (fresh ids in RESEND mode)."""

    async def scenario() -> tuple[int, int]:
        keys = Keys(f"m-{uuid.uuid4().hex[:10]}")
        broker = Broker(model_redis.url, keys, PRIORITIES)
        d = ProtocolDriver(
            broker, priorities=PRIORITIES, result_ttl_ms=RESULT_TTL_MS, max_deliveries=CAP
        )
        task = make_task(f"f-{uuid.uuid4().hex}", "work", b"p", "low", fresh=True)
        try:
            await d.enqueue([task])  # its reply is lost
            await d.enqueue(resend_of([task]))  # the same call, sent again
            entries = len(await broker.client.xrange(keys.stream("low")))
            runs = 0
            while got := await d.fetch("w1", 10):
                for delivery in got:
                    assert isinstance(delivery, Delivery)
                    o = Outcome(delivery.entry_id, delivery.task_id, OK, b"1", 1, 0, 0, "low")
                    runs += sum(await d.finish("w1", [o]))
            return entries, runs
        finally:
            await broker.close()

    entries, runs = asyncio.run(scenario())
    assert (entries, runs) == (1, 1), f"{entries} stream entries, {runs} recorded runs"


def test_a_resent_custom_id_enqueue_is_never_lost(model_redis: RedisServer) -> None:
    """A given id is checked against its job only when resent: had the first call never
    landed, an old result of the id (a finished earlier run) must not make the resend
    skip it. (So a resend that arrives after the task already ran runs it again: the
    documented at-least-once side of the trade, PROTOCOL.md `enqueue`.)"""

    async def scenario() -> tuple[int, int]:
        keys = Keys(f"m-{uuid.uuid4().hex[:10]}")
        broker = Broker(model_redis.url, keys, PRIORITIES)
        d = ProtocolDriver(
            broker, priorities=PRIORITIES, result_ttl_ms=RESULT_TTL_MS, max_deliveries=CAP
        )
        task = make_task("order-17", "work", b"p", "low")
        try:
            runs = 0
            for attempt in range(2):  # an earlier run, then a resend whose first try was lost
                await d.enqueue([task] if attempt == 0 else resend_of([task]))
                for delivery in await d.fetch("w1", 10):
                    assert isinstance(delivery, Delivery)
                    o = Outcome(delivery.entry_id, delivery.task_id, OK, b"1", 1, 0, 0, "low")
                    runs += sum(await d.finish("w1", [o]))
            return runs, len(await broker.client.xrange(keys.stream("low")))
        finally:
            await broker.close()

    runs, left = asyncio.run(scenario())
    assert (runs, left) == (2, 0), f"{runs} runs, {left} entries left"
