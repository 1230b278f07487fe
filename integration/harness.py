"""Processes for the fault scenarios: the queue's Redis, the ledger's Redis, worker
processes of either kind running integration/apps/faultapp.py, and a producer.

Reuses tests/support (RedisServer, worker_command), so the fault tests start servers
and workers exactly as the behaviour tests do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from ardiq import Ardiq, BrokerError  # noqa: E402
from ardiq.errors import ArdiqError  # noqa: E402
from ledger import Ledger, ms  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.workers import engine_env, native_binary, worker_command  # noqa: E402

TARGET = "apps.faultapp:app"


class Worker:
    """One worker process: native `ardiq run`, or the in-code `app.run()` on the Rust
    engine (`inproc`) or the pure-Python loop (`incode`)."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path) -> None:
        self.kind = kind
        self.log_path = log_dir / f"{kind}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full = {
            **os.environ,
            "VIRTUAL_ENV": sys.prefix,
            **engine_env(kind),
            **env,
            "PYTHONPATH": str(HERE),
        }
        self.proc = subprocess.Popen(
            worker_command(kind, TARGET),
            cwd=HERE,
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int | None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()

    def rss_kb(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


class Env:
    """One scenario's world: queue Redis, ledger Redis, workers, producer app."""

    def __init__(
        self, kind: str, log_dir: Path, *, redis_args: Iterable[str] = (), **settings: Any
    ) -> None:
        if kind == "native" and native_binary() is None:
            raise RuntimeError("the native `ardiq` binary is not built: run `make build`")
        self.kind = kind
        self.log_dir = log_dir
        self.queue = f"f-{uuid.uuid4().hex[:8]}"
        self.ledger_server = RedisServer().start()
        self.redis = RedisServer(*redis_args).start()
        self.ledger = Ledger(self.ledger_server.url)
        self.workers: list[Worker] = []
        self.env = {
            "ARDIQ_REDIS_URL": self.redis.url,
            "ARDIQ_TEST_QUEUE": self.queue,
            "LEDGER_URL": self.ledger_server.url,
            **{f"FAULT_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.app = Ardiq(
            redis_url=self.redis.url,
            queue_name=self.queue,
            max_payload_bytes=int(settings.get("max_payload", 1024 * 1024)),
        )

    def start_worker(self, **extra: Any) -> Worker:
        env = {**self.env, **{f"FAULT_{k.upper()}": str(v) for k, v in extra.items()}}
        w = Worker(self.kind, env, self.log_dir)
        self.workers.append(w)
        return w

    async def wait_ready(self, worker: Worker, timeout: float = 20) -> None:
        """Until the worker's heartbeat is in `P workers` (it serves the queue)."""
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not worker.alive():
                    raise AssertionError(f"worker exited at start:\n{worker.output()}")
                try:
                    if await r.zcard(self.app.keys.workers) >= sum(
                        1 for w in self.workers if w.alive()
                    ):
                        await asyncio.sleep(0.3)
                        return
                except OSError:
                    pass
                await asyncio.sleep(0.05)
        finally:
            await r.aclose()
        raise AssertionError(f"worker not ready in {timeout}s:\n{worker.output()}")

    async def enqueue(
        self,
        name: str,
        args_list: list[tuple[Any, ...]],
        *,
        prefix: str = "t",
        chunk: int = 500,
        retry: bool = True,
    ) -> list[str]:
        """Enqueue with explicit ids (idempotent), recording in the ledger each id Redis
        accepted. With `retry`, a BrokerError is retried until Redis takes the chunk."""
        ids = [f"{prefix}{i}-{uuid.uuid4().hex}" for i in range(len(args_list))]
        task = self.app.ref(name)
        for i in range(0, len(ids), chunk):
            items = [
                task.options(task_id=tid).prepare(*a)
                for tid, a in zip(ids[i : i + chunk], args_list[i : i + chunk], strict=True)
            ]
            while True:
                try:
                    await self.app.enqueue_many(items)
                    break
                except BrokerError:
                    if not retry:
                        raise
                    await asyncio.sleep(0.1)
            self.ledger.enqueued(ids[i : i + chunk])
        return ids

    async def probe(self, timeout: float = 60) -> int:
        """Round trip of one small task, ms (a measure of resumed progress)."""
        t0 = ms()
        (tid,) = await self.enqueue("work", [(0,)], prefix="probe")
        await self.wait_results([tid], timeout)
        return ms() - t0

    async def results_done(self, ids: list[str]) -> int:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.redis.url)
        try:
            n = 0
            for i in range(0, len(ids), 1000):
                chunk = ids[i : i + 1000]
                n += await r.exists(*[self.app.keys.result(t) for t in chunk])
            return n
        finally:
            await r.aclose()

    async def wait_results(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.results_done(ids) >= len(ids):
                    return
            except (OSError, ArdiqError, Exception):  # Redis may be down right now
                pass
            if time.monotonic() > deadline:
                done = await self.results_done(ids)
                raise AssertionError(f"only {done}/{len(ids)} results after {timeout}s")
            await asyncio.sleep(0.1)

    async def drained(self, timeout: float = 60) -> None:
        """Until nothing is queued, delayed or pending."""
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                pending = 0
                for key in await r.keys(self.app.keys.prefix + "stream:*"):
                    for g in await r.xinfo_groups(key):
                        pending += int(g["pending"])
                if pending == 0 and await self.app.queue_size() == 0:
                    return
                await asyncio.sleep(0.1)
        finally:
            await r.aclose()
        raise AssertionError("queue did not drain")

    async def close(self) -> None:
        for w in self.workers:
            if w.alive():
                w.stop(15)
            w.close()
        self.ledger.r.close()
        with contextlib.suppress(Exception):
            await self.app.aclose()
        self.redis.cleanup()
        self.ledger_server.cleanup()
