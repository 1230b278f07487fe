"""The app's constructor settings, their defaults and their validation (API §1)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from ardiq import Ardiq, ArdiqError

UNREACHABLE = "redis://127.0.0.1:1"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ------------------------------------------------------------------ redis_url
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("ARDIQ_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return monkeypatch


def test_redis_url_defaults_to_localhost(clean_env: pytest.MonkeyPatch) -> None:
    assert Ardiq().redis_url == "redis://localhost:6379"


def test_redis_url_from_redis_url_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://10.0.0.2:7000/3")
    assert Ardiq().redis_url == "redis://10.0.0.2:7000/3"


def test_ardiq_redis_url_env_wins_over_redis_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://10.0.0.2:7000")
    clean_env.setenv("ARDIQ_REDIS_URL", "redis://10.0.0.3:7001")
    assert Ardiq().redis_url == "redis://10.0.0.3:7001"


def test_explicit_redis_url_wins_over_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ARDIQ_REDIS_URL", "redis://10.0.0.3:7001")
    assert Ardiq("redis://10.0.0.4:7002").redis_url == "redis://10.0.0.4:7002"
    assert Ardiq(redis_url="redis://10.0.0.5").redis_url == "redis://10.0.0.5"


def test_malformed_env_url_is_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ARDIQ_REDIS_URL", "http://example.com")
    with pytest.raises(ArdiqError):
        Ardiq()


def test_empty_redis_url_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        Ardiq("")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "localhost:6379",
        "redis://localhost:notaport",
        "redis://localhost:99999",
        "redis://localhost:0",
        "redis://:6379",
        "unix://",
        "ftp://x",
    ],
)
def test_malformed_redis_url_raises_ardiq_error(url: str) -> None:
    with pytest.raises(ArdiqError, match="redis_url"):
        Ardiq(url)


def test_malformed_url_error_never_shows_the_password() -> None:
    with pytest.raises(ArdiqError) as info:
        Ardiq("redis://user:s3cret@localhost:99999")
    assert "s3cret" not in str(info.value)


def test_redis_url_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        Ardiq(6379)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379",
        "redis://localhost",
        "redis://127.0.0.1:6380/2",
        "rediss://cache.example.com:6380",
        "unix:///var/run/redis/redis.sock",
        "unix:///tmp/redis.sock?db=1",
        "redis://alice:s3cret@localhost:6379/0",
        "rediss://alice:s3cret@cache.example.com:6380",
        "redis://:onlypassword@localhost:6379",
        "redis://[::1]:6379",
    ],
)
def test_accepted_redis_urls_are_returned_as_given(url: str) -> None:
    assert Ardiq(url).redis_url == url


async def test_constructing_never_connects() -> None:
    # Nothing listens on this port: construction, registration and repr still work.
    url = f"redis://127.0.0.1:{closed_port()}"
    app = Ardiq(url, queue_name="q", priorities=["low", "high"])

    @app.task
    async def f(x: int) -> int:
        return x

    assert app.redis_url == url
    assert app.tasks == ["f"]
    assert "q" in repr(app)
    assert f.prepare(1).name == "f"
    await app.aclose()  # nothing to close: no client was made


# ------------------------------------------------------------ unknown keywords
def test_unknown_keyword_raises_type_error_with_did_you_mean() -> None:
    with pytest.raises(TypeError, match="concurency") as info:
        Ardiq(concurency=4)  # type: ignore[call-arg]
    assert "concurrency" in str(info.value).replace("concurency", "")
    assert "did you mean" in str(info.value)


def test_unknown_keyword_without_close_match_raises_type_error() -> None:
    with pytest.raises(TypeError, match="frobnicate"):
        Ardiq(frobnicate=True)  # type: ignore[call-arg]


# ----------------------------------------------------------------- queue name
def test_queue_name_default_and_given() -> None:
    assert Ardiq(UNREACHABLE).queue_name == "default"
    assert Ardiq(UNREACHABLE, "emails").queue_name == "emails"
    assert Ardiq(UNREACHABLE, queue_name="emails").queue_name == "emails"


@pytest.mark.parametrize("name", ["", "a}b", None, 5])
def test_bad_queue_name_is_rejected(name: object) -> None:
    with pytest.raises(ValueError, match="queue_name"):
        Ardiq(UNREACHABLE, queue_name=name)  # type: ignore[arg-type]


def test_queue_name_namespaces_keys() -> None:
    a, b = Ardiq(UNREACHABLE, queue_name="a"), Ardiq(UNREACHABLE, queue_name="b")
    assert a.keys.job("x") != b.keys.job("x")
    assert "{a}" in a.keys.job("x")


# ----------------------------------------------------------------- priorities
def test_priorities_default_to_one_lane() -> None:
    app = Ardiq(UNREACHABLE)
    assert app.priorities == ["default"]
    assert app.default_priority == "default"


@pytest.mark.parametrize(
    ("lanes", "middle"),
    [
        (["only"], "only"),
        (["low", "high"], "high"),
        (["low", "default", "high"], "default"),
        (["a", "b", "c", "d"], "c"),
        (["a", "b", "c", "d", "e"], "c"),
    ],
)
def test_default_priority_is_the_middle_lane(lanes: list[str], middle: str) -> None:
    app = Ardiq(UNREACHABLE, priorities=lanes)
    assert app.priorities == lanes
    assert app.default_priority == middle


def test_priorities_accept_any_iterable() -> None:
    assert Ardiq(UNREACHABLE, priorities=("low", "high")).priorities == ["low", "high"]


def test_priorities_property_is_a_copy() -> None:
    app = Ardiq(UNREACHABLE, priorities=["low", "high"])
    app.priorities.append("evil")
    assert app.priorities == ["low", "high"]


def test_explicit_default_priority() -> None:
    app = Ardiq(UNREACHABLE, priorities=["low", "default", "high"], default_priority="low")
    assert app.default_priority == "low"


def test_unknown_default_priority_lists_the_lanes() -> None:
    with pytest.raises(ValueError, match="urgent") as info:
        Ardiq(UNREACHABLE, priorities=["low", "high"], default_priority="urgent")
    assert "low" in str(info.value) and "high" in str(info.value)


@pytest.mark.parametrize(
    ("priorities", "error"),
    [
        ([], ValueError),
        (["a", "a"], ValueError),
        (["a", ""], ValueError),
        (["a", 3], ValueError),
        ("default", TypeError),
        (5, TypeError),
    ],
)
def test_bad_priorities_are_rejected(priorities: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Ardiq(UNREACHABLE, priorities=priorities)  # type: ignore[arg-type]


# ------------------------------------------------------------------ worker_id
def test_worker_id_default_is_unique() -> None:
    ids = {Ardiq(UNREACHABLE).worker_id for _ in range(50)}
    assert len(ids) == 50
    assert all(isinstance(i, str) and i for i in ids)


def test_worker_id_given() -> None:
    assert Ardiq(UNREACHABLE, worker_id="w-1").worker_id == "w-1"
    assert Ardiq(UNREACHABLE, "q", None, "w-2").worker_id == "w-2"


def test_empty_worker_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="worker_id"):
        Ardiq(UNREACHABLE, worker_id="")


# ------------------------------------------------------------- numeric settings
def test_numeric_defaults() -> None:
    app = Ardiq(UNREACHABLE)
    assert app.concurrency == 16
    assert app.prefetch == 32
    assert app.idle_timeout_ms == 60000
    assert app.poll_block_ms == 500
    assert app.result_ttl_ms == 300000
    assert app.cron_poll_s == 1.0
    assert app.burst is False


def test_prefetch_defaults_to_twice_concurrency() -> None:
    assert Ardiq(UNREACHABLE, concurrency=5).prefetch == 10
    assert Ardiq(UNREACHABLE, concurrency=1).prefetch == 2
    assert Ardiq(UNREACHABLE, concurrency=5, prefetch=7).prefetch == 7


def test_settings_are_stored() -> None:
    app = Ardiq(
        UNREACHABLE,
        concurrency=3,
        prefetch=9,
        idle_timeout_ms=1234,
        poll_block_ms=50,
        result_ttl_ms=-1,
        cron_poll_s=0.25,
        burst=True,
    )
    assert (app.concurrency, app.prefetch, app.idle_timeout_ms, app.poll_block_ms) == (
        3,
        9,
        1234,
        50,
    )
    assert app.result_ttl_ms == -1
    assert app.cron_poll_s == 0.25
    assert app.burst is True


@pytest.mark.parametrize("ttl", [0, -1, 1, 10**9])
def test_result_ttl_accepts_any_int(ttl: int) -> None:
    assert Ardiq(UNREACHABLE, result_ttl_ms=ttl).result_ttl_ms == ttl


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("concurrency", 0, ValueError),
        ("concurrency", -1, ValueError),
        ("concurrency", "4", TypeError),
        ("concurrency", 2.5, TypeError),
        ("concurrency", True, TypeError),
        ("prefetch", 0, ValueError),
        ("idle_timeout_ms", 0, ValueError),
        ("idle_timeout_ms", 5, ValueError),
        ("idle_timeout_ms", 29, ValueError),
        ("idle_timeout_ms", "1", TypeError),
        ("poll_block_ms", -5, ValueError),
        ("result_ttl_ms", "300", TypeError),
        ("result_ttl_ms", 1.5, TypeError),
        ("cron_poll_s", 0, ValueError),
        ("cron_poll_s", "1", ValueError),
    ],
)
def test_bad_numbers_are_rejected(setting: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=setting):
        Ardiq(UNREACHABLE, **{setting: value})


def test_idle_timeout_accepts_what_the_engine_accepts() -> None:
    # The native engine's Config refuses under 30 ms: the boundary is the same here.
    assert Ardiq(UNREACHABLE, idle_timeout_ms=30).idle_timeout_ms == 30


def test_prefetch_below_concurrency_is_rejected() -> None:
    with pytest.raises(ValueError, match="prefetch"):
        Ardiq(UNREACHABLE, concurrency=8, prefetch=4)


def test_serializer_default_is_msgpack_and_round_trips() -> None:
    app = Ardiq(UNREACHABLE)
    data = app.serializer([[1, "a", b"b"], {"k": None}, None])
    assert isinstance(data, bytes)
    assert app.deserializer(data) == [[1, "a", b"b"], {"k": None}, None]


def test_default_serializer_is_never_pickle() -> None:
    app = Ardiq(UNREACHABLE)
    with pytest.raises(TypeError):
        app.serializer(object())


def test_custom_serializer() -> None:
    import json

    def dumps(v: object) -> bytes:
        return json.dumps(v).encode()

    app = Ardiq(UNREACHABLE, serializer=dumps, deserializer=json.loads)
    assert app.serializer is dumps
    assert app.deserializer is json.loads


def test_serializer_must_be_callable() -> None:
    with pytest.raises(TypeError, match="serializer"):
        Ardiq(UNREACHABLE, serializer="pickle")


# ------------------------------------------------------- read-only properties
@pytest.mark.parametrize(
    "attr",
    [
        "redis_url",
        "queue_name",
        "priorities",
        "default_priority",
        "worker_id",
        "serializer",
        "deserializer",
        "cron_poll_s",
        "concurrency",
        "prefetch",
        "idle_timeout_ms",
        "poll_block_ms",
        "result_ttl_ms",
        "tasks",
        "crons",
        "state",
    ],
)
def test_settings_are_read_only(attr: str) -> None:
    app = Ardiq(UNREACHABLE)
    before = getattr(app, attr)
    with pytest.raises(AttributeError):
        setattr(app, attr, before)


def test_burst_is_read_write() -> None:
    app = Ardiq(UNREACHABLE)
    app.burst = True
    assert app.burst is True
    app.burst = False
    assert app.burst is False


# --------------------------------------------------------- tasks, crons, state
def test_tasks_in_registration_order_including_crons() -> None:
    app = Ardiq(UNREACHABLE)

    @app.task
    async def zeta() -> None: ...

    @app.cron(every=60)
    async def beta() -> None: ...

    @app.task(name="alpha")
    def something() -> None: ...

    @app.cron("*/5 * * * *", name="gamma")
    def tick() -> None: ...

    assert app.tasks == ["zeta", "beta", "alpha", "gamma"]
    assert app.crons == ["beta", "gamma"]
    assert [c.name for c in app.cron_jobs] == ["beta", "gamma"]
    assert app.cron_jobs[0].task.name == "beta"
    assert app.cron_jobs[0].schedule.next_after(0) == 60_000


def test_tasks_is_a_copy() -> None:
    app = Ardiq(UNREACHABLE)
    app.tasks.append("x")
    app.crons.append("y")
    app.cron_jobs.append(None)  # type: ignore[arg-type]
    assert app.tasks == [] and app.crons == [] and app.cron_jobs == []


def test_crons_every_timedelta() -> None:
    app = Ardiq(UNREACHABLE)

    @app.cron(every=timedelta(minutes=2))
    def c() -> None: ...

    assert app.cron_jobs[0].schedule.next_after(1) == 120_000


def test_state_missing_attribute_mentions_lifespan() -> None:
    app = Ardiq(UNREACHABLE)
    with pytest.raises(AttributeError, match=r"@app\.lifespan"):
        _ = app.state.db
    assert not hasattr(app.state, "db")


def test_lifespan_requires_an_async_generator() -> None:
    app = Ardiq(UNREACHABLE)

    async def not_a_generator(a: Ardiq) -> None: ...

    with pytest.raises(TypeError, match="lifespan"):
        app.lifespan(not_a_generator)  # type: ignore[arg-type]


async def test_lifespan_state_is_set_by_the_worker(make_app: Callable[..., Ardiq]) -> None:
    app = make_app(poll_block_ms=50)
    seen: list[str] = []

    @app.lifespan
    async def life(a: Ardiq) -> AsyncIterator[dict[str, object]]:
        seen.append("start")
        yield {"db": "connection"}
        seen.append("end")

    app.burst = True
    await app.run()
    assert seen == ["start", "end"]
    assert app.state.db == "connection"
