"""Running the `ardiq` binary's ops commands (`info`, `dlq`, `job`, `dashboard`, ...) in
tests: the binary, an environment that names the test's Redis and queue, one call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.workers import TESTS, native_binary


def binary() -> str:
    """The `ardiq` binary; the test fails (never skips) when it is not built."""
    path = native_binary()
    if path is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    return path


def env_for(redis_url: str, queue: str) -> dict[str, str]:
    """This process's environment without any `ARDIQ_*`/`OPS_*` setting of the caller's,
    pointed at `redis_url` and the test apps' queue `queue`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARDIQ_", "OPS_"))}
    env.update(
        VIRTUAL_ENV=sys.prefix,
        PYTHONPATH=str(TESTS),
        ARDIQ_REDIS_URL=redis_url,
        ARDIQ_TEST_QUEUE=queue,
    )
    return env


def ardiq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ardiq <args>` from the tests folder, its output captured."""
    return subprocess.run(
        [binary(), *args], cwd=TESTS, env=env, capture_output=True, text=True, timeout=60
    )
