"""Scripts as a Redis function library (README, "Security"): an administrator installs it
once, producers and workers then run with `+fcall` and no right to load Lua of their own.
Worker scenarios run against both worker kinds."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from apps.ledger import exit_code, stop_code, wait_until
from ardiq import Ardiq, BrokerError, Job
from ardiq import functions as fn
from ardiq.protocol import (
    LUA_DIR,
    OOM_REFUSED,
    SCRIPT_NAMES,
    Keys,
    library,
    library_tag,
    library_text,
)
from support.redis_server import RedisServer
from support.workers import WorkerProcess, native_binary

ROOT = Path(__file__).resolve().parents[1]
VECTOR = ROOT / "tests" / "vectors" / "functions"
USERS = ("ardiq-fn-producer", "ardiq-fn-worker")


# ------------------------------------------------------------------ the library text
def test_library_text_matches_the_shared_vector() -> None:
    """The generator agrees with the Rust engine's on a fixed input (cargo test checks
    the same files: crates/ardiq-core/src/scripts.rs)."""
    lib = (VECTOR / "_lib.lua").read_text()
    scripts = [(n, (VECTOR / f"{n}.lua").read_text()) for n in ("enqueue", "finish")]
    tag = library_tag(lib, scripts)
    assert library_text(lib, scripts, tag) == (VECTOR / "library.lua.expected").read_text()


def test_library_registers_every_script_with_its_oom_flag() -> None:
    files = sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem != "_lib")
    assert list(SCRIPT_NAMES) == files
    name, text = library()
    assert text.startswith(f"#!lua name={name}\n") and len(name) == len("ardiq_") + 12
    for script in SCRIPT_NAMES:
        line = next(x for x in text.splitlines() if f"function_name='{name}_{script}'" in x)
        assert ("allow-oom" in line) == (script not in OOM_REFUSED), line
    # Any change to a script gives another name: two versions load side by side.
    body = (LUA_DIR / "wait.lua").read_text()
    sources = [(n, (LUA_DIR / f"{n}.lua").read_text()) for n in SCRIPT_NAMES]
    changed = [(n, b + "\n" if n == "wait" else b) for n, b in sources]
    assert body and library_tag((LUA_DIR / "_lib.lua").read_text(), changed) != name[6:]


# ---------------------------------------------------------------------- servers
def readme_function_users() -> dict[str, list[str]]:
    """The functions-mode `ACL SETUSER` lines of the README's Security section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Security", 1)[1].split("\n## ", 1)[0]
    rules = {}
    for line in section.splitlines():
        if line.startswith("ACL SETUSER ardiq-fn-"):
            words = line.split()[2:]
            # The README's placeholder passwords become this test's.
            rules[words[0]] = [f">{words[0]}-pw" if w.startswith(">") else w for w in words]
    assert set(rules) == set(USERS), rules
    return rules


def function_users_server() -> RedisServer:
    args: list[str] = []
    for words in readme_function_users().values():
        args += ["--user", *words]
    return RedisServer(*args).start()


@pytest.fixture(scope="module")
def fn_server() -> Iterator[RedisServer]:
    """The README's function users, with the library installed."""
    server = function_users_server()
    assert fn.install(server.url) == library()[0]
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def bare_server() -> Iterator[RedisServer]:
    """The same users, and no library."""
    server = function_users_server()
    yield server
    server.cleanup()


def user_url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "records"
    d.mkdir()
    return d


@pytest.fixture
async def admin_of() -> AsyncIterator[Callable[[RedisServer], aioredis.Redis]]:
    clients: list[aioredis.Redis] = []

    def make(server: RedisServer) -> aioredis.Redis:
        client = aioredis.Redis.from_url(server.url)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()


def test_function_users_cannot_load_or_run_lua(fn_server: RedisServer) -> None:
    import redis

    for user in USERS:
        client = redis.Redis.from_url(user_url(fn_server, user))
        try:
            for command in (
                ("EVAL", "while true do end", 0),
                ("EVALSHA", "0" * 40, 0),
                ("SCRIPT", "LOAD", "return 1"),
                ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
                ("FUNCTION", "FLUSH"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
        finally:
            client.close()


# -------------------------------------------------------------------- scenarios
async def test_scenarios_as_function_users(
    fn_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    scratch: Path,
    admin_of: Callable[[RedisServer], aioredis.Redis],
) -> None:
    """enqueue -> run -> result, retry, delay, dead letter -> replay, aborts: every
    script call is an FCALL (EVALSHA and SCRIPT LOAD would be refused and logged)."""
    admin = admin_of(fn_server)
    await admin.execute_command("ACL", "LOG", "RESET")
    before = await fcall_calls(admin)
    app = Ardiq(user_url(fn_server, "ardiq-fn-producer"), queue_name=queue)
    env = {
        "ARDIQ_REDIS_URL": user_url(fn_server, "ardiq-fn-worker"),
        "ARDIQ_TEST_DIR": str(scratch),
    }
    try:
        jobs = await app.enqueue_many([app.ref("count").prepare(i) for i in range(20)])
        assert await app.queue_size() == 20
        burst = start_worker("apps.secure:app", "--burst", env=env)
        assert exit_code(burst, 30) == 0, burst.output()
        for job in jobs:
            r = await job.result()
            assert r is not None and r.success, r

        worker = start_worker("apps.secure:app", env=env)
        retried = await app.ref("retry_then_ok").enqueue(3)
        r = await retried.result(timeout=10)
        assert r is not None and r.value == 3 and r.tries == 3
        delayed = await app.ref("add").options(delay_ms=300).enqueue(2, 2)
        r = await delayed.result(timeout=10)
        assert r is not None and r.value == 4
        failing = await app.ref("always_fails").enqueue("nope")
        assert "ValueError" in await failure(failing)
        (letter,) = await app.dead_letters()
        assert letter.args == ["nope"]
        assert await app.replay(failing.id) is not None
        assert "ValueError" in await failure(failing)
        assert await app.delete_dead(failing.id)
        later = await app.ref("add").options(delay_ms=60_000).enqueue(1, 1)
        assert await later.abort()
        sleeper = await app.ref("sleep").enqueue(30)
        await wait_until(lambda: _read(scratch / "started"), 10, "the sleeper to start")
        assert await sleeper.abort()
        r = await sleeper.result(timeout=10)
        assert r is not None and r.aborted
        assert stop_code(worker) == 0, worker.output()
        log = [_entry(e) for e in await admin.execute_command("ACL", "LOG")]
        assert [e for e in log if e["object"] != "config|get"] == [], log
        assert await fcall_calls(admin) > before
    finally:
        await app.aclose()


async def test_without_the_library_users_fail_clearly(
    bare_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    scratch: Path,
) -> None:
    app = Ardiq(user_url(bare_server, "ardiq-fn-producer"), queue_name=queue)
    try:
        with pytest.raises(BrokerError, match="ardiq functions install") as info:
            await app.ref("add").enqueue(1, 2)
        assert library()[0] in str(info.value) and "evalsha" in str(info.value)
    finally:
        await app.aclose()
    env = {
        "ARDIQ_REDIS_URL": user_url(bare_server, "ardiq-fn-worker"),
        "ARDIQ_TEST_DIR": str(scratch),
    }
    worker = start_worker("apps.secure:app", env=env)
    await wait_until(
        lambda: _has(worker, "ardiq functions install"), 20, "the worker to say what is missing"
    )
    worker.kill()


async def test_modes_fall_back_and_can_be_forced(
    own_redis: Callable[..., RedisServer],
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
    admin_of: Callable[[RedisServer], aioredis.Redis],
) -> None:
    """auto: FCALL while the library is there, EVALSHA after it went away; `functions`
    never falls back; `eval` never tries FCALL."""
    server = own_redis()
    admin = admin_of(server)
    fn.install(server.url)
    assert fn.status(server.url).loaded
    app = Ardiq(server.url, queue_name=queue)
    try:
        await app.ref("add").enqueue(1, 1)
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (1, 0)
        await admin.execute_command("FUNCTION", "FLUSH")
        assert not fn.status(server.url).loaded
        # The FCALL is refused; EVALSHA (NOSCRIPT, SCRIPT LOAD, EVALSHA again) runs it.
        await app.ref("add").enqueue(1, 2)
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (2, 2)
        await app.ref("add").enqueue(1, 3)  # eval from now on: no second probe
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (2, 3)
        assert await app.queue_size() == 3

        evals = await evalsha_calls(admin)
        monkeypatch.setenv("ARDIQ_SCRIPTS", "functions")
        with pytest.raises(BrokerError, match="ARDIQ_SCRIPTS=functions"):
            await app.ref("add").enqueue(1, 4)
        assert await evalsha_calls(admin) == evals
        fn.install(server.url)
        calls = await fcall_calls(admin)
        await app.ref("add").enqueue(1, 5)
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (calls + 1, evals)
        monkeypatch.setenv("ARDIQ_SCRIPTS", "eval")
        await app.ref("add").enqueue(1, 6)
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (calls + 1, evals + 1)
        monkeypatch.setenv("ARDIQ_SCRIPTS", "lua")
        with pytest.raises(Exception, match="ARDIQ_SCRIPTS"):
            await app.ref("add").enqueue(1, 7)
    finally:
        await app.aclose()


async def test_functions_keep_the_oom_rules(
    own_redis: Callable[..., RedisServer],
    queue: str,
    admin_of: Callable[[RedisServer], aioredis.Redis],
) -> None:
    """enqueue is refused whole under OOM (no allow-oom flag); the others still run."""
    server = own_redis()
    admin = admin_of(server)
    fn.install(server.url)
    app = Ardiq(server.url, queue_name=queue)
    try:
        await app.ref("add").enqueue(1, 1)
        await admin.config_set("maxmemory", 1)
        try:
            with pytest.raises(BrokerError, match="out of memory"):
                await app.ref("add").enqueue(1, 2)
            assert await app.queue_size() == 1
        finally:
            await admin.config_set("maxmemory", 0)
        # Refused calls count apart (rejected_calls): the two that ran were FCALLs.
        assert (await fcall_calls(admin), await evalsha_calls(admin)) == (2, 0)
    finally:
        await app.aclose()


# ------------------------------------------------------------------ the binary
def ardiq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = native_binary()
    if binary is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    import os
    import sys

    full_env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "PYTHONPATH": str(ROOT / "tests")}
    full_env.pop("ARDIQ_REDIS_URL", None)
    return subprocess.run(
        [binary, *args], env={**full_env, **(env or {})}, capture_output=True, text=True, timeout=60
    )


async def test_binary_installs_the_same_library(
    own_redis: Callable[..., RedisServer], admin_of: Callable[[RedisServer], aioredis.Redis]
) -> None:
    """`ardiq functions install` loads exactly the text the Python package generates."""
    server = own_redis()
    name, text = library()
    out = ardiq("functions", "status", "--redis-url", server.url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"library `{name}` (this version): not loaded; ArdiQ libraries in Redis: none"
    )
    out = ardiq("functions", "install", "--redis-url", server.url)
    assert out.returncode == 0 and name in out.stdout, out.stderr
    admin = admin_of(server)
    (entry,) = await admin.execute_command("FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", name)
    fields = _entry(entry)
    assert fields["library_code"] == text
    out = ardiq("functions", "status", "--redis-url", server.url, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"library": name, "loaded": True, "libraries": [name]}
    assert fn.status(server.url) == fn.FunctionsStatus(name, True, [name])


async def test_check_reports_the_mode(
    fn_server: RedisServer,
    bare_server: RedisServer,
    queue: str,
    admin_of: Callable[[RedisServer], aioredis.Redis],
) -> None:
    name = library()[0]
    env = {"ARDIQ_TEST_QUEUE": queue}
    for server in (fn_server, bare_server):
        stream = Keys(queue).stream("default")
        await admin_of(server).xgroup_create(stream, "ardiq", id="0", mkstream=True)
    # Functions mode: the worker user passes without any script-loading right.
    url = user_url(fn_server, "ardiq-fn-worker")
    out = ardiq("check", "apps.secure:app", "--redis-url", url, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(f"; scripts: functions (library {name})"), out.stdout
    # Eval mode: a user who may load scripts, on a Redis without the library.
    out = ardiq("check", "apps.secure:app", "--redis-url", bare_server.url, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(
        f"; scripts: eval (library {name} not loaded; this user loads the scripts itself)"
    ), out.stdout
    out = ardiq("check", "apps.secure:app", "--redis-url", bare_server.url, "--json", env=env)
    doc = json.loads(out.stdout)
    assert (doc["ok"], doc["scripts"], doc["library"]) == (True, "eval", name), doc
    # Neither: the function user on a Redis without the library is refused, and told why.
    url = user_url(bare_server, "ardiq-fn-worker")
    out = ardiq("check", "apps.secure:app", "--redis-url", url, env=env)
    assert out.returncode == 5, (out.stdout, out.stderr)
    assert "ardiq functions install" in out.stderr and name in out.stderr, out.stderr


# --------------------------------------------------------------------- helpers
async def fcall_calls(admin: aioredis.Redis) -> int:
    return await _calls(admin, "fcall")


async def evalsha_calls(admin: aioredis.Redis) -> int:
    return await _calls(admin, "evalsha")


async def _calls(admin: aioredis.Redis, command: str) -> int:
    stats = await admin.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


async def failure(job: Job[Any], timeout: float = 10) -> str:
    r = await job.result(timeout=timeout)
    assert r is not None and not r.success, r
    assert isinstance(r.value, str)
    return r.value


async def _read(path: Path) -> list[str] | None:
    return path.read_text().splitlines() if path.exists() else None


async def _has(worker: WorkerProcess, text: str) -> bool:
    await asyncio.sleep(0)
    return text in worker.output()


def _entry(entry: Any) -> dict[str, str]:
    items = entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in items
    }
