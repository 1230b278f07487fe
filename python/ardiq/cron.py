"""Cron schedules: 5-field specs (in UTC or an IANA time zone) and fixed intervals.

In a time zone, each matching wall time fires once: a wall time that a daylight-saving
change skips (the spring-forward gap) fires at the first instant after the gap, and one
that happens twice (the fall-back overlap) fires at its first instance only. The engine
computes the same instants (crates/ardiq-core/src/cron.rs).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronSpec", "Every", "Schedule", "parse_schedule", "time_zone"]

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
# The shorthands the native engine accepts too (crates/ardiq-core/src/cron.rs).
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Search this far ahead for the next occurrence: long enough for any satisfiable spec
# (Feb 29 comes at least every 8 years), the same horizon as the engine's.
_HORIZON_DAYS = 366 * 9
_DIGITS = re.compile(r"[0-9]+")


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    """One field as a set of values. Same grammar and error words as the engine."""
    values: set[int] = set()
    for item in text.split(","):
        part, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text):
                raise ValueError(f"{name} field `{text}`: bad step `{step_text}`")
            step = int(step_text)
            if step == 0:
                raise ValueError(f"{name} field `{text}`: bad step `0` (a step of 0)")
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _number(a, text, name, low, high), _number(b, text, name, low, high)
            if start > end:
                raise ValueError(f"{name} field `{text}`: range {start}-{end} runs backwards")
        else:
            start = _number(part, text, name, low, high)
            # `a/n` means from a to the end, stepping n (as the engine reads it).
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, field: str, name: str, low: int, high: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{name} field `{field}`: `{text}` is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} field `{field}`: {value} is outside {low}-{high}")
    return value


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (ValueError if there is no such zone)."""
    if not isinstance(name, str):
        raise TypeError(f"tz must be an IANA time zone name such as 'Europe/Paris', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone `{name}`: use an IANA name such as 'Europe/Paris'"
        ) from exc


def _resolve(zone: ZoneInfo, wall: datetime) -> int:
    """Epoch ms of the naive `wall` time in `zone`: its first instance when the wall time
    happens twice (fold=0 is the earlier one), the first instant after the gap when a
    daylight-saving change skips it."""
    first = int(wall.replace(tzinfo=zone).timestamp())
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first * 1000
    # In a gap: fold=0 reads the wall time with the offset before the change (`first`
    # lies after it), fold=1 with the offset after (before it). The change is the first
    # second in between whose offset differs from the one at `low`.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    before = datetime.fromtimestamp(low, zone).utcoffset()
    high = first
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high * 1000


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A 5-field cron spec: minute hour day-of-month month day-of-week, read in UTC or,
    with `tz`, in that IANA time zone."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool
    tz: str | None = None
    """The IANA time zone the spec is read in (None: UTC)."""
    zone: ZoneInfo | None = None

    @classmethod
    def parse(cls, text: str, tz: str | None = None) -> CronSpec:
        """Parse a spec; rejects syntax errors, out-of-range values and specs that can
        never fire (such as ``0 0 30 2 *``). ``@hourly``, ``@daily``/``@midnight``,
        ``@weekly``, ``@monthly`` and ``@yearly``/``@annually`` are accepted too. `tz`
        (an IANA name) must be a known zone (ValueError otherwise)."""
        zone = None if tz is None else time_zone(tz)
        expanded = _ALIASES.get(text.strip(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise ValueError(
                f"cron spec `{text}` needs 5 fields (minute hour day month weekday), "
                f"got {len(parts)}"
            )
        fields = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
        spec = cls(
            text,
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            weekdays,
            # As in Vixie cron (and the Rust engine): a day field starting with `*` (even
            # `*/2`) counts as unrestricted, so it is AND-ed, not OR-ed, with the other.
            not parts[2].startswith("*"),
            not parts[4].startswith("*"),
            tz,
            zone,
        )
        if spec.next_after(0) is None:
            raise ValueError(f"cron spec `{text}` can never fire")
        return spec

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        # Classic cron: when both are restricted, either one matching is enough.
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, epoch_ms: int) -> int | None:
        """The first occurrence strictly after `epoch_ms`, in epoch ms (None: never)."""
        if self.zone is not None:
            return self._next_in_zone(self.zone, epoch_ms)
        start = datetime.fromtimestamp(epoch_ms // 60000 * 60 + 60, UTC)
        when = next(self._wall_times_from(start), None)
        return None if when is None else calendar.timegm(when.timetuple()) * 1000

    def _next_in_zone(self, zone: ZoneInfo, epoch_ms: int) -> int | None:
        # Wall times map to instants in order (a gap's all map to its end, an overlap's
        # to their first instance), so the walk starts at the wall minute of `epoch_ms`
        # and returns the first matching wall time whose instant is after it.
        local = datetime.fromtimestamp(epoch_ms // 1000, zone).replace(tzinfo=None)
        for wall in self._wall_times_from(local.replace(second=0, microsecond=0)):
            when = _resolve(zone, wall)
            if when > epoch_ms:
                return when
        return None

    def _wall_times_from(self, start: datetime) -> Iterator[datetime]:
        """The matching wall times from `start` (a whole minute) on, in order, within the
        search horizon: the walk both the UTC and the time-zone schedules share."""
        day = start.replace(hour=0, minute=0)
        for offset in range(_HORIZON_DAYS):
            current = day + timedelta(days=offset)
            if not self._day_matches(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    wall = current.replace(hour=hour, minute=minute)
                    if wall >= start:
                        yield wall


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval, aligned to the epoch so every worker names the same occurrences."""

    interval_ms: int

    def next_after(self, epoch_ms: int) -> int | None:
        return (epoch_ms // self.interval_ms + 1) * self.interval_ms


Schedule = CronSpec | Every


def parse_schedule(
    spec: str | None, every: float | timedelta | None, tz: str | None = None
) -> Schedule:
    """Exactly one of a cron spec or an interval (TypeError otherwise). `tz` applies to
    the spec; an interval ignores it (it is still checked)."""
    if (spec is None) == (every is None):
        raise TypeError("app.cron needs exactly one of a cron spec or every=")
    if tz is not None:
        time_zone(tz)
    if spec is not None:
        if not isinstance(spec, str):
            raise TypeError("the cron spec must be a string like '*/5 * * * *'")
        return CronSpec.parse(spec, tz)
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ValueError(f"every= must be a positive number of seconds, got {every!r}")
    interval = round(seconds * 1000)
    if interval < 1:
        raise ValueError(f"every= must be at least 1 ms, got {every!r}")
    return Every(interval)
