"""The shared test vectors (tests/vectors/*.json, written by tests/vectors/generate.py):
the Python side must give the answers the engine gives (crates/ardiq-core/tests/
test_vectors.rs reads the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ardiq.cron import CronSpec
from ardiq.protocol import Keys
from ardiq.runtime import Delivery, retry_delay_ms
from ardiq.worker import parse_entry

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return cases


CRON = load("cron.json")


def test_there_are_plenty_of_cron_vectors() -> None:
    assert len(CRON) >= 100
    assert sum("error" in c for c in CRON) >= 20


@pytest.mark.parametrize("case", CRON, ids=lambda c: f"{c['spec']!r}@{c.get('after_ms')}")
def test_cron(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ValueError) as info:
            CronSpec.parse(case["spec"])
        assert case["error"] in str(info.value), str(info.value)
        return
    assert CronSpec.parse(case["spec"]).next_after(case["after_ms"]) == case["next_ms"]


@pytest.mark.parametrize("case", load("backoff.json"))
def test_backoff(case: dict[str, Any]) -> None:
    got = retry_delay_ms(case["tries"], case["retry_delay_ms"], case["backoff_ms"])
    assert got == case["delay_ms"]


@pytest.mark.parametrize("case", load("keys.json"), ids=lambda c: c["queue"])
def test_keys(case: dict[str, Any]) -> None:
    k = Keys(case["queue"])
    task_id = case["id"]
    got = {
        "prefix": k.prefix,
        "stream": k.stream(case["lane"]),
        "job": k.job(task_id),
        "result": k.result(task_id),
        "wait": k.wait(task_id),
        "dead": k.dead_letter(task_id),
        "dead_index": k.dead,
        "delayed": k.delayed,
        "crons": k.crons,
        "workers": k.workers,
        "abort_channel": k.abort_channel,
        "done_channel": k.done_channel,
    }
    assert got == case["keys"]


def field_value(v: str | dict[str, str]) -> bytes:
    return bytes.fromhex(v["hex"]) if isinstance(v, dict) else v.encode()


@pytest.mark.parametrize("case", load("entries.json"), ids=lambda c: c["note"])
def test_entries(case: dict[str, Any]) -> None:
    fields: dict[bytes, bytes] = {}
    for k, v in case["fields"]:
        fields[k.encode()] = field_value(v)
    parsed = parse_entry(case["lane"], case["entry_id"], fields)
    expect = case["expect"]
    if expect == "malformed":
        assert parsed == case["reason"], parsed  # the same reason from both workers
        return
    assert isinstance(parsed, Delivery), parsed
    assert (parsed.entry_id, parsed.lane) == (case["entry_id"], case["lane"])
    got = {
        "task_id": parsed.task_id,
        "fn": parsed.name,
        "payload_hex": parsed.payload.hex(),
        "tries": parsed.tries,
        "enqueued_ms": parsed.enqueue_ms,
        "expire_ms": parsed.expire_ms,
        "reclaims": parsed.reclaims,
    }
    assert got == expect
