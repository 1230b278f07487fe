"""dramatiq with its Redis broker and default middleware (no results). Worker: dramatiq's
`Worker` in this process, 10 worker threads (the CLI would add a supervisor process)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import benchcommon as bc
import dramatiq
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=bc.REDIS_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def noop() -> None:
    bc.noop_body()


@dramatiq.actor(queue_name="bench")
def cpu() -> None:
    bc.cpu_body()


@dramatiq.actor(queue_name="bench")
def io() -> None:
    bc.io_body_sync()


@dramatiq.actor(queue_name="bench")
def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


ACTORS = {"noop": noop, "cpu": cpu, "io": io, "lat": lat}


class Producer(bc.Producer):
    bulk = False

    def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return ACTORS[kind].send(*args)

    def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return ACTORS[kind].send_with_options(args=args, delay=delay_ms)


def run_worker() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(broker, worker_threads=bc.CONCURRENCY)
    worker.start()
    stop.wait()
    worker.stop()


if __name__ == "__main__":
    bc.main(Producer, run_worker)
