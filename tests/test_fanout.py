"""Fan-out: 10,000 concurrent result(), status(), info(), abort() and enqueue() calls from
one process all succeed, over a bounded number of Redis connections.

The connections are counted by the server: the producer's URL names them
(`?client_name=...`, which redis-py passes to every connection it opens), and a thread
polls `CLIENT LIST` on the test's own redis-server throughout. A worker's connections
have no such name and are not counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from ardiq import Ardiq, ArdiqError, BrokerError, Job, Status, TaskInfo
from ardiq.batching import SENDERS
from support.redis_server import RedisServer
from support.workers import WorkerProcess

AppFactory = Callable[..., Ardiq]
N = 10_000
NAME = "ardiq-fanout"
LANES = ["low", "default", "high"]  # tests/apps/basic.py's, for the worker test
BOUND = 32  # the default of `max_connections`, as the README states


@pytest.fixture(scope="module")
def fanout_server() -> Iterator[RedisServer]:
    """This module's own redis-server: nothing else connects to it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(fanout_server: RedisServer) -> str:
    # Workers started by `start_worker` use this server too.
    return fanout_server.url


class Connections:
    """Polls CLIENT LIST in a thread and keeps the most producer connections seen."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url)
        self.peak = 0
        self.samples = 0
        self.before = 0  # open when counting began (an earlier enqueue's, say)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def count(self) -> int:
        return sum(1 for c in self.redis.client_list() if c.get("name") == NAME)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.count())
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> Connections:
        self.before = self.count()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.count())

    def wait_for_none(self) -> None:
        """The server lets go of closed connections at once; allow it a moment."""
        deadline = time.monotonic() + 5
        while self.count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.count() == 0, [c for c in self.redis.client_list() if c.get("name") == NAME]


@pytest.fixture
def connections(redis_url: str) -> Iterator[Callable[[], Connections]]:
    made: list[Connections] = []

    def make() -> Connections:
        made.append(Connections(redis_url))
        return made[-1]

    yield make
    for c in made:
        c.redis.close()


@pytest.fixture
def producer(make_app: AppFactory, redis_url: str) -> Callable[..., Ardiq]:
    """An app whose connections carry the name the counter looks for."""

    def make(**settings: object) -> Ardiq:
        return make_app(redis_url=f"{redis_url}?client_name={NAME}", priorities=LANES, **settings)

    return make


async def enqueue_noops(app: Ardiq, n: int = N) -> list[Job[None]]:
    return await app.enqueue_many([app.ref("noop").prepare() for _ in range(n)])


def assert_bound(conn: Connections, bound: int) -> None:
    assert conn.samples > 0
    assert 1 <= conn.peak <= bound, f"{conn.peak} producer connections, bound {bound}"


async def test_concurrent_enqueues(
    producer: Callable[..., Ardiq], connections: Callable[[], Connections]
) -> None:
    app = producer()
    noop = app.ref("noop")
    with connections() as conn:
        jobs = await asyncio.gather(*(noop.enqueue() for _ in range(N)))
    assert len({j.id for j in jobs}) == N
    assert await app.queue_size() == N
    assert_bound(conn, BOUND)
    await app.aclose()
    conn.wait_for_none()


async def test_concurrent_status_and_info(
    producer: Callable[..., Ardiq], connections: Callable[[], Connections]
) -> None:
    app = producer()
    jobs = await enqueue_noops(app)
    with connections() as conn:
        statuses = await asyncio.gather(*(j.status() for j in jobs))
        infos = await asyncio.gather(*(j.info() for j in jobs))
    assert set(statuses) == {Status.QUEUED}
    assert all(isinstance(i, TaskInfo) and i.fn_name == "noop" for i in infos)
    # Far below the bound: the calls shared pipelines, SENDERS at a time (the enqueue's
    # connection stays open besides).
    assert_bound(conn, BOUND)
    assert conn.peak - conn.before <= SENDERS
    await app.aclose()
    conn.wait_for_none()


async def test_concurrent_aborts_with_a_small_pool(
    producer: Callable[..., Ardiq], connections: Callable[[], Connections]
) -> None:
    # The smallest pool allowed still serves the whole fan-out: callers wait their turn.
    app = producer(max_connections=6)
    jobs = await enqueue_noops(app)
    with connections() as conn:
        aborted = await asyncio.gather(*(j.abort() for j in jobs))
        # Aborted tasks have a result at once; without a timeout result() reads it.
        results = await asyncio.gather(*(j.result() for j in jobs))
    assert all(aborted)
    assert all(r is not None and r.aborted for r in results)
    assert_bound(conn, 6)
    await app.aclose()
    conn.wait_for_none()


async def test_concurrent_results_of_finished_tasks(
    producer: Callable[..., Ardiq],
    connections: Callable[[], Connections],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    app = producer()
    jobs = await enqueue_noops(app)
    with connections() as conn:
        # Every waiter registers before the worker starts, so most are woken through the
        # subscription, the rest find their result on their first check.
        waiting = asyncio.gather(*(j.result(timeout=60) for j in jobs))
        await asyncio.sleep(0.2)
        worker = start_worker("apps.basic:app", env={"ARDIQ_TEST_CONCURRENCY": "64"})
        results = await waiting
    assert all(r is not None and r.success for r in results)
    assert_bound(conn, BOUND)
    worker.stop()
    await app.aclose()
    conn.wait_for_none()


def test_blocking_twins_from_many_threads(
    producer: Callable[..., Ardiq], connections: Callable[[], Connections]
) -> None:
    app = producer()
    n = N // 5  # five calls per task: 10,000 blocking calls from 64 threads
    with connections() as conn, ThreadPoolExecutor(64) as pool:
        jobs = list(pool.map(lambda _: app.send_sync("noop"), range(n)))
        ids = [j.id for j in jobs]
        statuses = list(pool.map(app.status_sync, ids))
        infos = list(pool.map(app.info_sync, ids))
        aborted = list(pool.map(app.abort_sync, ids))
        results = list(pool.map(lambda i: app.result_sync(i, timeout=30), ids))
    assert len(set(ids)) == n
    assert set(statuses) == {Status.QUEUED}
    assert all(isinstance(i, TaskInfo) for i in infos)
    assert all(aborted)
    assert all(r is not None and r.aborted for r in results)
    assert_bound(conn, BOUND)
    app.close_sync()
    conn.wait_for_none()


def test_threads_making_their_first_blocking_call_at_once_share_one_loop(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, queue: str
) -> None:
    from ardiq import syncrunner

    made: list[object] = []
    real_init = syncrunner.SyncRunner.__init__

    def slow_init(self: syncrunner.SyncRunner, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        time.sleep(0.05)  # widens the window in which a second thread could make another
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(syncrunner.SyncRunner, "__init__", slow_init)
    app = Ardiq(redis_url, queue_name=queue)
    barrier = threading.Barrier(16)

    def first_call(_: int) -> Status:
        barrier.wait()
        return app.status_sync("nothing")

    try:
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(first_call, range(16))) == {Status.NOT_FOUND}
        assert len(made) == 1
    finally:
        app.close_sync()


async def test_a_call_that_fails_in_a_shared_pipeline_fails_alone(
    producer: Callable[..., Ardiq], redis_url: str
) -> None:
    app = producer()
    jobs = await enqueue_noops(app, 2000)
    bad = jobs[1000].id
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        await r.delete(app.keys.job(bad))
        await r.set(app.keys.job(bad), "not a hash")  # the abort script's HGET fails on it
        outcomes = await asyncio.gather(*(j.abort() for j in jobs), return_exceptions=True)
    finally:
        await r.delete(app.keys.job(bad))
        await r.aclose()
    failed = [i for i, x in enumerate(outcomes) if isinstance(x, BaseException)]
    assert failed == [1000]
    assert isinstance(outcomes[1000], ArdiqError)
    assert "WRONGTYPE" in str(outcomes[1000])
    assert all(x is True for i, x in enumerate(outcomes) if i != 1000)


async def test_calls_queued_when_redis_loses_its_scripts_still_run(
    producer: Callable[..., Ardiq], redis_url: str
) -> None:
    app = producer()
    jobs = await enqueue_noops(app, 200)
    batch = app._client().broker.batch
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        before = await r.info("errorstats")
        # Both senders busy for a moment, so the status calls queue for one pipeline;
        # the script cache is flushed before that pipeline goes.
        key = f"{app.queue_name}:nothing"
        busy = [asyncio.ensure_future(batch.command("BLPOP", key, 0.3)) for _ in range(SENDERS)]
        await asyncio.sleep(0.05)
        statuses = asyncio.gather(*(j.status() for j in jobs))
        await asyncio.sleep(0.05)
        await r.script_flush()
        assert await asyncio.gather(*busy) == [None] * SENDERS
        assert set(await statuses) == {Status.QUEUED}
        after = await r.info("errorstats")
    finally:
        await r.aclose()
    assert noscript_errors(after) > noscript_errors(before)


def noscript_errors(errorstats: dict[str, Any]) -> int:
    """NOSCRIPT replies so far (redis-py 5 leaves `count=N` a string, later ones parse it)."""
    stat = errorstats.get("errorstat_NOSCRIPT", "count=0")
    return int(stat["count"] if isinstance(stat, dict) else stat.split("=")[1])


async def test_many_waiters_recheck_together_after_the_subscription_drops(
    producer: Callable[..., Ardiq],
    connections: Callable[[], Connections],
    make_app: AppFactory,
) -> None:
    app = producer()
    other = make_app(priorities=LANES)  # finishes the tasks (by aborting them)
    jobs = await enqueue_noops(app, 2000)
    r = redis.asyncio.Redis.from_url(app.redis_url.split("?")[0])
    try:
        with connections() as conn:
            waiting = asyncio.gather(*(j.result(timeout=30) for j in jobs))
            await asyncio.sleep(0.5)
            # Every waiter is woken to re-check while the subscription is made again.
            assert await r.client_kill_filter(_type="pubsub", skipme=True) == 1
            await asyncio.sleep(0.2)
            assert all(await asyncio.gather(*(other.abort(j.id) for j in jobs)))
            results = await waiting
    finally:
        await r.aclose()
    assert all(r is not None and r.aborted for r in results)
    # The subscription's connection and SENDERS for the checks (the enqueue's besides).
    assert_bound(conn, BOUND)
    assert conn.peak - conn.before <= SENDERS + 1


async def test_closing_the_app_during_a_fan_out_ends_every_call(
    producer: Callable[..., Ardiq], connections: Callable[[], Connections]
) -> None:
    app = producer()
    jobs = await enqueue_noops(app, 5000)
    with connections() as conn:
        calls = asyncio.gather(*(j.status() for j in jobs), return_exceptions=True)
        await asyncio.sleep(0.05)
        await app.aclose()
        outcomes = await asyncio.wait_for(calls, 30)
    assert all(x == Status.QUEUED or isinstance(x, BrokerError) for x in outcomes)
    conn.wait_for_none()
    # The app opens new connections on next use.
    assert await jobs[0].status() == Status.QUEUED


def test_max_connections_setting() -> None:
    assert Ardiq().max_connections == BOUND
    assert Ardiq(max_connections=100).max_connections == 100
    with pytest.raises(ValueError, match="at least 6"):
        Ardiq(max_connections=5)
    with pytest.raises(TypeError):
        Ardiq(max_connections="10")
