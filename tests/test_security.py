"""Security: no pickle unless chosen, signed payloads, TLS, least-privilege ACL users, and
secrets that never reach a log line. Worker scenarios run against both worker kinds."""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from apps.ledger import exit_code, stop_code, wait_until
from ardiq import Ardiq, ArdiqError, BrokerError, Job
from ardiq.serializers import msgpack_dumps, msgpack_loads
from ardiq.signing import (
    MAGIC,
    RESULT_MAGIC,
    Binding,
    ResultSealError,
    SignatureError,
    Signer,
    check_signing_keys,
)
from conftest import WORKER_KINDS
from support.redis_server import RedisServer, free_port
from support.workers import WorkerProcess, native_binary

ROOT = Path(__file__).resolve().parents[1]
KEY = "k3y-for-signing-tests-0123456789"
SECRET = "canary-7Hq2-s3cr3t"
PASSWORD = "pw-canary-Zx81"


# --------------------------------------------------------------------------- helpers
# Adds an entry and its job hash atomically, as a producer that bypasses ArdiQ would.
RAW_ENTRY = """
local eid = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'fn', ARGV[2], 'p', ARGV[3],
  't', 0, 'enq', 1, 'x', 0, 'r', 0)
redis.call('HSET', KEYS[2], 'fn', ARGV[2], 'l', 'default', 's', 'q', 't', 0, 'enq', 1,
  'x', 0, 'e', eid, 'n', ARGV[4])
return eid
"""


async def raw_entry(
    admin: aioredis.Redis, app: Ardiq, task_id: str, name: str, payload: bytes
) -> Job[Any]:
    """The entry and job record a producer would write; a v2-sealed payload's nonce goes
    into the job record as the producer would put it there."""
    keys = [app.keys.stream("default"), app.keys.job(task_id)]
    nonce = payload[37:53].hex() if payload.startswith(MAGIC) else ""
    await admin.eval(RAW_ENTRY, 2, *keys, task_id, name, payload, nonce)  # type: ignore[misc]
    return app.job(task_id)


class Bomb:
    """Unpickling this creates a file: proof that a payload's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def bomb_payload(path: Path) -> bytes:
    return pickle.dumps([[Bomb(path)], {}, None])


async def failure(job: Job[Any], timeout: float = 10) -> str:
    r = await job.result(timeout=timeout)
    assert r is not None and not r.success, r
    assert isinstance(r.value, str)
    return r.value


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def native(redis_url: str, queue: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `ardiq run` (for what only the binary has: its command line, JSON logs)."""
    if "native" not in WORKER_KINDS:
        pytest.skip("native worker tests are off (ARDIQ_NATIVE=0)")
    if native_binary() is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    procs: list[WorkerProcess] = []

    def start(target: str, *flags: str, env: dict[str, str] | None = None) -> WorkerProcess:
        full_env = {"ARDIQ_REDIS_URL": redis_url, "ARDIQ_TEST_QUEUE": queue, **(env or {})}
        proc = WorkerProcess("native", target, *flags, env=full_env, log_dir=tmp_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "records"
    d.mkdir()
    return d


# ------------------------------------------------------------------ 1. no pickle
def test_pickle_is_never_a_default() -> None:
    app = Ardiq(redis_url="redis://127.0.0.1:1")
    assert app.serializer is msgpack_dumps and app.deserializer is msgpack_loads
    # msgpack does not run code: a pickle is just undecodable bytes to it.
    with pytest.raises(ValueError):
        msgpack_loads(bomb_payload(Path("/nonexistent/x")))


async def test_raw_pickle_payload_is_refused_and_never_runs(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
) -> None:
    app = make_app()
    target = scratch / "pwned"
    job = await raw_entry(admin, app, "bomb", "add", bomb_payload(target))
    worker = start_worker("apps.secure:app", "--burst", env={"ARDIQ_TEST_DIR": str(scratch)})
    assert exit_code(worker, 30) == 0, worker.output()
    assert (await failure(job)).startswith("undecodable payload")
    # The producer's views decode with msgpack too: nothing runs there either.
    (letter,) = await app.dead_letters()
    assert letter.task_id == "bomb" and letter.args == [] and letter.kwargs == {}
    assert not target.exists()


# ---------------------------------------------------------------- 2. signing
def test_signing_key_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARDIQ_SIGNING_KEY", raising=False)
    assert Ardiq(redis_url="redis://h").signing_key is None
    assert Ardiq(redis_url="redis://h", signing_key=KEY).signing_key == KEY.encode()
    monkeypatch.setenv("ARDIQ_SIGNING_KEY", KEY)
    assert Ardiq(redis_url="redis://h").signing_key == KEY.encode()
    with pytest.raises(ValueError, match="at least 16 bytes") as info:
        Ardiq(redis_url="redis://h", signing_key="short-key")
    assert "short-key" not in str(info.value)
    with pytest.raises(TypeError):
        Ardiq(redis_url="redis://h", signing_key=123)
    assert check_signing_keys([KEY, b"old-key-still-verifies"]) == (
        KEY.encode(),
        b"old-key-still-verifies",
    )
    assert KEY not in repr(Signer([KEY.encode()]))


def test_signer_binds_queue_lane_id_name_and_payload() -> None:
    new, old = Signer([b"n" * 32], queue="q"), Signer([b"o" * 32], queue="q")
    rotated = Signer([b"n" * 32, b"o" * 32], queue="q")
    here = Binding("q", "default", "t1", "add")
    sealed, nonce = old.seal(here, b"body", 1_000)
    assert sealed.startswith(MAGIC) and sealed.endswith(b"body") and len(nonce) == 32
    opened = rotated.open(here, sealed)  # an old key still verifies
    assert opened == (b"body", nonce, 1_000 + old.ttl_ms)
    for there, payload in [
        (here._replace(task_id="t2"), sealed),  # moved to another id
        (here._replace(name="sub"), sealed),  # ... or another task name
        (here._replace(lane="high"), sealed),  # ... or another lane
        (here._replace(queue="q2"), sealed),  # ... or another queue
        (here, sealed[:-1] + b"X"),  # body changed
        (here, sealed[:10]),  # truncated
    ]:
        with pytest.raises(SignatureError, match="signature mismatch"):
            old.open(there, payload)
    with pytest.raises(SignatureError, match="signature mismatch"):
        new.open(here, sealed)
    with pytest.raises(SignatureError, match="unsigned payload"):
        old.open(here, b"\x93\x90\x80\xc0")
    # Without a key, sealed payloads are unwrapped (producers may sign before workers
    # enforce it) and plain ones pass as they are.
    assert Signer([]).open(here, sealed).body == b"body"
    assert Signer([]).seal(here, b"body", 0) == (b"body", "")
    # The engine seals cron occurrences the same way (crates/ardiq-core/src/sign.rs).
    vector = Signer([b"k" * 32]).seal_raw(
        Binding("q", "default", "cron:tick:60000", "tick"), bytes(16), 1234, b"\x93\x90\x80\xc0"
    )
    assert vector.hex() == (ROOT / "tests/vectors/seal_v2.hex").read_text().strip()


def test_result_seals_bind_queue_and_task() -> None:
    signer = Signer([b"k" * 32], queue="q")
    sealed = signer.seal_result("t1", b"\x05")
    assert sealed.startswith(RESULT_MAGIC)
    assert signer.open_result("t1", sealed) == b"\x05"
    for other, task_id, value in [
        (signer, "t2", sealed),  # copied from another task
        (Signer([b"k" * 32], queue="q2"), "t1", sealed),  # ... or another queue
        (Signer([b"x" * 32], queue="q"), "t1", sealed),  # ... or sealed with another key
        (signer, "t1", sealed[:-1] + b"\x06"),  # altered
        (signer, "t1", b"\x05"),  # unsealed
    ]:
        with pytest.raises(ResultSealError):
            other.open_result(task_id, value)
    # Keyless producers strip the seal; legacy ones accept unsealed values.
    assert Signer([], queue="q").open_result("t1", sealed) == b"\x05"
    assert Signer([b"k" * 32], queue="q", legacy=True).open_result("t1", b"\x05") == b"\x05"


async def test_signed_pickle_runs_and_tampered_never_does(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
) -> None:
    # The user chose pickle: signing is what keeps Redis writers from running code.
    app = make_app(serializer=pickle.dumps, deserializer=pickle.loads, signing_key=KEY)
    worker = start_worker(
        "apps.secure:pickle_app", env={"ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
    )
    ok = await app.ref("add").enqueue(2, 3)
    r = await ok.result(timeout=10)
    assert r is not None and r.success and r.value == 5, r

    target = scratch / "pwned"
    bomb = bomb_payload(target)
    body = pickle.dumps([[1, 2], {}, None])
    legit, _ = app._signer.seal(Binding(app.queue_name, "default", "legit", "add"), body, 0)
    header = legit[: len(legit) - len(body)]
    other = Signer([b"x" * 32]).seal(
        Binding(app.queue_name, "default", "other-key", "add"), bomb, 0
    )
    cases = [  # (task id, task name, payload, why it is refused)
        ("unsigned", "add", bomb, "unsigned payload"),
        ("tampered", "add", header + bomb, "signature mismatch"),
        ("moved-id", "add", legit, "signature mismatch"),  # sealed for id "legit"
        ("legit", "sub", legit, "signature mismatch"),  # the right id, another task
        ("other-key", "add", other[0], "mismatch"),
    ]
    for task_id, name, payload, _ in cases:
        await raw_entry(admin, app, task_id, name, payload)
    for task_id, _, _, reason in cases:
        assert reason in await failure(app.job(task_id)), task_id
    # Refused payloads are dead letters with the reason, never retried; the producer
    # never unpickles them either.
    dead = {d.task_id: d for d in await app.dead_letters()}
    assert dead["unsigned"].error == "unsigned payload" and dead["unsigned"].tries == 1
    assert dead["tampered"].error == "signature mismatch"
    assert all(d.args == [] for d in dead.values())
    assert not target.exists()
    # ... and the worker goes on.
    again = await app.ref("add").enqueue(4, 5)
    r = await again.result(timeout=10)
    assert r is not None and r.value == 9
    assert stop_code(worker) == 0, worker.output()
    assert not target.exists()
    out = worker.output()
    assert "payload refused" in out and "reason=unsigned payload" in out, out


async def test_signatures_survive_retries_delays_and_replays(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    scratch: Path,
    queue: str,
) -> None:
    app = make_app(signing_key=KEY)
    unsigned_producer = make_app()
    env = {"ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
    worker = start_worker("apps.secure:app", env=env)
    retried = await app.ref("retry_then_ok").enqueue(3)  # finish(retry) copies the payload
    delayed = await app.ref("add").options(delay_ms=200).enqueue(1, 1)  # promote copies it
    failing = await app.ref("always_fails").enqueue("boom")
    unsigned = await unsigned_producer.ref("add").enqueue(1, 2)
    r = await retried.result(timeout=10)
    assert r is not None and r.success and r.value == 3 and r.tries == 3, r
    r = await delayed.result(timeout=10)
    assert r is not None and r.success and r.value == 2, r
    assert "ValueError('boom')" in await failure(failing)
    assert await failure(unsigned) == "unsigned payload"
    # replay copies the dead letter's payload back: still signed, it runs (and fails as
    # the task does, not as a signature would).
    await app.delete_dead(unsigned.id)
    replayed = await app.replay(failing.id)
    assert replayed is not None
    await wait_until(lambda: _dead_tries(app, failing.id), 10, "the replay to fail again")
    (letter,) = await app.dead_letters()
    assert letter.error == "ValueError('boom')" and letter.args == ["boom"]

    # Crons: the worker signs each occurrence itself (the native one in Rust).
    cron = start_worker("apps.secure:cron_app", env=env)
    ticks = await wait_until(lambda: _read(scratch / "tick"), 10, "a cron tick")
    assert ticks[0].startswith("cron:tick:")
    assert stop_code(cron) == 0, cron.output()
    assert stop_code(worker) == 0, worker.output()
    # A worker without the key still runs signed payloads (roll out signing producers
    # first, with `legacy_signatures` while workers store unsealed results, then workers
    # that insist on seals; SECURITY.md). A strict producer refuses the unsealed result.
    keyless = start_worker("apps.secure:app", "--burst", env={"ARDIQ_TEST_DIR": str(scratch)})
    job = await app.ref("add").enqueue(20, 22)
    assert exit_code(keyless, 30) == 0, keyless.output()
    with pytest.raises(ResultSealError, match="not sealed"):
        await job.result()
    rolling_out = make_app(signing_key=KEY, legacy_signatures=True)
    r = await rolling_out.result(job.id)
    assert r is not None and r.value == 42


async def _dead_tries(app: Ardiq, task_id: str) -> bool:
    letters = [d for d in await app.dead_letters() if d.task_id == task_id]
    return bool(letters) and letters[0].tries == 2 and await app.status(task_id) == "complete"


async def _read(path: Path) -> list[str] | None:
    return path.read_text().split() if path.exists() and path.read_text() else None


# -------------------------------------------------------------------- 3. TLS
def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
        "-days", "2", "-subj", f"/CN=ArdiQ test {name}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate it signed (localhost, 127.0.0.1) and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the `openssl` command (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=localhost",
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.pem"),
        "-days", "2", "-extfile", str(d / "ext.cnf"),
    )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_server(tls_files: Path) -> Iterator[tuple[RedisServer, int]]:
    """A redis-server with TLS on a port of its own (its plain port serves only the
    harness's readiness probe)."""
    port = free_port()
    server = RedisServer(
        "--tls-port", str(port),
        "--tls-cert-file", str(tls_files / "server.pem"),
        "--tls-key-file", str(tls_files / "server.key"),
        "--tls-ca-cert-file", str(tls_files / "ca.pem"),
        "--tls-auth-clients", "no",
    ).start()  # fmt: skip
    yield server, port
    server.cleanup()


async def test_tls_producer_and_worker(
    tls_server: tuple[RedisServer, int],
    tls_files: Path,
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    scratch: Path,
) -> None:
    _, port = tls_server
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={tls_files / 'ca.pem'}"
    app = Ardiq(url, queue_name=queue, signing_key=KEY)
    try:
        env = {"ARDIQ_REDIS_URL": url, "ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
        worker = start_worker("apps.secure:app", env=env)
        jobs = await app.enqueue_many([app.ref("count").prepare(i) for i in range(50)])
        for job in jobs:
            r = await job.result(timeout=10)
            assert r is not None and r.success
        retried = await app.ref("retry_then_ok").enqueue(2)
        r = await retried.result(timeout=10)
        assert r is not None and r.value == 2
        sleeper = await app.ref("sleep").enqueue(30)
        await wait_until(lambda: _read(scratch / "started"), 10, "the sleeper to start")
        assert await sleeper.abort()
        r = await sleeper.result(timeout=10)
        assert r is not None and r.aborted
        assert stop_code(worker) == 0, worker.output()
        assert sorted(map(int, (scratch / "count").read_text().split())) == list(range(50))
    finally:
        await app.aclose()


@pytest.mark.parametrize("ca", ["other-ca", None])
async def test_tls_untrusted_certificate_is_refused(
    tls_server: tuple[RedisServer, int],
    tls_files: Path,
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    ca: str | None,
) -> None:
    _, port = tls_server
    # Verification is on by default: without the CA, the system's roots do not know it.
    url = f"rediss://localhost:{port}/0"
    if ca is not None:
        url += f"?ssl_ca_certs={tls_files / f'{ca}.pem'}"
    app = Ardiq(url, queue_name=queue)
    try:
        with pytest.raises(BrokerError, match="certificate that is not trusted") as info:
            await app.ref("add").enqueue(1, 2)
        assert "ssl_ca_certs" in str(info.value)
    finally:
        await app.aclose()
    worker = start_worker("apps.secure:app", env={"ARDIQ_REDIS_URL": url})
    code = exit_code(worker, 30)
    out = worker.output()
    assert code != 0 and "not trusted" in out, out


def test_tls_verification_cannot_be_switched_off_in_the_engine(
    tls_server: tuple[RedisServer, int], native: Callable[..., WorkerProcess]
) -> None:
    # (redis-py honours `ssl_cert_reqs=none` as its user's explicit choice; the binary
    # does not take it.)
    _, port = tls_server
    url = f"rediss://localhost:{port}/0?ssl_cert_reqs=none"
    worker = native("apps.secure:app", env={"ARDIQ_REDIS_URL": url})
    code = exit_code(worker, 30)
    assert code != 0 and "always verifies" in worker.output(), worker.output()


# -------------------------------------------------------------------- 4. ACL
def readme_acl_rules() -> dict[str, list[str]]:
    """The `ACL SETUSER` lines of the README's Security section, as argument lists."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Security", 1)[1].split("\n## ", 1)[0]
    rules = {}
    for line in section.splitlines():
        if line.startswith("ACL SETUSER "):
            words = line.split()[2:]
            rules[words[0]] = words
    # The functions-mode users (`ardiq-fn-*`) are tested in test_functions.py, the
    # dashboard's in test_dashboard_api.py.
    rules = {
        name: words
        for name, words in rules.items()
        if not name.startswith("ardiq-fn-") and name != "ardiq-dashboard"
    }
    assert set(rules) == {"ardiq-producer", "ardiq-worker"}, rules
    return rules


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    args: list[str] = []
    for name, words in readme_acl_rules().items():
        # The README's placeholder passwords become this test's.
        words = [f">{name}-pw" if w.startswith(">") else w for w in words]
        args += ["--user", *words]
    server = RedisServer(*args).start()
    yield server
    server.cleanup()


def acl_url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:{user}-pw@127.0.0.1:{server.port}/0"


async def test_acl_rules_are_least_privilege(acl_server: RedisServer) -> None:
    """The users exist as the README writes them and cannot step outside ArdiQ's keys."""
    for user in ("ardiq-producer", "ardiq-worker"):
        client = aioredis.Redis.from_url(acl_url(acl_server, user))
        try:
            assert await client.ping()
            for command in (("GET", "other:key"), ("FLUSHALL",), ("KEYS", "*"), ("EVAL", "", 0)):
                with pytest.raises(Exception, match=r"NOPERM|no permissions"):
                    await client.execute_command(*command)
        finally:
            await client.aclose()
    producer = aioredis.Redis.from_url(acl_url(acl_server, "ardiq-producer"))
    try:  # a producer cannot take or acknowledge work
        for command in (
            ("XREADGROUP", "GROUP", "ardiq", "me", "STREAMS", "ardiq:{q}:stream:default", ">"),
            ("XACK", "ardiq:{q}:stream:default", "ardiq", "0-1"),
        ):
            with pytest.raises(Exception, match=r"NOPERM|no permissions"):
                await producer.execute_command(*command)
    finally:
        await producer.aclose()


async def test_core_scenarios_as_least_privilege_users(
    acl_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    queue: str,
    scratch: Path,
) -> None:
    admin = aioredis.Redis.from_url(acl_server.url)
    await admin.execute_command("ACL", "LOG", "RESET")
    app = Ardiq(acl_url(acl_server, "ardiq-producer"), queue_name=queue)
    env = {"ARDIQ_REDIS_URL": acl_url(acl_server, "ardiq-worker"), "ARDIQ_TEST_DIR": str(scratch)}
    try:
        # Enqueue many before any worker exists; a burst worker drains them.
        jobs = await app.enqueue_many([app.ref("count").prepare(i) for i in range(100)])
        assert await app.queue_size() == 100
        info = await jobs[0].info()
        assert info is not None and info.args == (0,) and await jobs[0].status() == "queued"
        burst = start_worker("apps.secure:app", "--burst", env=env)
        assert exit_code(burst, 30) == 0, burst.output()
        for job in jobs:
            r = await job.result()
            assert r is not None and r.success, r

        worker = start_worker("apps.secure:app", env=env)
        retried = await app.ref("retry_then_ok").enqueue(3)
        r = await retried.result(timeout=10)  # waits on the shared subscription
        assert r is not None and r.value == 3 and r.tries == 3
        delayed = await app.ref("add").options(delay_ms=300).enqueue(2, 2)
        assert await delayed.status() == "scheduled"
        r = await delayed.result(timeout=10)
        assert r is not None and r.value == 4
        failing = await app.ref("always_fails").enqueue("nope")
        assert "ValueError" in await failure(failing)
        assert await app.dead_count() == 1
        (letter,) = await app.dead_letters()
        assert letter.args == ["nope"] and letter.tries == 2
        assert await app.replay(failing.id) is not None
        assert "ValueError" in await failure(failing)
        assert await app.delete_dead(failing.id)
        unknown = await app.send("no_such_task", 1)
        assert await failure(unknown) == "unknown task 'no_such_task'"
        # Aborts: a scheduled task, and a running one.
        later = await app.ref("add").options(delay_ms=60_000).enqueue(1, 1)
        assert await later.abort()
        sleeper = await app.ref("sleep").enqueue(30)
        await wait_until(lambda: _read(scratch / "started"), 10, "the sleeper to start")
        await asyncio.sleep(1.5)  # its lease is renewed (XCLAIM), reclaim polls meanwhile
        assert await sleeper.abort()
        r = await sleeper.result(timeout=10)
        assert r is not None and r.aborted
        assert stop_code(worker) == 0, worker.output()
        # Nothing was refused along the way (but the optional CONFIG GET, README).
        log = await admin.execute_command("ACL", "LOG")
        denied = [_acl_entry(e) for e in log]
        denied = [e for e in denied if e["object"] != "config|get"]
        assert denied == [], denied
        # redis://user:password@host worked for the package and the engine alike.
        clients = await admin.execute_command("CLIENT", "LIST")
        assert b"user=ardiq-producer" in clients
    finally:
        await app.aclose()
        await admin.aclose()


def _acl_entry(entry: Any) -> dict[str, str]:
    items = entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in items
    }


# ------------------------------------------------------------------- 5. canary
@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", PASSWORD).start()
    yield server
    server.cleanup()


async def test_secrets_never_reach_the_logs(
    password_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    worker_kind: str,
    queue: str,
    scratch: Path,
) -> None:
    await canary(password_server, start_worker, worker_kind, queue, scratch, "text")


async def test_secrets_never_reach_json_logs(
    password_server: RedisServer,
    native: Callable[..., WorkerProcess],
    queue: str,
    scratch: Path,
) -> None:
    await canary(password_server, native, "native", queue, scratch, "json")


async def canary(
    password_server: RedisServer,
    start_worker: Callable[..., WorkerProcess],
    worker_kind: str,
    queue: str,
    scratch: Path,
    log_format: str,
) -> None:
    """Every failure path with a secret in the arguments, keyword arguments, return
    value and exception message, a password in the URL and a signing key: none of them
    may show in the worker's output at --verbose."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0"
    app = Ardiq(url, queue_name=queue, signing_key=KEY)
    admin = aioredis.Redis.from_url(url)
    env = {
        "ARDIQ_REDIS_URL": url,
        "ARDIQ_TEST_DIR": str(scratch),
        "ARDIQ_TEST_SECRET": SECRET,
        "ARDIQ_SIGNING_KEY": KEY,
    }
    flags = ["--verbose"] + (["--log-format", "json"] if log_format == "json" else [])
    try:
        jobs = {
            "ok": await app.ref("echo").enqueue(SECRET, extra={"k": SECRET}),
            "sync": await app.ref("sync_echo").enqueue(SECRET),
            "final": await app.ref("fail_secret").enqueue(SECRET, also=SECRET),  # retry too
            "timeout": await app.ref("slow_secret").enqueue(SECRET),
            "unknown": await app.send("no_such_task", SECRET, key=SECRET),
            "unserializable": await app.ref("unserializable_secret").enqueue(SECRET),
        }
        body = SECRET.encode() + b"\xc1"
        jobs["undecodable"] = await raw_entry(
            admin,
            app,
            "undecodable",
            "echo",
            app._signer.seal(Binding(app.queue_name, "default", "undecodable", "echo"), body, 0)[0],
        )
        jobs["unsigned"] = await raw_entry(
            admin, app, "unsigned", "echo", msgpack_dumps([[SECRET], {}, None])
        )
        worker = start_worker("apps.secure:app", "--burst", *flags, env=env)
        assert exit_code(worker, 30) == 0, worker.output()
        results = {name: await job.result() for name, job in jobs.items()}
        assert all(r is not None for r in results.values())
        assert results["ok"] is not None and results["ok"].value == SECRET  # it went through
        assert results["final"] is not None and SECRET in results["final"].value
        assert results["final"].tries == 2
    finally:
        await app.aclose()
        await admin.aclose()

    out = worker.output()
    for secret in (SECRET, PASSWORD, KEY):
        assert secret not in out, (secret, out)
    lines = out.splitlines()
    assert any("retry" in ln and "fail_secret" in ln for ln in lines), out
    assert any("timed out" in ln or "slow_secret" in ln for ln in lines), out
    assert any("payload refused" in ln for ln in lines), out
    if log_format == "json":
        for ln in lines:  # every stderr line is JSON: no banner
            json.loads(ln)
    elif worker_kind == "native":
        assert re.search(r"redis\s+redis://:\*\*\*@127\.0\.0\.1", out), out  # the banner
        assert re.search(r"payloads\s+signed", out), out


def test_password_on_the_command_line_is_masked(
    password_server: RedisServer, native: Callable[..., WorkerProcess]
) -> None:
    start_worker = native
    url = f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0"
    worker = start_worker("apps.secure:app", "--burst", "--verbose", "--redis-url", url)
    assert exit_code(worker, 30) == 0, worker.output()
    assert PASSWORD not in worker.output() and "***" in worker.output()
    bad = url.replace(PASSWORD, PASSWORD + "-wrong")
    worker = start_worker("apps.secure:app", "--burst", "--verbose", "--redis-url", bad)
    assert exit_code(worker, 30) != 0
    assert PASSWORD not in worker.output(), worker.output()


# ------------------------------------------- 6. an attacker with write access, no key
# What someone who can write to Redis but holds no signing key tries (SECURITY.md): forge
# results, replay finished tasks, crons and dead letters, move payloads, feed oversized
# payloads. Each is refused or dead-lettered with its reason, nothing runs twice, and the
# worker keeps serving.
async def entries(admin: aioredis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(eid, dict(fields)) for eid, fields in await admin.xrange(stream)]


REPLAY_ENTRY = """
local eid = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
if KEYS[2] then
  redis.call('HSET', KEYS[2], 'fn', ARGV[1], 'l', 'default', 's', 'q', 't', 0, 'enq', 1,
    'x', 0, 'e', eid, 'n', ARGV[2])
end
return eid
"""


async def replay_entry(
    admin: aioredis.Redis, stream: str, fields: dict[bytes, bytes], job: str | None = None
) -> bytes:
    """XADD a captured entry again; with `job`, also forge its job record (in the same
    atomic step, so no worker sees one without the other) so that it names the new entry
    and carries the nonce the payload shows in clear."""
    nonce = fields[b"p"][len(MAGIC) + 32 : len(MAGIC) + 48].hex()
    flat = [x for kv in fields.items() for x in kv]
    keys = [stream] if job is None else [stream, job]
    eid: bytes = await admin.eval(REPLAY_ENTRY, len(keys), *keys, fields[b"fn"], nonce, *flat)  # type: ignore[misc]
    return eid


async def test_forged_results_never_reach_the_deserializer(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
) -> None:
    app = make_app(serializer=pickle.dumps, deserializer=pickle.loads, signing_key=KEY)
    env = {"ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
    worker = start_worker("apps.secure:pickle_app", env=env)
    real = await app.ref("add").enqueue(2, 3)
    other = await app.ref("add").enqueue(1, 1)
    r = await real.result(timeout=10)  # the worker sealed it; the producer checked it
    assert r is not None and r.success and r.value == 5, r
    assert (await other.result(timeout=10)) is not None
    stored = await admin.get(app.keys.result(other.id))
    target = scratch / "pwned"

    def record(value: bytes) -> bytes:
        return msgpack_dumps([2, True, value, 1, 0, 0, 0, False])

    forged = {
        "pickle bomb": record(bomb_payload(target)),
        "unsealed value": record(pickle.dumps(42)),
        "another task's sealed value": stored,
        "v1 record": msgpack_dumps([1, True, pickle.dumps(7), 1, 0, 0, 0, False]),
    }
    for what, blob in forged.items():
        await admin.set(app.keys.result(real.id), blob)
        with pytest.raises(ResultSealError):
            await real.result()
        assert not target.exists(), what
    for garbage in [b"\x00", msgpack_dumps([2, True]), msgpack_dumps({"a": 1}), b""]:
        await admin.set(app.keys.result(real.id), garbage)
        with pytest.raises(ArdiqError, match="malformed"):  # never a bare TypeError
            await real.result()
    assert stop_code(worker) == 0, worker.output()


async def test_replayed_and_moved_entries_never_run(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
    queue: str,
) -> None:
    app = make_app(signing_key=KEY)
    stream = app.keys.stream("default")
    job = await app.ref("count").enqueue(1)  # no worker yet: the entry waits, copied
    ((_, captured),) = await entries(admin, stream)
    env = {"ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
    worker = start_worker("apps.secure:app", env=env)
    r = await job.result(timeout=10)
    assert r is not None and r.success, r

    # 1. The finished task's entry added back as it was: no live job holds it.
    plain = await replay_entry(admin, stream, captured)
    # 2. ... twice at once, while a new task of the same id is live is not possible
    #    without its nonce; 3. with a forged job record too, but after its not-after:
    signer = Signer([KEY.encode()], queue=queue)
    binding = Binding(queue, "default", "old", "count")
    old = signer.seal_raw(binding, bytes(16), now_ms() - 3_600_000, msgpack_dumps([[9], {}, None]))
    expired = await replay_entry(
        admin,
        stream,
        {
            b"id": b"old",
            b"fn": b"count",
            b"p": old,
            b"t": b"0",
            b"enq": b"1",
            b"x": b"0",
            b"r": b"0",
        },
        job=app.keys.job("old"),
    )
    # 4. Moved to another queue served by a worker with the same key, job forged as well.
    moved_app = make_app(queue_name=f"{queue}-b", signing_key=KEY)
    moved_stream = moved_app.keys.stream("default")
    await replay_entry(admin, moved_stream, captured, job=moved_app.keys.job(job.id))
    moved_worker = start_worker("apps.secure:app", env={**env, "ARDIQ_TEST_QUEUE": f"{queue}-b"})

    async def settled() -> bool:
        done = await admin.exists(app.keys.dead_letter(f"entry:{plain.decode()}"))
        return bool(done) and await moved_app.status(job.id) == "complete"

    await wait_until(settled, 15, "the replays to be refused")
    assert (await failure(app.job("old"))) == "signature expired"
    assert "signature mismatch" in await failure(moved_app.job(job.id))
    letters = {d.task_id: d for d in await app.dead_letters()}
    assert "replayed entry" in letters[f"entry:{plain.decode()}"].error
    assert letters["old"].error == "signature expired"
    assert expired  # refused as itself: the job it forged names it
    assert (scratch / "count").read_text().split() == ["1"]  # ran once, the first time
    # ... and the worker goes on.
    again = await app.ref("count").enqueue(2)
    r = await again.result(timeout=10)
    assert r is not None and r.success, r
    assert stop_code(worker) == 0, worker.output()
    assert stop_code(moved_worker) == 0, moved_worker.output()


async def test_replayed_cron_occurrences_and_dead_letters_never_run(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
) -> None:
    app = make_app(signing_key=KEY)
    stream = app.keys.stream("default")
    env = {"ARDIQ_TEST_DIR": str(scratch), "ARDIQ_SIGNING_KEY": KEY}
    worker = start_worker("apps.secure:slow_cron_app", env=env)

    async def running_occurrence() -> tuple[bytes, dict[bytes, bytes]] | None:
        found = [e for e in await entries(admin, stream) if e[1][b"id"].startswith(b"cron:")]
        return found[0] if found and (scratch / "slow_tick").exists() else None

    _, captured = await wait_until(running_occurrence, 15, "a cron occurrence to run")
    occurrence = captured[b"id"].decode()
    await wait_until(lambda: _complete(app, occurrence), 10, "the occurrence to finish")
    replayed = await replay_entry(admin, stream, captured)
    await wait_until(
        lambda: _exists(admin, app.keys.dead_letter(f"entry:{replayed.decode()}")),
        10,
        "the replayed occurrence to be refused",
    )
    assert stop_code(worker) == 0, worker.output()
    ran = (scratch / "slow_tick").read_text().split()
    assert ran.count(occurrence) == 1, ran

    # A dead letter's payload (signed, kept for ever) added back with a forged job that
    # has no nonce: refused as a replay, the dead letter left as it was.
    failing = await app.ref("always_fails").enqueue("boom")
    worker = start_worker("apps.secure:app", env=env)
    assert "boom" in await failure(failing)
    fields = await admin.hgetall(app.keys.dead_letter(failing.id))
    eid = await admin.xadd(stream, {"id": failing.id, "fn": "always_fails", "p": fields[b"p"],
                                    "t": 0, "enq": 1, "x": 0, "r": 0})  # fmt: skip
    await admin.hset(app.keys.job(failing.id), mapping={"fn": "always_fails", "l": "default",
                                                        "s": "q", "t": 0, "e": eid})  # fmt: skip
    await wait_until(
        lambda: _exists(admin, app.keys.dead_letter(f"entry:{eid.decode()}")), 10, "a refusal"
    )
    (letter,) = [d for d in await app.dead_letters() if d.task_id == failing.id]
    assert letter.tries == 2  # not run a third time
    # The producer, who holds the key, can still replay it: a new enqueue, sealed again.
    await admin.delete(app.keys.job(failing.id))
    assert await app.replay(failing.id) is not None
    await wait_until(lambda: _dead_tries(app, failing.id), 10, "the replay to fail again")
    assert stop_code(worker) == 0, worker.output()


async def test_oversized_payloads_are_refused_before_decoding(
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    admin: aioredis.Redis,
    scratch: Path,
) -> None:
    app = make_app()
    worker = start_worker("apps.secure:small_app", env={"ARDIQ_TEST_DIR": str(scratch)})
    big = await raw_entry(admin, app, "big", "count", msgpack_dumps([["x" * 8192], {}, None]))
    # 4 MiB of nested empty maps: cheap to send, costly to decode.
    nested = b"\x93\x91" + b"\x81\x80\x80" * (4 * 1024 * 1024 // 3) + b"\x80\xc0"
    bomb = await raw_entry(admin, app, "bomb", "count", nested)
    for job in (big, bomb):
        assert (await failure(job)).startswith("payload too large"), job
    assert not (scratch / "count").exists()
    ok = await app.ref("count").enqueue(3)  # the worker keeps serving
    r = await ok.result(timeout=10)
    assert r is not None and r.success, r
    assert stop_code(worker) == 0, worker.output()


async def _complete(app: Ardiq, task_id: str) -> bool:
    return await app.status(task_id) == "complete"


async def _exists(admin: aioredis.Redis, key: str) -> bool:
    return bool(await admin.exists(key))


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
