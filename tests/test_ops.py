"""The ops commands against a seeded queue: `ardiq info`, `dlq list|replay|delete`,
`purge`, `job` (text and --json), and `ardiq check`'s exit codes.

The seed: two dead letters (a burst worker ran two failing tasks), three tasks queued on
`default` (one then delivered to a live worker, one to a dead one), one on `high`, two
scheduled. Live and dead workers are played by hand, as the protocol defines them: a
consumer that read an entry, with (or without) a recent heartbeat in `P workers`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from ardiq import Ardiq
from support.ops_cli import ardiq, binary, env_for
from support.redis_server import RedisServer, free_port
from support.workers import TESTS

APP = "apps.ops_app:app"
LANES = ["low", "default", "high"]
LIVE, GHOST = "live-worker", "ghost-worker"


@dataclass
class Seeded:
    url: str
    queue: str
    env: dict[str, str]
    dead: list[str]
    queued: list[str]  # default lane, in order: [held by LIVE, held by GHOST, waiting]
    high: str
    scheduled: list[str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An ops command on this queue, by flags (no app import)."""
        return ardiq(*args, "--queue", self.queue, "--lanes", ",".join(LANES), env=self.env)

    def json(self, *args: str) -> Any:
        out = self.run(*args, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def seeded(redis_url: str, queue: str) -> Seeded:
    env = env_for(redis_url, queue)
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        dead = [app.send_sync("fails", f"boom {i}").id for i in range(2)]
        burst = ardiq("run", APP, "--burst", "--quiet", env=env)
        assert burst.returncode == 0, burst.stderr
        queued = [app.send_sync("ok", i).id for i in range(3)]
        high = app.ref("ok", priority="high").enqueue_sync(9).id
        scheduled = [app.ref("ok").options(delay_ms=600_000).enqueue_sync(i).id for i in range(2)]
    finally:
        app.close_sync()
    r = redis.Redis.from_url(redis_url)
    stream = f"ardiq:{{{queue}}}:stream:default"
    # The first entry goes to a live worker, the second to one that died.
    r.xreadgroup("ardiq", LIVE, {stream: ">"}, count=1)
    r.xreadgroup("ardiq", GHOST, {stream: ">"}, count=1)
    r.zadd(f"ardiq:{{{queue}}}:workers", {LIVE: int(time.time() * 1000)})
    r.close()
    return Seeded(redis_url, queue, env, dead, queued, high, scheduled)


# ------------------------------------------------------------------------------ info
def test_info(seeded: Seeded) -> None:
    doc = seeded.json("info")
    (q,) = doc["queues"]
    assert q["queue"] == seeded.queue and q["scheduled"] == 2 and q["dead"] == 2
    lanes = {lane["lane"]: lane for lane in q["lanes"]}
    assert [lane["lane"] for lane in q["lanes"]] == LANES
    d = lanes["default"]
    assert (d["waiting"], d["pending"], d["running"], d["depth"]) == (1, 2, 1, 3)
    assert d["oldest_waiting_ms"] is not None and d["oldest_waiting_ms"] >= 0
    assert (lanes["high"]["waiting"], lanes["high"]["pending"]) == (1, 0)
    assert (lanes["low"]["depth"], lanes["low"]["oldest_waiting_ms"]) == (0, None)
    workers = {w["id"]: w for w in q["workers"]}
    assert workers[LIVE]["alive"] and workers[LIVE]["pending"] == 1
    assert not workers[GHOST]["alive"] and workers[GHOST]["pending"] == 1

    text = seeded.run("info")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"queue `{seeded.queue}` at `{seeded.url}`"
    rows = {line.split()[0]: line.split()[1:4] for line in lines[2:5]}
    assert rows == {"high": ["1", "0", "0"], "default": ["1", "2", "1"], "low": ["0", "0", "0"]}
    assert [line.split()[0] for line in lines[2:5]] == ["high", "default", "low"]
    assert "scheduled 2, dead 2" in text.stdout
    assert "workers: 1 alive, 1 gone" in text.stdout


def test_info_reads_the_app_or_discovers(seeded: Seeded) -> None:
    # From the app: its lanes, its order.
    out = ardiq("info", "--app", APP, "--json", env=seeded.env)
    assert out.returncode == 0, out.stderr
    (q,) = json.loads(out.stdout)["queues"]
    assert q["queue"] == seeded.queue and [lane["lane"] for lane in q["lanes"]] == LANES
    # Every queue of the database, lanes found in Redis.
    out = ardiq("info", "--json", env=seeded.env)
    assert out.returncode == 0, out.stderr
    found = {q["queue"]: q for q in json.loads(out.stdout)["queues"]}
    assert sorted(lane["lane"] for lane in found[seeded.queue]["lanes"]) == sorted(LANES)


# ------------------------------------------------------------------------------- job
def test_job(seeded: Seeded) -> None:
    held, _, waiting = seeded.queued
    j = seeded.json("job", held)
    assert j["status"] == "running" and j["name"] == "ok" and j["lane"] == "default"
    assert j["holder"]["worker"] == LIVE and j["holder"]["deliveries"] == 1
    assert seeded.json("job", waiting)["status"] == "queued"
    s = seeded.json("job", seeded.scheduled[0])
    assert s["status"] == "scheduled" and s["scheduled_ms"] > time.time() * 1000
    d = seeded.json("job", seeded.dead[0])
    assert d["status"] == "dead" and d["tries"] == 3
    assert d["dead_letter"]["error"] == "ValueError('boom 0')"
    assert d["result"]["ok"] is False and d["result"]["error"] == "ValueError('boom 0')"
    # No payload, ever: arguments may be secrets.
    assert "payload" not in json.dumps(d)

    text = seeded.run("job", seeded.dead[1])
    assert text.returncode == 0, text.stderr
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert fields["status"] == "dead" and fields["task"] == "fails"
    assert fields["attempts"] == "3" and fields["error"] == "ValueError('boom 1')"
    assert fields["outcome"] == "failure"

    missing = seeded.run("job", "no-such-task")
    assert missing.returncode == 8
    assert "no task `no-such-task`" in missing.stderr
    assert json.loads(seeded.run("job", "no-such-task", "--json").stdout)["status"] == "not_found"


def test_job_shows_progress_and_failed_attempts(seeded: Seeded) -> None:
    """Seeded as PROTOCOL.md's Progress and History sections define the keys; garbage in
    them is shown as such, never a failure of the command."""
    held, ghost, waiting = seeded.queued
    prefix = f"ardiq:{{{seeded.queue}}}:"
    r = redis.Redis.from_url(seeded.url)
    try:
        r.set(
            f"{prefix}progress:{held}",
            json.dumps({"v": 40, "m": "resizing\x1b[2J", "t": 2, "at": 86_400_000}),
        )
        attempt = {"n": 1, "k": "retry", "w": "w-1", "st": 86_400_000, "fin": 86_401_200}
        r.rpush(
            f"{prefix}attempts:{held}",
            json.dumps({**attempt, "err": "ValueError('first')\nTraceback ..."}),
            "{not json",
            json.dumps([1, 2]),
        )
        r.set(f"{prefix}progress:{ghost}", b"\xff\xfe")
        r.rpush(f"{prefix}progress:{waiting}", "a list where a string belongs")
        r.set(f"{prefix}attempts:{waiting}", "a string where a list belongs")
    finally:
        r.close()

    j = seeded.json("job", held)
    assert j["progress"] == {"v": 40, "m": "resizing\x1b[2J", "t": 2, "at": 86_400_000}
    first, bad, array = j["attempts"]
    assert first == {**attempt, "err": "ValueError('first')\nTraceback ..."}
    assert bad.startswith("unreadable: not JSON: ")
    assert array == "unreadable: a JSON array, not an object"

    text = seeded.run("job", held)
    assert text.returncode == 0, text.stderr
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines())
    # The terminal escape from Redis is escaped, and only the first line of an error shown.
    assert fields["progress"] == (
        "40%: resizing\\x1b[2J (attempt 2, reported 1970-01-02T00:00:00.000Z)"
    )
    assert fields["history"] == "3 failed attempt(s)"
    assert fields["#1"] == "retry 1970-01-02T00:00:01.200Z after 1.2s on w-1: ValueError('first')"
    assert fields["#2"].startswith("unreadable: not JSON: ")
    assert fields["#3"] == "unreadable: a JSON array, not an object"

    g = seeded.json("job", ghost)
    assert g["progress"].startswith("unreadable: not UTF-8 text")
    assert g["attempts"] == []
    w = seeded.json("job", waiting)
    assert w["status"] == "queued"
    assert w["progress"] == f"unreadable: `{prefix}progress:{waiting}` is not a string"
    assert w["attempts"] == [f"unreadable: `{prefix}attempts:{waiting}` is not a list"]
    # Nothing recorded: null and an empty list (and no rows in text).
    s = seeded.json("job", seeded.scheduled[0])
    assert s["progress"] is None and s["attempts"] == []
    assert "progress" not in seeded.run("job", seeded.scheduled[0]).stdout


# ------------------------------------------------------------------------------- dlq
def test_dlq_list_replay_delete(seeded: Seeded) -> None:
    doc = seeded.json("dlq", "list")
    assert doc["total"] == 2
    assert {d["id"] for d in doc["dead_letters"]} == set(seeded.dead)
    assert {d["error"] for d in doc["dead_letters"]} == {
        "ValueError('boom 0')",
        "ValueError('boom 1')",
    }
    assert all(d["name"] == "fails" and d["lane"] == "default" for d in doc["dead_letters"])
    text = seeded.run("dlq", "list", "--limit", "1")
    assert text.returncode == 0
    assert text.stdout.startswith("2 dead letter(s), showing 1\n")
    assert "ValueError('boom" in text.stdout

    replay = seeded.run("dlq", "replay", seeded.dead[0])
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.strip() == "replayed 1 dead letter(s)"
    assert seeded.json("job", seeded.dead[0])["status"] == "queued"
    # Again: it is no dead letter any more.
    again = seeded.run("dlq", "replay", seeded.dead[0], "--json")
    assert again.returncode == 8
    assert json.loads(again.stdout)["results"] == [{"id": seeded.dead[0], "status": "not_found"}]

    delete = seeded.json("dlq", "delete", "--all")
    assert delete == {"deleted": 1, "results": [{"id": seeded.dead[1], "status": "deleted"}]}
    assert seeded.json("dlq", "list")["total"] == 0
    assert seeded.run("dlq", "delete", "nope").returncode == 8
    usage = seeded.run("dlq", "delete")
    assert usage.returncode == 2  # ids or --all


# ----------------------------------------------------------------------------- purge
def test_purge(seeded: Seeded) -> None:
    refused = seeded.run("purge")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert seeded.json("info")["queues"][0]["scheduled"] == 2  # nothing done

    doc = seeded.json("purge", "--yes")
    # Queued: one waiting on default, one on high; delivered: the dead worker's. The
    # live worker's task is left alone.
    assert doc == {
        "queue": seeded.queue,
        "queued": 2,
        "scheduled": 2,
        "delivered": 1,
        "skipped": 1,
    }
    purged = seeded.json("job", seeded.queued[2])
    assert purged["status"] == "complete"
    assert purged["result"]["aborted"] and purged["result"]["error"] == "purged"
    assert seeded.json("job", seeded.queued[0])["status"] == "running"
    (q,) = seeded.json("info")["queues"]
    assert [lane["depth"] for lane in q["lanes"]] == [0, 1, 0] and q["scheduled"] == 0
    assert q["dead"] == 2  # dead letters are not purged

    forced = seeded.run("purge", "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "purged 1 task(s)" in forced.stdout
    (q,) = seeded.json("info")["queues"]
    assert [lane["depth"] for lane in q["lanes"]] == [0, 0, 0]


# ----------------------------------------------------------------------------- check
def check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return ardiq("check", APP, *args, env=env)


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_check_exit_codes(seeded: Seeded, own_redis: Any, tmp_path: Path) -> None:
    ok = check(env=seeded.env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: `{APP}` imports;")
    assert json.loads(check("--json", env=seeded.env).stdout)["lanes"] == LANES

    # 6: a queue nobody served yet has no groups.
    fresh = {**seeded.env, "ARDIQ_TEST_QUEUE": seeded.queue + "-fresh"}
    out = check(env=fresh)
    assert out.returncode == 6 and "no consumer group" in one_line(out)
    doc = json.loads(check("--json", env=fresh).stdout)
    assert doc["ok"] is False and doc["code"] == 6

    # 2: the app does not import, or is not an app.
    out = ardiq("check", "apps.no_such_module:app", env=seeded.env)
    assert out.returncode == 2 and "no module named" in one_line(out)
    out = ardiq("check", "apps.cli_raises:app", env=seeded.env)
    assert out.returncode == 2 and "cannot import" in one_line(out)

    # 4: nothing listens.
    gone = {**seeded.env, "ARDIQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    out = check("--timeout", "1", env=gone)
    assert out.returncode == 4 and "unreachable" in one_line(out)

    # 5: wrong credentials, and an ACL user that may only read.
    server: RedisServer = own_redis("--requirepass", "s3cret")
    out = check(env={**seeded.env, "ARDIQ_REDIS_URL": server.url})
    assert out.returncode == 5 and "s3cret" not in out.stderr
    admin = redis.Redis(port=server.port, password="s3cret")
    admin.execute_command(
        "ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@read", "+@connection"
    )
    admin.close()
    reader = {**seeded.env, "ARDIQ_REDIS_URL": f"redis://reader:pw@127.0.0.1:{server.port}"}
    out = check(env=reader)
    assert out.returncode == 5 and "refused" in one_line(out), out.stderr
    assert ":pw@" not in out.stderr

    # 7: --health-port, and no worker answers there.
    out = check("--health-port", str(free_port()), "--timeout", "1", env=seeded.env)
    assert out.returncode == 7 and "/livez" in one_line(out)


def test_check_sees_a_live_worker(seeded: Seeded, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [binary(), "run", APP, "--health-port", str(port)],
        cwd=TESTS,
        env=seeded.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            out = check("--health-port", str(port), env=seeded.env)
            if out.returncode == 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline, out.stderr
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_pause_and_resume(seeded: Seeded) -> None:
    app = Ardiq(redis_url=seeded.url, queue_name=seeded.queue, priorities=LANES)
    try:
        out = seeded.run("pause", "--lane", "high")
        assert out.returncode == 0
        assert out.stdout == f"paused lane `high` of queue `{seeded.queue}`\n"
        assert app.paused_sync() == {"high"}
        assert seeded.json("pause") == {
            "queue": seeded.queue,
            "lane": None,
            "changed": True,
            "paused": ["*", "high"],
        }
        assert "already paused" in seeded.run("pause").stdout
        assert seeded.json("info")["queues"][0]["paused"] is True
        # Resuming the queue leaves the lane paused, and says so.
        out = seeded.run("resume")
        assert out.returncode == 0 and "still paused: high" in out.stdout
        text = seeded.run("info").stdout
        assert "(paused)" in text and "the whole queue" not in text
        # By the app, as the other ops commands.
        out = ardiq("resume", "--app", APP, "--lane", "high", "--json", env=seeded.env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["paused"] == []
        assert app.paused_sync() == set()
        bad = seeded.run("pause", "--lane", "nope")
        assert bad.returncode == 2 and "low, default, high" in bad.stderr, bad.stderr
        assert app.paused_sync() == set()
    finally:
        app.close_sync()


def test_ops_usage_errors(seeded: Seeded) -> None:
    out = ardiq("job", "x", env=seeded.env)
    assert out.returncode == 2 and "which queue" in out.stderr
    out = ardiq("info", "--redis-url", f"redis://127.0.0.1:{free_port()}", env=seeded.env)
    assert out.returncode == 4
    assert "Exit codes:" in ardiq("purge", "--help", env=seeded.env).stdout


def test_least_privilege_worker_user(own_redis: Any, tmp_path: Path, queue: str) -> None:
    """With the README's `ardiq-worker` ACL user, the worker's own probes work: `ardiq
    check` and the metrics endpoint's queue counts (both read with the worker's
    credentials)."""
    readme = (TESTS.parent / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("ACL SETUSER ardiq-worker "))
    server: RedisServer = own_redis()
    admin = redis.Redis(port=server.port)
    admin.execute_command(*line.split())
    admin.close()
    password = next(a[1:] for a in line.split() if a.startswith(">"))
    url = f"redis://ardiq-worker:{password}@127.0.0.1:{server.port}"
    env = env_for(url, queue)
    port = free_port()
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [binary(), "run", APP, "--health-port", str(port)],
        cwd=TESTS,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            out = check("--health-port", str(port), env=env)
            if out.returncode == 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline, out.stderr
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert f'ardiq_queue_up{{queue="{queue}"}} 1' in text, text
        info = ardiq("info", "--queue", queue, "--lanes", ",".join(LANES), "--json", env=env)
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["queues"][0]["workers"][0]["alive"]
        # The user may also forget long-gone workers (the heartbeat's first duty).
        log.flush()
        assert "cannot forget" not in (tmp_path / "worker.log").read_text()
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_exit_codes_are_documented_alike(seeded: Seeded) -> None:
    """`--help` of each ops command and the README's table list the same codes."""
    readme = (TESTS.parent / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        int(m.group(1)) for m in map(re.compile(r"^\| (\d) \|").match, table.splitlines()) if m
    }
    for command in ("check", "info", "dlq", "cron", "purge", "job"):
        out = ardiq(command, "--help", env=seeded.env).stdout
        codes = {
            int(x.split()[0])
            for x in out.split("Exit codes:")[1].strip().splitlines()
            if x.strip()[:1].isdigit()
        }
        assert codes == set(range(9)), (command, codes)
        assert codes <= documented, (command, documented)
