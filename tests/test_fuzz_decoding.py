"""Fuzzing the Python side's decoding of what a worker reads: stream entry fields
(worker.parse_entry) and payload bytes (the runtime decodes them before any body runs).
Whatever arrives, the result is a Delivery or a reason, and an undecodable payload is a
failure outcome: never an exception out of the worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import msgpack
import pytest
from ardiq import Ardiq, ArdiqError
from ardiq.jobs import decode_result
from ardiq.runtime import FAIL, OK, Delivery, Runtime
from ardiq.serializers import msgpack_loads
from ardiq.signing import MAGIC, RESULT_MAGIC, Binding, ResultSealError, SignatureError, Signer
from ardiq.worker import as_fields, parse_entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRIED = {"entries": 0, "payloads": 0, "results": 0, "seals": 0}

FIELD_NAMES = st.sampled_from([b"id", b"fn", b"p", b"t", b"enq", b"x", b"r"]) | st.binary(
    max_size=6
)
fields_strategy = st.dictionaries(FIELD_NAMES, st.binary(max_size=24), max_size=10)


@settings(max_examples=2000, deadline=None)
@given(fields=fields_strategy, eid=st.text(max_size=12), lane=st.text(max_size=8))
def test_any_entry_fields_parse_to_a_delivery_or_a_reason(
    fields: dict[bytes, bytes], eid: str, lane: str
) -> None:
    TRIED["entries"] += 1
    parsed = parse_entry(lane, eid, fields)
    if isinstance(parsed, Delivery):
        assert {b"id", b"fn", b"p"} <= fields.keys() and fields[b"id"]
        assert parsed.tries >= 0 and parsed.reclaims >= 0
        assert parsed.payload == fields[b"p"] and parsed.entry_id == eid
    else:
        assert parsed.startswith("malformed entry")
    flat = [x for kv in fields.items() for x in kv]
    assert as_fields(flat) == fields


@pytest.fixture(scope="module")
def runtime() -> Iterator[tuple[Runtime, asyncio.AbstractEventLoop]]:
    app = Ardiq(redis_url="redis://127.0.0.1:1", queue_name="fuzz")

    @app.task(max_retries=0)
    async def echo(*args: object, **kwargs: object) -> int:
        return len(args) + len(kwargs)

    loop = asyncio.new_event_loop()
    rt = Runtime(app, "fuzzer")
    yield rt, loop
    rt.close()
    loop.close()


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
payloads = st.binary(max_size=64) | msgpack_values.map(msgpack.packb)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
def test_any_payload_becomes_an_outcome(
    runtime: tuple[Runtime, asyncio.AbstractEventLoop], payload: bytes
) -> None:
    TRIED["payloads"] += 1
    rt, loop = runtime
    d = Delivery("1-0", "default", "fz", "echo", payload, 0, 0)
    out = loop.run_until_complete(rt.execute(d))
    assert out.kind in (OK, FAIL)
    if out.kind == FAIL:
        assert out.value.startswith(b"undecodable payload") or b"refused" in out.value, out


# Result records and seals come from Redis too: an attacker can write any bytes there.
SIGNER = Signer([b"k" * 32], queue="fuzz")
records = (
    st.binary(max_size=64)
    | st.lists(msgpack_values, max_size=9).map(msgpack.packb)
    | st.tuples(
        st.integers(0, 3), st.booleans(), st.binary(max_size=48), msgpack_values, msgpack_values
    ).map(lambda t: msgpack.packb([t[0], t[1], t[2], t[3], 0, 0, t[4], False]))
)


@settings(max_examples=1500, deadline=None)
@given(blob=records, signed=st.booleans())
def test_any_result_record_decodes_or_raises_ardiq_error(blob: bytes, signed: bool) -> None:
    TRIED["results"] += 1
    try:
        r = decode_result(blob, msgpack_loads, SIGNER if signed else None, "t1")
    except ArdiqError:
        return  # malformed, or (signed) an unsealed / forged success value
    assert isinstance(r.tries, int) and isinstance(r.success, bool)


@settings(max_examples=1500, deadline=None)
@given(
    payload=st.binary(max_size=96)
    | st.binary(max_size=80).map(lambda b: MAGIC + b)
    | st.binary(max_size=80).map(lambda b: RESULT_MAGIC + b)
)
def test_any_sealed_bytes_open_or_raise(payload: bytes) -> None:
    TRIED["seals"] += 1
    here = Binding("fuzz", "default", "t1", "echo")
    with contextlib.suppress(SignatureError):
        SIGNER.open(here, payload)
        raise AssertionError("random bytes verified")  # pragma: no cover
    with contextlib.suppress(ResultSealError):
        SIGNER.open_result("t1", payload)
        raise AssertionError("random bytes verified")  # pragma: no cover


def test_zz_report_inputs_tried(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\nfuzz: {TRIED['entries']} entries, {TRIED['payloads']} payloads, "
            f"{TRIED['results']} result records, {TRIED['seals']} seals tried, 0 crashes"
        )
