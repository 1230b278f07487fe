"""The fault scenarios. Each injects one kind of fault into real processes, then checks
the outcome against the LEDGER (see ledger.py) and returns its Report.

Every scenario takes the worker kind ("native", "inproc" or "incode"), a Scale (FAST for `make
test`, FULL for `make reliability`) and a directory for the processes' logs.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as sync_redis
from ardiq import ArdiqError, BrokerError
from harness import Env, Worker
from ledger import Report, ms
from support.windows import max_in_window, max_overlap


@dataclass(frozen=True)
class Scale:
    name: str
    kill_tasks: int  # fault 1: tasks in the SIGKILL run
    kills: int  # fault 1: SIGKILLs during it
    killer_others: int  # fault 6: innocent tasks around the killer
    restart_tasks: int  # fault 4: tasks around a Redis restart
    soak_s: float  # fault 9: soak duration
    soak_rate: int  # fault 9: tasks per second
    sequences: int = 1  # 10: random seeded sequences (integration/sequences.py)
    sequence_steps: int = 12  # 10: steps per sequence
    recycle_every: int = 500  # 11: --max-tasks; four times that many tasks are enqueued


FAST = Scale(
    "fast",
    kill_tasks=1500,
    kills=3,
    killer_others=150,
    restart_tasks=600,
    soak_s=20,
    soak_rate=100,
    sequences=2,
    sequence_steps=12,
    recycle_every=100,
)
FULL = Scale(
    "full",
    kill_tasks=20000,
    kills=20,
    killer_others=1000,
    restart_tasks=5000,
    soak_s=600,
    soak_rate=200,
    sequences=10,
    sequence_steps=60,
)

Scenario = Callable[[str, Scale, Path], Awaitable[Report]]
LEASE_MS = 2000


async def _finish(
    env: Env, name: str, ids: list[str], timeout: float, *, wait: bool = True, **kw: Any
) -> Report:
    if wait:  # `wait=False`: results expire (short result_ttl_ms), wait for the drain only
        await env.wait_results(ids, timeout)
    await env.drained(timeout)
    rep = env.ledger.report(name, env.kind, env.redis.url, env.queue, **kw)
    for w in env.workers:
        if w.alive():
            code = w.stop(30)
            if code != 0:
                rep.problems.append(f"worker {w.pid} exited {code} on SIGTERM")
    return rep


# ---------------------------------------------------------------- 1. SIGKILL
async def sigkill(kind: str, scale: Scale, logs: Path) -> Report:
    """SIGKILL a worker mid-task `kills` times during a run at concurrency 16, with two
    other workers running; each killed worker is replaced at once."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=16)
    try:
        workers = [env.start_worker() for _ in range(3)]
        for w in workers:
            await env.wait_ready(w)
        rnd = random.Random(1)
        ids = await env.enqueue("work", [(rnd.randint(5, 40),) for _ in range(scale.kill_tasks)])
        t0 = time.monotonic()
        # Spread the kills over the run's expected length.
        every = max(0.4, scale.kill_tasks * 22 / 1000 / 48 / (scale.kills + 1))
        for _ in range(scale.kills):
            await asyncio.sleep(every)
            victim = rnd.choice([w for w in env.workers if w.alive()])
            env.ledger.fault("sigkill", victim.pid)
            victim.kill()
            env.start_worker()
        rep = await _finish(env, "SIGKILL mid-task", ids, 300)
        rep.notes.append(f"{scale.kills} kills over {time.monotonic() - t0:.0f}s, 3 workers x 16")
        return rep
    finally:
        await env.close()


async def kill_before_ack(kind: str, scale: Scale, logs: Path) -> Report:
    """A task whose worker SIGKILLs itself right after the body returned (before the ack),
    first delivery only: it must run again elsewhere and complete."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=4)
    try:
        for w in [env.start_worker(), env.start_worker()]:
            await env.wait_ready(w)
        ids = await env.enqueue("work", [(10,)] * 50, prefix="w")
        ids += await env.enqueue("kill_before_ack", [()], prefix="k")
        # Replace the worker that killed itself.
        deadline = time.monotonic() + 10
        while all(w.alive() for w in env.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        env.start_worker()
        rep = await _finish(env, "SIGKILL between body end and ack", ids, 60)
        k = next(i for i in ids if i.startswith("k"))
        runs = len(env.ledger.executions().get(k, []))
        if runs != 2:
            rep.problems.append(f"the killed-before-ack task ran {runs} times, expected 2")
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 2. SIGSTOP
async def sigstop(kind: str, scale: Scale, logs: Path) -> Report:
    """SIGSTOP a worker running a task for twice the lease, then SIGCONT: the task runs
    again elsewhere; the stale worker must not ack, overwrite or retry it."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=4)
    try:
        stale = env.start_worker()
        await env.wait_ready(stale)
        ids = await env.enqueue("work", [(3000,)], prefix="long")
        while env.ledger.starts_by(stale.pid) < 1:
            await asyncio.sleep(0.02)
        f = env.ledger.fault("sigstop", stale.pid)
        stale.signal(signal.SIGSTOP)
        fresh = env.start_worker()
        ids += await env.enqueue("work", [(20,)] * 100, prefix="w")
        await asyncio.sleep(2 * LEASE_MS / 1000)
        stale.signal(signal.SIGCONT)
        f.end_ms = ms()
        rep = await _finish(env, "SIGSTOP for 2x lease", ids, 60)
        res = await env.app.job(ids[0]).result()
        if res is None or res.value != fresh.pid:
            rep.problems.append(f"the long task's result is not the new owner's: {res}")
        elif res.tries != 1:
            rep.problems.append(f"the long task counts {res.tries} tries (a reclaim is not one)")
        stale_log = stale.output().lower()
        rep.extra["stale_outcome_dropped"] = "stale" in stale_log
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 3. GIL
def _calibrate(seconds: float) -> int:
    n = 2_000_000
    t = time.perf_counter()
    sum(range(n))
    per = (time.perf_counter() - t) / n
    return int(seconds / per)


async def gil_hold(kind: str, scale: Scale, logs: Path) -> Report:
    """A body holding the GIL for 3x the lease in one C call: runs exactly once, never
    reclaimed (the native engine renews leases from Rust). Native only."""
    lease = 1000
    env = Env(kind, logs, idle_ms=lease, concurrency=4)
    try:
        a = env.start_worker()
        b = env.start_worker()
        await env.wait_ready(a)
        await env.wait_ready(b)
        n = _calibrate(3.6 * lease / 1000)
        t0 = ms()
        ids = await env.enqueue("hold_gil", [(n,)], prefix="gil")
        ids += await env.enqueue("work", [(10,)] * 100, prefix="w")
        rep = await _finish(env, "GIL held 3x lease", ids, 60)
        ex = env.ledger.executions().get(ids[0], [])
        held = (ex[0].finish or 0) - ex[0].start if ex else 0
        rep.notes.append(f"GIL held {held} ms in one call (lease {lease} ms)")
        rep.extra["gil_ms"] = held
        if len(ex) != 1:
            rep.problems.append(f"the GIL-holding task ran {len(ex)} times")
        if held < 2 * lease:
            rep.problems.append(f"calibration too short: {held} ms")
        rep.extra["t0"] = t0
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 4. Redis faults
async def _producer(env: Env, total: int, per_s: float, ids: list[str]) -> None:
    """Enqueue `total` short tasks at a steady rate; connection errors are retried."""
    batch = max(1, int(per_s / 10))
    while len(ids) < total:
        ids += await env.enqueue("work", [(5,)] * min(batch, total - len(ids)), prefix="p")
        await asyncio.sleep(0.1)


async def _feed_until_every_worker_ran(env: Env, since_ms: int, ids: list[str]) -> None:
    """Keep short tasks coming until every worker started one after `since_ms` (15 s at
    most). A worker may still sit in its reconnect backoff (seconds) when the scenario's
    own work runs out; a zombie is one that never comes back, not one that came back
    after the others had taken everything."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        env.ledger.starts_by(w.pid, since_ms) == 0 for w in env.workers
    ):
        ids += await env.enqueue("work", [(20,)] * 40, prefix="z")
        await asyncio.sleep(0.2)


async def redis_restart_aof(kind: str, scale: Scale, logs: Path) -> Report:
    """redis-server SIGKILLed and restarted mid-run with AOF appendfsync always: nothing
    lost, every worker resumes on its own."""
    env = Env(
        kind,
        logs,
        redis_args=["--appendonly", "yes", "--appendfsync", "always"],
        idle_ms=LEASE_MS,
        concurrency=16,
    )
    try:
        for w in [env.start_worker(), env.start_worker()]:
            await env.wait_ready(w)
        ids: list[str] = []
        prod = asyncio.create_task(_producer(env, scale.restart_tasks, 300, ids))
        await asyncio.sleep(1.0)
        f = env.ledger.fault("redis-restart", 0)
        env.redis.kill()
        await asyncio.sleep(1.0)
        env.redis.start()
        f.end_ms = ms()
        f.probe_ms = ms() - f.at_ms + await env.probe()
        await prod
        await _feed_until_every_worker_ran(env, f.end_ms, ids)
        rep = await _finish(env, "Redis restart (AOF always)", ids, 120)
        for w in env.workers:
            if env.ledger.starts_by(w.pid, f.end_ms) == 0:
                rep.problems.append(f"worker {w.pid} ran nothing after the restart (zombie)")
        return rep
    finally:
        await env.close()


async def redis_restart_empty(kind: str, scale: Scale, logs: Path) -> Report:
    """Restarted without persistence: Redis lost everything; workers recreate their
    groups and keep serving new work (no zombie worker)."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=8)
    try:
        for w in [env.start_worker(), env.start_worker()]:
            await env.wait_ready(w)
        before = await env.enqueue("work", [(20,)] * 200, prefix="b")
        await asyncio.sleep(0.5)
        f = env.ledger.fault("redis-restart-empty", 0)
        env.redis.kill()
        env.redis.start()
        f.end_ms = ms()
        await asyncio.sleep(0.5)
        f.probe_ms = ms() - f.at_ms + await env.probe()
        after = await env.enqueue("work", [(20,)] * 400, prefix="a")
        await _feed_until_every_worker_ran(env, f.end_ms, after)
        await env.wait_results(after, 60)
        rep = await _finish(
            env,
            "Redis restart (no persistence)",
            after,
            60,
            redis_lost_data=True,
            ignore_ids=set(before),
        )
        for w in env.workers:
            if env.ledger.starts_by(w.pid, f.end_ms) == 0:
                rep.problems.append(f"worker {w.pid} ran nothing after the restart (zombie)")
        return rep
    finally:
        await env.close()


async def redis_debug_sleep(kind: str, scale: Scale, logs: Path) -> Report:
    """`DEBUG SLEEP` longer than every client timeout, mid-run."""
    env = Env(
        kind, logs, redis_args=["--enable-debug-command", "yes"], idle_ms=30000, concurrency=16
    )
    try:
        for w in [env.start_worker(), env.start_worker()]:
            await env.wait_ready(w)
        ids: list[str] = []
        prod = asyncio.create_task(_producer(env, scale.restart_tasks, 300, ids))
        await asyncio.sleep(1.0)
        f = env.ledger.fault("debug-sleep", 0)
        r = sync_redis.Redis.from_url(env.redis.url, socket_timeout=30)
        await asyncio.to_thread(r.execute_command, "DEBUG", "SLEEP", "12")
        r.close()
        f.end_ms = ms()
        f.probe_ms = ms() - f.at_ms + await env.probe()
        await prod
        return await _finish(env, "DEBUG SLEEP 12 s", ids, 120)
    finally:
        await env.close()


async def redis_client_kill(kind: str, scale: Scale, logs: Path) -> Report:
    """`CLIENT KILL` of every worker connection (normal and pub/sub), three times."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=16)
    try:
        for w in [env.start_worker(), env.start_worker()]:
            await env.wait_ready(w)
        ids: list[str] = []
        prod = asyncio.create_task(_producer(env, scale.restart_tasks, 300, ids))
        r = sync_redis.Redis.from_url(env.redis.url)
        for _ in range(3):
            await asyncio.sleep(0.7)
            f = env.ledger.fault("client-kill", 0)
            for t in ("normal", "pubsub"):
                r.execute_command("CLIENT", "KILL", "TYPE", t, "SKIPME", "yes")
            f.end_ms = ms()
            f.probe_ms = ms() - f.at_ms + await env.probe()
        r.close()
        await prod
        return await _finish(env, "CLIENT KILL of worker connections", ids, 120)
    finally:
        await env.close()


# ---------------------------------------------------------------- 5. out of memory
async def redis_oom(kind: str, scale: Scale, logs: Path) -> Report:
    """maxmemory small under noeviction: producers get BrokerError; finished tasks are
    still acknowledged; flow resumes when memory frees. Also: a Redis whose policy can
    evict gets a warning at worker start."""
    env = Env(
        kind,
        logs,
        redis_args=["--maxmemory-policy", "noeviction"],
        idle_ms=LEASE_MS,
        concurrency=4,
    )
    try:
        w = env.start_worker()
        await env.wait_ready(w)
        r = sync_redis.Redis.from_url(env.redis.url)
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", used + 3 * 1024 * 1024)
        ids: list[str] = []
        refused = 0
        big = "y" * 20000
        t_first = None
        while refused < 20 and len(ids) < 3000:
            try:
                ids += await env.enqueue("work", [(200, big)] * 20, prefix="m", retry=False)
            except BrokerError as exc:
                refused += 1
                t_first = t_first or ms()
                if refused == 1 and "out of memory" not in str(exc):
                    raise
                await asyncio.sleep(0.05)
        rep_notes = [f"{refused} enqueues refused with BrokerError at ~{used // 1024 + 3072} KB"]
        # Flow resumes as the worker drains the queue and memory frees.
        await env.wait_results(ids, 120)
        t_resume = ms()
        more = await env.enqueue("work", [(1,)] * 20, prefix="after", retry=False)
        ids += more
        await env.wait_results(more, 30)
        rep = await _finish(env, "Redis OOM (noeviction)", ids, 60)
        rep.notes += rep_notes
        if t_first:
            rep.recovery_ms.append(t_resume - t_first)
        if refused == 0:
            rep.problems.append("no enqueue was refused: maxmemory never reached")
        r.config_set("maxmemory", 0)
        # Eviction policy warning at start.
        r.config_set("maxmemory-policy", "allkeys-lru")
        w2 = env.start_worker()
        await env.wait_ready(w2)
        warned = "maxmemory-policy" in w2.output()
        rep.extra["eviction_warning"] = warned
        if not warned:
            rep.problems.append("no warning at start for maxmemory-policy allkeys-lru")
        r.close()
        w2.stop()
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 6. killer tasks
async def _killer(kind: str, scale: Scale, logs: Path, task: str, title: str) -> Report:
    env = Env(kind, logs, idle_ms=1500, concurrency=4, prefetch=16, max_deliveries=3)
    try:
        for w in [env.start_worker() for _ in range(3)]:
            await env.wait_ready(w)
        ids = await env.enqueue("work", [(10,)] * (scale.killer_others // 2), prefix="a")
        killer = await env.enqueue(task, [()], prefix="killer")
        ids += await env.enqueue("work", [(10,)] * (scale.killer_others // 2), prefix="b")
        deaths = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for w in list(env.workers):
                if not w.alive() and not getattr(w, "replaced", False):
                    w.replaced = True  # type: ignore[attr-defined]
                    env.ledger.fault("crash", w.pid)
                    deaths += 1
                    env.start_worker()
            if await env.results_done(killer) and await env.results_done(ids) == len(ids):
                break
            await asyncio.sleep(0.05)
        rep = await _finish(env, title, ids + killer, 60, expect_failed=set(killer))
        res = await env.app.job(killer[0]).result()
        if res is None or res.value != "worker lost (delivered 3 times)":
            rep.problems.append(f"killer result: {res}")
        if deaths != 3:
            rep.problems.append(f"{deaths} worker deaths, expected 3 (the cap)")
        rep.notes.append(f"{deaths} worker deaths; cap 3, concurrency 4, prefetch 16")
        return rep
    finally:
        await env.close()


async def killer_exit(kind: str, scale: Scale, logs: Path) -> Report:
    return await _killer(kind, scale, logs, "die", "task calls os._exit every time")


async def killer_segv(kind: str, scale: Scale, logs: Path) -> Report:
    return await _killer(kind, scale, logs, "segfault", "task segfaults every time")


# ---------------------------------------------------------------- 7. garbage
async def garbage(kind: str, scale: Scale, logs: Path) -> Report:
    """Entries with missing or wrong fields, undecodable payloads, unknown task names,
    oversized payloads (refused at enqueue), unencodable and oversized results: each a
    failure result or a dead letter with a reason; the worker never stops."""
    limit = 64 * 1024
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=4, max_payload=limit)
    try:
        w = env.start_worker()
        await env.wait_ready(w)
        r = sync_redis.Redis.from_url(env.redis.url)
        k = env.app.keys
        stream = k.stream("default")
        expect: set[str] = set()
        raw_entries = [
            {"fn": "work", "p": b"\x93"},  # no id
            {"id": "g-nofn", "p": b"\x93"},  # no fn
            {"id": "g-nop", "fn": "work"},  # no p
            {"junk": "1"},
            {"id": "", "fn": "work", "p": b""},
        ]
        for fields in raw_entries:
            r.xadd(stream, fields)  # type: ignore[arg-type]
        now = str(ms())
        odd = {
            "g-undecodable": b"\xc1\xff\x00garbage",
            "g-notlist": b"\xa3abc",
        }
        for tid, payload in odd.items():
            # The job record first, as the enqueue script writes it: a worker may finish
            # the entry the moment it exists, and a record written after that would be
            # left behind.
            r.hset(
                k.job(tid),
                mapping={"fn": "work", "l": "default", "s": "q", "t": 0, "enq": now, "x": 0},
            )
            r.xadd(
                stream,
                {
                    "id": tid,
                    "fn": "work",
                    "p": payload,
                    "t": "x",
                    "enq": now,
                    "x": "soon",
                    "r": "-3",
                },
            )
            env.ledger.enqueued([tid])
            expect.add(tid)
        expect |= set(await env.enqueue("no_such_task", [()], prefix="g-unknown"))
        expect |= set(await env.enqueue("unencodable", [()], prefix="g-unenc"))
        expect |= set(await env.enqueue("big_result", [(limit * 2,)], prefix="g-bigres"))
        oversized = "refused"
        try:
            await env.enqueue("work", [(1, "z" * (limit + 1))], prefix="g-big", retry=False)
            oversized = "accepted"
        except ArdiqError as exc:
            oversized = "refused" if "max_payload_bytes" in str(exc) else f"error {exc}"
        good = await env.enqueue("work", [(5,)] * 100, prefix="ok")
        await env.wait_results(sorted(expect) + good, 60)
        await asyncio.sleep(0.5)
        rep = await _finish(
            env, "garbage entries and payloads", sorted(expect) + good, 60, expect_failed=expect
        )
        if oversized != "refused":
            rep.problems.append(f"oversized payload {oversized} at enqueue")
        rep.notes.append("oversized payload refused at enqueue (ArdiqError, max_payload_bytes)")
        dead_total = sum(rep.dead.values())
        want = len(expect) + len(raw_entries)
        if dead_total != want:
            rep.problems.append(f"{dead_total} dead letters, expected {want}")
        for tid in ("g-undecodable", "g-notlist"):
            res = await env.app.job(tid).result()
            if res is None or "undecodable payload" not in str(res.value):
                rep.problems.append(f"{tid}: {res}")
        r.close()
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 8. SIGTERM
async def sigterm_prefetched(kind: str, scale: Scale, logs: Path) -> Report:
    """SIGTERM a worker holding 2 running and 50 prefetched tasks: the 50 are visible to
    another worker within a second with no attempt counted; the running ones finish."""
    env = Env(kind, logs, idle_ms=30000, concurrency=2, prefetch=52)
    try:
        a = env.start_worker()
        await env.wait_ready(a)
        running = await env.enqueue("work", [(3000,)] * 2, prefix="run")
        queued = await env.enqueue("work", [(10,)] * 50, prefix="q")
        r = sync_redis.Redis.from_url(env.redis.url)
        stream = env.app.keys.stream("default")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if int(r.xinfo_groups(stream)[0]["pending"]) == 52 and env.ledger.starts_by(a.pid) == 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("worker did not hold 52 entries")
        (a_name,) = [c["name"] for c in r.xinfo_consumers(stream, "ardiq") if c["pending"]]
        b = env.start_worker()
        await env.wait_ready(b)
        f = env.ledger.fault("sigterm", a.pid)
        a.signal(signal.SIGTERM)
        t0 = time.monotonic()
        # Visible: no longer pending under a's name, whatever b does with them.
        while time.monotonic() - t0 < 10:
            if _pending_of(r, stream, a_name) <= 2:
                break
            await asyncio.sleep(0.005)
        visible_ms = int((time.monotonic() - t0) * 1000)
        f.probe_ms = visible_ms
        code = a.proc.wait(30)
        rep = await _finish(env, "SIGTERM with 50 prefetched", running + queued, 60)
        rep.recovery_ms = [visible_ms]
        rep.notes.append(f"prefetched tasks visible to another worker after {visible_ms} ms")
        if visible_ms > 1000:
            rep.problems.append(f"prefetched tasks visible only after {visible_ms} ms")
        if code != 0:
            rep.problems.append(f"SIGTERMed worker exited {code}")
        for tid in running:
            ex = env.ledger.executions().get(tid, [])
            if len(ex) != 1 or ex[0].pid != a.pid or ex[0].finish is None:
                rep.problems.append(f"running task {tid} did not finish on the stopped worker")
        for tid in queued:
            res = await env.app.job(tid).result()
            if res is None or res.tries != 1:
                rep.problems.append(f"{tid}: an attempt was counted ({res})")
        r.close()
        return rep
    finally:
        await env.close()


def _pending_of(r: sync_redis.Redis, stream: str, consumer: bytes) -> int:
    for c in r.xinfo_consumers(stream, "ardiq"):
        if c["name"] == consumer:
            return int(c["pending"])
    return 0


# ---------------------------------------------------------------- 9. soak
async def soak(kind: str, scale: Scale, logs: Path) -> Report:
    """A steady rate well below capacity: worker RSS grows < 5% after warm-up; Redis
    memory and key count return to baseline after the drain."""
    ttl = 2000
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=16, result_ttl_ms=ttl)
    try:
        w = env.start_worker()
        await env.wait_ready(w)
        r = sync_redis.Redis.from_url(env.redis.url)
        # Warm up once (scripts loaded, groups made), then take the baseline.
        await env.enqueue("work", [(1,)] * 200, prefix="warm")
        await env.drained(30)
        await asyncio.sleep(ttl / 1000 + 1.5)
        base_keys = int(r.dbsize())
        base_mem = int(r.info("memory")["used_memory"])
        ids: list[str] = []
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        next_sample = 0.0
        while (el := time.monotonic() - t0) < scale.soak_s:
            ids += await env.enqueue("work", [(2, "x" * 200)] * (scale.soak_rate // 10), prefix="s")
            if el >= next_sample:
                samples.append((el, w.rss_kb()))
                next_sample += max(1.0, scale.soak_s / 60)
            await asyncio.sleep(0.1)
        samples.append((time.monotonic() - t0, w.rss_kb()))
        await env.drained(120)
        await asyncio.sleep(ttl / 1000 + 1.5)
        # Expired results are removed lazily or by the active cycle: give it a moment.
        for _ in range(50):
            if int(r.dbsize()) <= base_keys:
                break
            await asyncio.sleep(0.2)
        end_keys = int(r.dbsize())
        end_mem = int(r.info("memory")["used_memory"])
        warm = [s for s in samples if s[0] >= scale.soak_s * 0.2]
        rss0, rss1 = warm[0][1], samples[-1][1]
        growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
        rep = await _finish(
            env, f"soak {scale.soak_s:.0f}s at {scale.soak_rate}/s", ids, 60, wait=False
        )
        rep.extra.update(
            rss_start_kb=rss0,
            rss_end_kb=rss1,
            rss_growth_pct=round(growth, 2),
            redis_keys=(base_keys, end_keys),
            redis_mem=(base_mem, end_mem),
        )
        rep.notes.append(
            f"RSS {rss0}->{rss1} KB ({growth:+.1f}%) after warm-up; Redis keys {base_keys}->"
            f"{end_keys}, used_memory {base_mem // 1024}->{end_mem // 1024} KB"
        )
        if growth >= 5:
            rep.problems.append(f"worker RSS grew {growth:.1f}% after warm-up")
        if end_keys > base_keys:
            rep.problems.append(f"Redis keys {base_keys} -> {end_keys} after the drain")
        if end_mem > base_mem * 1.10 + 256 * 1024:
            rep.problems.append(f"Redis memory {base_mem} -> {end_mem} after the drain")
        r.close()
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 10. random sequences
async def random_sequences(kind: str, scale: Scale, logs: Path) -> Report:
    """Random seeded sequences of enqueues (plain, delayed, unique, custom id, batch),
    aborts, replays, kill -9, workers of every kind started (burst or not), CLIENT KILL
    and Redis restarts (AOF always), checked after every step and settled at the end
    (integration/sequences.py). `kind` is the first worker's; every kind serves."""
    from sequences import run_sequences

    return await run_sequences(kind, scale.sequences, scale.sequence_steps, logs)


# ---------------------------------------------------------------- 11. recycling
def _recycling_worker(env: Env, **ardiq: str) -> Worker:
    """A native worker under its supervisor, with `ARDIQ_<NAME>` options set."""
    w = Worker(
        env.kind, {**env.env, **{f"ARDIQ_{k.upper()}": v for k, v in ardiq.items()}}, env.log_dir
    )
    env.workers.append(w)
    return w


def _pids(env: Env, ids: list[str]) -> Counter[int]:
    """Starts per worker process, over `ids`."""
    ex = env.ledger.executions()
    return Counter(e.pid for tid in ids for e in ex.get(tid, []))


async def recycle_tasks(kind: str, scale: Scale, logs: Path) -> Report:
    """`ardiq run --max-tasks N` over 4 N tasks at concurrency 16: the worker recycles
    four times (each process runs exactly N), its supervisor replaces it at once and
    never exits, and nothing is lost or run twice."""
    n = scale.recycle_every
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=16)
    try:
        w = _recycling_worker(env, max_tasks=str(n))
        await env.wait_ready(w)
        rnd = random.Random(11)
        ids = await env.enqueue("work", [(rnd.randint(1, 10),) for _ in range(4 * n)])
        t0 = time.monotonic()
        await env.wait_results(ids, 300)
        elapsed = time.monotonic() - t0
        # The fourth recycle is under way (its process drains its last tasks): wait for
        # its replacement, or the stop below would only end it.
        deadline = time.monotonic() + 30
        while w.output().count("replacing worker 0") < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        out = w.output()
        per_pid = _pids(env, ids)
        rep = await _finish(env, f"--max-tasks {n} over {4 * n} tasks", ids, 60)
        recycles = out.count(f"reason=recycle (max_tasks={n})")
        replaced = out.count("replacing worker 0")
        rep.extra.update(recycles=recycles, replaced=replaced, per_process=sorted(per_pid.values()))
        rep.notes.append(
            f"{recycles} recycles, {replaced} replacements, tasks per process "
            f"{sorted(per_pid.values())}, {len(ids) / elapsed:.0f} tasks/s"
        )
        if recycles != 4 or replaced != 4:
            rep.problems.append(f"{recycles} recycles and {replaced} replacements, expected 4")
        if sorted(per_pid.values()) != [n] * 4:
            rep.problems.append(f"tasks per process {sorted(per_pid.values())}, expected 4 x {n}")
        if "a worker failed" in out:
            rep.problems.append("the supervisor saw a failure")
        return rep
    finally:
        await env.close()


async def recycle_memory(kind: str, scale: Scale, logs: Path) -> Report:
    """`ardiq run --max-memory 300` while tasks leak 400 MB now and then: each leak
    recycles the worker within about a second, the tasks around it all complete once."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=4)
    try:
        w = _recycling_worker(env, max_memory="300")
        await env.wait_ready(w)
        ids: list[str] = []
        leaks = 3
        for i in range(leaks):
            ids += await env.enqueue("work", [(5,)] * (scale.recycle_every // 2), prefix=f"w{i}-")
            ids += await env.enqueue("hog", [(400,)], prefix=f"hog{i}-")
            # The next leak once this one's worker was replaced: one recycle per leak.
            deadline = time.monotonic() + 60
            while w.output().count("replacing worker 0") <= i and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        ids += await env.enqueue("work", [(5,)] * (scale.recycle_every // 2), prefix="last-")
        await env.wait_results(ids, 120)
        out = w.output()
        per_pid = _pids(env, ids)
        rep = await _finish(env, f"--max-memory 300 with {leaks} leaks of 400 MB", ids, 60)
        recycles = out.count("reason=recycle (max_memory=300MB")
        rep.extra.update(recycles=recycles, processes=len(per_pid))
        rep.notes.append(
            f"{recycles} recycles for {leaks} leaks, {len(per_pid)} processes ran tasks"
        )
        if recycles != leaks:
            rep.problems.append(f"{recycles} memory recycles, expected {leaks}")
        if "a worker failed" in out:
            rep.problems.append("the supervisor saw a failure")
        return rep
    finally:
        await env.close()


# ---------------------------------------------------------------- 11. limits
async def limits(kind: str, scale: Scale, logs: Path) -> Report:
    """Rate limit 20/s (burst 5), a concurrency cap of 2 and a per-key limit over 3
    workers, with a worker SIGKILLed while it holds a capped task (replaced at once):
    nothing lost, starts granted within burst + 20 x T in every window T (Redis's grant
    times), never three capped bodies running, and keyed tasks of other keys unhindered."""
    env = Env(kind, logs, idle_ms=LEASE_MS, concurrency=8)
    try:
        for w in [env.start_worker() for _ in range(3)]:
            await env.wait_ready(w)
        n_rated = 60 if scale.name == "fast" else 400
        n_capped = 30 if scale.name == "fast" else 200
        ids = await env.enqueue("capped", [(300,)] * n_capped, prefix="c")
        ids += await env.enqueue("rated", [(5,)] * n_rated, prefix="r")
        keys = [f"k{i}" for i in range(40)]
        keyed = env.app.ref("keyed", limit_key="key")
        kids = [f"k{i}-{k}" for i, k in enumerate(keys * 3)]
        await env.app.enqueue_many(
            keyed.options(task_id=tid).prepare(key=k, sleep_ms=5)
            for tid, k in zip(kids, keys * 3, strict=True)
        )
        env.ledger.enqueued(kids)
        ids += kids
        await asyncio.sleep(1.0)
        # Kill a worker that holds a capped task right now (look for one for a while).
        victims: list[Any] = []
        deadline = time.monotonic() + 15
        while not victims and time.monotonic() < deadline:
            running = {
                x.pid
                for tid, ex in env.ledger.executions().items()
                if tid.startswith("c")
                for x in ex
                if x.finish is None
            }
            victims = [w for w in env.workers if w.alive() and w.pid in running]
            if not victims:
                await asyncio.sleep(0.05)
        rep_note = "no capped holder found to kill" if not victims else ""
        killed_at: dict[int, int] = {}
        if victims:
            killed_at[victims[0].pid] = ms()
            env.ledger.fault("sigkill", victims[0].pid)
            victims[0].kill()
            env.start_worker()
        rep = await _finish(env, "limits (rate, cap, per key) + SIGKILL", ids, 600)
        if rep_note:
            rep.problems.append(rep_note)
        grants = [float(g) for g in env.ledger.r.lrange("lg:grant", 0, -1)]
        worst = 0.0
        for window in (0, 100, 500, 1000, 5000):
            seen = max_in_window(grants, window)
            bound = 5 + 20 * (window + 1) / 1000
            worst = max(worst, seen / bound)
            if seen > bound:
                rep.problems.append(f"{seen} rated starts granted within {window} ms > {bound}")
        spans = [
            (x.start, x.finish if x.finish is not None else killed_at.get(x.pid, x.start))
            for tid, ex in env.ledger.executions().items()
            if tid.startswith("c")
            for x in ex
        ]
        cap_seen = max_overlap(spans)
        if cap_seen > 2:
            rep.problems.append(f"{cap_seen} capped bodies ran at once (cap 2)")
        by_key: dict[str, list[float]] = {}
        for raw in env.ledger.r.lrange("lg:kgrant", 0, -1):
            key, g = raw.decode().split(" ")
            by_key.setdefault(key, []).append(float(g))
        for key, grants_of in by_key.items():
            grants_of.sort()
            if any(b - a < 999 for a, b in itertools.pairwise(grants_of)):
                rep.problems.append(f"key {key}: two starts granted less than a second apart")
        firsts = [min(v) for v in by_key.values()]
        rep.notes.append(
            f"grants {len(grants)}, worst window at {worst:.0%} of the bound; capped "
            f"overlap max {cap_seen}; first starts of {len(keys)} keys (x3 each) spread over "
            f"{(max(firsts) - min(firsts)) if firsts else 0:.0f} ms; "
            f"{len(killed_at)} holder SIGKILLed"
        )
        return rep
    finally:
        await env.close()


# The binary, `app.run()` on the Rust engine, `app.run()` on the pure-Python loop.
ALL_KINDS = ("native", "inproc", "incode")

# name -> (scenario, kinds it applies to, in `make test`)
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...], bool]] = {
    "sigkill": (sigkill, ALL_KINDS, True),
    "kill_before_ack": (kill_before_ack, ALL_KINDS, True),
    "sigstop": (sigstop, ALL_KINDS, True),
    "gil_hold": (gil_hold, ("native", "inproc"), False),
    "redis_restart_aof": (redis_restart_aof, ALL_KINDS, True),
    "redis_restart_empty": (redis_restart_empty, ALL_KINDS, True),
    "redis_debug_sleep": (redis_debug_sleep, ALL_KINDS, False),
    "redis_client_kill": (redis_client_kill, ALL_KINDS, False),
    "redis_oom": (redis_oom, ALL_KINDS, False),
    "killer_exit": (killer_exit, ALL_KINDS, True),
    "killer_segv": (killer_segv, ALL_KINDS, False),
    "garbage": (garbage, ALL_KINDS, True),
    "sigterm_prefetched": (sigterm_prefetched, ALL_KINDS, True),
    "soak": (soak, ALL_KINDS, False),
    "random_sequences": (random_sequences, ("native",), True),
    # `ardiq run` options: the binary only.
    "recycle_tasks": (recycle_tasks, ("native",), True),
    "recycle_memory": (recycle_memory, ("native",), False),
    "limits": (limits, ALL_KINDS, False),
}
