"""The differential test of the two engines behind ``await app.run()``: the pure-Python
loop (``engine="python"``, the oracle) and the Rust engine (``engine="native"``).

One seed makes one sequence of phases; a phase is a list of producer operations (enqueue
of every kind, aborts, replays, dead-letter deletes, raw entries written by someone who
bypasses ArdiQ, "forged" ones when the app signs) followed by a burst run of the worker,
sometimes with an abort sent while a task runs. The same sequence runs on a fresh queue
once per engine (same Redis server) and every observable outcome is recorded after each
phase: what each producer call returned, each job's status, result and info, the dead
letters, the queue size, the calls of the app's `on_error` hook and of its lifespan, and
every key of the queue at rest (type, TTL or not, value).

Both records are normalized for what is nondeterministic and nothing else (found by
running the pure loop against itself over many seeds, ``integration/differential.py
--engines python,python``):

- the queue name (each run has its own) -> ``<Q>``;
- random task ids (a fresh enqueue's) -> the label of the step that made them (``J3``);
  custom and unique ids are the same in both runs and are kept;
- stream entry ids -> the label of the raw write that made them (``E2``), else ``<eid>``;
- epoch-ms times (enqueue, start, finish, failed-at, heartbeat scores) -> ``<ts>``, but a
  0 stays 0 (a task that never started) and the delayed set's scores -> ``past``/``future``;
- nonces, signature tags and not-after stamps of sealed payloads and results -> the seal
  checked under the run's key (``sealed-ok``/``sealed-bad``) followed by the sealed body;
- the order of the dead letters (newest first by failed-at: concurrent failures tie) and
  of the hook calls (counted, not listed);
- the history (PROTOCOL.md, History): the order of `P history` entries (concurrent
  completions finish in any order: compared sorted), their times (`enq`, `st`, `fin` ->
  ``<ts>``, a 0 kept) and those of each `P attempts:<id>` record, and the minutes of the
  `P stats` counters (summed per kind: a run may straddle a minute). Worker ids are the
  same in both runs (`WORKER_ID`).

Time is never raced: a run starts only once every short delay is due and every short
expiry has passed, far delays (an hour) never come due, and the task aborted while it
runs waits for the abort.

Everything else must be byte-equal after that: values, error texts, tries, statuses,
info fields, the fields of job hashes, dead letters and results, the members of sorted
sets, stream lengths, groups, pending counts and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import json
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import redis.asyncio as aioredis
from ardiq import Ardiq, Retry, current_task
from ardiq.errors import ArdiqError
from ardiq.signing import MAGIC, RESULT_MAGIC, Binding, Signer

KEY = "differential-signing-key-0123456789"
WRONG_KEY = "not-the-key-of-this-queue-98765432"
WORKER_ID = "w-differential"  # both runs name their consumer alike: nothing to normalize
LANES = ["low", "default", "high"]
MAX_PAYLOAD = 2048
RUN_TIMEOUT_S = 60.0
FAR_MS = 3_600_000  # a delay that never comes due during a sequence
# Marks a list whose order differs between runs (`{UNORDERED: [...]}`): `normalize` sorts
# it once its ids are replaced by labels.
UNORDERED = "<unordered>"

# A raw entry and its job record, as a producer that bypasses ArdiQ writes them.
RAW_ENTRY = """
local eid = redis.call('XADD', KEYS[1], ARGV[8], 'id', ARGV[1], 'fn', ARGV[2], 'p', ARGV[3],
  't', 0, 'enq', ARGV[5], 'x', 0, 'r', 0)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], 'fn', ARGV[2], 'l', ARGV[7], 's', 'q', 't', 0, 'enq', ARGV[5],
    'x', 0, 'e', eid, 'n', ARGV[4])
end
return eid
"""

# Tasks that block until an abort reaches them, per queue: the driver aborts them once
# they run.
_STARTED: dict[str, asyncio.Event] = {}
# What the worker told the app's hooks, per queue: `on_error` calls (counted by what they
# said: concurrent failures come in any order) and lifespan entries and exits.
_EVENTS: dict[str, dict[str, int]] = {}


def _event(queue: str, what: str) -> None:
    events = _EVENTS.setdefault(queue, {})
    events[what] = events.get(what, 0) + 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------------------ the app
def make_app(redis_url: str, queue: str, variant: dict[str, Any], **extra: Any) -> Ardiq:
    """The app both runs use, with the same tasks; `variant` is the seed's settings."""
    settings: dict[str, Any] = {
        "priorities": LANES,
        "worker_id": WORKER_ID,
        "concurrency": variant["concurrency"],
        "poll_block_ms": 100,
        "idle_timeout_ms": 60_000,
        "result_ttl_ms": variant["result_ttl_ms"],
        "max_payload_bytes": MAX_PAYLOAD,
        "shutdown_timeout_s": 10,
        "history": 1000,  # compared too (off by default)
    }
    settings.update(extra)
    settings["signing_key"] = KEY if variant["signed"] else None
    if not variant["signed"]:
        settings.pop("signing_key")
    app = Ardiq(redis_url, queue_name=queue, **settings)

    @app.on_error
    def on_error(ctx: Any) -> None:
        _event(
            queue,
            f"on_error {ctx.name} {ctx.task_id} tries={ctx.tries} retry={ctx.will_retry} "
            f"{ctx.exc!r}",
        )

    @app.lifespan
    async def lifespan(app: Ardiq) -> AsyncIterator[dict[str, Any]]:
        _event(queue, "lifespan entered")
        yield {"marker": queue}
        _event(queue, "lifespan exited")

    @app.task
    async def ok(x: Any) -> Any:
        return {"echo": x, "kind": "async"}

    @app.task(priority="high")
    def sync_ok(x: Any, *, scale: int = 2) -> Any:
        return [x, scale, "sync"]

    @app.task(max_retries=1, backoff_ms=10)
    async def boom(msg: str) -> None:
        raise ValueError(msg)

    @app.task(max_retries=3, backoff_ms=15)
    async def flaky(n: int) -> Any:
        ctx = current_task()
        assert ctx is not None
        if ctx.tries <= n:
            raise Retry(f"not yet ({ctx.tries})")
        return {"tries": ctx.tries, "id": ctx.task_id}

    @app.task(max_retries=2)
    async def flaky_delay(n: int, delay: int) -> Any:
        ctx = current_task()
        assert ctx is not None
        if ctx.tries <= n:
            raise Retry("later", delay_ms=delay)
        return ctx.tries

    @app.task(timeout=0.15, max_retries=1, backoff_ms=10)
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    @app.task(priority="low", unique=True)
    async def uniq(x: int) -> int:
        return x * 10

    @app.task(max_retries=0)
    async def unencodable() -> Any:
        return {1, 2, 3}  # msgpack cannot encode a set

    @app.task
    async def state() -> Any:
        return app.state.marker == queue  # the lifespan's state, seen from a task

    @app.task
    async def blocker() -> str:
        _STARTED.setdefault(queue, asyncio.Event()).set()
        for _ in range(100):  # 10 s at most: a missed abort shows as a mismatch, not a hang
            await asyncio.sleep(0.1)
        return "not aborted"

    return app


# ------------------------------------------------------------------------- generation
@dataclass
class Op:
    """One step. `label` names what it made (a job, a raw entry) for later steps and for
    normalization."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.label + ' = ' if self.label else ''}{self.kind}({args})"


@dataclass
class Sequence:
    seed: int
    variant: dict[str, Any]
    phases: list[list[Op]]

    def steps(self) -> list[str]:
        out = [f"variant {self.variant}"]
        for i, ops in enumerate(self.phases):
            out.append(f"-- phase {i}")
            out += [f"   {op}" for op in ops]
        return out


def _enqueue_spec(rnd: random.Random, n: int) -> dict[str, Any]:
    """What one enqueue sends: a task, its arguments and its options."""
    kind = rnd.choices(
        ["ok", "sync_ok", "boom", "flaky", "flaky_delay", "slow", "uniq", "unencodable", "state"],
        [6, 3, 2, 3, 2, 1, 2, 1, 1],
    )[0]
    args: list[Any]
    kwargs: dict[str, Any] = {}
    if kind == "ok":
        args = [rnd.choice([n, f"s{n}", [n, {"k": n}], None, 1.5])]
    elif kind == "sync_ok":
        args = [n]
        if rnd.random() < 0.5:
            kwargs = {"scale": rnd.randint(0, 9)}
    elif kind == "boom":
        args = [f"boom {n}"]
    elif kind == "flaky":
        args = [rnd.randint(0, 4)]  # 4: the retries run out, a dead letter
    elif kind == "flaky_delay":
        args = [rnd.randint(0, 3), rnd.choice([0, 20, 60])]
    elif kind == "slow":
        args = [rnd.choice([0.0, 1.0])]  # 1.0: over its 0.15 s timeout, twice
    elif kind == "uniq":
        args = [rnd.randint(0, 2)]  # often the same call twice: one job
    else:
        args = []
    opts: dict[str, Any] = {}
    roll = rnd.random()
    if roll < 0.15:
        opts["task_id"] = f"c{rnd.randint(0, 3)}"  # custom ids, often taken already
    elif roll < 0.25:
        opts["delay_ms"] = rnd.choice([30, 120])  # short: due before the phase's run
    elif roll < 0.32:
        opts["delay_ms"] = FAR_MS  # never due: scheduled at rest
    elif roll < 0.37:
        opts["schedule_ms"] = "past"  # an absolute time already gone
    elif roll < 0.44:
        opts["expire_ms"] = rnd.choice([1, FAR_MS])  # 1: expired when fetched
    if rnd.random() < 0.1:
        opts["priority"] = rnd.choice(LANES)
    return {"task": kind, "args": args, "kwargs": kwargs, "opts": opts}


def generate(seed: int) -> Sequence:
    """The sequence of a seed: 2 or 3 phases of producer steps, each ending in a run."""
    rnd = random.Random(seed)
    variant = {
        "signed": rnd.random() < 0.5,
        "result_ttl_ms": rnd.choice([300_000, 300_000, -1, 0]),
        "concurrency": rnd.choice([1, 4, 8]),
    }
    labels: list[str] = []  # jobs made so far (abort / replay targets)
    doomed: list[str] = []  # jobs that will likely end as dead letters (replay targets)
    waiting: list[str] = []  # jobs scheduled far ahead (abort targets)
    raw = 0
    phases: list[list[Op]] = []
    counter = 0

    def note(label: str, spec: dict[str, Any]) -> None:
        labels.append(label)
        if spec["opts"].get("delay_ms") == FAR_MS:
            waiting.append(label)
        elif spec["task"] in ("boom", "unencodable") or spec["args"] in ([4], [1.0]):
            doomed.append(label)

    def target(prefer: list[str]) -> str:
        roll = rnd.random()
        if prefer and roll < 0.6:
            return rnd.choice(prefer)
        return rnd.choice(labels) if labels and roll < 0.95 else "missing"

    for phase in range(rnd.randint(2, 3)):
        ops: list[Op] = []
        for _ in range(rnd.randint(6, 14)):
            counter += 1
            action = rnd.choices(
                [
                    "enqueue",
                    "batch",
                    "send_unknown",
                    "too_big",
                    "abort",
                    "replay",
                    "delete_dead",
                    "raw",
                ],
                [10, 2, 1, 1, 2, 3 if phase else 0, 1 if phase else 0, 2],
            )[0]
            label = f"J{counter}"
            if action == "enqueue":
                spec = _enqueue_spec(rnd, counter)
                ops.append(Op("enqueue", spec, label))
                note(label, spec)
            elif action == "batch":
                items = [_enqueue_spec(rnd, counter * 100 + i) for i in range(rnd.randint(2, 6))]
                ops.append(Op("batch", {"items": items}, label))
                for i, it in enumerate(items):
                    note(f"{label}.{i}", it)
            elif action == "send_unknown":
                ops.append(Op("send", {"name": f"nope_{counter % 3}", "args": [counter]}, label))
                labels.append(label)
                doomed.append(label)
            elif action == "too_big":
                # Refused by the producer; sent by one with a larger limit, refused by the
                # worker before decoding.
                via = rnd.choice(["producer", "big_producer"])
                ops.append(Op("too_big", {"via": via, "size": MAX_PAYLOAD + 100}, label))
                labels.append(label)
                doomed.append(label)
            elif action == "abort":
                ops.append(Op("abort", {"target": target(waiting)}))
            elif action == "replay":
                ops.append(Op("replay", {"target": target(doomed)}))
            elif action == "delete_dead":
                ops.append(Op("delete_dead", {"target": target(doomed)}))
            else:
                raw += 1
                how = rnd.choice(
                    ["plain", "undecodable", "malformed", "no_job", "wrong_key", "unknown_fn"]
                )
                ops.append(Op("raw", {"how": how, "lane": rnd.choice(LANES)}, f"E{raw}"))
                if how != "malformed":
                    labels.append(f"E{raw}")
                    doomed.append(f"E{raw}")
        run: dict[str, Any] = {}
        if rnd.random() < 0.3:
            label = f"J{counter}b"
            spec = {"task": "blocker", "args": [], "kwargs": {}, "opts": {}}
            ops.append(Op("enqueue", spec, label))
            labels.append(label)
            run["abort_running"] = label
        ops.append(Op("run", run))
        phases.append(ops)
    return Sequence(seed, variant, phases)


# ---------------------------------------------------------------------------- running
async def run_worker(app: Ardiq, engine: str) -> None:
    """A burst run of `engine`. Before `app.run(engine=)` exists, "python" is the plain
    `app.run()`."""
    app.burst = True
    if "engine" in inspect.signature(app.run).parameters:
        await app.run(engine=engine)  # type: ignore[call-arg]
    elif engine == "python":
        await app.run()
    else:
        raise RuntimeError(f"app.run() has no engine= here: cannot run engine {engine!r}")


class Run:
    """One sequence on one engine, on a queue of its own; `record` is what it observed."""

    def __init__(self, seq: Sequence, redis_url: str, engine: str) -> None:
        self.seq = seq
        self.engine = engine
        self.redis_url = redis_url
        self.queue = f"diff-{engine}-{uuid.uuid4().hex[:8]}"
        self.app = make_app(redis_url, self.queue, seq.variant)
        self.big = make_app(redis_url, self.queue, seq.variant, max_payload_bytes=1 << 20)
        self.admin: Any = aioredis.Redis.from_url(redis_url)  # redis-py's types are unions
        self.ids: dict[str, str] = {}  # label -> task id
        self.eids: dict[str, str] = {}  # entry id -> label
        self.record: list[Any] = []
        self.short_due = 0  # when the last short delay is due and short expiry passed
        self.short_wait = 0  # the longest short delay or expiry of the step being sent
        self.seconds = 0.0  # spent in burst runs

    async def close(self) -> None:
        for app in (self.app, self.big):
            await app.aclose()
        await self.admin.aclose()

    # ---------------------------------------------------------------- producer steps
    def _prepared(self, spec: dict[str, Any], app: Ardiq | None = None) -> Any:
        app = app or self.app
        task: Any = app.ref(spec["task"], unique=spec["task"] == "uniq")
        if spec["task"] in app.tasks:
            task = app._tasks[spec["task"]]
        opts = dict(spec["opts"])
        if opts.get("schedule_ms") == "past":
            opts["schedule_ms"] = now_ms() - 5_000
        for name in ("delay_ms", "expire_ms"):  # short ones: due or past before the run
            if 0 < opts.get(name, 0) < FAR_MS:
                self.short_wait = max(self.short_wait, opts[name])
        if opts:
            task = task.options(**opts)
        return task.prepare(*spec["args"], **spec["kwargs"])

    async def step(self, op: Op) -> Any:
        """Do `op`; return what the producer saw (normalized later)."""
        self.short_wait = 0
        try:
            return await self._step(op)
        finally:
            # Counted from after the call returned, when Redis has stamped the enqueue.
            if self.short_wait:
                self.short_due = max(self.short_due, now_ms() + self.short_wait)

    async def _step(self, op: Op) -> Any:
        a = op.args
        try:
            if op.kind == "enqueue":
                (job,) = await self.app.enqueue_many([self._prepared(a)])
                self.ids.setdefault(op.label, job.id)
                return job.id
            if op.kind == "batch":
                jobs = await self.app.enqueue_many([self._prepared(s) for s in a["items"]])
                for i, job in enumerate(jobs):
                    self.ids.setdefault(f"{op.label}.{i}", job.id)
                return [j.id for j in jobs]
            if op.kind == "send":
                job = await self.app.send(a["name"], *a["args"])
                self.ids.setdefault(op.label, job.id)
                return job.id
            if op.kind == "too_big":
                app = self.app if a["via"] == "producer" else self.big
                job = await app.ref("ok").enqueue("x" * a["size"])
                self.ids.setdefault(op.label, job.id)
                return job.id
            if op.kind == "abort":
                return await self.app.abort(self.ids.get(a["target"], "missing"))
            if op.kind == "replay":
                again = await self.app.replay(self.ids.get(a["target"], "missing"))
                return None if again is None else again.id
            if op.kind == "delete_dead":
                return await self.app.delete_dead(self.ids.get(a["target"], "missing"))
            if op.kind == "raw":
                return await self.raw(op)
            if op.kind == "run":
                return await self.run(a)
        except (ArdiqError, TypeError, ValueError) as exc:
            return f"raised {type(exc).__name__}: {exc}"
        raise AssertionError(f"unknown step {op}")

    async def raw(self, op: Op) -> str:
        """An entry written without ArdiQ, with or without its job record."""
        how, lane = op.args["how"], op.args["lane"]
        tid = f"raw-{op.label}"
        self.ids[op.label] = tid
        fn = "nope_raw" if how == "unknown_fn" else "ok"
        body = msgpack.packb([[f"raw {op.label}"], {}, None])
        nonce = ""
        if how == "undecodable":
            body = b"\xc1\xc1 not msgpack"
        signer = self.app._signer
        if how == "wrong_key":
            signer = Signer([WRONG_KEY.encode()], queue=self.queue)
        if signer.enabled and how not in ("plain", "undecodable"):
            # Sealed as a producer would (plain/undecodable: as someone without the key).
            body, nonce = signer.seal(Binding(self.queue, lane, tid, fn), body, now_ms())
        stream, job = self.app.keys.stream(lane), self.app.keys.job(tid)
        # An explicit entry id, unique across lanes (entry ids are per stream: two raw
        # writes in one millisecond would get the same one), so that a dead letter named
        # after it (`entry:<id>`) maps back to this step.
        seq = 100_000 + int(op.label[1:])
        for _ in range(100):
            eid = f"{now_ms()}-{seq}"
            try:
                if how == "malformed":  # no payload field at all
                    await self.admin.xadd(stream, {"id": tid, "fn": fn}, id=eid)
                else:
                    with_job = "0" if how == "no_job" else "1"
                    argv = [tid, fn, body, nonce, now_ms(), with_job, lane, eid]
                    await self.admin.eval(RAW_ENTRY, 2, stream, job, *argv)
                break
            except aioredis.ResponseError:  # the stream's last id is newer: a moment later
                await asyncio.sleep(0.002)
        else:
            raise AssertionError(f"could not add raw entry {op.label}")
        self.eids[eid] = op.label
        return op.label

    async def until_due(self) -> None:
        """Wait until nothing in the delayed set is due soon by Redis's clock (what the
        scripts read): a burst must find every short delay due, none about to be."""
        for _ in range(500):
            sec, usec = await self.admin.time()
            t = sec * 1000 + usec // 1000
            soon = await self.admin.zrangebyscore(self.app.keys.delayed, f"({t}", t + FAR_MS // 2)
            if not soon:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("short delays did not come due within 5 s")

    async def run(self, a: dict[str, Any]) -> Any:
        """A burst run; with `abort_running`, abort that task once it runs."""
        wait = self.short_due - now_ms() + 20
        if wait > 0:  # short delays due (the burst must promote them), short expiries past
            await asyncio.sleep(wait / 1000)
        await self.until_due()
        started = _STARTED.setdefault(self.queue, asyncio.Event())
        started.clear()
        aborted: Any = None

        async def aborter() -> None:
            nonlocal aborted
            await started.wait()
            aborted = await self.app.abort(self.ids[a["abort_running"]])

        helper = asyncio.create_task(aborter()) if "abort_running" in a else None
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(run_worker(self.app, self.engine), RUN_TIMEOUT_S)
        except TimeoutError:
            self.app.stop()
            self.app.stop()
            return f"run did not end within {RUN_TIMEOUT_S}s"
        finally:
            if helper is not None:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        self.seconds += time.monotonic() - t0
        return {"aborted running": aborted} if helper is not None else "ran"

    # ------------------------------------------------------------------ observation
    async def observe(self) -> dict[str, Any]:
        app = self.app
        jobs: dict[str, Any] = {}
        for label, tid in sorted(self.ids.items()):
            res = await app.result(tid)
            info = await app.info(tid)
            jobs[label] = {
                "attempts": [
                    {
                        "tries": a.tries,
                        "kind": a.kind,
                        "worker": a.worker,
                        "error": a.error,
                        "started": a.started_ms != 0,
                    }
                    for a in await app.attempts(tid)
                ],
                "status": await app.status(tid),
                "result": None
                if res is None
                else {
                    "success": res.success,
                    "value": res.value,
                    "tries": res.tries,
                    "aborted": res.aborted,
                    "started": res.start != 0,
                    "times in order": res.enqueue_time <= res.finish
                    and (res.start == 0 or res.start <= res.finish),
                },
                "info": None
                if info is None
                else {
                    "task_id": info.task_id,
                    "fn_name": info.fn_name,
                    "args": info.args,
                    "kwargs": info.kwargs,
                    "tries": info.tries,
                    "status": info.status,
                    "scheduled_at": info.scheduled_at is not None,
                },
            }
        dead = {
            d.task_id: {
                "fn_name": d.fn_name,
                "args": d.args,
                "kwargs": d.kwargs,
                "priority": d.priority,
                "error": d.error,
                "tries": d.tries,
            }
            for d in await app.dead_letters(1000)
        }
        history = [
            {
                "task_id": h.task_id,
                "fn_name": h.fn_name,
                "priority": h.priority,
                "kind": h.kind,
                "tries": h.tries,
                "worker": h.worker,
                "error": h.error,
                "started": h.started_ms != 0,
            }
            for h in await app.history(limit=10_000)
        ]
        return {
            "hooks": _EVENTS.pop(self.queue, {}),
            "history": {UNORDERED: history},
            "jobs": jobs,
            "dead letters": dict(sorted(dead.items())),
            "dead_count": await app.dead_count(),
            "queue_size": await app.queue_size(),
            "keys": await self.keys_at_rest(),
        }

    async def keys_at_rest(self) -> dict[str, Any]:
        r = self.admin
        out: dict[str, Any] = {}
        prefix = self.app.keys.prefix
        async for raw_key in r.scan_iter(match=prefix.replace("{", "[{]") + "*", count=500):
            key = raw_key.decode()
            kind = (await r.type(raw_key)).decode()
            ttl = await r.pttl(raw_key)
            entry: dict[str, Any] = {"type": kind, "ttl": "yes" if ttl > 0 else str(ttl)}
            rest = key[len(prefix) :]
            if kind == "string":
                entry["value"] = self.string_value(rest, await r.get(raw_key))
            elif kind == "hash" and rest == "stats":
                per_kind: dict[str, int] = {}
                for f, count in (await r.hgetall(raw_key)).items():
                    name = f.decode().rpartition(":")[0]
                    per_kind[name] = per_kind.get(name, 0) + int(count)
                entry["counts per kind"] = dict(sorted(per_kind.items()))
            elif kind == "hash":
                fields = await r.hgetall(raw_key)
                entry["fields"] = self.hash_fields(rest, fields)
            elif kind == "zset":
                members = await r.zrange(raw_key, 0, -1, withscores=True)
                now = now_ms()
                entry["members"] = {
                    m: ("past" if s <= now else "future") if rest == "delayed" else "<ts>"
                    for m, s in members
                }
            elif kind == "stream" and rest == "history":
                entry["length"] = await r.xlen(raw_key)
                entries = [
                    {k.decode(): self.history_value(k.decode(), v) for k, v in f.items()}
                    for _, f in await r.xrange(raw_key)
                ]
                entry["entries"] = {UNORDERED: entries}
                info = await r.xinfo_stream(raw_key)
                entry["entries added"] = info["entries-added"]
                entry["groups"] = await r.xinfo_groups(raw_key)
            elif kind == "list" and rest.startswith("attempts:"):
                entry["records"] = [
                    self.attempt_record(raw) for raw in await r.lrange(raw_key, 0, -1)
                ]
            elif kind == "stream":
                entry["length"] = await r.xlen(raw_key)
                entry["entries"] = [
                    {k.decode(): self.field_value(k.decode(), v, None) for k, v in f.items()}
                    for _, f in await r.xrange(raw_key)
                ]
                info = await r.xinfo_stream(raw_key)
                entry["entries added"] = info["entries-added"]
                groups = []
                for g in await r.xinfo_groups(raw_key):
                    consumers = await r.xinfo_consumers(raw_key, g["name"])
                    groups.append(
                        {
                            "name": g["name"],
                            "pending": g["pending"],
                            "entries read": g["entries-read"],
                            "lag": g["lag"],
                            "consumers": sorted((c["name"], c["pending"]) for c in consumers),
                        }
                    )
                entry["groups"] = groups
            else:
                entry["value"] = f"<{kind}>"
            out[key] = entry
        return dict(sorted(out.items()))

    @staticmethod
    def history_value(name: str, value: bytes) -> Any:
        """A field of a `P history` entry, its times normalized."""
        if name in ("enq", "st", "fin"):
            return _ts(int(value))
        return value

    @staticmethod
    def attempt_record(raw: bytes) -> Any:
        """A `P attempts:<id>` record (JSON), its times normalized."""
        rec = json.loads(raw)
        return {k: _ts(int(v)) if k in ("st", "fin") else v for k, v in rec.items()}

    def string_value(self, rest: str, value: bytes) -> Any:
        if not rest.startswith("result:"):
            return value
        tid = rest[len("result:") :]
        try:
            rec = msgpack.unpackb(value, raw=True)
        except Exception:
            return value
        if not isinstance(rec, list) or len(rec) != 8:
            return value
        ver, ok, val, tries, enq, start, fin, aborted = rec
        if isinstance(val, bytes) and val.startswith(RESULT_MAGIC):
            try:
                body = self.app._signer.open_result(tid, val)
                val = ("sealed-ok", body)
            except Exception as exc:
                val = ("sealed-bad", type(exc).__name__)
        return [ver, ok, val, tries, _ts(enq), _ts(start), _ts(fin), aborted]

    def hash_fields(self, rest: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
        f = {k.decode(): v for k, v in fields.items()}
        binding = None
        if rest.startswith(("job:", "dead:")) and b"fn" in fields and b"l" in fields:
            tid = rest.split(":", 1)[1]
            binding = Binding(self.queue, f["l"].decode(), tid, f["fn"].decode())
        return {k: self.field_value(k, v, binding) for k, v in sorted(f.items())}

    def field_value(self, name: str, value: bytes, binding: Binding | None) -> Any:
        if name in ("e", "st"):
            return "<eid>"
        if name == "n":
            return "<nonce>" if value else ""
        if name in ("enq", "at", "fail", "x"):
            return _ts(int(value)) if value.isdigit() else value
        if name == "p" and value.startswith(MAGIC):
            # tag | nonce | not-after: checked under this run's key, the body kept.
            body = value[len(MAGIC) + 32 + 16 + 8 :]
            verdict = "sealed"
            if binding is not None:
                try:
                    self.app._signer.open(binding, value)
                    verdict = "sealed-ok"
                except Exception as exc:
                    verdict = f"sealed-bad ({type(exc).__name__})"
            return (verdict, body)
        return value


def _ts(v: int) -> Any:
    return "<ts>" if v else 0


async def run_sequence(seq: Sequence, redis_url: str, engine: str) -> tuple[list[Any], float]:
    """Run `seq` on `engine`; the normalized record and the seconds spent in runs."""
    run = Run(seq, redis_url, engine)
    try:
        for ops in seq.phases:
            seen = []
            for op in ops:
                seen.append((str(op), await run.step(op)))
            run.record.append({"steps": seen, "state": await run.observe()})
        return normalize(run.record, run), run.seconds
    finally:
        _STARTED.pop(run.queue, None)
        _EVENTS.pop(run.queue, None)
        await run.close()


# ------------------------------------------------------------------------ normalizing
_EID = re.compile(r"\b\d{13}-\d+\b")


def normalize(record: Any, run: Run) -> Any:
    """`record` with what differs between two runs of one sequence replaced (see the
    module's docstring)."""
    labels = {tid: label for label, tid in run.ids.items() if tid != f"raw-{label}"}
    # Random ids are 32 hex digits; custom, unique and raw ids are the same in both runs.
    random_ids = {tid: label for tid, label in labels.items() if re.fullmatch(r"[0-9a-f]{32}", tid)}
    eids = dict(run.eids)
    queue = run.queue

    def text(s: str) -> str:
        if queue in s:
            s = s.replace(queue, "<Q>")
        for tid, label in random_ids.items():
            if tid in s:
                s = s.replace(tid, label)
        return _EID.sub(lambda m: eids.get(m.group(0), "<eid>"), s)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return text(x)
        if isinstance(x, bytes):
            try:
                s = x.decode()
                if s.isprintable():
                    return text(s)
            except UnicodeDecodeError:
                pass
            try:
                return {"msgpack": walk(msgpack.unpackb(x, raw=False, strict_map_key=False))}
            except Exception:
                return "bytes:" + x.hex()
        if isinstance(x, dict) and set(x) == {UNORDERED}:
            # Sorted once normalized: raw ids sort differently in each run.
            items = [walk(v) for v in x[UNORDERED]]
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=repr))
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        if isinstance(x, float) and x > 1e12:
            return "<ts>"
        return x

    return walk(record)


def render(record: Any) -> list[str]:
    return json.dumps(record, indent=1, sort_keys=True, default=repr).splitlines()


@dataclass
class Outcome:
    seed: int
    engines: tuple[str, str]
    same: bool
    report: str
    seconds: tuple[float, float]
    jobs: int
    keys: int


async def compare(seed: int, redis_url: str, engines: tuple[str, str]) -> Outcome:
    """Run seed's sequence once per engine; say whether the records are equal."""
    seq = generate(seed)
    a, ta = await run_sequence(seq, redis_url, engines[0])
    b, tb = await run_sequence(seq, redis_url, engines[1])
    last = a[-1]["state"] if a else {}
    jobs, keys = len(last.get("jobs", {})), len(last.get("keys", {}))
    if a == b:
        return Outcome(seed, engines, True, "", (ta, tb), jobs, keys)
    diff = difflib.unified_diff(
        render(a), render(b), fromfile=engines[0], tofile=engines[1], lineterm="", n=4
    )
    lines = [
        f"differential mismatch, seed {seed} ({engines[0]} vs {engines[1]}); "
        f"rerun: python integration/differential.py --start {seed} --seeds 1",
        "steps:",
        *seq.steps(),
        "diff (first record -> second):",
        *list(diff)[:400],
    ]
    return Outcome(seed, engines, False, "\n".join(lines), (ta, tb), jobs, keys)


def engines_under_test() -> tuple[str, str] | str:
    """("python", "native"), or why the native engine cannot run here. ARDIQ_NATIVE=0
    (as tests/conftest.py) compares the pure loop with itself instead; ARDIQ_DIFF_ENGINES
    (`a,b`) picks the pair by hand."""
    forced = os.environ.get("ARDIQ_DIFF_ENGINES")
    if forced:
        a, b = (s.strip() for s in forced.split(","))
        return a, b
    if os.environ.get("ARDIQ_NATIVE", "1") != "1":
        return "python", "python"
    why = native_missing()
    return why if why else ("python", "native")


def native_missing() -> str | None:
    """Why the native engine cannot serve `app.run()` here, or None."""
    try:
        from ardiq.worker import native  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        pass
    else:  # the package says itself (it checks the extension's bridge version too)
        found = native.load()
        return found if isinstance(found, str) else None
    try:
        import ardiq_native  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"the `ardiq_native` extension is not importable ({exc})"
    if "engine" not in inspect.signature(Ardiq.run).parameters:
        return "this ardiq's app.run() takes no engine= (the in-process engine is not here)"
    return None
