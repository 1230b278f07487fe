"""`import ardiq` stays lean: no Redis client, no CLI or rendering library, no worker.

(How long the import takes is a benchmark figure, not a timed test.)
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("redis", "click", "rich", "typer", "colorama")

PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps({{"new": sorted(set(sys.modules) - before)}}))
"""


def probe(module: str = "ardiq") -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_import_loads_no_heavy_library() -> None:
    new = probe()["new"]
    assert isinstance(new, list)
    loaded = {name.split(".")[0] for name in new}
    assert "ardiq" in loaded
    for name in FORBIDDEN:
        assert name not in loaded, f"`import ardiq` imported {name}"
    # Nor does it pull in the worker machinery.
    for module in ("ardiq.worker", "ardiq.runtime", "ardiq.broker", "ardiq.client"):
        assert module not in new, f"`import ardiq` imported {module}"
    # Nor any integration, nor what they integrate with.
    for module in new:
        assert not module.startswith("ardiq.contrib"), f"`import ardiq` imported {module}"
    for name in ("opentelemetry", "fastapi", "starlette", "django"):
        assert name not in loaded, f"`import ardiq` imported {name}"


def test_asgi_helpers_need_no_framework() -> None:
    """`ardiq.contrib.asgi` works with any ASGI framework: it imports none, nor Redis."""
    new = probe("ardiq.contrib.asgi")["new"]
    assert isinstance(new, list)
    loaded = {name.split(".")[0] for name in new}
    for name in ("redis", "fastapi", "starlette", "opentelemetry"):
        assert name not in loaded, f"`import ardiq.contrib.asgi` imported {name}"


def test_native_engine_path_loads_no_pure_loop() -> None:
    """`app.run()` on the Rust engine imports `ardiq.worker.native`: neither the pure-Python
    loop nor the Redis client it needs come with it (about 8 MB of a worker's RSS)."""
    new = probe("ardiq.worker.native")["new"]
    assert isinstance(new, list)
    assert "ardiq.worker.native" in new
    for module in ("redis", "ardiq.worker.engine", "ardiq.broker"):
        assert module not in new, f"`import ardiq.worker.native` imported {module}"


def test_public_names() -> None:
    import ardiq

    for name in ardiq.__all__:
        assert hasattr(ardiq, name), name
    assert {"Ardiq", "Job", "TaskResult", "ArdiqError", "BrokerError", "Retry"} <= set(
        ardiq.__all__
    )
    assert issubclass(ardiq.ArdiqError, RuntimeError)
    assert issubclass(ardiq.BrokerError, ardiq.ArdiqError)
