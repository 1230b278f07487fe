"""Fixtures: throwaway Redis servers, per-test queues, apps and worker processes."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ardiq import Ardiq
from support.redis_server import RedisServer
from support.topology import Cluster, SentinelSetup
from support.workers import WorkerProcess, native_binary, native_extension_error

# Behaviour tests run against every worker kind: the binary (`native`), `app.run()` on the
# Rust engine (`inproc`) and on the pure-Python loop (`incode`). The native parts are part
# of the suite: `make test` builds them first, and their absence is an error, not a skip
# (ARDIQ_NATIVE=0 runs the pure-Python kind alone, on a machine without Rust).
WORKER_KINDS = (
    ["incode", "inproc", "native"] if os.environ.get("ARDIQ_NATIVE", "1") == "1" else ["incode"]
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves by queue name."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of six nodes (three masters, three replicas) for the session."""
    cluster = Cluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSetup]:
    """One master, one replica and three sentinels for the session."""
    setup = SentinelSetup().start()
    yield setup
    setup.cleanup()


@pytest.fixture
def own_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start a redis-server of this test's own (for fault tests), with extra arguments."""
    servers: list[RedisServer] = []

    def start(*args: str) -> RedisServer:
        server = RedisServer(*args).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def queue() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_app(redis_url: str, queue: str) -> AsyncIterator[Callable[..., Ardiq]]:
    """Apps on this test's queue (close their connections at the end)."""
    apps: list[Ardiq] = []

    def make(**settings: object) -> Ardiq:
        settings.setdefault("redis_url", redis_url)
        settings.setdefault("queue_name", queue)
        app = Ardiq(**settings)  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.aclose()


@pytest.fixture(params=WORKER_KINDS)
def worker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "native" and native_binary() is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    if kind == "inproc" and (why := native_extension_error()) is not None:
        pytest.fail(f"{why} (`make build` installs it)")
    return kind


@pytest.fixture
def start_worker(
    worker_kind: str, redis_url: str, queue: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes of this test's kind on its queue:
    `start_worker("apps.basic:app", "--burst", env={...})`."""
    procs: list[WorkerProcess] = []

    def start(
        target: str = "apps.basic:app", *flags: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        full_env = {"ARDIQ_REDIS_URL": redis_url, "ARDIQ_TEST_QUEUE": queue, **(env or {})}
        proc = WorkerProcess(worker_kind, target, *flags, env=full_env, log_dir=tmp_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()
