"""Worker processes for behaviour tests, of either kind.

Both kinds are started the same way, as a subprocess given `module:attr` and the same
flags, so one test body covers the native `ardiq` binary and the in-code `app.run()`:

- `incode`: `python tests/support/incode_runner.py run MODULE:ATTR ...` (app.run());
- `native`: `ardiq run MODULE:ATTR ...` (the Rust binary), when it is built.
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


def worker_command(kind: str, target: str, *flags: str) -> list[str]:
    if kind == "incode":
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
        full_env = {**os.environ, "VIRTUAL_ENV": sys.prefix, **env, "PYTHONPATH": str(TESTS)}
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
