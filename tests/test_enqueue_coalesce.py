"""Concurrent enqueues share script calls (client.RedisClient.submit): nothing is lost or
added twice, and a caller whose task fails the shared call is the only one to see it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from ardiq import Ardiq, ArdiqError

AppFactory = Callable[..., Ardiq]


async def test_many_concurrent_enqueues_each_land_once(
    make_app: AppFactory, redis_url: str
) -> None:
    app = make_app()

    @app.task
    async def t(i: int) -> None: ...

    jobs = await asyncio.gather(*(t.enqueue(i) for i in range(500)))
    assert len({j.id for j in jobs}) == 500
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert await r.xlen(app.keys.stream("default")) == 500
    finally:
        await r.aclose()
    assert await app.queue_size() == 500


async def test_a_failing_caller_does_not_fail_the_others(
    make_app: AppFactory, redis_url: str
) -> None:
    app = make_app(priorities=["high", "default"])

    @app.task
    async def t(i: int) -> None: ...

    r = aioredis.Redis.from_url(redis_url)
    try:
        # The high lane's stream is not a stream: every enqueue to it fails in the script,
        # after the tasks before it in the same call were added.
        await r.set(app.keys.stream("high"), "not a stream")

        async def one(i: int) -> object:
            if i == 37:
                return await t.options(priority="high").enqueue(i)
            return await t.enqueue(i)

        results = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
        failed = [i for i, x in enumerate(results) if isinstance(x, BaseException)]
        assert failed == [37]
        assert isinstance(results[37], ArdiqError)
        assert await r.xlen(app.keys.stream("default")) == 199
    finally:
        # Tools that discover every queue on the server must not trip over it later.
        await r.delete(app.keys.stream("high"))
        await r.aclose()
