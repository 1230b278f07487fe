"""Worker processes for behaviour tests, of every kind.

The kinds are started the same way, as a subprocess given `module:attr` and the same
flags, so one test body covers the three ways of running a worker:

- `native`: `ardiq run MODULE:ATTR ...` (the Rust binary);
- `inproc`: `python tests/support/incode_runner.py run MODULE:ATTR ...`, that is
  `await app.run()` on the Rust engine (the `ardiq_native` extension, ARDIQ_ENGINE=native);
- `incode`: the same runner on the pure-Python loop (ARDIQ_ENGINE=python).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
RUNNER = Path(__file__).with_name("incode_runner.py")


def native_binary() -> str | None:
    """The `ardiq` binary to test: $ARDIQ_BIN, the venv's, or the cargo build's."""
    candidates = [
        os.environ.get("ARDIQ_BIN"),
        str(Path(sys.executable).with_name("ardiq")),
        str(ROOT / "target" / "release" / "ardiq"),
        str(ROOT / "target" / "debug" / "ardiq"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which("ardiq")


# The engine `app.run()` uses in each in-code kind (ARDIQ_ENGINE).
IN_CODE_ENGINES = {"incode": "python", "inproc": "native"}


def engine_env(kind: str) -> dict[str, str]:
    """The environment that makes `app.run()` use `kind`'s engine (empty for the binary)."""
    engine = IN_CODE_ENGINES.get(kind)
    return {"ARDIQ_ENGINE": engine} if engine else {}


def native_extension_error() -> str | None:
    """Why `ardiq_native` cannot serve `app.run()` here, or None when it can."""
    from ardiq.worker.native import load

    found = load()
    return found if isinstance(found, str) else None


def worker_command(kind: str, target: str, *flags: str) -> list[str]:
    if kind in IN_CODE_ENGINES:
        return [sys.executable, str(RUNNER), "run", target, *flags]
    binary = native_binary()
    if binary is None:
        raise RuntimeError("the native `ardiq` binary is not built (run `make build`)")
    return [binary, "run", target, *flags]


class WorkerProcess:
    """A running worker process; its stderr is captured to a file for assertions."""

    def __init__(
        self, kind: str, target: str, *flags: str, env: dict[str, str], log_dir: Path
    ) -> None:
        self.kind = kind
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        # VIRTUAL_ENV lets a binary outside the venv (target/...) find the test venv.
        full_env = {
            **os.environ,
            "VIRTUAL_ENV": sys.prefix,
            **engine_env(kind),
            **env,
            # This checkout's package, not the one the venv was installed from (a git
            # worktree tests its own `ardiq`).
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT / "python")]),
        }
        self.proc = subprocess.Popen(
            worker_command(kind, target, *flags),
            cwd=TESTS,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
