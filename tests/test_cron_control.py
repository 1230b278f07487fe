"""Crons paused, resumed and triggered, from the API (`app.pause_cron` ...) and the
command line (`ardiq cron ...`), on every kind of worker: a pause holds on every worker
(it lives in Redis, `P crons:paused`), resume does not make up skipped occurrences, and a
trigger runs the cron now, once per call, sealed like an occurrence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from apps.ledger import Ledger, stop_code
from ardiq import Ardiq, CronState, current_task
from support.ops_cli import ardiq, env_for
from support.redis_server import RedisServer
from support.workers import TESTS, WorkerProcess

KEY = "c2lnbmluZy1rZXktZm9yLWNyb24tdGVzdHMtMzItYnl0ZXMh"


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


def occurrences(ids: list[str]) -> list[int]:
    return sorted(int(i.rsplit(":", 1)[1]) for i in ids if ":now:" not in i)


def control_app(make_app: Callable[..., Ardiq], **settings: object) -> Ardiq:
    """A producer with the crons of apps.cron_control (registered, never run here)."""
    app = make_app(**settings)

    @app.cron(every=1)
    async def tick() -> None: ...

    @app.cron(every=1)
    async def tock() -> None: ...

    @app.cron("0 9 * * *", tz="Asia/Tokyo")
    async def report() -> None: ...

    return app


async def test_a_paused_cron_skips_occurrences_and_resumes_without_backfill(
    start_worker: Callable[..., WorkerProcess],
    make_app: Callable[..., Ardiq],
    ledger: Ledger,
) -> None:
    app = control_app(make_app)
    assert await app.pause_cron("tick") is True
    assert await app.pause_cron("tick") is False  # already paused: the first time is kept
    workers = [start_worker("apps.cron_control:app") for _ in range(2)]
    # `tock` shares tick's schedule: three of its occurrences fired means both workers
    # went through at least two of tick's (plus the one in flight) and skipped them.
    await ledger.wait_for("tock", 4, timeout=15)
    assert await ledger.items("tick") == []
    states = {s.name: s for s in await app.cron_states()}
    assert states["tick"].paused and states["tick"].paused_ms is not None
    assert states["tick"].last_fired_ms is None
    assert not states["tock"].paused and states["tock"].last_fired_ms is not None

    resumed_at = max(occurrences(await ledger.items("tock")))
    assert await app.resume_cron("tick") is True
    assert await app.resume_cron("tick") is False
    ticks = await ledger.wait_for("tick", 2, timeout=15)
    # From the next occurrence on: none of those skipped while paused is made up (one
    # may have been in flight when it resumed).
    assert min(occurrences(ticks)) >= resumed_at
    for w in workers:
        assert stop_code(w) == 0, w.output()
    assert len(set(ticks)) == len(ticks)


async def test_trigger_runs_now_once_per_call_sealed_and_leaves_the_schedule(
    start_worker: Callable[..., WorkerProcess],
    make_app: Callable[..., Ardiq],
    ledger: Ledger,
) -> None:
    # The worker signs, so it runs only what carries a valid seal.
    app = control_app(make_app, signing_key=KEY)
    await app.pause_cron("tick")
    worker = start_worker("apps.cron_control:app", env={"ARDIQ_SIGNING_KEY": KEY})
    jobs = [await app.trigger_cron("tick") for _ in range(2)]
    assert len({j.id for j in jobs}) == 2
    assert all(j.id.startswith("cron:tick:now:") for j in jobs)
    for job in jobs:
        result = await job.result(timeout=15)
        assert result is not None and result.success, result
    assert sorted(await ledger.items("tick")) == sorted(j.id for j in jobs)
    # Paused, the schedule goes on skipping: a trigger is no occurrence.
    await ledger.wait_for("tock", 3, timeout=15)
    state = next(s for s in await app.cron_states() if s.name == "tick")
    assert state.paused and state.last_fired_ms is None
    assert sorted(await ledger.items("tick")) == sorted(j.id for j in jobs)
    assert stop_code(worker) == 0, worker.output()


async def test_unknown_cron_names_are_refused(make_app: Callable[..., Ardiq]) -> None:
    app = control_app(make_app)
    for call in (app.pause_cron, app.resume_cron, app.trigger_cron):
        with pytest.raises(ValueError, match=r"no cron named 'tik'.*'tick'"):
            await call("tik")


async def test_cron_states_describe_each_cron(make_app: Callable[..., Ardiq]) -> None:
    app = control_app(make_app)
    states = await app.cron_states()
    assert [s.name for s in states] == ["tick", "tock", "report"]
    report = states[2]
    assert isinstance(report, CronState)
    assert (report.schedule, report.tz, report.paused) == ("0 9 * * *", "Asia/Tokyo", False)
    assert report.next_ms is not None and report.next_ms % 86_400_000 == 0  # 09:00 JST
    assert states[0].schedule == "every 1s" and states[0].tz is None


def test_sync_twins(make_app: Callable[..., Ardiq]) -> None:
    app = control_app(make_app)
    try:
        assert app.pause_cron_sync("tock") is True
        assert next(s for s in app.cron_states_sync() if s.name == "tock").paused
        assert app.resume_cron_sync("tock") is True
        assert app.trigger_cron_sync("tock").id.startswith("cron:tock:now:")
    finally:
        app.close_sync()


# ------------------------------------------------------------------ ardiq cron
def run_json(*args: str, env: dict[str, str]) -> dict[str, object]:
    out = ardiq(*args, "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


async def test_cli_pause_resume_trigger_and_list(
    redis_url: str, queue: str, make_app: Callable[..., Ardiq]
) -> None:
    env = env_for(redis_url, queue)
    app = control_app(make_app)
    with_app = ("--app", "apps.cron_control:app")

    listed = run_json("cron", "list", *with_app, env=env)
    crons = {c["name"]: c for c in listed["crons"]}  # type: ignore[attr-defined]
    assert list(crons) == ["tick", "tock", "report"]
    assert crons["report"]["lane"] == "default" and not crons["report"]["paused"]
    # The engine reads the spec in the app's zone: 09:00 in Tokyo is 00:00 UTC.
    assert crons["report"]["next_ms"] % 86_400_000 == 0

    assert run_json("cron", "pause", "tick", *with_app, env=env) == {
        "name": "tick",
        "status": "paused",
    }
    assert run_json("cron", "pause", "tick", *with_app, env=env)["status"] == "unchanged"
    assert next(s for s in await app.cron_states() if s.name == "tick").paused

    # Without the app: the names Redis knows (paused ones included).
    bare = ("--queue", queue)
    listed = run_json("cron", "list", *bare, env=env)
    assert listed["crons"] == [
        {
            "name": "tick",
            "paused": True,
            "paused_ms": listed["crons"][0]["paused_ms"],  # type: ignore[index]
            "last_fired_ms": None,
        }
    ]
    text = ardiq("cron", "list", *bare, env=env)
    assert text.returncode == 0 and "tick  paused since" in text.stdout, text
    assert run_json("cron", "resume", "tick", *bare, env=env)["status"] == "resumed"
    assert run_json("cron", "resume", "tick", *with_app, env=env)["status"] == "unchanged"
    # Without the app, a cron that neither fired nor is paused is unknown to Redis.
    assert ardiq("cron", "resume", "tick", *bare, env=env).returncode == 8

    triggered = run_json("cron", "trigger", "report", *with_app, env=env)
    assert str(triggered["id"]).startswith("cron:report:now:")
    assert await app.status(str(triggered["id"])) == "queued"


def test_cli_refuses_unknown_names_and_trigger_without_app(redis_url: str, queue: str) -> None:
    env = env_for(redis_url, queue)
    out = ardiq("cron", "pause", "tik", "--app", "apps.cron_control:app", env=env)
    assert out.returncode == 8, out
    assert "no cron `tik`" in out.stderr and "tick, tock, report" in out.stderr
    out = ardiq("cron", "pause", "never-fired", "--queue", queue, env=env)
    assert out.returncode == 8 and "--app" in out.stderr, out
    out = ardiq("cron", "trigger", "tick", "--queue", queue, env=env)
    assert out.returncode == 2 and "needs the app" in out.stderr, out


async def test_readme_acl_users_pause_resume_trigger_and_fire(
    own_redis: Callable[..., RedisServer],
    queue: str,
    worker_kind: str,
    tmp_path: Path,
) -> None:
    """The README's least-privilege users: a producer pauses, resumes and triggers, a
    worker fires (reading the pause inside the `cron` script); nothing refused."""
    section = (TESTS.parent / "README.md").read_text().split("## Security", 1)[1]
    args: list[str] = []
    for line in section.split("\n## ", 1)[0].splitlines():
        if line.startswith(("ACL SETUSER ardiq-producer ", "ACL SETUSER ardiq-worker ")):
            words = line.split()[2:]
            args += ["--user", *(f">{words[0]}-pw" if w.startswith(">") else w for w in words)]
    server = own_redis(*args)

    def url(user: str) -> str:
        return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"

    app = control_app(lambda **kw: Ardiq(url("ardiq-producer"), queue_name=queue, **kw))
    ledger = Ledger(server.url, queue)
    env = {
        "ARDIQ_REDIS_URL": url("ardiq-worker"),
        "ARDIQ_TEST_QUEUE": queue,
        "CRON_LEDGER_URL": server.url,
    }
    worker = WorkerProcess(worker_kind, "apps.cron_control:app", env=env, log_dir=tmp_path)
    try:
        assert await app.pause_cron("tick") is True
        await ledger.wait_for("tock", 3, timeout=15)
        job = await app.trigger_cron("tick")
        result = await job.result(timeout=15)
        assert result is not None and result.success, result
        assert await app.resume_cron("tick") is True
        ticks = await ledger.wait_for("tick", 2, timeout=15)
        assert job.id in ticks
        assert [s.paused for s in await app.cron_states()] == [False, False, False]
        assert stop_code(worker) == 0, worker.output()
        admin = Ledger(server.url, queue).client
        try:
            denied = []
            for e in await admin.execute_command("ACL", "LOG"):
                pairs = e.items() if isinstance(e, dict) else zip(e[::2], e[1::2], strict=True)
                fields = {_text(k): _text(v) for k, v in pairs}
                if fields["object"] != "config|get":  # the optional eviction-policy probe
                    denied.append(fields)
            assert denied == [], denied
        finally:
            await admin.aclose()
    finally:
        worker.close()
        await ledger.close()
        await app.aclose()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


async def test_inline_keeps_pauses_in_memory_and_runs_triggers_at_once(
    make_app: Callable[..., Ardiq],
) -> None:
    from ardiq.testing import inline

    app = make_app()
    runs: list[str] = []

    @app.cron("0 9 * * *", tz="Europe/Paris")
    async def report() -> None:
        task = current_task()
        assert task is not None
        runs.append(task.task_id)

    async with inline(app):
        assert await app.pause_cron("report") is True
        assert [s.paused for s in await app.cron_states()] == [True]
        job = await app.trigger_cron("report")
        assert runs == [job.id] and job.id.startswith("cron:report:now:")
        result = await job.result()
        assert result is not None and result.success
        assert await app.resume_cron("report") is True
        assert [s.paused for s in await app.cron_states()] == [False]
