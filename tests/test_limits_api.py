"""The limit options of `@app.task` / `@app.cron` / `app.ref` (README, "Rate limits and
concurrency caps"): checked at decoration, the limit key computed at enqueue and written
to the entry (and sealed in the headers when the app signs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from ardiq import Ardiq
from ardiq.limits import parse_rate
from ardiq.signing import Binding
from ardiq.testing import inline
from ardiq.worker_settings import WorkerSettings


def test_rates_parse() -> None:
    assert parse_rate("100/s") == pytest.approx(0.1)
    assert parse_rate("6/m") == pytest.approx(0.0001)
    assert parse_rate("0.5/s") == pytest.approx(0.0005)
    assert parse_rate(" 36 / h ") == pytest.approx(0.00001)


@pytest.mark.parametrize(
    "options",
    [
        {"rate_limit": "100"},
        {"rate_limit": "0/s"},
        {"rate_limit": "-1/s"},
        {"rate_limit": "1/d"},
        {"rate_limit": 100},
        {"rate_limit": "inf/s"},
        {"rate_limit": "1/s", "burst": 0},
        {"rate_limit": "1/s", "burst": True},
        {"rate_limit": "1/s", "burst": float("nan")},
        {"burst": 3},
        {"max_concurrency": 0},
        {"max_concurrency": 1.5},
        {"max_concurrency": True},
        {"limit_key": "x"},
        {"rate_limit": "1/s", "limit_key": "nope"},
        {"rate_limit": "1/s", "limit_key": "not an identifier"},
    ],
)
def test_bad_limit_options_raise_at_decoration(options: dict[str, Any]) -> None:
    app = Ardiq("redis://localhost:1")
    with pytest.raises(ValueError):

        @app.task(**options)
        async def job(x: int) -> None: ...


def test_limits_reach_the_worker_settings() -> None:
    app = Ardiq("redis://localhost:1")

    @app.task(rate_limit="20/s")
    async def a() -> None: ...

    @app.task(rate_limit="2/s", burst=7, max_concurrency=3, limit_key="k")
    async def b(k: str) -> None: ...

    @app.cron(every=60, max_concurrency=1)
    async def c() -> None: ...

    @app.task
    async def d() -> None: ...

    limits = {lim.name: lim for lim in WorkerSettings.of(app).limits}
    assert set(limits) == {"a", "b", "c"}
    assert limits["a"].rate_per_ms == pytest.approx(0.02) and limits["a"].burst == 20
    assert limits["a"].max_concurrency == 0
    assert (limits["b"].burst, limits["b"].max_concurrency) == (7, 3)
    assert limits["c"].rate_per_ms == 0 and limits["c"].max_concurrency == 1
    # One second's worth, at least one token.
    app2 = Ardiq("redis://localhost:1")

    @app2.task(rate_limit="1/m")
    async def slow() -> None: ...

    assert WorkerSettings.of(app2).limits[0].burst == 1


async def entry_fields(admin: aioredis.Redis, app: Ardiq, lane: str) -> list[dict[bytes, bytes]]:
    return [f for _, f in await admin.xrange(app.keys.stream(lane))]


async def test_the_limit_key_is_computed_at_enqueue(
    make_app: Callable[..., Ardiq], redis_url: str
) -> None:
    app = make_app()
    admin = aioredis.Redis.from_url(redis_url)

    @app.task(rate_limit="5/s", limit_key="customer")
    async def job(order: int, customer: int | str = "anon", **extra: Any) -> None: ...

    await job.enqueue(1, 42)
    await job.enqueue(2, customer="acme")
    await job.enqueue(3)  # the default
    await job.options(delay_ms=60_000).enqueue(4, "later")
    fields = await entry_fields(admin, app, app.default_priority)
    assert [f.get(b"lk") for f in fields] == [b"42", b"acme", b"anon"]
    delayed = (await admin.zrange(app.keys.delayed, 0, -1))[0].decode()
    assert await admin.hget(app.keys.job(delayed), "lk") == b"later"
    with pytest.raises(TypeError, match="int or a str"):
        await job.enqueue(5, 1.5)
    with pytest.raises(TypeError, match="int or a str"):
        await job.enqueue(5, True)
    with pytest.raises(ValueError, match="200 bytes"):
        await job.enqueue(5, "x" * 201)
    await job.enqueue(5, "é" * 100)  # 200 bytes exactly
    await admin.aclose()


async def test_refs_take_the_key_by_keyword_and_send_carries_none(
    make_app: Callable[..., Ardiq], redis_url: str
) -> None:
    app = make_app()
    admin = aioredis.Redis.from_url(redis_url)
    ref = app.ref("remote", limit_key="tenant")
    await ref.enqueue(tenant=7)
    with pytest.raises(TypeError, match="by keyword"):
        await ref.enqueue(7)
    await app.send("remote", tenant=8)
    fields = await entry_fields(admin, app, app.default_priority)
    assert [f.get(b"lk") for f in fields] == [b"7", None]
    await admin.aclose()


async def test_a_signing_app_seals_the_key_in_the_headers(
    make_app: Callable[..., Ardiq], redis_url: str
) -> None:
    app = make_app(signing_key=b"k" * 32)
    admin = aioredis.Redis.from_url(redis_url)

    @app.task(max_concurrency=1, limit_key="user")
    async def job(user: str) -> None: ...

    await job.enqueue("bob")
    (fields,) = await entry_fields(admin, app, app.default_priority)
    assert fields[b"lk"] == b"bob"
    binding = Binding(app.queue_name, app.default_priority, fields[b"id"].decode(), "job")
    opened = app._signer.open(binding, bytes(fields[b"p"]))
    assert app.deserializer(opened.body)[2] == {"ardiq.lk": "bob"}
    await admin.aclose()


async def test_inline_ignores_the_limits(make_app: Callable[..., Ardiq]) -> None:
    app = make_app()

    @app.task(rate_limit="1/h", burst=1, max_concurrency=1)
    async def once(x: int) -> int:
        return x

    async with inline(app):
        for i in range(3):
            r = await (await once.enqueue(i)).result()
            assert r is not None and r.value == i
