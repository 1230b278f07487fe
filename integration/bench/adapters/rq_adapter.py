"""rq: one job at a time per rq worker (each job in a forked work-horse), so 10 concurrent
tasks means rq's `WorkerPool` of 10 workers, started in this process; the driver counts
the whole process tree. Delayed jobs go through rq's scheduler (run by the pool's
workers). Bulk: `Queue.enqueue_many` with `Queue.prepare_data` (one pipeline)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchcommon as bc
from redis import Redis
from rq import Queue
from rq.worker_pool import WorkerPool


def noop() -> None:
    bc.noop_body()


def cpu() -> None:
    bc.cpu_body()


def io() -> None:
    bc.io_body_sync()


def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


class Producer(bc.Producer):
    # Jobs are named by import path (this file runs as __main__ when producing).
    def setup(self) -> None:
        self.queue = Queue("bench", connection=Redis.from_url(bc.REDIS_URL))

    def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return self.queue.enqueue(f"rq_adapter.{kind}", *args)

    def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return self.queue.enqueue_in(timedelta(milliseconds=delay_ms), f"rq_adapter.{kind}", *args)

    def enqueue_bulk(self, kind: str, n: int) -> None:
        for start in range(0, n, self.bulk_chunk):
            self.queue.enqueue_many(
                [
                    Queue.prepare_data(f"rq_adapter.{kind}")
                    for _ in range(min(self.bulk_chunk, n - start))
                ]
            )


def run_worker() -> None:
    pool = WorkerPool(
        ["bench"], connection=Redis.from_url(bc.REDIS_URL), num_workers=bc.CONCURRENCY
    )
    pool.start(logging_level="WARNING")


if __name__ == "__main__":
    bc.main(Producer, run_worker)
