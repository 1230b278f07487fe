"""The worker's health endpoint (`--health-port`): /metrics after a known workload,
/livez when a task blocks the event loop, /readyz when Redis goes away; what a flood of
connections, a slow client or a scrape storm may cost the worker; stale heartbeats.
"""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from ardiq import Ardiq
from support.ops_cli import binary, env_for
from support.redis_server import RedisServer, free_port
from support.workers import TESTS

APP = "apps.ops_app:app"
LANES = ["low", "default", "high"]


class Worker:
    """`ardiq run apps.ops_app:app --health-port P ...`, output captured to a file."""

    def __init__(
        self,
        redis_url: str,
        queue: str,
        log: Path,
        *flags: str,
        nofile: tuple[int, int] | None = None,
    ) -> None:
        self.port = free_port()
        env = env_for(redis_url, queue)
        self.log_path = log
        self._log = log.open("wb")

        def limit_open_files() -> None:  # `ulimit -n` for the worker alone
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(
            [binary(), "run", APP, "--health-port", str(self.port), *flags],
            cwd=TESTS,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files,
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

    def start(redis_url: str, *flags: str, nofile: tuple[int, int] | None = None) -> Worker:
        log = tmp_path / f"worker-{len(workers)}.log"
        w = Worker(redis_url, queue, log, *flags, nofile=nofile)
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


def open_idle_connections(port: int, n: int) -> list[socket.socket]:
    """`n` connections that never send a byte (connected without waiting for the worker
    to accept them)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


async def test_idle_connections_cannot_take_the_file_descriptors_tasks_need(
    redis_url: str,
    make_app: Callable[..., Ardiq],
    worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:  # this test process holds 400 sockets itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    w = worker(redis_url, "--health-timeout", "2", nofile=(256, 256))
    w.wait_status("/readyz", 200, 30)
    socks = open_idle_connections(w.port, 400)
    try:
        time.sleep(0.5)  # the worker has seen them all
        app = make_app(priorities=LANES)
        job = await app.send("append", str(tmp_path / "out"))
        result = await job.result(timeout=20)
        assert result is not None and result.success, (result, w.output())
        # Connections past the cap were refused at once, the others time out: the
        # endpoint answers again while the 400 sockets are still open on this side.
        w.wait_status("/livez", 200, 10)
    finally:
        for s in socks:
            s.close()
    out = w.output()
    warnings = [line for line in out.splitlines() if "accept failed" in line]
    warnings += [line for line in out.splitlines() if "too many connections" in line]
    assert 1 <= len(warnings) <= 3, out


def test_the_open_files_limit_is_raised_to_the_hard_limit(
    redis_url: str, worker: Callable[..., Worker]
) -> None:
    w = worker(redis_url, nofile=(256, 4096))
    w.wait_status("/readyz", 200, 30)
    limits = Path(f"/proc/{w.proc.pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert row.split()[3:5] == ["4096", "4096"], row


def test_a_client_that_sends_its_request_too_slowly_is_cut(
    redis_url: str, worker: Callable[..., Worker]
) -> None:
    w = worker(redis_url, "--health-timeout", "1")
    w.wait_status("/readyz", 200, 30)
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET /livez HTTP/1.1\r\n")
        s.settimeout(0.2)
        cut = False
        while not cut and time.monotonic() - started < 5:
            try:
                s.sendall(b"X-Slow: 1\r\n")  # one header line every 0.2 s, never the end
                cut = s.recv(1024) == b""
            except TimeoutError:
                pass
            except OSError:  # reset
                cut = True
        took = time.monotonic() - started
    assert cut, "a client trickling its request head was never cut"
    assert 0.8 <= took < 3, took
    # A silent client is cut the same way.
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        started = time.monotonic()
        assert s.recv(1024) == b""
        assert 0.8 <= time.monotonic() - started < 3


def test_a_scrape_storm_costs_a_bounded_number_of_redis_commands(
    own_redis: Callable[..., RedisServer], worker: Callable[..., Worker]
) -> None:
    server = own_redis()
    w = worker(server.url)
    w.wait_status("/readyz", 200, 30)
    r = redis.Redis.from_url(server.url)

    def queue_reads() -> int:
        """Calls of commands only the metrics' queue figures send (the engine's scripts
        send ZRANGE and XPENDING too)."""
        stats = r.info("commandstats")
        names = ("cmdstat_xlen", "cmdstat_zcard")
        return sum(int(stats.get(name, {}).get("calls", 0)) for name in names)

    before = queue_reads()
    started = time.monotonic()
    for _ in range(200):
        status, text = w.get("/metrics")
        assert status == 200 and "ardiq_queue_up" in text
    elapsed = time.monotonic() - started
    sent = queue_reads() - before
    r.close()
    # One round (3 XLEN and 2 ZCARD with three lanes) per second at most; without the
    # cache, 200 rounds.
    rounds = int(elapsed) + 2
    assert 5 <= sent <= 5 * rounds, (sent, elapsed)


def test_a_stale_heartbeat_is_pruned(
    redis_url: str, queue: str, worker: Callable[..., Worker]
) -> None:
    r = redis.Redis.from_url(redis_url)
    workers = f"ardiq:{{{queue}}}:workers"
    now_ms = int(time.time() * 1000)
    r.zadd(workers, {"gone-an-hour-ago": now_ms - 3_600_000, "gone-a-minute-ago": now_ms - 60_000})
    w = worker(redis_url)
    w.wait_status("/readyz", 200, 30)
    deadline = time.monotonic() + 10
    while r.zscore(workers, "gone-an-hour-ago") is not None:
        assert time.monotonic() < deadline, r.zrange(workers, 0, -1, withscores=True)
        time.sleep(0.1)
    # Only long-gone workers are forgotten: a recent one may still come back.
    assert r.zscore(workers, "gone-a-minute-ago") is not None
    assert r.zcard(workers) == 2  # and this worker's own beat
    r.close()
