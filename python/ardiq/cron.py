"""Cron schedules: 5-field UTC specs and fixed intervals."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["CronSpec", "Every", "Schedule", "parse_schedule"]

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
# Search this far ahead for the next occurrence; 8 years covers every leap-day spec.
_HORIZON_DAYS = 366 * 8


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step {step_text!r} in cron {name} field")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _number(a, name, low, high), _number(b, name, low, high)
            if start > end:
                raise ValueError(f"bad range {part!r} in cron {name} field")
        else:
            start = _number(part, name, low, high)
            end = high if step > 1 else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit():
        raise ValueError(f"bad value {text!r} in cron {name} field")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"cron {name} value {value} is outside {low}-{high}")
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
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(
                f"cron spec {text!r} must have 5 fields (minute hour day month weekday)"
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
        if spec.next_after(0) is None and spec.next_after(_now_ms()) is None:
            raise ValueError(f"cron spec {text!r} can never fire")
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


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
