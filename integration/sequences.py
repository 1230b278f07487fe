"""Random, seeded sequences of producer calls and faults against real worker processes
of every kind: the slow layer of the model-based test (the fast, Lua-level one is
tests/test_model_protocol.py).

A step is one of: enqueue (plain, delayed, unique, custom id, batch), abort, replay of a
dead letter, `kill -9` of a worker, starting a worker of either kind (burst or not),
`CLIENT KILL` of every connection, a Redis restart (AOF, appendfsync always), or a pause
that lets the workers run. After every step the safety rules are checked (a task id never
has two stream entries; nothing starts after its abort was confirmed); at the end the
sequence settles (a long-running worker serves until every accepted task has a result and
nothing is pending) and the LEDGER (ledger.py) checks liveness: every accepted task ended
(lost 0), no overlapping executions on live workers, nothing pending, only results, dead
letters and the streams/groups left in Redis. A failure names its seed and step list.

    python integration/sequences.py [--seed N] [--sequences K] [--steps S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import redis as sync_redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Env, Worker  # noqa: E402
from ledger import Report, ms  # noqa: E402
from support.workers import worker_command  # noqa: E402

LEASE_MS = int(os.environ.get("ARDIQ_SEQ_LEASE_MS", "1500"))
# Worker kinds a sequence starts (ARDIQ_SEQ_KINDS=incode: without the native binary).
KINDS = tuple(os.environ.get("ARDIQ_SEQ_KINDS", "native,inproc,incode").split(","))
# action -> weight
ACTIONS = {
    "enqueue_plain": 5,
    "enqueue_delayed": 2,
    "enqueue_unique": 2,
    "enqueue_custom": 2,
    "enqueue_batch": 2,
    "enqueue_failing": 1,
    "abort": 2,
    "replay": 1,
    "kill9": 1,
    "start_worker": 2,
    "client_kill": 1,
    "redis_restart": 1,
    "pause": 2,
}
DEFAULT_SEED = int(os.environ.get("ARDIQ_SEQ_SEED", "4242"))


class BurstableWorker(Worker):
    """A harness worker started with extra flags (`--burst`)."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path, *flags: str) -> None:
        import subprocess

        self.kind = kind
        self.flags = flags
        self.log_path = log_dir / f"{kind}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full = {**os.environ, "VIRTUAL_ENV": sys.prefix, **env, "PYTHONPATH": str(HERE)}
        self.proc = subprocess.Popen(
            worker_command(kind, "apps.faultapp:app", *flags),
            cwd=HERE,
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


class Sequence:
    """One seeded sequence: its world (Env), its steps, what it accepted and aborted."""

    def __init__(self, seed: int, steps: int, log_dir: Path, first_kind: str) -> None:
        self.seed = seed
        self.n_steps = steps
        self.rnd = random.Random(seed)
        self.first_kind = first_kind
        self.env = Env(
            first_kind,
            log_dir,
            redis_args=["--appendonly", "yes", "--appendfsync", "always"],
            idle_ms=LEASE_MS,
            concurrency=4,
            max_deliveries=5,
        )
        self.steps: list[str] = []
        self.accepted: list[str] = []
        self.failing: set[str] = set()  # fail_first tasks (a dead letter until replayed)
        self.multi_run: set[str] = set()  # ids that legitimately run more than once
        self.confirmed_aborts: dict[str, int] = {}  # id -> ms the abort was confirmed
        self.problems: list[str] = []
        self.plain: list[str] = []  # random-id tasks (abort targets)

    # ----------------------------------------------------------------- helpers
    def fail(self, text: str) -> None:
        self.problems.append(f"{text} [seed {self.seed}; steps: {'; '.join(self.steps)}]")

    def start_worker(self, kind: str, burst: bool) -> Worker:
        flags = ("--burst",) if burst else ()
        w = BurstableWorker(kind, self.env.env, self.env.log_dir, *flags)
        self.env.workers.append(w)
        return w

    def alive(self) -> list[Worker]:
        return [w for w in self.env.workers if w.alive()]

    async def enqueue(self, prepared: list[Any]) -> list[str]:
        """Enqueue (retried while Redis is away), recording the accepted ids."""
        while True:
            try:
                jobs = await self.env.app.enqueue_many(prepared)
                break
            except Exception:  # Redis restarting, a killed connection: the producer retries
                await asyncio.sleep(0.1)
        ids = [j.id for j in jobs]
        self.env.ledger.enqueued(ids)
        for tid in ids:
            if tid in self.accepted:
                self.multi_run.add(tid)
            else:
                self.accepted.append(tid)
        return ids

    def ref(self, name: str, **options: Any) -> Any:
        task = self.env.app.ref(name)
        return task.options(**options) if options else task

    # ------------------------------------------------------------------- steps
    async def step(self, action: str) -> str:
        rnd = self.rnd
        if action == "enqueue_plain":
            ids = await self.enqueue([self.ref("work").prepare(rnd.randint(5, 300))])
            self.plain += ids
            return f"enqueue {ids[0][:8]}"
        if action == "enqueue_delayed":
            delay = rnd.randint(100, 1500)
            ids = await self.enqueue(
                [self.ref("work", delay_ms=delay).prepare(rnd.randint(5, 100))]
            )
            return f"enqueue {ids[0][:8]} delayed {delay} ms"
        if action == "enqueue_unique":
            n = rnd.randint(0, 2)
            ids = await self.enqueue([self.ref("work", unique=True).prepare(50 + n)])
            return f"enqueue unique {ids[0][:10]}"
        if action == "enqueue_custom":
            tid = f"c{rnd.randint(0, 3)}"
            await self.enqueue([self.ref("work", task_id=tid).prepare(rnd.randint(5, 200))])
            return f"enqueue custom {tid}"
        if action == "enqueue_batch":
            n = rnd.randint(5, 40)
            ids = await self.enqueue(
                [self.ref("work").prepare(rnd.randint(1, 60)) for _ in range(n)]
            )
            self.plain += ids
            return f"enqueue batch of {len(ids)}"
        if action == "enqueue_failing":
            ids = await self.enqueue([self.ref("fail_first").prepare(rnd.randint(5, 100))])
            self.failing.add(ids[0])
            return f"enqueue failing {ids[0][:8]}"
        if action == "abort":
            if not self.plain:
                return "abort (nothing)"
            tid = rnd.choice(self.plain[-20:])
            try:
                await self.env.app.abort(tid)
                raw = await self.env.app._client().result_raw(tid, None)
            except Exception as exc:
                return f"abort {tid[:8]} failed: {type(exc).__name__}"
            if raw is not None and msgpack.unpackb(raw, raw=True)[7]:
                self.confirmed_aborts.setdefault(tid, ms())
            return f"abort {tid[:8]}"
        if action == "replay":
            letters = [t for t in self.failing if t not in self.multi_run]
            if not letters:
                return "replay (nothing)"
            tid = rnd.choice(sorted(letters))
            try:
                job = await self.env.app.replay(tid)
            except Exception as exc:
                return f"replay {tid[:8]} failed: {type(exc).__name__}"
            if job is not None:
                self.multi_run.add(tid)
            return f"replay {tid[:8]} -> {job is not None}"
        if action == "kill9":
            live = self.alive()
            if len(live) < 2:
                return "kill -9 (spared the last worker)"
            victim = rnd.choice(live)
            self.env.ledger.fault("sigkill", victim.pid)
            victim.kill()
            return f"kill -9 {victim.kind} {victim.pid}"
        if action == "start_worker":
            if len(self.alive()) >= 4:
                return "start worker (enough running)"
            kind = rnd.choice(KINDS)
            burst = rnd.random() < 0.3
            w = self.start_worker(kind, burst)
            return f"start {kind}{' --burst' if burst else ''} {w.pid}"
        if action == "client_kill":
            f = self.env.ledger.fault("client-kill", 0)
            r = sync_redis.Redis.from_url(self.env.redis.url)
            try:
                for t in ("normal", "pubsub"):
                    r.execute_command("CLIENT", "KILL", "TYPE", t, "SKIPME", "yes")
            finally:
                r.close()
            f.end_ms = ms()
            return "CLIENT KILL"
        if action == "redis_restart":
            f = self.env.ledger.fault("redis-restart", 0)
            self.env.redis.kill()
            await asyncio.sleep(rnd.uniform(0.1, 0.8))
            self.env.redis.start()
            f.end_ms = ms()
            return "Redis restart (AOF always)"
        pause = rnd.uniform(0.1, 0.8)
        await asyncio.sleep(pause)
        return f"pause {pause:.1f}s"

    # ------------------------------------------------------------------ checks
    def check_safety(self) -> None:
        """After every step: one stream entry per task id; no start after a confirmed
        abort."""
        r = sync_redis.Redis.from_url(self.env.redis.url)
        try:
            seen: dict[bytes, int] = {}
            for lane in self.env.app.priorities:
                for _, fields in r.xrange(self.env.app.keys.stream(lane)):
                    tid = fields.get(b"id", b"")
                    seen[tid] = seen.get(tid, 0) + 1
            for tid, n in seen.items():
                if n > 1:
                    self.fail(f"{tid.decode()} has {n} stream entries")
        except (OSError, sync_redis.RedisError):
            pass  # Redis is restarting: checked at the next step
        finally:
            r.close()
        execs = self.env.ledger.executions()
        for tid, at in self.confirmed_aborts.items():
            late = [e for e in execs.get(tid, []) if e.start > at]
            if late:
                self.fail(f"{tid} started at {late[0].start} after its abort was confirmed at {at}")

    async def run(self) -> Report:
        env = self.env
        t0 = time.monotonic()
        try:
            for kind in KINDS:
                await env.wait_ready(self.start_worker(kind, False))
            self.steps.append(f"start {', '.join(KINDS)}")
            for _ in range(self.n_steps):
                action = self.rnd.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
                self.steps.append(await self.step(action))
                self.check_safety()
            return await self.settle(t0)
        finally:
            await env.close()

    async def settle(self, t0: float) -> Report:
        env = self.env
        self.steps.append("settle")
        if not any(w.alive() and "--burst" not in getattr(w, "flags", ()) for w in env.workers):
            self.start_worker(self.rnd.choice(KINDS), False)
        try:
            await env.wait_results(self.accepted, 120)
            await env.drained(60)
        except AssertionError as exc:
            self.fail(f"liveness: {exc}")
        self.check_safety()
        expect_failed = set(self.confirmed_aborts) | (self.failing - self.multi_run)
        # Aborts that were only signalled may end as aborted too.
        r = sync_redis.Redis.from_url(env.redis.url)
        for tid in self.accepted:
            raw = r.get(env.app.keys.result(tid))
            if raw is not None and msgpack.unpackb(raw, raw=True)[7]:
                expect_failed.add(tid)
        r.close()
        rep = env.ledger.report(
            f"random sequence seed {self.seed}",
            self.first_kind,
            env.redis.url,
            env.queue,
            expect_failed=expect_failed,
            rerun_ids=self.multi_run,
        )
        # A replayed dead letter or a re-enqueued custom/unique id runs again by design.
        execs = env.ledger.executions()
        by_design = sum(1 for t in self.multi_run if len(execs.get(t, [])) >= 2)
        if by_design:
            rep.extra["by_design"] = by_design
            rep.notes.append(
                f"{by_design} of the ids run more than once were replayed or re-enqueued "
                "after their end (by design)"
            )
        legit = [x for x in rep.extra.get("unexplained", []) if x[0] in self.multi_run]
        if legit:
            rep.problems = [p for p in rep.problems if "unexplained" not in p]
            left = len(rep.extra["unexplained"]) - len(legit)
            if left:
                rep.problems.append(f"{left} unexplained duplicate executions")
        rep.problems += self.problems
        if rep.problems:
            rep.problems.append(f"seed {self.seed}; steps: {'; '.join(self.steps)}")
        rep.notes.append(
            f"seed {self.seed}, {self.n_steps} steps, {len(env.workers)} workers started, "
            f"{len(self.confirmed_aborts)} aborts confirmed"
        )
        rep.seconds = time.monotonic() - t0
        return rep


async def run_sequences(
    first_kind: str, count: int, steps: int, log_dir: Path, seed: int = DEFAULT_SEED
) -> Report:
    """`count` sequences (seeds `seed`, `seed + 1`, ...) merged into one report."""
    total: Report | None = None
    for i in range(count):
        rep = await Sequence(seed + i, steps, log_dir, first_kind).run()
        print(
            f"   sequence seed {seed + i}: {'PASS' if rep.ok else 'FAIL'} "
            f"({rep.enqueued} tasks, {rep.seconds:.0f}s)",
            flush=True,
        )
        if total is None:
            total = rep
            total.scenario = f"random sequences x{count} ({steps} steps)"
            continue
        total.enqueued += rep.enqueued
        total.completed += rep.completed
        total.failed += rep.failed
        total.lost += rep.lost
        total.duplicates += rep.duplicates
        total.overlaps += rep.overlaps
        total.expected_overlaps += rep.expected_overlaps
        total.pending += rep.pending
        total.leftover_keys += rep.leftover_keys
        for why, n in rep.duplicate_reasons.items():
            total.duplicate_reasons[why] = total.duplicate_reasons.get(why, 0) + n
        for why, n in rep.dead.items():
            total.dead[why] = total.dead.get(why, 0) + n
        total.problems += rep.problems
        total.notes += rep.notes
    assert total is not None
    return total


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--sequences", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--first-kind", default="native", choices=KINDS)
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="ardiq-seq-"))
    rep = asyncio.run(run_sequences(args.first_kind, args.sequences, args.steps, logs, args.seed))
    print(rep)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
