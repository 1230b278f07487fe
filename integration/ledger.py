"""The LEDGER: what really happened to every task of a fault scenario, and the checks.

Task bodies (integration/apps/faultapp.py) append `S`tart and `F`inish events, with the
worker's pid and a timestamp, to a SEPARATE ledger redis-server, so restarting or
killing the queue's Redis loses none of it. The producer records each id it enqueued
successfully. The scenario records its faults (what, which pid, when). `report()` then
reads the ledger and the queue's Redis and states: enqueued, completed, lost, executed
more than once (and why), overlapping executions, dead letters by reason, recovery
times, and what is left in Redis (pending entries, leftover keys).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis

# Keys a drained queue may keep: streams (empty), results, dead letters, bookkeeping.
ALLOWED = ("stream:", "result:", "dead", "workers", "crons", "history", "stats")
# A parked task left behind is a lost one: `parked` is not allowed to remain.
# Kept with a completed task's result, so they must expire as it does: one without a TTL
# once every task completed is a leak.
# Limit state (PROTOCOL.md, Limits) expires on its own too.
EXPIRING = ("attempts:", "progress:", "limit:")


def ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Fault:
    kind: str  # sigkill, sigstop, redis-restart, ...
    pid: int  # the worker it hit (0: Redis)
    at_ms: int
    end_ms: int = 0  # when it was lifted (SIGCONT, Redis back), 0 = instantaneous
    probe_ms: int | None = None  # for Redis faults: a probe task's round trip after it


@dataclass
class Execution:
    pid: int
    start: int
    finish: int | None = None
    tries: int = 0


@dataclass
class Report:
    scenario: str
    kind: str
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    duplicate_reasons: dict[str, int] = field(default_factory=dict)
    overlaps: int = 0
    expected_overlaps: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    recovery_ms: list[int] = field(default_factory=list)
    pending: int = 0
    leftover_keys: list[str] = field(default_factory=list)
    stream_entries: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def recovery(self) -> str:
        r = sorted(self.recovery_ms)
        if not r:
            return "-"
        p99 = r[min(len(r) - 1, round(0.99 * (len(r) - 1)))]
        return f"{int(statistics.median(r))}/{p99}/{r[-1]}"

    @property
    def ok(self) -> bool:
        return not self.problems


class Ledger:
    """The ledger redis (sync client) plus the faults a scenario injected."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.r = redis.Redis.from_url(url)
        self.faults: list[Fault] = []
        self.r.flushall()

    def enqueued(self, ids: list[str]) -> None:
        if ids:
            self.r.sadd("lg:enq", *ids)

    def fault(self, kind: str, pid: int, at_ms: int | None = None) -> Fault:
        f = Fault(kind, pid, at_ms if at_ms is not None else ms())
        self.faults.append(f)
        return f

    def executions(self) -> dict[str, list[Execution]]:
        """Per task id, its executions in start order (a start and the matching finish
        by the same pid)."""
        out: dict[str, list[Execution]] = defaultdict(list)
        for raw in self.r.lrange("lg:ev", 0, -1):
            kind, tid, pid, ts, tries = raw.decode().split(" ")
            if kind == "S":
                out[tid].append(Execution(int(pid), int(ts), None, int(tries)))
            else:
                for e in reversed(out[tid]):
                    if e.pid == int(pid) and e.finish is None:
                        e.finish = int(ts)
                        break
        return out

    def ledger_faults(self) -> list[Fault]:
        """Faults the tasks injected themselves (kill_before_ack)."""
        out = []
        for raw in self.r.lrange("lg:faults", 0, -1):
            kind, pid, ts = raw.decode().split(" ")
            out.append(Fault(kind, int(pid), int(ts)))
        return out

    def starts_by(self, pid: int, after_ms: int = 0) -> int:
        return sum(
            1 for e in self.executions().values() for x in e if x.pid == pid and x.start >= after_ms
        )

    # ------------------------------------------------------------------ report
    def report(
        self,
        scenario: str,
        kind: str,
        queue_url: str,
        queue: str,
        *,
        expect_failed: set[str] | None = None,
        redis_lost_data: bool = False,
        ignore_ids: set[str] | None = None,
        rerun_ids: set[str] | None = None,
    ) -> Report:
        """Build the report. `expect_failed`: ids whose failure is the point (garbage,
        killers). `redis_lost_data`: the queue's Redis lost everything once, so ids in
        `ignore_ids` (enqueued before that) are not counted as lost. `rerun_ids`: ids that
        run again by design (a replayed dead letter, an id enqueued again after its end)."""
        rep = Report(scenario, kind)
        q = redis.Redis.from_url(queue_url)
        prefix = f"ardiq:{{{queue}}}:"
        enq = {x.decode() for x in self.r.smembers("lg:enq")}
        ignore = ignore_ids or set()
        counted = enq - ignore
        rep.enqueued = len(counted)
        if ignore:
            rep.notes.append(f"{len(ignore)} tasks enqueued before Redis lost its data not counted")
        ids = sorted(counted)
        results: dict[str, list[Any] | None] = {}
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            raw = q.mget([f"{prefix}result:{x}" for x in chunk])
            for tid, blob in zip(chunk, raw, strict=True):
                results[tid] = msgpack.unpackb(blob, raw=True) if blob else None
        execs = self.executions()
        faults = self.faults + self.ledger_faults()
        killed = {f.pid: f for f in faults if f.kind in ("sigkill", "kill_before_ack", "crash")}
        stopped = {f.pid: f for f in faults if f.kind == "sigstop"}
        # Completed / failed / lost.
        expect_failed = expect_failed or set()
        for tid in ids:
            res = results[tid]
            if res is not None and res[1]:
                rep.completed += 1
            elif res is not None:
                rep.failed += 1
                ran_on_dead = [e for e in execs.get(tid, []) if e.pid in killed]
                if tid not in expect_failed and not (
                    res[2].startswith(b"worker lost") and len(ran_on_dead) >= 2
                ):
                    rep.problems.append(f"{tid} failed: {res[2]!r}")
            else:
                ran = [e for e in execs.get(tid, []) if e.finish is not None]
                job = q.exists(f"{prefix}job:{tid}")
                if ran and not job:
                    # The body finished and the task was acknowledged; its result has
                    # expired (short result_ttl_ms) or was never stored: finished.
                    rep.completed += 1
                    rep.extra["results_gone"] = rep.extra.get("results_gone", 0) + 1
                else:
                    rep.lost += 1
        if rep.lost:
            rep.problems.append(f"{rep.lost} tasks lost")
        # Duplicates and overlaps.
        reasons: Counter[str] = Counter()
        for tid, ex in execs.items():
            if tid in ignore or len(ex) < 2:
                continue
            rep.duplicates += 1
            for first, second in itertools.pairwise(ex):
                if tid in (rerun_ids or ()):
                    why = "run again by design (replay, re-enqueue after its end)"
                elif second.pid in stopped and second.start >= stopped[second.pid].end_ms > 0:
                    # Its blocking read was answered while it was stopped; it ran the
                    # entry on waking although another worker had reclaimed it (its ack
                    # then finds nothing: stale, dropped).
                    why = "stalled worker ran a delivery it had lost while stopped"
                elif first.pid in killed:
                    why = (
                        "worker killed after the body, before the ack"
                        if first.finish is not None
                        else "worker killed mid-task"
                    )
                elif first.pid in stopped:
                    why = "worker stalled past its lease (SIGSTOP)"
                elif any(f.pid == 0 for f in faults):
                    why = "Redis fault (lease or ack lost)"
                else:
                    why = "unexplained"
                    rep.extra.setdefault("unexplained", []).append(
                        (tid, [(e.pid, e.start, e.finish, e.tries) for e in ex])
                    )
                reasons[why] += 1
                end = first.finish
                if end is None:
                    end = killed[first.pid].at_ms if first.pid in killed else 2**62
                if second.start < end:
                    if first.pid in stopped or first.pid in killed:
                        rep.expected_overlaps += 1
                    else:
                        rep.overlaps += 1
        rep.duplicate_reasons = dict(reasons)
        if reasons.get("unexplained"):
            rep.problems.append(f"{reasons['unexplained']} unexplained duplicate executions")
        if rep.overlaps:
            rep.problems.append(f"{rep.overlaps} overlapping executions of one task")
        # Dead letters.
        dead: Counter[str] = Counter()
        for tid in q.zrange(f"{prefix}dead", 0, -1):
            err = (q.hget(f"{prefix}dead:{tid.decode()}", "err") or b"?").decode()
            dead[err.split(":")[0][:60]] += 1
            name = tid.decode()
            if name not in expect_failed and name in counted:
                ran_on_dead = [e for e in execs.get(name, []) if e.pid in killed]
                if err.startswith("worker lost") and len(ran_on_dead) >= 2:
                    # It was RUNNING (not merely prefetched) on workers that died, next
                    # to the task that killed them: the protocol cannot tell the two
                    # apart. Reported, not a failure of the prefetch rule.
                    rep.extra["co_running_victims"] = rep.extra.get("co_running_victims", 0) + 1
                    rep.notes.append(
                        f"{name} dead-lettered after running on "
                        f"{len(ran_on_dead)} dying workers (co-running victim)"
                    )
                else:
                    rep.problems.append(f"{name} dead-lettered: {err}")
        rep.dead = dict(dead)
        # Recovery: worker faults by their orphans' completion, Redis faults by probe.
        for f in faults:
            if f.probe_ms is not None:
                rep.recovery_ms.append(f.probe_ms)
                continue
            if f.pid == 0:
                continue
            # Tasks the fault caught: started by the victim before it; recovered when
            # another worker finished them.
            ends = []
            for ex in execs.values():
                hit = [e for e in ex if e.pid == f.pid and e.start <= f.at_ms]
                if not hit:
                    continue
                later = [e.finish for e in ex if e.pid != f.pid and e.finish is not None]
                if later and (hit[-1].finish is None or f.kind in ("kill_before_ack", "sigstop")):
                    ends.append(max(later))
            if ends:
                rep.recovery_ms.append(max(ends) - f.at_ms)
        # What is left in Redis.
        for key in q.scan_iter(match=f"{prefix}*", count=1000):
            name = key.decode()[len(prefix) :]
            if name.startswith("stream:"):
                rep.stream_entries += int(q.xlen(key))
                for g in q.xinfo_groups(key):
                    rep.pending += int(g["pending"])
            elif name.startswith(EXPIRING):
                if q.pttl(key) < 0:
                    rep.leftover_keys.append(name)
            elif not name.startswith(ALLOWED):
                rep.leftover_keys.append(name)
        if rep.pending:
            rep.problems.append(f"{rep.pending} entries still pending")
        if rep.stream_entries:
            rep.problems.append(f"{rep.stream_entries} stream entries left")
        if rep.leftover_keys:
            rep.problems.append(f"leftover keys: {sorted(rep.leftover_keys)[:5]}")
        if redis_lost_data:
            rep.notes.append("Redis restarted without persistence")
        q.close()
        return rep
