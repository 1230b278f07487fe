"""Blocking twins (API §3): every enqueue/result/status call works from plain code."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from ardiq import Ardiq, BrokerError, Job, Status, TaskInfo, TaskResult
from support.redis_server import RedisServer


def make(redis_url: str, queue: str, **settings: object) -> Ardiq:
    return Ardiq(redis_url, queue_name=queue, poll_block_ms=50, **settings)


def drain_in_thread(app: Ardiq) -> None:
    """Run a burst worker on its own event loop in another thread, and wait for it."""
    errors: list[BaseException] = []

    def run() -> None:
        async def go() -> None:
            app.burst = True
            try:
                await app.run()
            finally:
                await app.aclose()

        try:
            asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors


class BackgroundWorker:
    """A worker running on its own loop in a thread until stopped."""

    def __init__(self, app: Ardiq) -> None:
        self.app = app
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        async def go() -> None:
            try:
                await self.app.run()
            finally:
                await self.app.aclose()

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        deadline = time.monotonic() + 10
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.app.stop()
            self.thread.join(0.1)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def apps(redis_url: str, queue: str) -> Iterator[tuple[Ardiq, Ardiq]]:
    producer = make(redis_url, queue, priorities=["low", "high"])
    worker = make(redis_url, queue, priorities=["low", "high"])
    yield producer, worker
    producer.close_sync()
    worker.close_sync()


def test_task_enqueue_sync_and_result_sync(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, worker = apps

    @producer.task
    def add(a: int, b: int) -> int:
        return a + b

    worker.task(add.fn)  # type: ignore[arg-type]
    job = add.enqueue_sync(2, 3)
    assert isinstance(job, Job)
    assert job.status_sync() == Status.QUEUED
    assert producer.status_sync(job.id) == Status.QUEUED
    info = job.info_sync()
    assert isinstance(info, TaskInfo) and info.args == (2, 3)
    assert producer.info_sync(job.id) == info
    assert job.result_sync() is None
    assert producer.result_sync(job.id) is None
    assert producer.queue_size_sync() == 1
    drain_in_thread(worker)
    result = job.result_sync(timeout=5)
    assert isinstance(result, TaskResult) and result.value == 5
    assert producer.result_sync(job.id, timeout=1) == result
    assert job.status_sync() == Status.COMPLETE
    assert job.info_sync() is None
    assert producer.queue_size_sync() == 0


def test_enqueue_sync_binds_arguments(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, _ = apps

    @producer.task
    def one(a: int) -> int:
        return a

    with pytest.raises(TypeError):
        one.enqueue_sync()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        one.options(priority="low").enqueue_sync(1, 2)  # type: ignore[call-arg]
    assert producer.queue_size_sync() == 0


def test_options_enqueue_sync(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, _ = apps
    job = producer.ref("t").options(task_id="opt-1", delay_ms=60_000).enqueue_sync(1)
    assert job.id == "opt-1"
    assert job.status_sync() == Status.SCHEDULED
    info = job.info_sync()
    assert info is not None and info.scheduled_at is not None


def test_send_sync_and_enqueue_many_sync(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, worker = apps

    @worker.task
    def square(x: int) -> int:
        return x * x

    job = producer.send_sync("square", 7)
    t = producer.ref("square")
    jobs = producer.enqueue_many_sync(t.prepare(i) for i in range(5))
    assert len(jobs) == 5
    assert producer.enqueue_many_sync([]) == []
    assert producer.queue_size_sync() == 6
    drain_in_thread(worker)
    assert job.result_sync(timeout=5).value == 49  # type: ignore[union-attr]
    assert [j.result_sync(timeout=5).value for j in jobs] == [0, 1, 4, 9, 16]  # type: ignore[union-attr]


def test_result_sync_waits_for_a_running_worker(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, worker = apps

    @worker.task
    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "late"

    job = producer.send_sync("slow")
    background = BackgroundWorker(worker)
    try:
        started = time.monotonic()
        result = job.result_sync(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        background.stop()
    assert result is not None and result.value == "late"


def test_result_sync_timeout(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, _ = apps
    job = producer.send_sync("nobody_runs_this")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        job.result_sync(timeout=0.3)
    with pytest.raises(TimeoutError):
        producer.result_sync(job.id, timeout=0.1)
    assert time.monotonic() - started < 3


def test_abort_sync(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, _ = apps
    t = producer.ref("t")
    a = t.options(delay_ms=60_000).enqueue_sync()
    b = t.enqueue_sync()
    assert a.abort_sync() is True
    assert producer.abort_sync(b.id) is True
    assert a.abort_sync() is False
    assert producer.abort_sync("unknown") is False
    assert a.result_sync().aborted  # type: ignore[union-attr]
    assert b.status_sync() == Status.COMPLETE
    assert producer.queue_size_sync() == 0


def test_dead_letter_twins(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, worker = apps
    runs: list[int] = []

    @worker.task(max_retries=0)
    def fragile(n: int) -> int:
        runs.append(n)
        if len(runs) == 1:
            raise ValueError("first time")
        return n

    job = producer.send_sync("fragile", 3)
    other = producer.send_sync("fragile", 4)
    drain_in_thread(worker)
    assert producer.dead_count_sync() == 1
    (letter,) = producer.dead_letters_sync()
    assert producer.dead_letters_sync(limit=0) == []
    failed = job if letter.task_id == job.id else other
    assert letter.task_id == failed.id
    replayed = producer.replay_sync(failed.id)
    assert replayed == failed
    assert producer.replay_sync("unknown") is None
    assert producer.dead_count_sync() == 0
    drain_in_thread(worker)
    assert failed.result_sync(timeout=5).success  # type: ignore[union-attr]

    @worker.task(max_retries=0)
    def doomed() -> None:
        raise ValueError("no")

    gone = producer.send_sync("doomed")
    drain_in_thread(worker)
    assert producer.dead_count_sync() == 1
    assert producer.delete_dead_sync(gone.id) is True
    assert producer.delete_dead_sync(gone.id) is False
    assert producer.dead_count_sync() == 0


def test_twins_from_many_threads_share_the_app(apps: tuple[Ardiq, Ardiq]) -> None:
    producer, _ = apps
    t = producer.ref("t")
    ids: list[str] = []
    lock = threading.Lock()

    def enqueue() -> None:
        for _ in range(10):
            job = t.enqueue_sync()
            with lock:
                ids.append(job.id)

    threads = [threading.Thread(target=enqueue) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(set(ids)) == 40
    assert producer.queue_size_sync() == 40


def test_twins_raise_broker_error_when_unreachable() -> None:
    app = Ardiq("redis://127.0.0.1:1", queue_name="nowhere")
    with pytest.raises(BrokerError):
        app.ref("t").enqueue_sync()
    with pytest.raises(BrokerError):
        app.status_sync("x")
    with pytest.raises(BrokerError):
        app.job("x").result_sync(timeout=0.5)


async def test_twin_inside_the_running_loop_is_not_a_deadlock(
    own_redis: Callable[..., RedisServer], queue: str
) -> None:
    # Called from async code, a blocking twin must still answer (on its private loop).
    server = own_redis()
    app = make(server.url, queue)
    job = await asyncio.to_thread(app.ref("t").enqueue_sync)
    assert app.status_sync(job.id) == Status.QUEUED
    await app.aclose()


def test_close_sync_closes_and_reopens(redis_url: str, queue: str) -> None:
    app = make(redis_url, queue)
    job = app.ref("t").enqueue_sync()
    # This app's thread only: an earlier test's app may keep its own until collected.
    sync_threads = {t for t in threading.enumerate() if t.name == f"ardiq-sync-{queue}"}
    assert sync_threads
    app.close_sync()
    time.sleep(0.05)
    assert not any(t.is_alive() for t in sync_threads)
    # Usable again afterwards.
    assert job.status_sync() == Status.QUEUED
    app.close_sync()
    app.close_sync()  # twice is fine
    alive = [t for t in threading.enumerate() if t.name == f"ardiq-sync-{queue}"]
    assert alive == []


def test_close_sync_ends_a_call_in_flight(redis_url: str, queue: str) -> None:
    app = make(redis_url, queue)
    job = app.ref("t").enqueue_sync()
    outcome: list[BaseException | object] = []

    def wait() -> None:
        try:
            outcome.append(job.result_sync(timeout=30))
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()
    app.close_sync()
    waiter.join(10)
    assert not waiter.is_alive(), "a blocking call hung after close_sync()"
    (result,) = outcome
    assert isinstance(result, BaseException)
