"""What every adapter shares: the task bodies, the completion report and the producer loop.

Standard library only: this module is imported inside every queue's own virtual
environment. An adapter module defines its queue's app and tasks (whose bodies call the
functions below) and a `Producer`; `main(...)` gives it the common command line:

    python <queue>_adapter.py producer   # JSON lines on stdin, one reply per line
    python <queue>_adapter.py worker     # run one worker until SIGTERM

How the driver learns that a task ran: every body sends one datagram to the driver's
Unix socket (`BENCH_SOCK`) carrying the wall-clock time the body started. That costs no
Redis command and is the same few microseconds for every queue, so completion is counted
identically everywhere and the Redis figures are the queue's own. (A datagram socket on
Linux never drops: a sender blocks while the driver's queue is full.)
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
SOCK_PATH = os.environ.get("BENCH_SOCK", "")
INFLIGHT_ASYNC = 100  # enqueue calls in flight at once, asyncio producers
INFLIGHT_THREADS = 16  # the same for producers whose client is synchronous (threads)
# In-flight mode: that many lanes, each awaiting one enqueue after another.

CPU_DATA = b"\x5a" * 1024
CPU_ROUNDS = 1000
IO_SLEEP_S = 0.1

_sock: socket.socket | None = None
_sock_pid = 0


def report(payload: bytes) -> None:
    """Tell the driver a body ran (one datagram; reconnects after a fork)."""
    global _sock, _sock_pid
    if _sock is None or _sock_pid != os.getpid():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(SOCK_PATH)
        _sock, _sock_pid = s, os.getpid()
    _sock.send(payload)


# ------------------------------------------------------------------------ task bodies
# Each queue's tasks call exactly these; async queues await the async variants.


def noop_body() -> None:
    report(b"%d" % time.time_ns())


def cpu_body() -> None:
    start = time.time_ns()
    data = CPU_DATA
    for _ in range(CPU_ROUNDS):
        hashlib.sha256(data).digest()
    report(b"%d" % start)


def io_body_sync() -> None:
    start = time.time_ns()
    time.sleep(IO_SLEEP_S)
    report(b"%d" % start)


async def io_body() -> None:
    start = time.time_ns()
    await asyncio.sleep(IO_SLEEP_S)
    report(b"%d" % start)


def lat_body(t0: int, due: int) -> None:
    """Latency probe: started now; enqueued at t0; due at `due` (0: at once)."""
    report(b"%d %d %d" % (time.time_ns(), t0, due))


# ------------------------------------------------------------------------ producers
class Producer:
    """Subclass per queue. Methods may be sync or async (`async def`); a sync producer's
    "in flight" mode runs its calls on threads, an async one's on asyncio tasks.

    - `setup()`: connect (not timed);
    - `enqueue(kind, args)`: one awaited enqueue of task `kind` with positional `args`;
    - `enqueue_delayed(kind, args, delay_ms)`: the same, due `delay_ms` from now
      (leave unimplemented where the queue cannot, and set `delayed = False`);
    - `enqueue_bulk(kind, n)`: stage n argument-less tasks through the bulk API
      (leave unimplemented and set `bulk = False` where there is none);
    - `close()`.
    """

    bulk = True
    delayed = True
    bulk_chunk = 1000  # tasks per bulk call

    def setup(self) -> Any:
        return None

    def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        raise NotImplementedError

    def enqueue_bulk(self, kind: str, n: int) -> Any:
        raise NotImplementedError

    def close(self) -> Any:
        return None


class _Runner:
    """Runs a producer's methods whether they are coroutines or plain calls."""

    def __init__(self, producer: Producer) -> None:
        self.p = producer
        self.loop = asyncio.new_event_loop()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        out = fn(*args)
        if inspect.isawaitable(out):
            out = self.loop.run_until_complete(out)
        return out

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.p.enqueue)

    def stage(self, kind: str, n: int, mode: str, budget_s: float) -> tuple[int, float]:
        """Enqueue up to n tasks in one mode, stopping once `budget_s` has passed;
        returns (tasks enqueued, seconds)."""
        p = self.p
        t = time.perf_counter()
        deadline = t + budget_s
        if mode == "bulk":  # chunk by chunk
            done = 0
            while done < n and time.perf_counter() < deadline:
                chunk = min(p.bulk_chunk, n - done)
                self.call(p.enqueue_bulk, kind, chunk)
                done += chunk
            return done, time.perf_counter() - t
        lanes = 1 if mode == "single" else INFLIGHT_ASYNC if self.is_async() else INFLIGHT_THREADS
        left = [n]  # tasks not yet claimed by a lane

        def claim() -> bool:
            if left[0] <= 0 or time.perf_counter() >= deadline:
                return False
            left[0] -= 1
            return True

        if self.is_async():

            async def lane() -> None:
                while claim():
                    await p.enqueue(kind, ())

            async def all_lanes() -> None:
                await asyncio.gather(*(lane() for _ in range(lanes)))

            self.loop.run_until_complete(all_lanes())
        else:
            lock = threading.Lock()

            def thread_lane() -> None:
                while True:
                    with lock:
                        if not claim():
                            return
                    p.enqueue(kind, ())

            threads = [threading.Thread(target=thread_lane) for _ in range(lanes)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        return n - left[0], time.perf_counter() - t


def serve_producer(producer: Producer) -> None:
    """Answer the driver's requests, one JSON object per line each way."""
    run = _Runner(producer)
    run.call(producer.setup)
    out = sys.stdout
    out.write(
        json.dumps({"ready": True, "bulk": producer.bulk, "delayed": producer.delayed}) + "\n"
    )
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "stage":
                mode = req["mode"]
                if mode == "bulk" and not producer.bulk:
                    reply: dict[str, Any] = {"unsupported": True}
                else:
                    count, secs = run.stage(req["kind"], req["n"], mode, req.get("budget_s", 1e9))
                    reply = {"count": count, "seconds": secs}
            elif op == "probe":  # one latency probe: t0 taken right before the call
                delay_ms = req.get("delay_ms", 0)
                t0 = time.time_ns()
                if delay_ms:
                    run.call(
                        producer.enqueue_delayed, "lat", (t0, t0 + delay_ms * 1_000_000), delay_ms
                    )
                else:
                    run.call(producer.enqueue, "lat", (t0, 0))
                reply = {"t0": t0}
            elif op == "quit":
                break
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as exc:  # report, keep serving
            reply = {"error": repr(exc)}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    run.call(producer.close)


def main(producer_factory: Callable[[], Producer], run_worker: Callable[[], None]) -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "producer":
        serve_producer(producer_factory())
    elif cmd == "worker":
        run_worker()
    else:
        sys.exit(f"usage: {sys.argv[0]} producer|worker")


def bare_loop(n: int) -> float:
    """The cpu body in a plain loop: tasks per second, the ceiling for the cpu scenario."""
    t = time.perf_counter()
    for _ in range(n):
        cpu_body()
    return n / (time.perf_counter() - t)


if __name__ == "__main__":  # `python benchcommon.py bare N`
    if len(sys.argv) == 3 and sys.argv[1] == "bare":
        print(json.dumps({"rate": bare_loop(int(sys.argv[2]))}))
    else:
        sys.exit("usage: benchcommon.py bare N")
