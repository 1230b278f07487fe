"""Secrets out of reach of other local users and of task code: the Redis password never
in a command line (`--workers` children), `ARDIQ_REDIS_URL_FILE` / `ARDIQ_SIGNING_KEY_FILE`,
rotation lists in `ARDIQ_SIGNING_KEY`, secrets kept out of the environment task code
inherits, one URL masking and one TLS policy on both sides."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ardiq import Ardiq, ArdiqError
from ardiq.settings import check_redis_url, default_redis_url, mask_url
from ardiq.signing import check_signing_keys
from conftest import WORKER_KINDS
from support.redis_server import RedisServer
from support.workers import engine_env
from test_cli import APP, Proc, clean_env

SECRET = "pw-s3cret-4f9a"
NEW_KEY = "new-signing-key-0123456789abcdef"
OLD_KEY = "old-signing-key-0123456789abcdef"
NOWHERE = "redis://127.0.0.1:1"  # never the default localhost:6379


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", SECRET).start()
    yield server
    server.cleanup()


def locked_url(server: RedisServer) -> str:
    return f"redis://:{SECRET}@127.0.0.1:{server.port}"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The fields after the command name (which may hold spaces): state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_for_lines(proc: Proc, needle: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while proc.output().count(needle) < count:
        assert proc.proc.poll() is None, proc.output()
        assert time.monotonic() < deadline, f"no {count}x {needle!r}:\n{proc.output()}"
        time.sleep(0.05)


# ------------------------------------------------------------- --workers command lines
@pytest.mark.parametrize("via", ["flag", "env", "file"])
def test_workers_children_never_carry_the_password_in_argv(
    via: str, locked_redis: RedisServer, queue: str, tmp_path: Path
) -> None:
    url = locked_url(locked_redis)
    # REDIS_URL: a worker that missed the secret must not fall back to a local Redis.
    env = clean_env(ARDIQ_TEST_QUEUE=queue, CLI_LEDGER_URL=url, REDIS_URL=NOWHERE)
    args = ["run", APP, "--workers", "2"]
    if via == "flag":
        args += ["--redis-url", url]
    elif via == "env":
        env["ARDIQ_REDIS_URL"] = url
    else:
        (tmp_path / "url").write_text(url + "\n")
        env["ARDIQ_REDIS_URL_FILE"] = str(tmp_path / "url")
    sup = Proc(args, env, tmp_path / "sup.log")
    try:
        wait_for_lines(sup, "worker starting", 2)
        children = children_of(sup.proc.pid)
        assert len(children) == 2, children
        for pid in children:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"run\x00" + APP.encode() in cmdline, cmdline
            assert SECRET.encode() not in cmdline, cmdline
        out = sup.output()
        assert SECRET not in out
        # Both children got the URL (and reached the right Redis).
        assert out.count(f"url=redis://:***@127.0.0.1:{locked_redis.port}") == 2, out
    finally:
        sup.close()


# --------------------------------------------- files, rotation, and what task code sees
@pytest.mark.parametrize("kind", WORKER_KINDS)
@pytest.mark.parametrize("via", ["env", "file"])
async def test_secrets_from_files_and_lists_stay_out_of_task_environment(
    kind: str, via: str, locked_redis: RedisServer, queue: str, tmp_path: Path
) -> None:
    url = locked_url(locked_redis)
    keys = f"{NEW_KEY},{OLD_KEY}"  # the first signs, both verify
    env = clean_env(ARDIQ_TEST_QUEUE=queue, REDIS_URL=NOWHERE)
    if via == "env":
        env.update(ARDIQ_REDIS_URL=url, ARDIQ_SIGNING_KEY=keys)
    else:
        (tmp_path / "url").write_text(url + "\n")
        (tmp_path / "keys").write_text(keys + "\r\n")
        env.update(
            ARDIQ_REDIS_URL_FILE=str(tmp_path / "url"),
            ARDIQ_SIGNING_KEY_FILE=str(tmp_path / "keys"),
        )
    env["PYTHONPATH"] = str(Path(__file__).parent)
    if kind == "native":
        args = ["run", "apps.secrets_app:app"]
        worker = Proc(args, env, tmp_path / "worker.log")
    else:
        script = "import asyncio; from apps.secrets_app import app; asyncio.run(app.run())"
        env.update(engine_env(kind))
        worker = Proc(["-c", script], env, tmp_path / "worker.log", exe=sys.executable)
    # A producer mid-rotation: it still seals with the old key and already verifies the
    # new one, which the worker seals its results with (SECURITY.md, rotating).
    old = Ardiq(url, queue_name=queue, signing_key=[OLD_KEY, NEW_KEY])
    unsigned = Ardiq(url, queue_name=queue)
    try:
        job = await old.ref("environment").enqueue(SECRET)
        r = await job.result(timeout=20)
        assert r is not None and r.success, (r, worker.output())
        seen = r.value
        assert seen["keys"] == 2, seen  # both keys of the list reached the app
        if kind == "native":
            # The binary took them out of its environment before Python started.
            assert seen == {"names": [], "in_environ": False, "in_child": False, "keys": 2}
        # A worker holding the keys refuses what no key signed.
        refused = await unsigned.ref("environment").enqueue(SECRET)
        r = await refused.result(timeout=20)
        assert r is not None and not r.success and r.value == "unsigned payload", r
        assert SECRET not in worker.output()
    finally:
        worker.close()
        await old.aclose()
        await unsigned.aclose()


def test_both_forms_of_a_secret_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "url").write_text("redis://h:1\n")
    env = clean_env(ARDIQ_REDIS_URL="redis://h:2", ARDIQ_REDIS_URL_FILE=str(tmp_path / "url"))
    proc = Proc(["info", "--queue", "q"], env, tmp_path / "out.log")
    assert proc.wait() == 2
    assert "both ARDIQ_REDIS_URL and ARDIQ_REDIS_URL_FILE are set" in proc.output()
    proc.close()
    env = clean_env(ARDIQ_SIGNING_KEY_FILE=str(tmp_path / "missing"))
    proc = Proc(["info", "--queue", "q"], env, tmp_path / "out2.log")
    assert proc.wait() == 2
    assert "cannot read ARDIQ_SIGNING_KEY_FILE" in proc.output()
    proc.close()


def test_python_reads_files_and_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARDIQ_REDIS_URL", "ARDIQ_SIGNING_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    (tmp_path / "url").write_text("redis://:pw@10.0.0.9:7000/1\n")
    monkeypatch.setenv("ARDIQ_REDIS_URL_FILE", str(tmp_path / "url"))
    assert default_redis_url() == "redis://:pw@10.0.0.9:7000/1"
    assert Ardiq().redis_url == "redis://:pw@10.0.0.9:7000/1"
    monkeypatch.setenv("ARDIQ_REDIS_URL", "redis://h")
    with pytest.raises(ArdiqError, match="both ARDIQ_REDIS_URL and ARDIQ_REDIS_URL_FILE"):
        default_redis_url()
    monkeypatch.delenv("ARDIQ_REDIS_URL")

    monkeypatch.setenv("ARDIQ_SIGNING_KEY", f"{NEW_KEY}, {OLD_KEY}")
    assert check_signing_keys(None) == (NEW_KEY.encode(), OLD_KEY.encode())
    monkeypatch.setenv("ARDIQ_SIGNING_KEY", f"{NEW_KEY},short")
    with pytest.raises(ValueError, match="at least 16 bytes") as info:
        check_signing_keys(None)
    assert "short" not in str(info.value)
    monkeypatch.delenv("ARDIQ_SIGNING_KEY")
    (tmp_path / "keys").write_text(f"{OLD_KEY}\n")
    monkeypatch.setenv("ARDIQ_SIGNING_KEY_FILE", str(tmp_path / "keys"))
    assert check_signing_keys(None) == (OLD_KEY.encode(),)
    monkeypatch.setenv("ARDIQ_SIGNING_KEY_FILE", str(tmp_path / "nope"))
    with pytest.raises(ArdiqError, match="cannot read ARDIQ_SIGNING_KEY_FILE"):
        check_signing_keys(None)


# ------------------------------------------------------------------ masking, TLS policy
# The same cases as `ardiq_core::config::tests::masks_passwords` (one rule on both sides).
MASKED = [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
    ("rediss://alice:s3cr@t@h", "rediss://alice:***@h"),
    ("redis://alice@h", "redis://***@h"),
    ("unix:///tmp/r.sock?db=1&pass=x", "unix:///tmp/r.sock?db=1&pass=***"),
    ("unix:///tmp/r.sock?password=x&db=1", "unix:///tmp/r.sock?password=***&db=1"),
    ("redis://h/0?PassWord=x&PASS=y", "redis://h/0?PassWord=***&PASS=***"),
    ("redis://u:p@h:1/0?password=x", "redis://u:***@h:1/0?password=***"),
    ("garbage", "garbage"),
]


@pytest.mark.parametrize(("url", "masked"), MASKED)
def test_mask_url_hides_every_password_form(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_errors_never_show_a_query_password() -> None:
    with pytest.raises(ArdiqError) as info:
        Ardiq("redis://localhost:99999/0?password=hunter2-secret")
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize(
    "query",
    [
        "ssl_cert_reqs=none",
        "ssl_cert_reqs=optional",
        "ssl_cert_reqs=NONE",
        "ssl_check_hostname=false",
        "ssl_check_hostname=False",
        "ssl_check_hostname=0",
    ],
)
def test_tls_verification_cannot_be_turned_off(query: str) -> None:
    with pytest.raises(ArdiqError, match="always verifies"):
        Ardiq(f"rediss://cache.example.com:6380/0?{query}")


def test_tls_settings_that_keep_verification_are_accepted() -> None:
    for query in ("ssl_cert_reqs=required", "ssl_check_hostname=true", "ssl_ca_certs=/ca.pem"):
        url = f"rediss://cache.example.com:6380/0?{query}"
        assert check_redis_url(url) == url


async def test_tls_policy_matches_the_binary(tmp_path: Path) -> None:
    # The binary refuses the same URLs (crates/ardiq-core/src/connection.rs split_tls).
    url = "rediss://127.0.0.1:1/0?ssl_cert_reqs=none"
    proc = Proc(["info", "--queue", "q", "--redis-url", url], clean_env(), tmp_path / "o.log")
    code = await asyncio.to_thread(proc.wait)
    assert code == 2 and "always verifies" in proc.output(), proc.output()
    proc.close()
