"""The differential test, short version: seeded sequences of producer calls and burst
runs, once on the pure-Python loop (the oracle) and once on the Rust engine behind
`await app.run(engine="native")`; every observable outcome must match (results, statuses,
info, dead letters, every key of the queue at rest). tests/support/differential.py holds
the generator, the runner and what is normalized; `make reliability` runs many more seeds
(integration/differential.py).

The native engine is part of the suite: without the `ardiq_native` extension this test
fails, it is not skipped. ARDIQ_NATIVE=0 (a machine without Rust, as tests/conftest.py)
compares the pure loop with itself instead, which still checks that the sequences and the
normalization are deterministic.
"""

from __future__ import annotations

import logging

import pytest
from support.differential import compare, engines_under_test
from support.redis_server import RedisServer

SEEDS = range(1, 9)


@pytest.fixture
def engines() -> tuple[str, str]:
    found = engines_under_test()
    if isinstance(found, str):
        pytest.fail(
            f"the differential test needs the native engine: {found} (`make build` installs "
            "it; ARDIQ_NATIVE=0 compares the pure-Python loop with itself instead)"
        )
    return found


@pytest.mark.parametrize("seed", SEEDS)
async def test_engines_agree(
    seed: int,
    engines: tuple[str, str],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="ardiq")  # the sequences fail tasks on purpose
    out = await compare(seed, redis_server.url, engines)
    assert out.jobs > 0, "the sequence made no jobs"
    if not out.same:
        pytest.fail(out.report, pytrace=False)
