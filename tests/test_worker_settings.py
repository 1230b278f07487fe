"""The settings a worker runs with: one frozen, validated object both workers read."""

from __future__ import annotations

import dataclasses

import pytest
from ardiq import Ardiq
from ardiq._bridge import configure
from ardiq.worker_settings import WorkerOverrides, WorkerSettings


def make(**settings: object) -> Ardiq:
    return Ardiq(redis_url="redis://127.0.0.1:1", queue_name="q", **settings)  # type: ignore[arg-type]


def test_settings_are_the_apps_and_frozen() -> None:
    app = make(priorities=["low", "high"], concurrency=4, signing_key="k" * 32)

    @app.cron(every=2)
    async def tick() -> None: ...

    s = WorkerSettings.of(app)
    assert (s.queue_name, s.priorities, s.concurrency, s.prefetch) == ("q", ("low", "high"), 4, 8)
    assert s.signing_key == b"k" * 32 and s.signature_ttl_ms == 7 * 24 * 3600 * 1000
    (cron,) = s.crons
    assert (cron.name, cron.kind, cron.spec, cron.lane) == ("tick", "every", "2000", "high")
    assert s.tasks == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.concurrency = 5  # type: ignore[misc]


def test_overrides_are_checked_together() -> None:
    app = make(concurrency=4)
    # A default prefetch follows concurrency; a chosen one is kept (raised to N if below).
    assert WorkerSettings.of(app, WorkerOverrides(concurrency=10)).prefetch == 20
    chosen = make(concurrency=4, prefetch=6)
    assert WorkerSettings.of(chosen, WorkerOverrides(concurrency=10)).prefetch == 10
    assert WorkerSettings.of(chosen, WorkerOverrides(concurrency=2)).prefetch == 6
    with pytest.raises(ValueError, match=r"prefetch \(3\) must be at least concurrency \(4\)"):
        WorkerSettings.of(app, WorkerOverrides(prefetch=3))
    with pytest.raises(ValueError, match="shutdown_timeout_s"):
        WorkerSettings.of(app, WorkerOverrides(shutdown_timeout_s=0))
    with pytest.raises(ValueError, match="concurrency"):
        WorkerSettings.of(app, WorkerOverrides(concurrency=0))
    s = WorkerSettings.of(app, WorkerOverrides(redis_url="redis://h:2", burst=True))
    assert s.redis_url == "redis://h:2" and s.burst


def test_the_binary_gets_the_object_and_the_app_adopts_it() -> None:
    app = make(concurrency=4)
    s = configure(app, {"concurrency": 8, "burst": True}, "w-1")
    assert isinstance(s, WorkerSettings)
    # Task code and the runtime see what the engine runs with.
    assert (app.concurrency, app.prefetch, app.burst, app.worker_id) == (8, 16, True, "w-1")
    with pytest.raises(TypeError):
        configure(app, {"concurency": 8}, "w-1")  # a typo is an error, not ignored
