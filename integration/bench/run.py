"""ArdiQ against other Redis task queues: one sitting, one machine, one redis-server.

    make bench                                   # full run, writes integration/bench/RESULTS.md
    .venv/bin/python integration/bench/run.py --quick
    .venv/bin/python integration/bench/run.py --only ardiq-native,arq --scenarios noop,latency

How it measures (the same for every queue):

- One `redis-server` started here on a free loopback port (no persistence), FLUSHALL
  before each measurement. Rounds are interleaved: round r runs every queue, starting
  with the r-th one, and each figure is the median over rounds, with min and max.
- Every queue runs in its own virtual environment (see envs.py) through a small adapter
  (adapters/<queue>_adapter.py): a producer process answering JSON requests on stdin, and
  one worker process with 10 concurrent tasks (rows whose library does it otherwise say so).
- ArdiQ's rows import the `ardiq` package of this checkout (python/ on PYTHONPATH) and
  differ only in how the worker runs: `ardiq run` (ardiq-native), `await app.run()` on the
  Rust engine (ardiq-inproc, ARDIQ_ENGINE=native: no fallback, and the worker process must
  show the engine's `ardiq-engine` thread) or on the pure-Python loop (ardiq-incode,
  ARDIQ_ENGINE=python: that thread must be absent).
- A task body reports to the driver with one Unix datagram (no Redis command), carrying
  the time it started. Worker throughput = tasks / (last report - first start), with the
  tasks staged before the worker starts, so start-up is not counted.
- Redis commands per task: INFO commandstats delta between the first and the last report,
  over the tasks finished in between. commandstats counts every command Redis ran,
  including each command a Lua script calls and each command inside MULTI; the
  script invocations alone are shown beside it. The driver's own INFO calls are excluded.
  A second, untimed noop run of 2,000 tasks under MONITOR (first round only) counts the
  commands the queue's processes sent themselves (MONITOR marks those a script ran).
- cpu scenario only: the rate runs from the 10th-percentile report to the last, so a
  multi-process worker whose processes start one after another is measured at full strength.
- Worker CPU per task: utime+stime (+ reaped children) of the worker's process tree from
  /proc/<pid>/stat, over the same window. Peak RSS: VmHWM summed over the live process
  tree at the end of the noop run (for prefork/forking workers: every live process; rq's
  short-lived work-horses are gone by then and are not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402

ADAPTERS = HERE / "adapters"
ROOT = envs.ROOT
NATIVE_BIN = Path(os.environ.get("ARDIQ_BIN") or ROOT / ".venv" / "bin" / "ardiq")
CONCURRENCY = 10
IO_SLEEP_S = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRIPT_CMDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}
DRIVER_CMDS = {"info", "flushall", "ping", "memory", "config"}
MONITOR_TASKS = 2_000
SCENARIOS = ["noop", "cpu", "io", "enqueue", "latency", "backlog"]


@dataclass(frozen=True)
class Queue:
    name: str
    env: str
    adapter: str
    note: str
    pure_python: bool = True
    only: frozenset[str] | None = None  # this row runs only these scenarios
    workers: int = 1
    engine: str | None = None  # ARDIQ_ENGINE for `await app.run()`: native or python
    worker_args: tuple[str, ...] = ()  # more options for `ardiq run`
    extra_env: tuple[tuple[str, str], ...] = ()  # more environment for the worker

    @property
    def ours(self) -> bool:
        """A worker of this repository (not a peer)."""
        return self.name in OURS

    def worker_cmd(self, python: Path) -> list[str]:
        if self.name.startswith("ardiq-native"):
            cmd = [str(NATIVE_BIN), "run", "ardiq_adapter:app", *self.worker_args]
            return [*cmd, "--workers", str(self.workers)] if self.workers > 1 else cmd
        if self.env == "ardiq-pypi":
            return [str(python.parent / "ardiq"), "run", "ardiq_pypi_adapter:app", "--quiet"]
        return [str(python), self.adapter, "worker"]


QUEUES = [
    Queue(
        "ardiq-native",
        "ardiq-native",
        "ardiq_adapter.py",
        "`ardiq run` (Rust engine)",
        pure_python=False,
    ),
    Queue(
        "ardiq-native-w2",
        "ardiq-native",
        "ardiq_adapter.py",
        "`ardiq run --workers 2` (cpu only)",
        pure_python=False,
        only=frozenset({"cpu"}),
        workers=2,
    ),
    Queue(
        "ardiq-native-hist",
        "ardiq-native",
        "ardiq_adapter.py",
        "`ardiq run --history 1000` (noop only: what the task history costs; off by default)",
        pure_python=False,
        only=frozenset({"noop"}),
        worker_args=("--history", "1000"),
    ),
    Queue(
        "ardiq-native-limit",
        "ardiq-native",
        "ardiq_adapter.py",
        '`ardiq run`, noop declared with `rate_limit="1000000/s"` (noop only: a limit '
        "that never binds, what admission costs)",
        pure_python=False,
        only=frozenset({"noop"}),
        extra_env=(("ARDIQ_BENCH_LIMIT", "1000000/s"),),
    ),
    Queue(
        "ardiq-incode-limit",
        "ardiq-incode",
        "ardiq_adapter.py",
        "`await app.run()` pure loop, noop with a limit that never binds (noop only)",
        only=frozenset({"noop"}),
        engine="python",
        extra_env=(("ARDIQ_BENCH_LIMIT", "1000000/s"),),
    ),
    Queue(
        "ardiq-inproc",
        "ardiq-incode",
        "ardiq_adapter.py",
        "`await app.run()` on the Rust engine (the `ardiq_native` extension; ARDIQ_ENGINE=native)",
        pure_python=False,
        engine="native",
    ),
    Queue(
        "ardiq-incode",
        "ardiq-incode",
        "ardiq_adapter.py",
        "`await app.run()` on the pure-Python loop (ARDIQ_ENGINE=python)",
        engine="python",
    ),
    Queue(
        "ardiq-pypi",
        "ardiq-pypi",
        "ardiq_pypi_adapter.py",
        "PyPI `ardiq==1.2.0` (other project, Rust core), its `ardiq run`",
        pure_python=False,
    ),
    Queue("taskiq", "taskiq", "taskiq_adapter.py", "stream broker, in-process receiver"),
    Queue("streaq", "streaq", "streaq_adapter.py", "`worker.run_sync()`"),
    Queue("arq", "arq", "arq_adapter.py", "`Worker.run()`, max_jobs=10"),
    Queue("saq", "saq", "saq_adapter.py", "`worker.start()`, concurrency=10"),
    Queue("dramatiq", "dramatiq", "dramatiq_adapter.py", "Redis broker, 1 process x 10 threads"),
    Queue("celery", "celery", "celery_adapter.py", "Redis broker, prefork pool of 10 (tree)"),
    Queue("rq", "rq", "rq_adapter.py", "WorkerPool of 10 workers, fork per job (tree)"),
]
BY_NAME = {q.name: q for q in QUEUES}
OURS = frozenset(
    {
        "ardiq-native",
        "ardiq-native-w2",
        "ardiq-native-hist",
        "ardiq-native-limit",
        "ardiq-inproc",
        "ardiq-incode",
        "ardiq-incode-limit",
    }
)
ENGINE_THREAD = "ardiq-engine"  # the thread the extension serves on (crates/ardiq-native)


@dataclass
class Config:
    rounds: int
    noop: int
    cpu: int
    io: int
    enqueue: int
    lat: int
    delayed: int
    delay_ms: int
    backlog: int
    # Time limits (s) that keep slow queues from dominating the sitting. A run that hits
    # one reports its rate over the tasks it did finish, and says so in its notes.
    timeout: dict[str, float]


FULL = Config(
    rounds=3,
    noop=20_000,
    cpu=1_000,
    io=1_000,
    enqueue=20_000,
    lat=200,
    delayed=6,
    delay_ms=100,
    backlog=100_000,
    timeout={"noop": 12, "cpu": 12, "io": 13, "enqueue": 6, "latency": 6},
)
QUICK = Config(
    rounds=1,
    noop=2_000,
    cpu=200,
    io=200,
    enqueue=2_000,
    lat=40,
    delayed=3,
    delay_ms=100,
    backlog=10_000,
    timeout={"noop": 8, "cpu": 8, "io": 8, "enqueue": 5, "latency": 5},
)


# ----------------------------------------------------------------------------- redis
def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 6379:
            return port


class RedisServer:
    """The benchmark's own redis-server: loopback only, a free port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def flush(self) -> None:
        self.client.flushall()

    def commandstats(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------- processes
def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children[int(st[1])].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of the tree: user+system of each live process and its reaped children."""
    ticks = 0
    for pid in tree(root):
        st = _stat(pid)
        if st is not None:
            ticks += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def tree_rss(root: int) -> tuple[float, int]:
    """Peak RSS (VmHWM) summed over the live tree, in MB, and the number of processes."""
    total_kb, n = 0, 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
                    n += 1
        except OSError:
            pass
    return total_kb / 1024, n


def tree_pss(root: int) -> float:
    """Proportional set size summed over the live tree, in MB (shared pages split fairly)."""
    total_kb = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def thread_names(pid: int) -> set[str]:
    """The names (comm) of the threads of `pid`."""
    names = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                names.add(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
    return names


class Sink:
    """Receives the task bodies' datagrams and counts them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(str(path))
        self.arm(0)
        threading.Thread(target=self._loop, daemon=True).start()

    def arm(
        self,
        n: int,
        *,
        keep: bool = False,
        on_first: Callable[[], None] | None = None,
        on_last: Callable[[], None] | None = None,
        mark: int = 0,
    ) -> None:
        self.target, self.keep, self.on_first, self.on_last = n, keep, on_first, on_last
        self.mark, self.mark_ns = mark, 0  # arrival time of the mark-th report
        self.count = 0
        self.first_start = 0
        self.last_ns = 0
        self.payloads: list[bytes] = []
        self.done = threading.Event()

    def _loop(self) -> None:
        while True:
            data = self.sock.recv(256)
            now = time.time_ns()
            self.count += 1
            c = self.count
            if c <= 64:
                start = int(data.split()[0])
                self.first_start = start if c == 1 else min(self.first_start, start)
            if self.keep:
                self.payloads.append(data)
            self.last_ns = now
            if c == self.mark:
                self.mark_ns = now
            if c == 1 and self.on_first:
                self.on_first()
            if c == self.target:
                if self.on_last:
                    self.on_last()
                self.done.set()


class Monitor:
    """Counts commands through Redis MONITOR: those sent by clients (top-level, MULTI
    contents included) apart from those a Lua script ran (shown as `[0 lua]`)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.client = self.lua = self.driver = 0
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        rest = b""
        while self.running:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            lines, rest = data[:cut], data[cut:]
            total = lines.count(b"\n")
            lua = lines.count(b" lua] ")
            driver = lines.count(b'] "info"')
            self.lua += lua
            self.driver += driver
            self.client += total - lua - driver

    def counts(self) -> tuple[int, int]:
        return self.client, self.lua

    def close(self) -> None:
        self.running = False
        self.sock.close()


class Proc:
    """A child process in its own session (so its whole group can be signalled)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, stdin: bool = False) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.p = subprocess.Popen(
            cmd,
            cwd=ADAPTERS,
            env=env,
            start_new_session=True,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else self._log,
            stderr=self._log,
        )
        self.pid = self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL to the whole group after `grace` s (nothing is measured
        while a worker shuts down, so its graceful drain is not waited for)."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (forked children), at once
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.p.poll() is None:
            self.p.wait()
        self._log.close()

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class Producer:
    def __init__(self, q: Queue, python: Path, env: dict[str, str], log: Path) -> None:
        self.proc = Proc([str(python), q.adapter, "producer"], env, log, stdin=True)
        hello = self._read()
        self.bulk, self.delayed = bool(hello["bulk"]), bool(hello["delayed"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.p.stdout is not None
        line = self.proc.p.stdout.readline()
        if not line:
            raise RuntimeError(f"producer exited:\n{self.proc.tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"producer: {reply['error']}")
        return reply

    def request(self, **req: Any) -> dict[str, Any]:
        assert self.proc.p.stdin is not None
        self.proc.p.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.p.stdin.flush()
        return self._read()

    def stage(
        self, kind: str, n: int, mode: str | None = None, budget_s: float = 1e9
    ) -> tuple[int, float] | None:
        """Enqueue up to n tasks (stopping after budget_s): (count, seconds), or None when
        the queue has no such mode. Default mode: the fastest it has."""
        reply = self.request(
            op="stage",
            kind=kind,
            n=n,
            budget_s=budget_s,
            mode=mode or ("bulk" if self.bulk else "inflight"),
        )
        if reply.get("unsupported"):
            return None
        return int(reply["count"]), float(reply["seconds"])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            self.request(op="quit")
        self.proc.stop(grace=5)


# -------------------------------------------------------------------------- bench
@dataclass
class Bench:
    cfg: Config
    queues: list[Queue]
    scenarios: list[str]
    workdir: Path
    results: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # queue -> what hit a time limit -> how many times (rounds)
    limited: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    bare: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # 1-min load average, each round's start
    code: list[str] = field(default_factory=list)  # ArdiQ's code at each round's start
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # last noop run

    def __post_init__(self) -> None:
        self.redis = RedisServer(self.workdir)
        self.sink = Sink(self.workdir / "sink.sock")
        self.pythons: dict[str, Path | None] = {}

    # -- plumbing
    def env(self, q: Queue | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VIRTUAL_ENV", "PYTHON", "ARDIQ_", "REDIS_URL"))
        }
        env.update(
            BENCH_REDIS_URL=self.redis.url,
            BENCH_SOCK=str(self.sink.path),
            BENCH_CONCURRENCY=str(CONCURRENCY),
            PYTHONPATH=str(ADAPTERS),
            ARDIQ_REDIS_URL=self.redis.url,
            PYTHONDONTWRITEBYTECODE="1",
        )
        if q is not None and q.ours:
            # This checkout's package, whatever the venv has installed (in editable mode,
            # the same one).
            env["PYTHONPATH"] = os.pathsep.join([str(ADAPTERS), str(ROOT / "python")])
        if q is not None and q.engine:
            env["ARDIQ_ENGINE"] = q.engine
        if q is not None:
            env.update(q.extra_env)
        return env

    def log(self, q: Queue, what: str) -> Path:
        return self.workdir / f"{q.name}-{what}-{time.monotonic_ns()}.log"

    def note(self, q: Queue, text: str) -> None:
        if text not in self.notes[q.name]:
            self.notes[q.name].append(text)
        print(f"    ! {q.name}: {text}", flush=True)

    def limit(self, q: Queue, what: str, got: str) -> None:
        """`what` stopped at its time limit: its figure is over what was done by then."""
        self.limited[q.name][what] += 1
        print(f"    ! {q.name}: {what} stopped at its time limit after {got}", flush=True)

    def put(self, q: Queue, metric: str, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.results[q.name][metric].append(value)

    def available(self, q: Queue) -> Path | None:
        if q.env not in self.pythons:
            env = envs.ensure(q.env, log=lambda m: print(m, flush=True))
            self.pythons[q.env] = env.python
            if env.python is None:
                self.note(q, f"skipped: {env.why}")
        python = self.pythons[q.env]
        if python is not None and q.name.startswith("ardiq-native") and not NATIVE_BIN.is_file():
            self.note(q, f"skipped: the native worker is not built ({NATIVE_BIN} is missing)")
            return None
        if python is not None and q.engine == "native":
            why = self.native_missing(q, python)
            if why:
                self.note(q, f"**not measured**: ARDIQ_ENGINE=native cannot run: {why}")
                return None
        return python

    def native_missing(self, q: Queue, python: Path) -> str:
        """Why `await app.run()` cannot run on the Rust engine in this venv ("": it can)."""
        probe = (
            "from ardiq.worker.native import load; r = load(); "
            "print(r if isinstance(r, str) else '')"
        )
        out = subprocess.run(
            [str(python), "-c", probe],
            cwd=ADAPTERS,
            env=self.env(q),
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        return out.stdout.strip()

    def check_engine(self, q: Queue, worker: Proc) -> None:
        """`await app.run()` rows: the worker runs the engine its row names (the native
        one serves on a thread of its own, the pure loop has none)."""
        if q.engine is None:
            return
        has = ENGINE_THREAD in thread_names(worker.pid)
        if has != (q.engine == "native"):
            raise RuntimeError(
                f"ARDIQ_ENGINE={q.engine}, but the worker "
                + ("runs" if has else "does not run")
                + f" the Rust engine (thread {ENGINE_THREAD!r})"
            )

    def start_worker(self, q: Queue, python: Path) -> Proc:
        return Proc(q.worker_cmd(python), self.env(q), self.log(q, "worker"))

    # -- scenarios
    def run_round(self, rnd: int) -> None:
        k = rnd % len(self.queues)
        order = self.queues[k:] + self.queues[:k]
        self.loads.append(os.getloadavg()[0])
        self.code.append(ardiq_code())
        print(
            f"\n=== round {rnd + 1}/{self.cfg.rounds}: {', '.join(q.name for q in order)}",
            flush=True,
        )
        if "cpu" in self.scenarios:
            self.bare_loop()
        for q in order:
            python = self.available(q)
            if python is None:
                continue
            wanted = [s for s in self.scenarios if q.only is None or s in q.only]
            if not wanted:
                continue
            print(f"--- {q.name}", flush=True)
            producer = None
            try:
                producer = Producer(q, python, self.env(q), self.log(q, "producer"))
                self.run_queue(q, python, producer, wanted, rnd)
            except Exception as exc:
                print(f"    {exc}", flush=True)
                last = str(exc).strip().splitlines()[-1:] or [repr(exc)]
                self.note(q, f"round {rnd + 1} failed: {last[0][:300]} (run log: {self.workdir})")
            finally:
                if producer is not None:
                    producer.close()
                self.redis.flush()

    def run_queue(
        self, q: Queue, python: Path, producer: Producer, wanted: list[str], rnd: int
    ) -> None:
        cfg = self.cfg
        staged = 0
        if "enqueue" in wanted:
            staged = self.enqueue(q, producer)
        if "noop" in wanted:
            self.throughput(q, python, producer, "noop", staged or cfg.noop, staged=bool(staged))
        if "noop" in wanted and rnd == 0:
            self.client_commands(q, python, producer)
        if "cpu" in wanted:
            self.throughput(q, python, producer, "cpu", cfg.cpu, skip=0.1)
        if "io" in wanted:
            self.throughput(q, python, producer, "io", cfg.io)
        if "latency" in wanted:
            self.latency(q, python, producer)
        if "backlog" in wanted and rnd == 0:
            self.backlog(q, producer)

    def bare_loop(self) -> None:
        python = envs.REPO_VENV / "bin" / "python"
        self.sink.arm(self.cfg.cpu)
        out = subprocess.run(
            [str(python), "benchcommon.py", "bare", str(self.cfg.cpu)],
            cwd=ADAPTERS,
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        rate = json.loads(out.stdout)["rate"]
        self.bare.append(rate)
        print(f"    bare loop cpu: {rate:,.0f}/s", flush=True)

    def enqueue(self, q: Queue, producer: Producer) -> int:
        """Enqueue noop tasks in each mode; the last mode's tasks stay for the noop run
        (their number is returned)."""
        n = self.cfg.enqueue
        modes = ["single", "inflight", "bulk"] if producer.bulk else ["bulk", "single", "inflight"]
        left = 0
        for i, mode in enumerate(modes):
            self.redis.flush()
            got = producer.stage("noop", n, mode, budget_s=self.cfg.timeout["enqueue"])
            if got is None:
                continue
            count, secs = got
            if count < n:
                self.limit(q, f"enqueue {mode}", f"{count}/{n} tasks")
            self.put(q, f"enq_{mode}", count / secs)
            print(f"    enqueue {mode:8}: {count / secs:10,.0f}/s", flush=True)
            left = count if i == len(modes) - 1 else 0
        return left

    def throughput(
        self,
        q: Queue,
        python: Path,
        producer: Producer,
        kind: str,
        n: int,
        staged: bool = False,
        skip: float = 0.0,
    ) -> None:
        """Tasks staged before the worker starts. With `skip`, the rate leaves out the
        first `skip` share of the tasks (while a multi-process worker is still starting)."""
        snap: dict[str, Any] = {}
        worker: Proc | None = None

        def first() -> None:
            assert worker is not None
            snap["cpu0"], snap["cmd0"] = tree_cpu(worker.pid), self.redis.commandstats()

        def last() -> None:
            assert worker is not None
            snap["cpu1"], snap["cmd1"] = tree_cpu(worker.pid), self.redis.commandstats()
            snap["n1"] = self.sink.count

        if not staged:
            self.redis.flush()
        if not staged:
            got = producer.stage(kind, n)
            assert got is not None
            n = got[0]
        self.sink.arm(n, on_first=first, on_last=last, mark=int(n * skip))
        worker = self.start_worker(q, python)
        deadline = time.monotonic() + self.cfg.timeout[kind] + 30  # + start-up allowance
        started_by = time.monotonic() + 30
        pss = 0.0
        try:
            while not self.sink.done.wait(0.2):
                now = time.monotonic()
                if kind == "noop" and self.sink.count:
                    pss = max(pss, tree_pss(worker.pid))
                if not worker.alive():
                    raise RuntimeError(f"worker exited {worker.p.returncode}:\n{worker.tail()}")
                if self.sink.count == 0 and now > started_by:
                    raise RuntimeError(f"no task started in 30 s:\n{worker.tail()}")
                if self.sink.count and (
                    now > deadline
                    or time.time_ns() - self.sink.first_start > self.cfg.timeout[kind] * 1e9
                ):
                    break
            if "cpu1" not in snap:
                last()
            self.check_engine(q, worker)
            rss, nprocs = tree_rss(worker.pid)
            if nprocs > 1:  # forked processes share pages: VmHWM would count them n times
                rss = max(pss, tree_pss(worker.pid))
        finally:
            worker.stop()
        done = snap["n1"]
        if done < n:
            self.limit(q, kind, f"{done}/{n} tasks")
        if skip and self.sink.mark_ns and done > self.sink.mark:
            rate = (done - self.sink.mark) / ((self.sink.last_ns - self.sink.mark_ns) / 1e9)
        else:
            rate = done / ((self.sink.last_ns - self.sink.first_start) / 1e9)
        self.put(q, f"{kind}_rate", rate)
        line = f"    {kind:4} {rate:10,.0f} tasks/s ({done} tasks)"
        if kind == "noop" and done > 1:
            window = done - 1
            cmds = {k: v - snap["cmd0"].get(k, 0) for k, v in snap["cmd1"].items()}
            total = sum(v for k, v in cmds.items() if k not in DRIVER_CMDS)
            scripts = sum(v for k, v in cmds.items() if k in SCRIPT_CMDS)
            cpu_us = (snap["cpu1"] - snap["cpu0"]) / window * 1e6
            self.put(q, "cmds", total / window)
            self.put(q, "scripts", scripts / window)
            self.put(q, "cpu_us", cpu_us)
            self.put(q, "rss_mb", rss)
            self.put(q, "procs", nprocs)
            top = sorted(
                ((v, k) for k, v in cmds.items() if k not in DRIVER_CMDS and v > 0), reverse=True
            )
            self.breakdown[q.name] = {k: v / window for v, k in top}
            line += (
                f", {total / window:.2f} Redis cmds/task ({scripts / window:.2f} scripts),"
                f" {cpu_us:.0f} us CPU/task, peak RSS {rss:.1f} MB in {nprocs} proc(s)"
            )
        print(line, flush=True)

    def client_commands(self, q: Queue, python: Path, producer: Producer) -> None:
        """A separate noop run under MONITOR (which slows Redis, so it times nothing):
        commands the queue's clients sent per task, apart from those run inside scripts."""
        self.redis.flush()
        got = producer.stage("noop", MONITOR_TASKS)
        assert got is not None
        n = got[0]
        mon = Monitor(self.redis.port)
        time.sleep(0.1)
        snap: dict[str, tuple[int, int]] = {}
        worker = self.start_worker(q, python)
        self.sink.arm(
            n,
            on_first=lambda: snap.__setitem__("a", mon.counts()),
            on_last=lambda: snap.__setitem__("b", mon.counts()),
        )
        deadline = time.monotonic() + 30
        try:
            while not self.sink.done.wait(0.2):
                if (
                    not worker.alive()
                    or time.monotonic() > deadline
                    or (self.sink.count and time.time_ns() - self.sink.first_start > 6e9)
                ):
                    break
            if "a" in snap and "b" not in snap:
                snap["b"] = mon.counts()
        finally:
            worker.stop()
            mon.close()
        window = self.sink.count - 1
        if "a" not in snap or window < 1:
            self.note(q, "no MONITOR count: too few tasks ran")
            return
        client = (snap["b"][0] - snap["a"][0]) / window
        lua = (snap["b"][1] - snap["a"][1]) / window
        self.put(q, "client_cmds", client)
        self.put(q, "lua_cmds", lua)
        print(
            f"    MONITOR: {client:.2f} client commands/task (+{lua:.2f} inside scripts)",
            flush=True,
        )

    def latency(self, q: Queue, python: Path, producer: Producer) -> None:
        self.redis.flush()
        worker = self.start_worker(q, python)
        try:
            self.first_task(worker, producer)
            self.check_engine(q, worker)
            time.sleep(0.5)
            immediate = self._probes(
                producer, worker, self.cfg.lat, 0, budget_s=self.cfg.timeout["latency"]
            )
            if len(immediate) < self.cfg.lat:
                self.limit(q, "latency", f"{len(immediate)}/{self.cfg.lat} probes")
            delayed = []
            if producer.delayed:
                delayed = self._probes(producer, worker, self.cfg.delayed, self.cfg.delay_ms)
            else:
                self.note(q, "no delayed-task figure (why: the adapter's docstring)")
        finally:
            worker.stop()
        for name, samples in (("lat", immediate), ("delayed", delayed)):
            if samples:
                self.put(q, f"{name}_p50", pct(samples, 50))
                self.put(q, f"{name}_p99", pct(samples, 99))
        line = f"    latency p50 {pct(immediate, 50):.2f} ms, p99 {pct(immediate, 99):.2f} ms"
        if delayed:
            line += (
                f"; delayed start late by p50 {pct(delayed, 50):.1f} ms, "
                f"p99 {pct(delayed, 99):.1f} ms"
            )
        print(line, flush=True)

    def first_task(self, worker: Proc, producer: Producer) -> None:
        """Wait until the worker runs a first (latency probe) task: it is up."""
        self.sink.arm(10**9, keep=True)
        deadline = time.monotonic() + 60
        while not self.sink.payloads:
            producer.request(op="probe")  # one every 5 s until one runs
            self.sink.done.wait(5)
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker never started a task:\n{worker.tail()}")

    def _probes(
        self, producer: Producer, worker: Proc, n: int, delay_ms: int, budget_s: float = 1e9
    ) -> list[float]:
        out: list[float] = []
        stop_at = time.monotonic() + budget_s
        for _ in range(n):
            if time.monotonic() > stop_at:
                break
            self.sink.arm(10**9, keep=True)
            t0 = producer.request(op="probe", delay_ms=delay_ms)["t0"]
            deadline = time.monotonic() + delay_ms / 1000 + 5
            found = None
            while found is None and time.monotonic() < deadline:
                for data in self.sink.payloads:  # only this probe's report counts
                    start, sent, due = (int(x) for x in data.split())
                    if sent == t0:
                        found = (start - (due or t0)) / 1e6
                time.sleep(0.0005)
            if found is None:
                if not worker.alive():
                    raise RuntimeError(f"worker exited:\n{worker.tail()}")
                found = 5000.0  # not started within 5 s: counted as 5 s
            out.append(found)
            time.sleep(0.01)  # let the worker go idle again
        return out

    def backlog(self, q: Queue, producer: Producer) -> None:
        self.redis.flush()
        time.sleep(0.2)
        before = self.redis.used_memory()
        n = self.cfg.backlog
        got = producer.stage("noop", n)
        assert got is not None
        n = got[0]
        per_task = (self.redis.used_memory() - before) / n
        self.put(q, "bytes", per_task)
        print(f"    Redis bytes per queued task ({n:,} waiting): {per_task:,.0f}", flush=True)
        self.redis.flush()

    def close(self) -> None:
        self.redis.stop()


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] if s else float("nan")


# ------------------------------------------------------------------------- report
HIGHER_BETTER = {"noop_rate", "cpu_rate", "io_rate", "enq_single", "enq_inflight", "enq_bulk"}


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == int(v) and abs(v) < 100:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    m = med(values)
    if len(values) == 1 or fmt(min(values)) == fmt(max(values)):
        return fmt(m)
    return f"{fmt(m)} <sub>{fmt(min(values))}-{fmt(max(values))}</sub>"


TABLES = [
    (
        "Worker throughput, tasks/s (higher is better)",
        [("noop", "noop_rate"), ("cpu", "cpu_rate"), ("io", "io_rate")],
    ),
    (
        "Cost per finished noop task (lower is better)",
        [
            ("Redis cmds, all", "cmds"),
            ("sent by clients", "client_cmds"),
            ("of which script calls", "scripts"),
            ("worker CPU µs", "cpu_us"),
            ("peak RSS MB", "rss_mb"),
            ("processes", "procs"),
        ],
    ),
    (
        "Enqueue, tasks/s (higher is better)",
        [
            ("one awaited call at a time", "enq_single"),
            ("100 in flight (16 threads if sync)", "enq_inflight"),
            ("bulk API", "enq_bulk"),
        ],
    ),
    (
        "Latency into an idle worker, ms (lower is better)",
        [
            ("enqueue→start p50", "lat_p50"),
            ("p99", "lat_p99"),
            ("delayed task late by p50", "delayed_p50"),
            ("p99", "delayed_p99"),
        ],
    ),
    ("Redis memory (lower is better)", [("bytes per queued task", "bytes")]),
]
RATIO_METRICS = [
    "noop_rate",
    "cpu_rate",
    "io_rate",
    "enq_single",
    "enq_inflight",
    "enq_bulk",
    "cmds",
    "client_cmds",
    "cpu_us",
    "rss_mb",
    "lat_p50",
    "lat_p99",
    "delayed_p99",
    "bytes",
]
RATIO_LABELS = {
    "noop_rate": "noop",
    "cpu_rate": "cpu",
    "io_rate": "io",
    "enq_single": "enq single",
    "enq_inflight": "enq in flight",
    "enq_bulk": "enq bulk",
    "cmds": "cmds/task",
    "client_cmds": "client cmds",
    "cpu_us": "CPU/task",
    "rss_mb": "RSS",
    "lat_p50": "lat p50",
    "lat_p99": "lat p99",
    "delayed_p99": "delayed p99",
    "bytes": "bytes/task",
}


def advantage(res: dict[str, dict[str, list[float]]], a: str, b: str, m: str) -> float | None:
    """How many times better `a` is than `b` on metric m (>1: a is better)."""
    va, vb = med(res.get(a, {}).get(m, [])), med(res.get(b, {}).get(m, []))
    if va is None or vb is None or va <= 0 or vb <= 0:
        return None
    return va / vb if m in HIGHER_BETTER else vb / va


def targets(b: Bench) -> list[tuple[str, str, str]]:
    res = b.results
    nat, inp, inc, pypi = "ardiq-native", "ardiq-inproc", "ardiq-incode", "ardiq-pypi"
    peers = [q.name for q in b.queues if not q.ours and res.get(q.name)]
    py_peers = [q.name for q in b.queues if q.pure_python and q.name != inc and res.get(q.name)]
    producer = nat if res.get(nat) else inc

    def m(q: str, k: str) -> float | None:
        return med(res.get(q, {}).get(k, []))

    def row(name: str, value: float | None, ok: bool | None, shown: str) -> tuple[str, str, str]:
        verdict = "n/a" if value is None or ok is None else ("met" if ok else "**not met**")
        return name, shown if value is not None else "-", verdict

    def vs(q: str, k: str, others: list[str]) -> tuple[float | None, str]:
        """The smallest advantage of q over the others, and over whom."""
        worst: tuple[float, str] | None = None
        for o in others:
            adv = advantage(res, q, o, k)
            if adv is not None and (worst is None or adv < worst[0]):
                worst = (adv, o)
        if worst is None:
            return None, ""
        return worst[0], f"{worst[0]:.2f}x vs {worst[1]} (closest)"

    out = []
    adv = advantage(res, nat, pypi, "noop_rate")
    out.append(
        row(
            "noop tasks/s, native ≥ 5x ardiq 1.2.0",
            adv,
            adv is not None and adv >= 5,
            f"{adv or 0:.2f}x",
        )
    )
    v, shown = vs(nat, "noop_rate", peers)
    out.append(row("noop tasks/s, native ahead of every peer", v, v is not None and v > 1, shown))
    c = m(nat, "cmds")
    out.append(
        row(
            "Redis commands per noop task ≤ 4 (native; every command Redis ran, "
            "script internals included)",
            c,
            c is not None and c <= 4,
            fmt(c),
        )
    )
    c = m(nat, "client_cmds")
    out.append(
        row(
            "Redis commands per noop task ≤ 4 (native; sent by the worker: MONITOR)",
            c,
            c is not None and c <= 4,
            fmt(c),
        )
    )
    adv = advantage(res, nat, pypi, "cpu_us")
    out.append(
        row(
            "worker CPU per task ≤ 1/5 of ardiq 1.2.0's",
            adv,
            adv is not None and adv >= 5,
            f"1/{adv or 0:.2f}",
        )
    )
    bare = med(b.bare)
    cr = m(nat, "cpu_rate")
    frac = cr / bare if cr and bare else None
    out.append(
        row(
            "cpu tasks/s ≥ 99% of the bare loop",
            frac,
            frac is not None and frac >= 0.99,
            f"{(frac or 0) * 100:.1f}% ({fmt(cr)} vs {fmt(bare)})",
        )
    )
    w2 = m("ardiq-native-w2", "cpu_rate")
    sc = w2 / cr if w2 and cr else None
    out.append(
        row(
            "cpu, --workers 2 ≥ 1.8x one worker",
            sc,
            sc is not None and sc >= 1.8,
            f"{sc or 0:.2f}x",
        )
    )
    io = m(nat, "io_rate")
    ceiling = CONCURRENCY / IO_SLEEP_S
    f_io = io / ceiling if io else None
    out.append(
        row(
            f"io tasks/s ≥ 99% of the ceiling ({ceiling:.0f}/s)",
            f_io,
            f_io is not None and f_io >= 0.99,
            f"{(f_io or 0) * 100:.1f}%",
        )
    )
    adv = advantage(res, producer, pypi, "enq_bulk")
    out.append(
        row(
            "bulk enqueue ≥ 2x ardiq 1.2.0's", adv, adv is not None and adv >= 2, f"{adv or 0:.2f}x"
        )
    )
    for k, label in (("enq_single", "one at a time"), ("enq_inflight", "in flight")):
        v, shown = vs(producer, k, [p for p in peers if p != pypi] + [pypi])
        out.append(row(f"enqueue {label}, ahead of every peer", v, v is not None and v > 1, shown))
    for k, limit, label in (
        ("lat_p50", 1, "latency p50 < 1 ms"),
        ("lat_p99", 5, "latency p99 < 5 ms"),
        ("delayed_p99", 10, "delayed task starts within 10 ms (p99)"),
    ):
        v = m(nat, k)
        out.append(row(label, v, v is not None and v < limit, f"{fmt(v)} ms"))
    rss = m(nat, "rss_mb")
    out.append(
        row("worker peak RSS (noop) ≤ 25 MB", rss, rss is not None and rss <= 25, f"{fmt(rss)} MB")
    )
    v, shown = vs(nat, "rss_mb", peers)
    out.append(row("worker peak RSS below every peer", v, v is not None and v > 1, shown))
    v, shown = vs(inc, "noop_rate", py_peers)
    out.append(
        row(
            "in-code (pure loop) noop tasks/s ahead of every pure-Python peer",
            v,
            v is not None and v > 1,
            shown,
        )
    )
    share = ratio(res, inp, nat, "noop_rate")
    out.append(
        row(
            "`app.run()` on the Rust engine: noop tasks/s within 10% of `ardiq run`'s (issue 12)",
            share,
            share is not None and share >= 0.9,
            f"{(share or 0) * 100:.1f}% ({fmt(m(inp, 'noop_rate'))} vs {fmt(m(nat, 'noop_rate'))}"
            + (f"; per round {rounds}" if (rounds := per_round(res, inp, nat, "noop_rate")) else "")
            + ")",
        )
    )
    return out


def ratio(res: dict[str, dict[str, list[float]]], a: str, b: str, k: str) -> float | None:
    """a's median figure over b's (raw: > 1 means a's is larger)."""
    va, vb = med(res.get(a, {}).get(k, [])), med(res.get(b, {}).get(k, []))
    return va / vb if va is not None and vb else None


def per_round(res: dict[str, dict[str, list[float]]], a: str, b: str, k: str) -> str:
    """The range of a's figure over b's within a round (the two ran in the same rounds,
    close in time), in percent: ``"88-95%"``; "" when the rounds do not pair up."""
    va, vb = res.get(a, {}).get(k, []), res.get(b, {}).get(k, [])
    if len(va) < 2 or len(va) != len(vb) or not all(vb):
        return ""
    shares = sorted(x / y * 100 for x, y in zip(va, vb, strict=True))
    return f"{shares[0]:.0f}-{shares[-1]:.0f}%"


# `await app.run()` on the Rust engine against the binary and against the pure loop.
ENGINE_FIGURES = [
    ("noop tasks/s", "noop_rate"),
    ("cpu tasks/s", "cpu_rate"),
    ("io tasks/s", "io_rate"),
    ("worker CPU µs per noop task", "cpu_us"),
    ("peak RSS MB (noop)", "rss_mb"),
    ("Redis cmds per noop task, all", "cmds"),
    ("Redis cmds per noop task, sent by clients", "client_cmds"),
    ("latency p50 ms", "lat_p50"),
    ("latency p99 ms", "lat_p99"),
    ("delayed task late by, p99 ms", "delayed_p99"),
]


def engine_section(b: Bench) -> list[str]:
    res = b.results
    inp, nat, inc = "ardiq-inproc", "ardiq-native", "ardiq-incode"
    if not res.get(inp):
        return []
    out = [
        "## `await app.run()` on the Rust engine (issue 12)",
        "",
        "ardiq-inproc against `ardiq run` (ardiq-native) and against `await app.run()` on "
        "the pure-Python loop (ardiq-incode). Ratios are raw (inproc's median over the "
        "other's): for rates higher is better, for costs and latencies lower is. Goal: the "
        "noop rate within 10% of `ardiq run`'s.",
        "",
        f"| figure | {inp} | {nat} | {inp} ÷ {nat} | {inc} | {inp} ÷ {inc} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, k in ENGINE_FIGURES:
        if not res[inp].get(k):
            continue
        to_nat, to_inc = ratio(res, inp, nat, k), ratio(res, inp, inc, k)
        share = "-" if to_nat is None else f"{to_nat * 100:.0f}%"
        if to_nat is not None and (rounds := per_round(res, inp, nat, k)):
            share += f" <sub>{rounds} by round</sub>"
        times = "-" if to_inc is None else f"{to_inc:.2f}x"
        out.append(
            f"| {label} | {cell(res[inp][k])} | {cell(res.get(nat, {}).get(k, []))} | {share} "
            f"| {cell(res.get(inc, {}).get(k, []))} | {times} |"
        )
    return [*out, ""]


def ardiq_code() -> str:
    """Which ArdiQ was measured: the commit, whether the tree had changes, the times the
    binary and the extension module (in the repo's venv) were built."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "python", "crates"], capture_output=True, text=True
    )
    out = head.stdout.strip() or "unknown commit"
    if dirty.stdout.strip():
        out += " + uncommitted changes"
    if NATIVE_BIN.is_file():
        out += ", binary built " + time.strftime(
            "%H:%M:%S", time.gmtime(NATIVE_BIN.stat().st_mtime)
        )
    ext = sorted(envs.REPO_VENV.glob("lib/python*/site-packages/ardiq_native/ardiq_native*.so"))
    if ext:
        out += ", extension built " + time.strftime(
            "%H:%M:%S", time.gmtime(ext[-1].stat().st_mtime)
        )
    return out


def machine_line(b: Bench) -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    py312 = envs.PY312
    pyp = (
        subprocess.run([str(py312), "--version"], capture_output=True, text=True).stdout.strip()
        if py312.is_file()
        else "absent"
    )
    venv_py = envs.REPO_VENV / "bin" / "python"
    pyv = subprocess.run([str(venv_py), "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} cores, {model}, Linux {platform.release()}; {pyv} (ArdiQ and "
        f"every peer but ardiq 1.2.0, which needs 3.12: {pyp}); "
        f"Redis {b.redis.version()} (own server on 127.0.0.1, no persistence)"
    )


def render(b: Bench, command: str, mode: str, started: str, minutes: float) -> str:
    res = b.results
    rows = [q for q in b.queues if q.name in res or q.name in b.notes]
    out = [
        "# ArdiQ benchmark results",
        "",
        f"- Run: {started}, {mode}, {b.cfg.rounds} round(s), {minutes:.1f} min",
        f"- Machine: {machine_line(b)}",
        "- Load average (1 min) at the start of each round, the benchmark's own processes "
        "included; anything else running on the machine shares its cores: "
        + ", ".join(f"{x:.1f}" for x in [*b.loads, os.getloadavg()[0]])
        + " (the last: at the end)",
        f"- ArdiQ measured: {b.code[0] if b.code else '-'}"
        + (
            ""
            if len(set(b.code)) <= 1
            else " -- **ArdiQ's code changed during the run**: " + "; ".join(b.code[1:])
        ),
        f"- Command: `{command}`",
        f"- Sizes: noop {b.cfg.noop:,}, cpu {b.cfg.cpu:,} (1,000 SHA-256 of 1 KiB each), "
        f"io {b.cfg.io:,} (100 ms sleep), enqueue {b.cfg.enqueue:,} per mode, latency "
        f"{b.cfg.lat} probes + {b.cfg.delayed} delayed by {b.cfg.delay_ms} ms, backlog "
        f"{b.cfg.backlog:,} tasks (first round only); worker concurrency {CONCURRENCY}",
        "- Time limits per run (s; a slower queue's figure is over the work done by then): "
        + ", ".join(f"{k} {v:g}" for k, v in b.cfg.timeout.items()),
        "- Cells: median over rounds, <sub>min-max</sub> below it when there was more "
        "than one round. How each figure is measured: the docstring of "
        "`integration/bench/run.py`.",
        "",
    ]
    for title, cols in TABLES:
        out += [
            f"## {title}",
            "",
            "| queue | " + " | ".join(c for c, _ in cols) + " |",
            "|---|" + "---:|" * len(cols),
        ]
        for q in rows:
            if not any(res[q.name].get(k) for _, k in cols):
                continue
            out.append(
                f"| {q.name} | " + " | ".join(cell(res[q.name].get(k, [])) for _, k in cols) + " |"
            )
        if title.startswith("Worker throughput") and b.bare:
            out.append(f"| bare Python loop (cpu body) | - | {cell(b.bare)} | - |")
        out.append("")
    out += engine_section(b)
    for ours in ("ardiq-native", "ardiq-inproc", "ardiq-incode"):
        peers = [q.name for q in b.queues if q.name in res and not q.ours]
        if not res.get(ours) or not peers:
            continue
        out += [
            f"## {ours}: how many times better than each peer (>1: ArdiQ is better)",
            "",
            "| peer | " + " | ".join(RATIO_LABELS[k] for k in RATIO_METRICS) + " |",
            "|---|" + "---:|" * len(RATIO_METRICS),
        ]
        for p in peers:
            cells = []
            for k in RATIO_METRICS:
                a = advantage(res, ours, p, k)
                cells.append("-" if a is None else f"{a:.2f}x")
            out.append(f"| {p} | " + " | ".join(cells) + " |")
        out.append("")
    if b.breakdown:
        out += [
            "## Redis commands per noop task, by command (last round)",
            "",
            "Every command Redis ran, those inside Lua scripts and MULTI included.",
            "",
            "| queue | commands |",
            "|---|---|",
        ]
        for q in rows:
            if q.name in b.breakdown:
                parts = [f"{k} {v:.2f}" for k, v in b.breakdown[q.name].items() if v >= 0.01]
                out.append(f"| {q.name} | {', '.join(parts)} |")
        out.append("")
    out += ["## Targets (issues 5 and 12)", "", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {t} | {v} | {ok} |" for t, v, ok in targets(b)]
    out += ["", "## Rows", ""]
    for q in rows:
        line = f"- **{q.name}**: {q.note}."
        if b.notes.get(q.name):
            line += " " + " ".join(n.rstrip(".") + "." for n in b.notes[q.name])
        if b.limited.get(q.name):
            hits = ", ".join(
                f"{w} ({k} of {b.cfg.rounds} rounds)" for w, k in b.limited[q.name].items()
            )
            line += f" Stopped at a time limit, figure over the work done by then: {hits}."
        out.append(line)
    out += [
        "",
        "Notes:",
        "- Each queue keeps its library's defaults apart from concurrency and logging "
        "(per-task INFO lines off everywhere). Results are stored where that is the "
        "default (ArdiQ, ardiq 1.2.0, streaq, arq, saq, rq) and not where it is not "
        "(taskiq, dramatiq, celery).",
        "- Async libraries run `async def` bodies on their event loop; dramatiq, celery "
        "and rq run plain functions (threads, processes).",
        "- Completion is reported by the task body over a Unix datagram, never through "
        "Redis, so no queue pays a counting command.",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer tasks, one round (smoke run)")
    ap.add_argument("--only", help="comma-separated queues: " + ",".join(BY_NAME))
    ap.add_argument(
        "--scenarios",
        help="comma-separated: "
        + ",".join(SCENARIOS)
        + " (memory, commands and CPU per task come with noop)",
    )
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()

    cfg = QUICK if args.quick else FULL
    if args.rounds:
        cfg = Config(**{**cfg.__dict__, "rounds": args.rounds})
    queues = QUEUES
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            ap.error(f"unknown queue(s) {unknown}; known: {', '.join(BY_NAME)}")
        queues = [q for q in QUEUES if q.name in names]
    scenarios = SCENARIOS
    if args.scenarios:
        wanted = {"memory": "noop"}
        names = [wanted.get(s.strip(), s.strip()) for s in args.scenarios.split(",")]
        unknown = [s for s in names if s not in SCENARIOS]
        if unknown:
            ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}, memory")
        scenarios = [s for s in SCENARIOS if s in names]

    envs.ENVS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=envs.ENVS))
    command = " ".join([".venv/bin/python", "integration/bench/run.py", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL"):
        command = "make bench" if not sys.argv[1:] else command
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    bench = Bench(cfg, queues, scenarios, workdir)
    print(f"redis-server on {bench.redis.url}; logs in {workdir}", flush=True)
    try:
        for rnd in range(cfg.rounds):
            bench.run_round(rnd)
        minutes = (time.monotonic() - t0) / 60
        text = render(bench, command, "quick" if args.quick else "full", started, minutes)
    finally:
        bench.close()
    args.out.write_text(text)
    raw = {
        "results": bench.results,
        "notes": bench.notes,
        "limited": bench.limited,
        "bare": bench.bare,
        "breakdown": bench.breakdown,
    }
    (workdir / "results.json").write_text(json.dumps(raw, indent=1))
    print("\n" + text)
    print(f"\nwrote {args.out} ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
