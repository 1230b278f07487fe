"""Results (API §4): None before the finish, waiting woken by Redis through one shared
subscription, timeouts, the TaskResult fields and result retention."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis
from ardiq import Ardiq, BrokerError, Job, Retry, TaskResult
from support.redis_server import RedisServer

AppFactory = Callable[..., Ardiq]


async def drain(app: Ardiq) -> None:
    app.burst = True
    await asyncio.wait_for(app.run(), 30)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Monitor:
    """MONITOR on a raw socket, in a thread: which client port sent which command."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.local_port = self.sock.getsockname()[1]
        self.records: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()
        self.ok = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ok.wait(5)

    def _run(self) -> None:
        buf = b""
        pattern = re.compile(rb'^\+\d+\.\d+ \[\d+ [^\]]*:(\d+)\] "([^"]+)"')
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                if line == b"+OK":
                    self.ok.set()
                    continue
                m = pattern.match(line)
                if m:
                    with self.lock:
                        self.records.append(
                            (time.monotonic(), int(m.group(1)), m.group(2).decode().lower())
                        )

    def calls(self, ports: set[int], since: float, until: float) -> list[str]:
        with self.lock:
            return [c for t, p, c in self.records if p in ports and since <= t <= until]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def private_redis(own_redis: Callable[..., RedisServer]) -> RedisServer:
    return own_redis()


@pytest.fixture
def admin(private_redis: RedisServer) -> Iterator[aioredis.Redis]:
    yield aioredis.Redis.from_url(private_redis.url)


async def client_list(admin: aioredis.Redis) -> list[dict[str, str]]:
    raw = await admin.execute_command("CLIENT", "LIST")
    text = raw.decode() if isinstance(raw, bytes) else raw
    out = []
    for line in text.strip().splitlines():
        out.append(dict(field.split("=", 1) for field in line.split(" ") if "=" in field))
    return out


# ------------------------------------------------------------------ basics
async def test_result_is_none_before_the_finish(make_app: AppFactory) -> None:
    app = make_app()
    job = await app.ref("t").enqueue()
    assert await job.result() is None
    assert await app.result(job.id) is None
    assert await app.job("never-enqueued").result() is None


async def test_result_with_timeout_waits_and_returns(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app(poll_block_ms=50)

    @worker.task
    async def slow(x: int) -> int:
        await asyncio.sleep(0.3)
        return x * 2

    job = await producer.send("slow", 21)
    runner = asyncio.create_task(worker.run())
    try:
        started = time.monotonic()
        result = await job.result(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)
    assert isinstance(result, TaskResult)
    assert result.success and result.value == 42


async def test_result_waits_for_a_task_enqueued_later(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    async def t() -> str:
        return "late"

    waiter = asyncio.create_task(app.job("late-id").result(timeout=10))
    await asyncio.sleep(0.2)
    await t.options(task_id="late-id").enqueue()
    await drain(app)
    result = await waiter
    assert result is not None and result.value == "late"


async def test_result_returns_at_once_when_finished(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    async def t() -> int:
        return 1

    job = await t.enqueue()
    await drain(app)
    started = time.monotonic()
    result = await job.result(timeout=5)
    assert result is not None and result.value == 1
    assert time.monotonic() - started < 0.5


async def test_timeout_error_when_nothing_arrives(make_app: AppFactory) -> None:
    app = make_app()
    job = await app.ref("t").enqueue()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await job.result(timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2
    with pytest.raises(TimeoutError):
        await app.job("nobody").result(timeout=0.2)
    with pytest.raises(TimeoutError):
        await job.result(timeout=0)


# ------------------------------------------------------ one shared subscription
async def test_many_waiters_share_one_subscription(
    private_redis: RedisServer, admin: aioredis.Redis, queue: str
) -> None:
    producer = Ardiq(private_redis.url, queue_name=queue)
    worker = Ardiq(private_redis.url, queue_name=queue, poll_block_ms=50, concurrency=20)

    @worker.task
    async def t(n: int) -> int:
        return n

    try:
        jobs = await producer.enqueue_many([producer.ref("t").prepare(i) for i in range(20)])
        waiters = [asyncio.create_task(j.result(timeout=20)) for j in jobs]
        waiters.append(asyncio.create_task(jobs[0].result(timeout=20)))  # twice the same id
        await asyncio.sleep(0.5)
        assert not any(w.done() for w in waiters)
        clients = await client_list(admin)
        subscribed = [c for c in clients if c.get("sub", "0") != "0" or c["cmd"] == "subscribe"]
        assert len(subscribed) == 1, clients
        await drain(worker)
        results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert [r.value for r in results] == [*range(20), 0]  # type: ignore[union-attr]
        # A second round reuses the subscription.
        more = await producer.enqueue_many([producer.ref("t").prepare(i) for i in range(5)])
        waiters = [asyncio.create_task(j.result(timeout=20)) for j in more]
        await asyncio.sleep(0.3)
        clients = await client_list(admin)
        producer_subs = [c for c in clients if c.get("sub", "0") != "0"]
        assert len(producer_subs) == 1, clients
        await drain(worker)
        assert [r.value for r in await asyncio.gather(*waiters)] == list(range(5))  # type: ignore[union-attr]
    finally:
        await producer.aclose()
        await worker.aclose()
        await admin.aclose()


async def test_waiter_is_woken_by_redis_not_by_polling(
    private_redis: RedisServer, admin: aioredis.Redis, queue: str
) -> None:
    producer = Ardiq(private_redis.url, queue_name=queue)
    worker = Ardiq(private_redis.url, queue_name=queue, poll_block_ms=50)

    @worker.task
    async def slow() -> str:
        await asyncio.sleep(1.5)
        return "done"

    monitor = Monitor(private_redis.port)
    runner: asyncio.Task[None] | None = None
    try:
        job: Job[str] = await producer.send("slow")
        # Open the producer's subscription, then note its connections.
        with pytest.raises(TimeoutError):
            await job.result(timeout=0.01)
        admin_id = await admin.client_id()
        producer_ports = {
            int(c["addr"].rsplit(":", 1)[1])
            for c in await client_list(admin)
            if c["id"] != str(admin_id) and int(c["addr"].rsplit(":", 1)[1]) != monitor.local_port
        }
        assert producer_ports
        runner = asyncio.create_task(worker.run())
        begin = time.monotonic()
        result = await job.result(timeout=5)
        returned_ms = now_ms()
        end = time.monotonic()
        assert result is not None and result.value == "done"
        assert 1.2 <= end - begin < 4
        # Woken within ~100 ms of the finish (the finish time is Redis's clock, same host).
        assert returned_ms - result.finish < 150, (returned_ms, result.finish)
        await asyncio.sleep(0.2)  # let MONITOR catch up
        scripts = [c for c in monitor.calls(producer_ports, begin, end) if c in ("evalsha", "eval")]
        # One call to register, one to read the result: not one per few milliseconds.
        assert 1 <= len(scripts) <= 3, scripts
        everything = monitor.calls(producer_ports, begin, end)
        assert len(everything) <= 6, everything
    finally:
        if runner is not None:
            worker.stop()
            await asyncio.wait_for(runner, 10)
        monitor.close()
        await producer.aclose()
        await worker.aclose()
        await admin.aclose()


# --------------------------------------------------------------- the fields
async def test_task_result_fields_on_success(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task(max_retries=3)
    async def flaky(n: int) -> dict[str, int]:
        from ardiq import current_task

        ctx = current_task()
        assert ctx is not None
        if ctx.tries < 2:
            raise Retry("again", delay_ms=0)
        await asyncio.sleep(0.05)
        return {"n": n, "tries": ctx.tries}

    before = now_ms()
    job = await flaky.enqueue(3)
    await drain(app)
    after = now_ms()
    result = await job.result()
    assert result is not None
    assert result.success is True
    assert result.aborted is False
    assert result.value == {"n": 3, "tries": 2}
    assert result.tries == 2
    assert before <= result.enqueue_time <= result.start <= result.finish <= after
    assert result.duration_ms == result.finish - result.start
    assert result.duration_ms >= 40


async def test_failure_value_is_the_exception_repr(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task(max_retries=1, backoff_ms=1)
    def boom(msg: str) -> None:
        raise ValueError(msg)

    job = await boom.enqueue("it broke")
    await drain(app)
    result = await job.result()
    assert result is not None
    assert result.success is False
    assert result.aborted is False
    assert result.value == repr(ValueError("it broke"))
    assert result.tries == 2
    assert result.start >= result.enqueue_time


async def test_timed_out_attempt_result(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task(timeout=0.1, max_retries=0)
    async def sleepy() -> None:
        await asyncio.sleep(5)

    job = await sleepy.enqueue()
    await drain(app)
    result = await job.result()
    assert result is not None and not result.success
    assert "timed out after 0.1s" in result.value


async def test_unencodable_result_still_finishes(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task(max_retries=0)
    async def weird() -> object:
        return object()

    job = await weird.enqueue()
    await drain(app)
    result = await job.result()
    assert result is not None and not result.success
    assert "serialized" in result.value


async def test_none_result_is_a_success(make_app: AppFactory) -> None:
    app = make_app(poll_block_ms=50)

    @app.task
    def nothing() -> None:
        return None

    job = await nothing.enqueue()
    await drain(app)
    result = await job.result()
    assert result is not None and result.success and result.value is None


# --------------------------------------------------------------- retention
async def test_result_ttl_zero_keeps_no_result(make_app: AppFactory, redis_url: str) -> None:
    app = make_app(poll_block_ms=50, result_ttl_ms=0)

    @app.task
    async def t() -> int:
        return 1

    job = await t.enqueue()
    await drain(app)
    assert await job.result() is None
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.exists(app.keys.result(job.id)) == 0
    finally:
        await r.aclose()


@pytest.mark.parametrize("ttl", [60_000, 5_000])
async def test_result_ttl_sets_an_expiry(make_app: AppFactory, redis_url: str, ttl: int) -> None:
    app = make_app(poll_block_ms=50, result_ttl_ms=ttl)

    @app.task
    async def t() -> int:
        return 1

    job = await t.enqueue()
    await drain(app)
    r = aioredis.Redis.from_url(redis_url)
    try:
        pttl = await r.pttl(app.keys.result(job.id))
    finally:
        await r.aclose()
    assert ttl - 10_000 < pttl <= ttl


async def test_negative_result_ttl_keeps_forever(make_app: AppFactory, redis_url: str) -> None:
    app = make_app(poll_block_ms=50, result_ttl_ms=-1)

    @app.task
    async def t() -> int:
        return 1

    job = await t.enqueue()
    await drain(app)
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.pttl(app.keys.result(job.id)) == -1
    finally:
        await r.aclose()
    assert (await job.result()).value == 1  # type: ignore[union-attr]


async def test_result_of_aborted_task_ttl(make_app: AppFactory, redis_url: str) -> None:
    app = make_app(result_ttl_ms=30_000)
    job = await app.ref("t").options(delay_ms=60_000).enqueue()
    assert await job.abort()
    r = aioredis.Redis.from_url(redis_url)
    try:
        pttl = await r.pttl(app.keys.result(job.id))
    finally:
        await r.aclose()
    assert 20_000 < pttl <= 30_000


async def test_waiter_gets_broker_error_when_redis_goes_away(
    private_redis: RedisServer, queue: str
) -> None:
    app = Ardiq(private_redis.url, queue_name=queue)
    try:
        job = await app.ref("t").enqueue()
        waiter = asyncio.create_task(job.result(timeout=30))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        started = time.monotonic()
        private_redis.kill()
        with pytest.raises(BrokerError):
            await asyncio.wait_for(waiter, 15)
        assert time.monotonic() - started < 10
        # A new waiter fails fast too, and once Redis is back waiting works again.
        started = time.monotonic()
        with pytest.raises(BrokerError):
            await app.job("x").result(timeout=5)
        assert time.monotonic() - started < 3
        private_redis.start()
        # The first call may still meet a pooled connection of the old server
        # (BrokerError: the connection dropped); after that waiting works again.
        for _ in range(3):
            try:
                await app.job("x").result(timeout=0.2)
            except BrokerError:
                continue
            except TimeoutError:
                break
        else:
            pytest.fail("waiting for results never recovered after Redis came back")
    finally:
        await app.aclose()
