"""Crons in a time zone (`@app.cron(spec, tz=...)`): the spec is read in the zone's wall
time; a wall time the clocks skip (spring forward) fires once, at the first instant after
the gap; one they repeat (fall back) fires once, at its first instance. The engine
(crates/ardiq-core/src/cron.rs) must name the same instants as `ardiq.cron`: the
differential test below walks a year of several zones on both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ardiq import Ardiq
from ardiq.cron import CronSpec, Every
from ardiq.worker_settings import WorkerSettings


def ms(text: str) -> int:
    """Epoch ms of an ISO time with its offset."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def walk(spec: CronSpec, start: int, n: int) -> list[int]:
    out, at = [], start
    for _ in range(n):
        nxt = spec.next_after(at)
        assert nxt is not None
        out.append(nxt)
        at = nxt
    return out


def test_the_spec_is_read_in_the_zone() -> None:
    s = CronSpec.parse("30 9 * * *", "Europe/Paris")
    assert s.next_after(ms("2024-07-01T00:00:00+00:00")) == ms("2024-07-01T09:30:00+02:00")
    assert s.next_after(ms("2024-12-01T00:00:00+00:00")) == ms("2024-12-01T09:30:00+01:00")
    # Days roll over at the zone's midnight: Monday 00:10 in Paris is Sunday in UTC.
    monday = CronSpec.parse("10 0 * * 1", "Europe/Paris")
    assert monday.next_after(ms("2024-12-01T12:00:00+00:00")) == ms("2024-12-01T23:10:00+00:00")
    # The default stays UTC.
    assert CronSpec.parse("30 9 * * *").next_after(ms("2024-07-01T00:00:00+00:00")) == ms(
        "2024-07-01T09:30:00+00:00"
    )


def test_spring_forward_gap_fires_once_at_the_end_of_the_gap() -> None:
    # 2024-03-31, Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    before = ms("2024-03-30T12:00:00+00:00")
    assert walk(CronSpec.parse("30 2 * * *", "Europe/Paris"), before, 2) == [
        ms("2024-03-31T03:00:00+02:00"),
        ms("2024-04-01T02:30:00+02:00"),
    ]
    # Four wall times in the gap, one run; 03:00 itself is that same instant.
    assert walk(CronSpec.parse("*/15 2,3 * * *", "Europe/Paris"), before, 3) == [
        ms("2024-03-31T03:00:00+02:00"),
        ms("2024-03-31T03:15:00+02:00"),
        ms("2024-03-31T03:30:00+02:00"),
    ]
    # A gap at midnight (Santiago, 2024-09-08): the daily midnight run fires at 01:00.
    santiago = CronSpec.parse("0 0 * * *", "America/Santiago")
    assert santiago.next_after(ms("2024-09-07T12:00:00-04:00")) == ms("2024-09-08T01:00:00-03:00")
    # A 30-minute shift (Lord Howe, 2024-10-06 02:00 -> 02:30).
    howe = CronSpec.parse("15 2 * * *", "Australia/Lord_Howe")
    assert howe.next_after(ms("2024-10-05T12:00:00+10:30")) == ms("2024-10-06T02:30:00+11:00")


def test_fall_back_overlap_fires_the_first_instance_only() -> None:
    # 2024-11-03, New York: 01:00-02:00 happens in EDT, then again in EST.
    before = ms("2024-11-02T12:00:00-04:00")
    assert walk(CronSpec.parse("30 1 * * *", "America/New_York"), before, 2) == [
        ms("2024-11-03T01:30:00-04:00"),
        ms("2024-11-04T01:30:00-05:00"),
    ]
    hourly = CronSpec.parse("0 * * * *", "America/New_York")
    assert walk(hourly, ms("2024-11-03T00:30:00-04:00"), 3) == [
        ms("2024-11-03T01:00:00-04:00"),
        ms("2024-11-03T02:00:00-05:00"),  # 01:00 EST is the same wall time again: skipped
        ms("2024-11-03T03:00:00-05:00"),
    ]
    # Asked during the second pass, the repeated wall times are done already.
    assert hourly.next_after(ms("2024-11-03T01:10:00-05:00")) == ms("2024-11-03T02:00:00-05:00")


def test_registration_checks_the_zone() -> None:
    app = Ardiq(queue_name="tz")
    with pytest.raises(ValueError, match="unknown time zone `Europe/Pariss`"):
        app.cron("0 9 * * *", tz="Europe/Pariss")
    with pytest.raises(ValueError, match="unknown time zone"):
        app.cron("0 9 * * *", tz="../etc/passwd")
    with pytest.raises(TypeError, match="IANA"):
        app.cron("0 9 * * *", tz=1)  # type: ignore[arg-type]
    # every= ignores tz (it is still checked).
    with pytest.raises(ValueError, match="unknown time zone"):
        app.cron(every=60, tz="Nowhere/Else")
    assert app.crons == []

    @app.cron(every=60, tz="Europe/Paris")
    async def interval() -> None: ...

    @app.cron("0 9 * * 1-5", tz="Europe/Paris")
    async def standup() -> None: ...

    by_name = {j.name: j.schedule for j in app.cron_jobs}
    assert by_name["interval"] == Every(60_000)
    assert isinstance(by_name["standup"], CronSpec) and by_name["standup"].tz == "Europe/Paris"
    # The zone reaches the engine with the spec.
    settings = {c.name: c for c in WorkerSettings.of(app).crons}
    assert (settings["standup"].kind, settings["standup"].tz) == ("cron", "Europe/Paris")
    assert settings["interval"].tz == ""


ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
SPECS = ["30 2 * * *", "*/20 * * * *", "0 0 * * *", "0 1-3 * * 0", "45 23 * * 6"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("spec", SPECS)
def test_python_and_the_engine_agree_over_a_year(zone: str, spec: str) -> None:
    native = _native()
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    parsed = CronSpec.parse(spec, zone)
    ours, at = [], start
    while (nxt := parsed.next_after(at)) is not None and nxt <= end:
        ours.append(nxt)
        at = nxt
    theirs = native._cron_occurrences(spec, zone, start, end, 1_000_000)
    assert len(ours) > 40
    assert theirs == ours
    # And from points inside the gaps and overlaps, not only from occurrences.
    for probe in range(start, end, 3_600_000 * 7 + 60_000 * 13 + 1234):
        assert native._cron_occurrences(spec, zone, probe, 2**62, 1) == [parsed.next_after(probe)]


def _native() -> Any:
    try:
        import ardiq_native  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pytest.fail("the `ardiq_native` extension is not built: run `make build` first")
    return ardiq_native


NO_SYSTEM_TZ = """
import json, zoneinfo
import ardiq_native
from ardiq.cron import CronSpec
spec, zone, start = "30 2 * * *", "Europe/Paris", 1711800000000  # 2024-03-30 12:00 UTC
ours = []
at = start
for _ in range(3):
    at = CronSpec.parse(spec, zone).next_after(at)
    ours.append(at)
print(json.dumps({
    "tzpath": list(zoneinfo.TZPATH),
    "ours": ours,
    "engine": ardiq_native._cron_occurrences(spec, zone, start, 2**62, 3),
}))
"""


def test_zones_work_without_a_system_database(tmp_path: Path) -> None:
    """As in a slim image with no /usr/share/zoneinfo: Python falls back to the `tzdata`
    package, the engine to the database built into it, and both agree."""
    _native()
    env = {**os.environ, "PYTHONTZPATH": "", "TZDIR": str(tmp_path / "none")}
    out = subprocess.run(
        [sys.executable, "-c", NO_SYSTEM_TZ], env=env, capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout)
    assert doc["tzpath"] == []
    assert (
        doc["ours"]
        == doc["engine"]
        == [
            ms("2024-03-31T03:00:00+02:00"),
            ms("2024-04-01T02:30:00+02:00"),
            ms("2024-04-02T02:30:00+02:00"),
        ]
    )
