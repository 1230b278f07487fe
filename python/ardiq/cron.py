"""Cron schedules: 5-field UTC specs and fixed intervals."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["CronSpec", "Every", "Schedule", "parse_schedule"]

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


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A 5-field cron spec in UTC: minute hour day-of-month month day-of-week."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronSpec:
        """Parse a spec; rejects syntax errors, out-of-range values and specs that can
        never fire (such as ``0 0 30 2 *``). ``@hourly``, ``@daily``/``@midnight``,
        ``@weekly``, ``@monthly`` and ``@yearly``/``@annually`` are accepted too."""
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
        start = datetime.fromtimestamp(epoch_ms // 60000 * 60 + 60, UTC)
        day = start.replace(hour=0, minute=0)
        for offset in range(_HORIZON_DAYS):
            current = day + timedelta(days=offset)
            if not self._day_matches(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    when = current.replace(hour=hour, minute=minute)
                    if when >= start:
                        return calendar.timegm(when.timetuple()) * 1000
        return None


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval, aligned to the epoch so every worker names the same occurrences."""

    interval_ms: int

    def next_after(self, epoch_ms: int) -> int | None:
        return (epoch_ms // self.interval_ms + 1) * self.interval_ms


Schedule = CronSpec | Every


def parse_schedule(spec: str | None, every: float | timedelta | None) -> Schedule:
    """Exactly one of a cron spec or an interval (TypeError otherwise)."""
    if (spec is None) == (every is None):
        raise TypeError("app.cron needs exactly one of a cron spec or every=")
    if spec is not None:
        if not isinstance(spec, str):
            raise TypeError("the cron spec must be a string like '*/5 * * * *'")
        return CronSpec.parse(spec)
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ValueError(f"every= must be a positive number of seconds, got {every!r}")
    interval = round(seconds * 1000)
    if interval < 1:
        raise ValueError(f"every= must be at least 1 ms, got {every!r}")
    return Every(interval)
