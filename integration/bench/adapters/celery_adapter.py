"""celery with the Redis broker, no result backend (celery's default). Worker: celery's
default pool (prefork) with 10 child processes, started in this process with
`app.worker_main`; the driver counts the whole process tree."""

from __future__ import annotations

from typing import Any

import benchcommon as bc
from celery import Celery

app = Celery("bench", broker=bc.REDIS_URL)
app.conf.task_default_queue = "bench"
app.conf.broker_connection_retry_on_startup = True


@app.task(name="noop")
def noop() -> None:
    bc.noop_body()


@app.task(name="cpu")
def cpu() -> None:
    bc.cpu_body()


@app.task(name="io")
def io() -> None:
    bc.io_body_sync()


@app.task(name="lat")
def lat(t0: int, due: int) -> None:
    bc.lat_body(t0, due)


TASKS = {"noop": noop, "cpu": cpu, "io": io, "lat": lat}


class Producer(bc.Producer):
    bulk = False

    def enqueue(self, kind: str, args: tuple[int, ...]) -> Any:
        return TASKS[kind].apply_async(args)

    def enqueue_delayed(self, kind: str, args: tuple[int, ...], delay_ms: int) -> Any:
        return TASKS[kind].apply_async(args, countdown=delay_ms / 1000)


def run_worker() -> None:
    app.worker_main(
        [
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(bc.CONCURRENCY),
            "--loglevel",
            "WARNING",
        ]
    )


if __name__ == "__main__":
    bc.main(Producer, run_worker)
