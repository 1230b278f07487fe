"""`ardiq dashboard`'s JSON API, driven over HTTP against the real binary: every route,
the shapes shared with the ops commands' `--json`, the token, the cross-site checks,
`--read-only`, the security headers, untrusted text staying text, a replayed dead letter
running again, and pages that stay bounded on a big queue.

The seed: two dead letters (`flaky`, and a task whose name is markup: unknown to the
worker), a retry waiting out a ten-minute backoff (`later`), three tasks queued on
`default` (the first delivered to a live worker), two scheduled, and history and
throughput counters written as the protocol lays them out (PROTOCOL.md, "History").
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from ardiq import Ardiq
from support.dashboard import Answer, DashboardProcess
from support.ops_cli import ardiq, binary, env_for
from support.redis_server import RedisServer
from support.workers import TESTS

APP = "apps.dashboard_app:app"
LANES = ["low", "default", "high"]
LIVE = "live-worker"
MARKUP = "<img src=x onerror=alert(1)>"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'"
)


@dataclass
class Seeded:
    url: str
    queue: str
    env: dict[str, str]
    mark: Path  # `flaky` succeeds once this file exists
    flaky: str
    markup: str
    retry: str
    queued: list[str]  # default lane: [held by LIVE, waiting, waiting]
    scheduled: list[str]

    def ops(self, *args: str) -> Any:
        """An ops command's --json document on this queue."""
        out = ardiq(
            *args, "--queue", self.queue, "--lanes", ",".join(LANES), "--json", env=self.env
        )
        assert out.returncode in (0, 8), out.stderr
        return json.loads(out.stdout)

    def key(self, name: str) -> str:
        return f"ardiq:{{{self.queue}}}:{name}"


@pytest.fixture
def seeded(redis_url: str, queue: str, tmp_path: Path) -> Seeded:
    env = env_for(redis_url, queue)
    mark = tmp_path / "flaky-may-pass"
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    prefix = f"ardiq:{{{queue}}}:"
    r = redis.Redis.from_url(redis_url)
    try:
        flaky = app.send_sync("flaky", str(mark)).id
        markup = app.send_sync(MARKUP, "x").id  # no such task: a dead letter
        retry = app.send_sync("later", 1).id
        # Not --burst: a burst worker waits for the retries it schedules to fall due.
        worker = subprocess.Popen(
            [binary(), "run", APP, "--quiet"],
            cwd=TESTS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while r.zcard(prefix + "dead") < 2 or r.zscore(prefix + "delayed", retry) is None:
                assert time.monotonic() < deadline, "the seed's worker did not finish its tasks"
                time.sleep(0.05)
        finally:
            worker.terminate()
            assert worker.wait(30) == 0
        r.delete(prefix + "crons")  # whatever cron it may have fired meanwhile
        queued = [app.send_sync("ok", i).id for i in range(3)]
        scheduled = [app.ref("ok").options(delay_ms=600_000).enqueue_sync(i).id for i in range(2)]
    finally:
        app.close_sync()
    r.xreadgroup("ardiq", LIVE, {prefix + "stream:default": ">"}, count=1)
    r.zadd(prefix + "workers", {LIVE: int(time.time() * 1000)})
    r.close()
    return Seeded(redis_url, queue, env, mark, flaky, markup, retry, queued, scheduled)


@pytest.fixture
def dashboards(tmp_path: Path) -> Iterator[Callable[..., DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(redis_url: str, *flags: str, **kw: Any) -> DashboardProcess:
        d = DashboardProcess(redis_url, *flags, log_dir=tmp_path, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


@pytest.fixture
def dash(seeded: Seeded, dashboards: Callable[..., DashboardProcess]) -> DashboardProcess:
    return dashboards(seeded.url, "--queue", seeded.queue, "--lanes", ",".join(LANES))


def ok(answer: Answer) -> Any:
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    return answer.json()


def without(doc: Any, *volatile: str) -> Any:
    """`doc` with the fields that change between two reads dropped, at any depth."""
    if isinstance(doc, dict):
        return {k: without(v, *volatile) for k, v in doc.items() if k not in volatile}
    if isinstance(doc, list):
        return [without(v, *volatile) for v in doc]
    return doc


VOLATILE = ("server_ms", "age_ms", "oldest_waiting_ms", "idle_ms")


# ------------------------------------------------------------------------- the reads
def test_config_and_queues_have_the_shapes_of_info(seeded: Seeded, dash: DashboardProcess) -> None:
    config = ok(dash.get("api/config"))
    assert config["queues"] == [seeded.queue]
    assert config["read_only"] is False and config["auth"] is False
    assert isinstance(config["version"], str) and config["version"]
    assert config["redis"] == seeded.url
    doc = ok(dash.get("api/queues"))
    assert without(doc, *VOLATILE) == without(seeded.ops("info"), *VOLATILE)
    (q,) = doc["queues"]
    lanes = {lane["lane"]: lane for lane in q["lanes"]}
    assert (lanes["default"]["waiting"], lanes["default"]["running"]) == (2, 1)
    assert q["dead"] == 2 and q["scheduled"] == 3  # two delayed, one retry waiting


def test_job_as_ardiq_job_with_its_arguments(seeded: Seeded, dash: DashboardProcess) -> None:
    held = seeded.queued[0]
    doc = ok(dash.get(f"api/queues/{seeded.queue}/jobs/{held}"))
    assert without(doc, *VOLATILE) == without(seeded.ops("job", held), *VOLATILE)
    assert doc["status"] == "running" and doc["holder"]["worker"] == LIVE
    assert "args" not in doc  # only on request
    doc = ok(dash.get(f"api/queues/{seeded.queue}/jobs/{held}?args=1"))
    assert doc["args"]["format"] == "msgpack"
    assert (doc["args"]["args"], doc["args"]["kwargs"]) == ([0], {})
    assert doc["args"]["headers"] in (None, {})
    dead = ok(dash.get(f"api/queues/{seeded.queue}/jobs/{seeded.flaky}?args=1"))
    assert dead["status"] == "dead" and dead["args"]["args"] == [str(seeded.mark)]
    assert dead["dead_letter"]["error"].startswith("RuntimeError('<b>not yet</b>")
    # Progress and failed attempts, as workers record them (PROTOCOL.md), as `ardiq job`.
    r = redis.Redis.from_url(seeded.url)
    progress = {"v": 40, "m": "<b>step</b> 2", "t": 0, "at": 1}
    r.set(seeded.key(f"progress:{held}"), json.dumps(progress))
    attempt = {"n": 1, "k": "retry", "w": "w1", "st": 1, "fin": 2, "err": "<i>boom</i>"}
    r.rpush(seeded.key(f"attempts:{held}"), json.dumps(attempt))
    r.close()
    doc = ok(dash.get(f"api/queues/{seeded.queue}/jobs/{held}"))
    assert doc["progress"] == progress and doc["attempts"] == [attempt]
    assert without(doc, *VOLATILE) == without(seeded.ops("job", held), *VOLATILE)
    missing = dash.get(f"api/queues/{seeded.queue}/jobs/nope")
    assert missing.status == 404 and missing.json()["status"] == "not_found"
    assert dash.get(f"api/queues/{seeded.queue}/jobs/{held}?args=maybe").status == 400
    assert dash.get(f"api/queues/no-such-queue/jobs/{held}").status == 404


def test_payloads_of_other_serializers_are_not_decoded(
    seeded: Seeded, dash: DashboardProcess
) -> None:
    r = redis.Redis.from_url(seeded.url)
    r.hset(
        seeded.key("dead:pickled"),
        mapping={
            "fn": "ok",
            "l": "default",
            "p": b"\x80\x04K\x01.",
            "err": "x",
            "t": 1,
            "enq": 1,
            "fail": 2,
        },
    )
    r.zadd(seeded.key("dead"), {"pickled": 2})
    r.hset(
        seeded.key("dead:sealed"),
        mapping={"fn": "ok", "l": "default", "p": b"\xc1AQS2" + bytes(80), "fail": 3},
    )
    r.zadd(seeded.key("dead"), {"sealed": 3})
    r.close()
    doc = ok(dash.get(f"api/queues/{seeded.queue}/jobs/pickled?args=1"))
    assert doc["args"]["format"] == "unknown" and "args" not in doc["args"]
    doc = ok(dash.get(f"api/queues/{seeded.queue}/jobs/sealed?args=1"))
    assert doc["args"]["format"] == "sealed"


def test_dead_letters_as_dlq_list(seeded: Seeded, dash: DashboardProcess) -> None:
    doc = ok(dash.get(f"api/queues/{seeded.queue}/dead"))
    listed = seeded.ops("dlq", "list")
    assert doc["total"] == listed["total"] == 2 and doc["offset"] == 0
    assert doc["dead_letters"] == listed["dead_letters"]
    page = ok(dash.get(f"api/queues/{seeded.queue}/dead?offset=1&limit=1"))
    assert page["dead_letters"] == listed["dead_letters"][1:]
    for bad in ("limit=0", "limit=501", "offset=-1", "limit=x"):
        answer = dash.get(f"api/queues/{seeded.queue}/dead?{bad}")
        assert answer.status == 400 and "error" in answer.json(), bad


def test_markup_in_names_and_errors_comes_back_as_json_strings(
    seeded: Seeded, dash: DashboardProcess
) -> None:
    answer = dash.get(f"api/queues/{seeded.queue}/dead")
    letters = {d["id"]: d for d in ok(answer)["dead_letters"]}
    assert letters[seeded.markup]["name"] == MARKUP
    assert MARKUP in letters[seeded.markup]["error"]  # unknown task '<img ...>'
    # Plain JSON text: the markup sits in a JSON string, as the characters it is.
    assert json.dumps(MARKUP).encode() in answer.body
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_scheduled_pages_and_run_now(seeded: Seeded, dash: DashboardProcess) -> None:
    base = f"api/queues/{seeded.queue}/scheduled"
    doc = ok(dash.get(base))
    assert doc["total"] == 3 and doc["next"] is None
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert set(tasks) == {*seeded.scheduled, seeded.retry}
    assert tasks[seeded.retry]["retry"] is True and tasks[seeded.retry]["tries"] == 1
    assert tasks[seeded.retry]["name"] == "later"
    assert not tasks[seeded.scheduled[0]]["retry"]
    assert [t["due_ms"] for t in doc["tasks"]] == sorted(t["due_ms"] for t in doc["tasks"])
    # A page at a time, by cursor.
    first = ok(dash.get(f"{base}?limit=2"))
    assert len(first["tasks"]) == 2 and first["next"]
    rest = ok(dash.get(f"{base}?limit=2&after={first['next']}"))
    assert [t["id"] for t in first["tasks"] + rest["tasks"]] == [t["id"] for t in doc["tasks"]]
    assert rest["next"] is None
    assert dash.get(f"{base}?after=soon").status == 400

    # Run the retry now: queued in its lane, a fresh entry.
    run = dash.action(f"{base}/{seeded.retry}/run")
    assert run.status == 200 and run.json() == {"id": seeded.retry, "status": "queued"}
    assert seeded.ops("job", seeded.retry)["status"] == "queued"
    again = dash.action(f"{base}/{seeded.retry}/run")
    assert again.status == 404 and again.json()["status"] == "not_scheduled"
    assert ok(dash.get(base))["total"] == 2


def test_workers_with_what_each_holds(seeded: Seeded, dash: DashboardProcess) -> None:
    doc = ok(dash.get(f"api/queues/{seeded.queue}/workers"))
    assert doc["total"] == 1
    (w,) = doc["workers"]
    assert w["id"] == LIVE and w["alive"] and w["pending"] == 1
    assert w["held_truncated"] is False
    (held,) = w["held"]
    assert held["id"] == seeded.queued[0] and held["name"] == "ok" and held["lane"] == "default"
    assert held["deliveries"] == 1 and held["entry"]
    none = ok(dash.get(f"api/queues/{seeded.queue}/workers?held=0"))
    assert none["workers"][0]["held"] == [] and none["workers"][0]["held_truncated"] is True
    assert dash.get(f"api/queues/{seeded.queue}/workers?held=101").status == 400


def test_stats_per_minute(seeded: Seeded, dash: DashboardProcess) -> None:
    r = redis.Redis.from_url(seeded.url)
    for _ in range(3):  # again if a minute turned between the seed and the read
        minute = int(r.time()[0]) // 60
        r.delete(seeded.key("stats"))
        r.hset(
            seeded.key("stats"),
            mapping={
                f"ok:{minute}": 7,
                f"ok:{minute - 2}": 3,
                f"fail:{minute - 1}": 2,
                f"ok:{minute - 99}": 50,
            },
        )
        doc = ok(dash.get(f"api/queues/{seeded.queue}/stats?minutes=3"))
        if doc["now_ms"] // 60_000 == minute:
            break
    r.close()
    assert doc["minutes_ms"] == [(minute - 2 + i) * 60_000 for i in range(3)]
    assert doc["kinds"]["ok"] == [3, 0, 7] and doc["kinds"]["fail"] == [0, 2, 0]
    assert doc["kinds"]["retry"] == [0, 0, 0]
    assert set(doc["kinds"]) == {"ok", "fail", "retry", "expired", "abort", "lost"}
    assert doc["totals"]["ok"] == 10 and doc["now_ms"] // 60_000 == minute
    assert len(ok(dash.get(f"api/queues/{seeded.queue}/stats"))["minutes_ms"]) == 60
    for bad in ("0", "1441", "x"):
        assert dash.get(f"api/queues/{seeded.queue}/stats?minutes={bad}").status == 400


def test_history_pages_by_entry_id(seeded: Seeded, dash: DashboardProcess) -> None:
    r = redis.Redis.from_url(seeded.url)
    # What the seeding workers completed is history too: it pages after ours.
    earlier = r.xrevrange(seeded.key("history"))  # type: ignore[union-attr]
    earlier_ids = [fields[b"id"].decode() for _, fields in earlier]
    earlier_failed = [fields[b"id"].decode() for _, fields in earlier if fields[b"k"] == b"fail"]
    for i in range(25):
        kind = "fail" if i % 5 == 0 else "ok"
        fields = {
            "id": f"h{i}",
            "fn": MARKUP if i == 24 else "ok",
            "l": "default",
            "k": kind,
            "t": 1,
            "enq": 1000 + i,
            "st": 2000 + i,
            "fin": 3000 + i,
            "w": "w1",
        }
        if kind != "ok":
            fields["err"] = f"boom {i}"
        r.xadd(seeded.key("history"), fields)  # type: ignore[arg-type]
    r.close()
    base = f"api/queues/{seeded.queue}/history"
    first = ok(dash.get(f"{base}?limit=10"))
    assert [e["id"] for e in first["entries"]] == [f"h{i}" for i in range(24, 14, -1)]
    assert first["entries"][0]["name"] == MARKUP and first["entries"][0]["error"] is None
    seen = [e["id"] for e in first["entries"]]
    cursor = first["next"]
    while cursor:
        page = ok(dash.get(f"{base}?limit=10&before={cursor}"))
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next"]
    assert seen == [f"h{i}" for i in range(24, -1, -1)] + earlier_ids
    failed = ok(dash.get(f"{base}?kind=fail&limit=3"))
    assert [e["id"] for e in failed["entries"]] == ["h20", "h15", "h10"]
    assert (
        failed["entries"][0]["error"] == "boom 20" and failed["entries"][0]["finished_ms"] == 3020
    )
    rest = ok(dash.get(f"{base}?kind=fail&before={failed['next']}"))
    assert [e["id"] for e in rest["entries"]] == ["h5", "h0", *earlier_failed]
    assert rest["next"] is None
    assert dash.get(f"{base}?kind=nope").status == 400
    assert dash.get(f"{base}?before=yesterday").status == 400


def test_crons_from_the_app_and_from_redis(
    seeded: Seeded, dashboards: Callable[..., DashboardProcess]
) -> None:
    r = redis.Redis.from_url(seeded.url)
    r.hset(seeded.key("crons"), "every_five", 1_700_000_000_000)
    r.close()
    with_app = dashboards(seeded.url, "--app", APP, env={"ARDIQ_TEST_QUEUE": seeded.queue})
    assert ok(with_app.get("api/config"))["queues"] == [seeded.queue]
    doc = ok(with_app.get(f"api/queues/{seeded.queue}/crons"))
    assert doc["source"] == "app"
    crons = {c["name"]: c for c in doc["crons"]}
    assert set(crons) == {"every_five", "<i>minutely</i>"}
    five = crons["every_five"]
    assert five["last_fired_ms"] == 1_700_000_000_000 and five["lane"] == "default"
    runs = five["next_runs_ms"]
    assert len(runs) == 5 and runs == sorted(runs) and runs[0] > doc["server_ms"]
    assert all(ms % 300_000 == 0 for ms in runs)
    assert [b - a for a, b in itertools.pairwise(runs)] == [300_000] * 4
    assert crons["<i>minutely</i>"]["last_fired_ms"] is None
    # The app's lanes, in its order.
    (q,) = ok(with_app.get("api/queues"))["queues"]
    assert [lane["lane"] for lane in q["lanes"]] == LANES

    # Without the app: what Redis remembers.
    plain = dashboards(seeded.url, "--queue", seeded.queue)
    doc = ok(plain.get(f"api/queues/{seeded.queue}/crons"))
    assert doc["source"] == "redis"
    assert doc["crons"] == [
        {
            "name": "every_five",
            "task": None,
            "lane": None,
            "next_runs_ms": None,
            "last_fired_ms": 1_700_000_000_000,
            "paused": False,
            "paused_ms": None,
        }
    ]


def test_every_queue_of_the_database_without_flags(
    seeded: Seeded, dashboards: Callable[..., DashboardProcess]
) -> None:
    everything = dashboards(seeded.url)
    assert seeded.queue in ok(everything.get("api/config"))["queues"]
    found = {q["queue"]: q for q in ok(everything.get("api/queues"))["queues"]}
    assert sorted(lane["lane"] for lane in found[seeded.queue]["lanes"]) == sorted(LANES)


def test_purge_as_ardiq_purge(seeded: Seeded, dash: DashboardProcess) -> None:
    doc = ok(dash.action(f"api/queues/{seeded.queue}/purge"))
    # Queued: two waiting; the held one belongs to a live worker (skipped without force).
    assert doc == {"queue": seeded.queue, "queued": 2, "scheduled": 3, "delivered": 0, "skipped": 1}
    forced = ok(dash.action(f"api/queues/{seeded.queue}/purge?force=1"))
    assert forced["delivered"] == 1
    assert seeded.ops("job", seeded.queued[1])["result"]["error"] == "purged"


def test_pause_and_resume_as_ardiq_pause(seeded: Seeded, dash: DashboardProcess) -> None:
    q = seeded.queue
    doc = ok(dash.action(f"api/queues/{q}/pause?lane=high"))
    assert doc == {"queue": q, "lane": "high", "changed": True, "paused": ["high"]}
    assert ok(dash.action(f"api/queues/{q}/pause?lane=high"))["changed"] is False
    assert ok(dash.action(f"api/queues/{q}/pause"))["paused"] == ["*", "high"]
    # The queue and its lanes show it, as `ardiq info --json` does.
    (info,) = ok(dash.get("api/queues"))["queues"]
    assert info["paused"] is True and all(lane["paused"] for lane in info["lanes"])
    assert seeded.ops("info")["queues"][0]["paused"] is True
    doc = ok(dash.action(f"api/queues/{q}/resume"))
    assert doc == {"queue": q, "lane": None, "changed": True, "paused": ["high"]}
    (info,) = ok(dash.get("api/queues"))["queues"]
    assert info["paused"] is False
    assert {lane["lane"]: lane["paused"] for lane in info["lanes"]} == {
        "low": False,
        "default": False,
        "high": True,
    }
    bad = dash.action(f"api/queues/{q}/pause?lane=nope")
    assert bad.status == 400 and "low, default, high" in bad.json()["error"]
    assert dash.get(f"api/queues/{q}/pause").status == 405
    assert ok(dash.action(f"api/queues/{q}/resume?lane=high"))["paused"] == []


# ------------------------------------------------------------------------ the actions
def test_replay_of_a_dead_letter_then_a_worker_runs_it(
    seeded: Seeded, dash: DashboardProcess
) -> None:
    seeded.mark.touch()  # `flaky` passes from now on
    base = f"api/queues/{seeded.queue}/dead/{seeded.flaky}"
    replay = dash.action(f"{base}/replay")
    assert replay.status == 200, replay.body
    assert replay.json() == {"replayed": 1, "results": [{"id": seeded.flaky, "status": "replayed"}]}
    again = dash.action(f"{base}/replay")
    assert again.status == 404 and again.json()["results"][0]["status"] == "not_found"
    assert ok(dash.get(f"api/queues/{seeded.queue}/jobs/{seeded.flaky}"))["status"] == "queued"
    burst = ardiq("run", APP, "--burst", "--quiet", env=seeded.env)
    assert burst.returncode == 0, burst.stderr
    job = ok(dash.get(f"api/queues/{seeded.queue}/jobs/{seeded.flaky}"))
    assert job["status"] == "complete" and job["result"]["ok"] is True
    assert job["dead_letter"] is None

    delete = dash.action(f"api/queues/{seeded.queue}/dead/{seeded.markup}/delete")
    assert delete.status == 200
    assert delete.json() == {"deleted": 1, "results": [{"id": seeded.markup, "status": "deleted"}]}
    assert dash.action(f"api/queues/{seeded.queue}/dead/{seeded.markup}/delete").status == 404
    assert ok(dash.get(f"api/queues/{seeded.queue}/dead"))["total"] == 0


def test_a_signed_dead_letter_is_replayed_with_the_key(
    redis_url: str, queue: str, tmp_path: Path, dashboards: Callable[..., DashboardProcess]
) -> None:
    """Replaying a sealed dead letter seals it again, which needs the signing key: the
    dashboard (and `ardiq dlq replay`) take it from ARDIQ_SIGNING_KEY like the worker."""
    key = "dashboard-test-signing-key-0123456789"
    env = {**env_for(redis_url, queue), "ARDIQ_SIGNING_KEY": key}
    mark = tmp_path / "flaky-may-pass"
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES, signing_key=key)
    try:
        ids = [app.send_sync("flaky", str(mark)).id for _ in range(2)]
    finally:
        app.close_sync()
    burst = ardiq("run", APP, "--burst", "--quiet", env=env)
    assert burst.returncode == 0, burst.stderr
    flags = ("--queue", queue, "--lanes", ",".join(LANES))
    keyless = dashboards(redis_url, *flags)
    job = ok(keyless.get(f"api/queues/{queue}/jobs/{ids[0]}?args=1"))
    assert job["status"] == "dead" and job["args"]["format"] == "sealed"
    refused = keyless.action(f"api/queues/{queue}/dead/{ids[0]}/replay")
    assert refused.status == 409 and refused.json()["results"][0]["status"] == "needs_key"
    keyed = dashboards(redis_url, *flags, env={"ARDIQ_SIGNING_KEY": key})
    assert keyed.action(f"api/queues/{queue}/dead/{ids[0]}/replay").status == 200
    # The ops command reads the key the same way.
    cli = ardiq("dlq", "replay", ids[1], *flags, "--json", env=env)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    mark.touch()
    burst = ardiq("run", APP, "--burst", "--quiet", env=env)
    assert burst.returncode == 0, burst.stderr
    for task_id in ids:
        done = ok(keyed.get(f"api/queues/{queue}/jobs/{task_id}"))
        assert done["status"] == "complete" and done["result"]["ok"] is True, done
    assert key not in keyed.output()


def test_crons_paused_resumed_and_triggered(
    seeded: Seeded, dashboards: Callable[..., DashboardProcess]
) -> None:
    """As `ardiq cron pause|resume|trigger --json`: a pause holds in Redis (the worker's
    `cron` script reads it), a trigger needs the app (its task, lane and key)."""
    q = seeded.queue
    with_app = dashboards(seeded.url, "--app", APP, env={"ARDIQ_TEST_QUEUE": q})
    base = f"api/queues/{q}/crons"
    pause = with_app.action(f"{base}/every_five/pause")
    assert pause.status == 200 and pause.json() == {"name": "every_five", "status": "paused"}
    assert ok(with_app.action(f"{base}/every_five/pause"))["status"] == "unchanged"
    crons = {c["name"]: c for c in ok(with_app.get(base))["crons"]}
    assert crons["every_five"]["paused"] is True
    assert crons["every_five"]["paused_ms"] > 0
    assert crons["<i>minutely</i>"]["paused"] is False
    # The same pause, seen by the command line and by a dashboard without the app.
    assert seeded.ops("cron", "list")["crons"][0]["paused"] is True
    plain = dashboards(seeded.url, "--queue", q, "--lanes", ",".join(LANES))
    (listed,) = ok(plain.get(base))["crons"]
    assert (listed["name"], listed["paused"], listed["last_fired_ms"]) == (
        "every_five",
        True,
        None,
    )
    assert plain.action(f"{base}/every_five/trigger").status == 409
    assert plain.action(f"{base}/nope/pause").status == 404
    assert ok(plain.action(f"{base}/every_five/resume"))["status"] == "resumed"
    assert ok(with_app.action(f"{base}/every_five/resume"))["status"] == "unchanged"
    # Without the app, a cron that neither fired nor is paused is unknown to Redis.
    assert plain.action(f"{base}/every_five/resume").status == 404

    trigger = ok(with_app.action(f"{base}/%3Ci%3Eminutely%3C%2Fi%3E/trigger"))
    assert trigger["status"] == "queued" and trigger["name"] == "<i>minutely</i>"
    assert trigger["id"].startswith("cron:<i>minutely</i>:now:")
    job = ok(with_app.get(f"api/queues/{q}/jobs/{urllib.parse.quote(trigger['id'], safe='')}"))
    assert job["status"] == "queued"
    assert with_app.action(f"{base}/nope/trigger").status == 404
    assert with_app.get(f"{base}/every_five/pause").status == 405


def test_actions_need_the_header_and_the_same_origin(
    seeded: Seeded, dash: DashboardProcess
) -> None:
    path = f"api/queues/{seeded.queue}/dead/{seeded.flaky}/delete"
    plain = dash.request("POST", path, body=b"")
    assert plain.status == 403 and "X-Ardiq-Action" in plain.json()["error"]
    cross = dash.action(path, headers={"Origin": "http://evil.example"})
    assert cross.status == 403 and "Origin" in cross.json()["error"]
    null = dash.action(path, headers={"Origin": "null"})
    assert null.status == 403
    # A GET never changes anything; a POST on a read is not allowed either.
    get = dash.get(path)
    assert get.status == 405 and get.headers["allow"] == "POST"
    post_read = dash.action(f"api/queues/{seeded.queue}/dead")
    assert post_read.status == 405
    assert seeded.ops("dlq", "list")["total"] == 2  # nothing was deleted
    # Without an Origin (curl, scripts) the header is enough.
    assert dash.request("POST", path, body=b"", headers={"X-Ardiq-Action": "1"}).status == 200


def test_read_only_refuses_every_action(
    seeded: Seeded, dashboards: Callable[..., DashboardProcess]
) -> None:
    ro = dashboards(
        seeded.url,
        "--queue",
        seeded.queue,
        "--lanes",
        ",".join(LANES),
        env={"ARDIQ_DASHBOARD_READ_ONLY": "true"},
    )
    assert ok(ro.get("api/config"))["read_only"] is True
    q = seeded.queue
    for path in (
        f"api/queues/{q}/scheduled/{seeded.retry}/run",
        f"api/queues/{q}/dead/{seeded.flaky}/replay",
        f"api/queues/{q}/dead/{seeded.flaky}/delete",
        f"api/queues/{q}/purge",
        f"api/queues/{q}/crons/every_five/pause",
        f"api/queues/{q}/crons/every_five/trigger",
        f"api/queues/{q}/pause",
        f"api/queues/{q}/resume?lane=high",
    ):
        answer = ro.action(path)
        assert answer.status == 403 and "read-only" in answer.json()["error"], path
    assert seeded.ops("dlq", "list")["total"] == 2
    assert seeded.ops("job", seeded.retry)["status"] == "scheduled"
    assert ok(ro.get(f"api/queues/{q}/dead"))["total"] == 2  # reads still work


def test_without_a_token_only_addresses_and_allowed_names_are_served(
    seeded: Seeded, dash: DashboardProcess, dashboards: Callable[..., DashboardProcess]
) -> None:
    """A page on another site that makes its own name resolve to 127.0.0.1 (DNS
    rebinding) sends its own name as Host: refused, unless given with --allowed-host."""
    rebound = dash.get("api/queues", headers={"Host": f"evil.example:{dash.port}"})
    assert rebound.status == 421 and "--allowed-host" in rebound.json()["error"]
    assert dash.get("api/queues", headers={"Host": f"localhost:{dash.port}"}).status == 200
    named = dashboards(seeded.url, "--queue", seeded.queue, "--allowed-host", "Dash.Example")
    assert named.get("api/config", headers={"Host": "dash.example"}).status == 200
    assert named.get("api/config", headers={"Host": "evil.example"}).status == 421
    # With a token the name does not matter: the token (or cookie) is what counts.
    guarded = dashboards(seeded.url, "--queue", seeded.queue, token=TOKEN)
    assert guarded.get("api/config", headers={"Host": "evil.example"}).status == 401
    answer = guarded.get("api/config", headers={"Host": "evil.example"}, token=TOKEN)
    assert answer.status == 200


def readme_dashboard_user() -> list[str]:
    """The README's `ACL SETUSER ardiq-dashboard` line, as redis-server arguments."""
    text = (TESTS.parent / "README.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ACL SETUSER ardiq-dashboard ")]
    return line.split()[2:]


def test_read_only_works_with_the_readme_acl_user(
    own_redis: Callable[..., RedisServer], queue: str, dashboards: Callable[..., DashboardProcess]
) -> None:
    server = own_redis("--user", *readme_dashboard_user())
    app = Ardiq(redis_url=server.url, queue_name=queue, priorities=LANES)
    try:
        task = app.send_sync("ok", 1).id
        app.ref("ok").options(delay_ms=600_000).enqueue_sync(2)
    finally:
        app.close_sync()
    r = redis.Redis.from_url(server.url)
    stream = f"ardiq:{{{queue}}}:stream:default"
    r.xgroup_create(stream, "ardiq", id="0")  # as a worker's first fetch does
    r.xreadgroup("ardiq", LIVE, {stream: ">"}, count=1)
    r.close()
    url = server.url.replace("redis://", "redis://ardiq-dashboard:dashboard-password@")
    for flags in (("--queue", queue), ()):  # lanes (and queues) found with SCAN
        d = dashboards(url, *flags, "--read-only")
        base = f"api/queues/{queue}"
        for path in (
            "api/queues",
            f"{base}/stats",
            f"{base}/workers",
            f"{base}/history",
            f"{base}/jobs/{task}?args=1",
            f"{base}/scheduled",
            f"{base}/dead",
            f"{base}/crons",
        ):
            ok(d.get(path))
        (q,) = [q for q in ok(d.get("api/queues"))["queues"] if q["queue"] == queue]
        assert q["scheduled"] == 1 and q["workers"][0]["id"] == LIVE
        assert ok(d.get(f"{base}/jobs/{task}?args=1"))["args"]["args"] == [1]


# ---------------------------------------------------------------------- the token
TOKEN = "correct horse battery staple"


def test_the_token_guards_every_route(
    seeded: Seeded, dashboards: Callable[..., DashboardProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d = dashboards(
        seeded.url, "--queue", seeded.queue, env={"ARDIQ_DASHBOARD_TOKEN_FILE": str(token_file)}
    )
    q = seeded.queue
    guarded = [
        "",
        "index.html",
        "app.js",
        "api/config",
        "api/queues",
        f"api/queues/{q}/dead",
        f"api/queues/{q}/jobs/{seeded.flaky}",
    ]
    for path in guarded:
        refused = d.get(path)
        assert refused.status == 401, path
        assert refused.json() == {"error": "a token is needed"}, path
        assert d.get(path, token="wrong").status == 401, path
        assert d.get(path, token=TOKEN).status == 200, path
    assert d.action(f"api/queues/{q}/dead/{seeded.flaky}/delete").status == 401
    # A browser asking for the page is sent to the login page, which is open.
    page = d.get("", headers={"Accept": "text/html"})
    assert page.status == 303 and page.headers["location"] == "login"
    login = d.get("login")
    assert login.status == 200 and b"<form" in login.body
    assert d.get("style.css").status == 200
    assert ok(d.get("api/config", token=TOKEN))["auth"] is True

    # The login form: the cookie is derived from the token, not the token.
    form = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "text/html",
        "Origin": f"http://127.0.0.1:{d.port}",
    }
    wrong = d.request("POST", "login", headers=form, body=b"token=nope")
    assert wrong.status == 303 and wrong.headers["location"] == "login?failed=1"
    assert "set-cookie" not in wrong.headers
    body = b"token=" + TOKEN.replace(" ", "+").encode()
    right = d.request("POST", "login", headers=form, body=body)
    assert right.status == 303 and right.headers["location"] == "./"
    cookie = right.headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs), cookie
    assert "correct" not in cookie and "horse" not in cookie
    session = attrs[0]
    assert d.get("api/queues", headers={"Cookie": session}).status == 200
    assert d.get("", headers={"Cookie": session}).status == 200
    assert d.get("api/queues", headers={"Cookie": session[:-1] + "0"}).status in (401,)
    assert d.get("api/queues", headers={"Cookie": f"ardiq_session={TOKEN}"}).status == 401
    cross = d.request("POST", "login", headers={**form, "Origin": "http://evil.example"}, body=body)
    assert cross.status == 403
    # The token never shows in the output.
    assert TOKEN not in d.output()


# -------------------------------------------------------------------- every response
def test_security_headers_on_every_response(seeded: Seeded, dash: DashboardProcess) -> None:
    answers = [
        dash.get(""),
        dash.get("app.js"),
        dash.get("login"),
        dash.get("api/config"),
        dash.get("api/nope"),
        dash.get("nope.html"),
        dash.action(f"api/queues/{seeded.queue}/purge", headers={"Origin": "http://x"}),
    ]
    for a in answers:
        assert a.headers["content-security-policy"] == CSP
        assert a.headers["x-content-type-options"] == "nosniff"
        assert a.headers["referrer-policy"] == "same-origin"
    api = dash.get("api/config")
    assert api.headers["cache-control"] == "no-store"
    index = dash.get("")
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert b'src="app.js"' in index.body  # relative: works under a path prefix
    assert dash.get("app.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert dash.get("../Cargo.toml").status == 404


def test_binds_loopback_by_default(seeded: Seeded, dash: DashboardProcess) -> None:
    assert "http://127.0.0.1:" in dash.output()
    assert dash.stop() == 0  # SIGTERM: a clean stop


def test_redis_going_away_is_a_503_and_coming_back_works_again(
    own_redis: Callable[..., RedisServer], queue: str, dashboards: Callable[..., DashboardProcess]
) -> None:
    server = own_redis()
    app = Ardiq(redis_url=server.url, queue_name=queue, priorities=LANES)
    try:
        app.send_sync("ok", 1)
    finally:
        app.close_sync()
    d = dashboards(server.url, "--queue", queue, "--lanes", ",".join(LANES))
    assert ok(d.get("api/queues"))["queues"][0]["queue"] == queue
    server.kill()
    down = d.get("api/queues")
    assert down.status in (502, 503) and "error" in down.json()
    assert ok(d.get("api/config"))["queues"] == [queue]  # needs no Redis
    server.start()  # same port, empty: a new connection is made
    deadline = time.monotonic() + 10
    while (answer := d.get("api/queues")).status != 200:
        assert time.monotonic() < deadline, answer.body
        time.sleep(0.1)
    assert answer.json()["queues"][0]["scheduled"] == 0


# ------------------------------------------------------------- bounded on big queues
QUEUED, DEAD, DELAYED = 100_000, 10_000, 20_000


def command_calls(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_pages_stay_bounded_on_a_big_queue(
    own_redis: Callable[..., RedisServer], queue: str, dashboards: Callable[..., DashboardProcess]
) -> None:
    """100,000 queued tasks, 10,000 dead letters and 20,000 scheduled ones: each page
    costs Redis a few commands plus one per item shown, and reads as few keys (counted
    by Redis itself: `INFO commandstats` and the keyspace hits and misses, on a server
    of this test's own)."""
    redis_url = own_redis().url
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        ok_task = app.ref("ok")
        for start in range(0, QUEUED, 10_000):
            app.enqueue_many_sync(ok_task.prepare(i) for i in range(start, start + 10_000))
        delayed = ok_task.options(delay_ms=3_600_000)
        for start in range(0, DELAYED, 10_000):
            app.enqueue_many_sync(delayed.prepare(i) for i in range(start, start + 10_000))
    finally:
        app.close_sync()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"ardiq:{{{queue}}}:"
    pipe = r.pipeline(transaction=False)
    for i in range(DEAD):
        pipe.hset(
            f"{prefix}dead:d{i}",
            mapping={
                "fn": "ok",
                "l": "default",
                "p": "\x93\x90\x80\xc0",
                "err": f"boom {i}",
                "t": 1,
                "enq": i,
                "fail": i,
            },
        )
        pipe.zadd(f"{prefix}dead", {f"d{i}": i})
    pipe.execute()
    d = dashboards(redis_url, "--queue", queue, "--lanes", ",".join(LANES))
    base = f"api/queues/{queue}"

    def cost(path: str) -> tuple[int, int, Any]:
        """Redis commands run and keys looked up while serving `path`."""
        before_calls = sum(command_calls(r).values())
        before = r.info("stats")
        doc = ok(d.get(path))
        after = r.info("stats")
        calls = sum(command_calls(r).values()) - before_calls - 3  # our INFO calls
        keys = (after["keyspace_hits"] + after["keyspace_misses"]) - (
            before["keyspace_hits"] + before["keyspace_misses"]
        )
        print(f"{path}: {calls} commands, {keys} keys")  # shown with -s
        return calls, keys, doc

    calls, keys, doc = cost(f"{base}/dead?offset=9000&limit=100")
    assert doc["total"] == DEAD and len(doc["dead_letters"]) == 100
    assert doc["dead_letters"][0]["id"] == "d999"  # newest first: the 9001st newest
    assert calls <= 105 and keys <= 110, (calls, keys)

    calls, keys, doc = cost(f"{base}/scheduled?limit=100")
    assert doc["total"] == DELAYED and len(doc["tasks"]) == 100
    calls2, keys2, doc2 = cost(f"{base}/scheduled?limit=100&after={doc['next']}")
    assert doc2["tasks"][0]["due_ms"] >= doc["tasks"][-1]["due_ms"]
    assert doc2["tasks"][0]["id"] not in {t["id"] for t in doc["tasks"]}
    for c, k in ((calls, keys), (calls2, keys2)):
        assert c <= 105 and k <= 110, (c, k)

    calls, keys, doc = cost("api/queues")
    (q,) = doc["queues"]
    assert sum(lane["waiting"] for lane in q["lanes"]) == QUEUED
    assert calls <= 20 and keys <= 20, (calls, keys)

    for path in (
        f"{base}/workers",
        f"{base}/history?limit=500",
        f"{base}/stats?minutes=1440",
        f"{base}/crons",
        f"{base}/jobs/d5?args=1",
        "api/config",
    ):
        calls, keys, _ = cost(path)
        assert calls <= 20 and keys <= 20, (path, calls, keys)
    stats = command_calls(r)
    assert "scan" not in stats and "keys" not in stats
    r.close()
