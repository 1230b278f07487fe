"""The worker's health endpoint (`--health-port`): /metrics after a known workload,
/livez when a task blocks the event loop, /readyz when Redis goes away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ardiq import Ardiq
from support.redis_server import RedisServer, free_port
from support.workers import TESTS, native_binary

APP = "apps.ops_app:app"
LANES = ["low", "default", "high"]


class Worker:
    """`ardiq run apps.ops_app:app --health-port P ...`, output captured to a file."""

    def __init__(self, redis_url: str, queue: str, log: Path, *flags: str) -> None:
        binary = native_binary()
        if binary is None:
            pytest.fail("the native `ardiq` binary is not built: run `make build` first")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARDIQ_", "OPS_"))}
        env.update(
            VIRTUAL_ENV=sys.prefix,
            PYTHONPATH=str(TESTS),
            ARDIQ_REDIS_URL=redis_url,
            ARDIQ_TEST_QUEUE=queue,
        )
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [binary, "run", APP, "--health-port", str(self.port), *flags],
            cwd=TESTS,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_status(self, path: str, status: int, timeout: float) -> float:
        """Polls until `path` answers `status`; returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                code, body = self.get(path)
                if code == status:
                    return time.monotonic()
                last = (code, body)
            except OSError as e:  # not listening yet
                last = e
            time.sleep(0.05)
        raise AssertionError(f"{path} never answered {status}: {last}\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def worker(tmp_path: Path, queue: str) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(redis_url: str, *flags: str) -> Worker:
        w = Worker(redis_url, queue, tmp_path / f"worker-{len(workers)}.log", *flags)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.close()


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` → value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_metrics_after_a_known_workload(
    redis_url: str, queue: str, make_app: Callable[..., Ardiq], worker: Callable[..., Worker]
) -> None:
    w = worker(redis_url)
    w.wait_status("/readyz", 200, 30)
    app = make_app(priorities=LANES)
    oks = [await app.send("ok", i) for i in range(10)]
    bad = [await app.send("fails", "boom") for _ in range(2)]
    for job in oks:
        result = await job.result(timeout=20)
        assert result is not None and result.success
    for job in bad:
        result = await job.result(timeout=20)
        assert result is not None and not result.success

    q = f'queue="{queue}"'
    want = {
        f'ardiq_tasks_finished_total{{{q},outcome="ok"}}': 10,
        f'ardiq_tasks_finished_total{{{q},outcome="failed"}}': 2,
        f"ardiq_task_retries_total{{{q}}}": 4,  # max_retries=2, twice
        f"ardiq_dead_letters_total{{{q}}}": 2,
        f"ardiq_task_run_seconds_count{{{q}}}": 16,  # every attempt that ran
        f"ardiq_task_wait_seconds_count{{{q}}}": 16,
        f"ardiq_tasks_in_flight{{{q}}}": 0,
        f"ardiq_queue_scheduled{{{q}}}": 0,
        f"ardiq_queue_dead_letters{{{q}}}": 2,
        f"ardiq_queue_workers_alive{{{q}}}": 1,
        f"ardiq_queue_up{{{q}}}": 1,
        f"ardiq_ready{{{q}}}": 1,
        f"ardiq_live{{{q}}}": 1,
    }
    for lane in LANES:
        want[f'ardiq_queue_depth{{{q},lane="{lane}"}}'] = 0
        want[f'ardiq_queue_waiting{{{q},lane="{lane}"}}'] = 0
        want[f'ardiq_queue_pending{{{q},lane="{lane}"}}'] = 0
    # Counters move right after the outcome is acknowledged: poll briefly.
    deadline = time.monotonic() + 10
    while True:
        status, text = w.get("/metrics")
        assert status == 200
        got = parse_metrics(text)
        wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if not wrong:
            break
        assert time.monotonic() < deadline, wrong
        time.sleep(0.1)
    # Histograms are cumulative and end at the count.
    buckets = [v for k, v in got.items() if k.startswith("ardiq_task_run_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 16
    assert re.search(r"^# TYPE ardiq_task_wait_seconds histogram$", text, re.M)

    # A delayed task counts as scheduled, not as depth.
    await app.ref("nap").options(delay_ms=60_000).enqueue(0.1)
    deadline = time.monotonic() + 10
    while parse_metrics(w.get("/metrics")[1]).get(f"ardiq_queue_scheduled{{{q}}}") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    got = parse_metrics(w.get("/metrics")[1])
    assert all(got[f'ardiq_queue_depth{{{q},lane="{lane}"}}'] == 0 for lane in LANES)


def test_livez_fails_while_a_task_blocks_the_event_loop(
    redis_url: str, queue: str, worker: Callable[..., Worker]
) -> None:
    threshold, probe_every = 1.0, 0.5
    w = worker(redis_url, "--liveness-threshold", str(threshold))
    w.wait_status("/readyz", 200, 30)
    assert w.get("/livez")[0] == 200
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        app.send_sync("block_loop", 4.0)
        sent = time.monotonic()
        # Probed like a kubelet would: red within the threshold plus two probe intervals.
        red_at = None
        while time.monotonic() - sent < threshold + 2 * probe_every + 0.5:
            status, body = w.get("/livez")
            if status == 503:
                red_at = time.monotonic()
                assert "event loop" in body, body
                break
            time.sleep(probe_every)
        assert red_at is not None, f"/livez stayed green\n{w.output()}"
        # The block ends: green again.
        w.wait_status("/livez", 200, 8)
    finally:
        app.close_sync()


def test_readyz_fails_without_redis_while_livez_stays_green(
    own_redis: Callable[..., RedisServer], worker: Callable[..., Worker]
) -> None:
    server = own_redis()
    w = worker(server.url, "--liveness-threshold", "1")
    w.wait_status("/readyz", 200, 30)
    server.stop()
    w.wait_status("/readyz", 503, 10)
    assert "redis" in w.get("/readyz")[1]
    # Redis stays away for a while: the worker is not wedged, so /livez stays green.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        status, body = w.get("/livez")
        assert status == 200, body
        time.sleep(0.25)
    status, text = w.get("/metrics")
    assert status == 200 and "ardiq_redis_up" in text
    server.start()
    w.wait_status("/readyz", 200, 15)
