"""Run `ardiq dashboard` on a free loopback port and talk to it over urllib.

`DashboardProcess(redis_url, "--queue", q, token=...)` starts the binary, waits until it
answers `api/config`, and `request()` returns the status, headers and body of any request
(errors included: no exception for a 4xx).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .redis_server import free_port
from .workers import TESTS, native_binary


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class DashboardProcess:
    """A running `ardiq dashboard`; its output is captured to a file."""

    def __init__(
        self,
        redis_url: str,
        *flags: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path,
    ) -> None:
        binary = native_binary()
        if binary is None:
            raise RuntimeError("the native `ardiq` binary is not built (run `make build`)")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_dir / f"dashboard-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARDIQ_")}
        full_env.update(
            VIRTUAL_ENV=sys.prefix,
            PYTHONPATH=str(TESTS),
            ARDIQ_REDIS_URL=redis_url,
            **({"ARDIQ_DASHBOARD_TOKEN": token} if token else {}),
            **(env or {}),
        )
        self.proc = subprocess.Popen(
            [binary, "dashboard", "--port", str(self.port), *flags],
            cwd=TESTS,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ardiq dashboard exited: {self.output()}")
            try:
                # Any answer (401 with a token) means it serves.
                self.request("GET", "api/config")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ardiq dashboard did not start: {self.output()}")

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        token: str | None = None,
    ) -> Answer:
        """`path` is relative to the server root (`api/queues`)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers=all_headers
        )
        try:
            with _OPENER.open(req, timeout=30) as r:
                return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def action(self, path: str, **kw: Any) -> Answer:
        """A POST as the page sends it (with `X-Ardiq-Action: 1` and a same-site Origin)."""
        headers = {
            "X-Ardiq-Action": "1",
            "Origin": f"http://127.0.0.1:{self.port}",
            **kw.pop("headers", {}),
        }
        return self.request("POST", path, headers=headers, body=b"", **kw)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
