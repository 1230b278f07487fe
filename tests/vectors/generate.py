"""Write the shared test vectors (tests/vectors/*.json) that pytest (tests/test_vectors.py)
and cargo test (crates/ardiq-core/tests/test_vectors.rs) both check.

The expected answers come from this file's own reference code, written apart from both
implementations: a small cron reader and a day-by-day calendar walk for cron, the rules
of PROTOCOL.md for keys and entries, the documented retry rule for delays. Run it from
the repository root after changing a rule on purpose: `python tests/vectors/generate.py`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

# ------------------------------------------------------------------------------ cron
FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
HORIZON_DAYS = 366 * 9


class Invalid(Exception):
    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word


def ref_values(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        m = re.fullmatch(r"(\*|[0-9]+(?:-[0-9]+)?)(?:/(.*))?", item)
        if m is None:
            # Tell apart a bad step from a bad value, as both implementations do.
            if "/" in item and re.fullmatch(r"(\*|[0-9]+(?:-[0-9]+)?)", item.split("/")[0]):
                raise Invalid("step")
            raise Invalid("number")
        body, step_text = m.group(1), m.group(2)
        step = 1
        if step_text is not None:
            if not re.fullmatch(r"[0-9]+", step_text) or int(step_text) == 0:
                raise Invalid("step")
            step = int(step_text)
        if body == "*":
            lo, hi = low, high
        elif "-" in body:
            lo, hi = (int(x) for x in body.split("-"))
            for v in (lo, hi):
                if not low <= v <= high:
                    raise Invalid("outside")
            if lo > hi:
                raise Invalid("backwards")
        else:
            lo = int(body)
            if not low <= lo <= high:
                raise Invalid("outside")
            hi = high if step_text is not None else lo
        out.update(range(lo, hi + 1, step))
    return out


def ref_parse(spec: str) -> tuple[list[set[int]], bool]:
    """(minute, hour, dom, month, dow sets with 7 folded to 0), both-days-restricted."""
    text = ALIASES.get(spec.strip(), spec)
    parts = text.split()
    if len(parts) != 5:
        raise Invalid("fields")
    sets = [ref_values(p, lo, hi) for p, (lo, hi) in zip(parts, FIELDS, strict=True)]
    sets[4] = {d % 7 for d in sets[4]}
    restricted = not parts[2].startswith("*") and not parts[4].startswith("*")
    return sets, restricted


def ref_next(spec: str, after_ms: int) -> int | None:
    (minutes, hours, doms, months, dows), either = ref_parse(spec)
    first = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=after_ms // 60_000 + 1)
    day: date = first.date()
    for _ in range(HORIZON_DAYS):
        if day.month in months:
            dom_ok = day.day in doms
            dow_ok = day.isoweekday() % 7 in dows
            if (dom_ok or dow_ok) if either else (dom_ok and dow_ok):
                for h in sorted(hours):
                    for m in sorted(minutes):
                        at = datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
                        if at >= first:
                            return int(at.timestamp()) * 1000
        day += timedelta(days=1)
    return None


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, milli: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()) * 1000 + milli


VALID_SPECS = [
    "* * * * *",
    "0 * * * *",
    "15 * * * *",
    "*/20 * * * *",
    "*/7 * * * *",
    "10/25 * * * *",
    "5/1 * * * *",
    "59 23 * * *",
    "0 9-17/4 * * *",
    "5,45 8,22 * * *",
    "0 0 1 */3 *",
    "0 0 1 1 *",
    "0 0 31 * *",
    "0 0 30 * *",
    "0 0 29 2 *",
    "0 12 28 2 *",
    "0 0 31 12 *",
    "0 0 1 * *",
    "30 6 15 6 *",
    "0 12 * * 0",
    "0 12 * * 7",
    "0 12 * * 1-5",
    "0 8 * * 1-5",
    "0 0 * * 5-7",
    "0 0 * * 6,0",
    "0 0 * * */2",
    "0 0 * * 1-7/3",
    "0 0 20 * 6",
    "0 0 1 * 3",
    "0 0 13 * 5",
    "0 0 1-7 * 1",
    "0 0 29 2 1",
    "0 0 31 2,4 1",
    "0 0 */10 * 1",
    "0 0 * * 1/2",
    "0 0 */31 * *",
    "0-59/60 * * * *",
    "1,1,1 * * * *",
    "0,30 */6 * * *",
    "*/15 9-17 * * 1-5",
    "0 0 * 2 7",
    "0 22 * 12 5",
    "45 4 1,15 * *",
    "0 0 28-31 * *",
    "0 0 1 2-11/3 *",
    "0 3 * * 3/7",
    "0 0 * * 7-7",
    "00 05 01 01 *",
    "*/99999999999 * * * *",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    " @daily ",
    "0  0\t*  * *",
]

INVALID_SPECS = {
    "": "fields",
    "* * * *": "fields",
    "* * * * * *": "fields",
    "@reboot": "fields",
    "@DAILY": "fields",
    "60 * * * *": "outside",
    "* 24 * * *": "outside",
    "* * 0 * *": "outside",
    "* * 32 * *": "outside",
    "* * * 0 *": "outside",
    "* * * 13 *": "outside",
    "* * * * 8": "outside",
    "0-60 * * * *": "outside",
    "99999999999 * * * *": "outside",
    "5-1 * * * *": "backwards",
    "* * * 12-1 *": "backwards",
    "*/0 * * * *": "step",
    "*/x * * * *": "step",
    "*/ * * * *": "step",
    "*/+2 * * * *": "step",
    "*/5/2 * * * *": "step",
    "a * * * *": "number",
    "+5 * * * *": "number",
    "-5 * * * *": "number",
    "1,,2 * * * *": "number",
    "* * * JAN *": "number",
    "* * * * MON": "number",
    "? * * * *": "number",
    "*-5 * * * *": "number",
    "1-2-3 * * * *": "number",
    "\u0663 * * * *": "number",
    "0 0 30 2 *": "never",
    "0 0 31 4,6,9,11 *": "never",
    "0 0 31 2,4 *": "never",
}

STARTS = [
    ms(2024, 5, 17, 10, 30),  # a Friday
    ms(2024, 2, 28, 23, 59, 30, 500),  # the eve of a leap day
    ms(2023, 2, 28, 12, 0),  # no leap day this year
    ms(2024, 12, 31, 23, 59, 59, 999),  # the last ms of a year
    ms(2097, 1, 1),  # 2100 is not a leap year: the next Feb 29 is 2104
    0,
]


def cron_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for i, spec in enumerate(VALID_SPECS):
        # Every spec from the first start, and each from two more, rotating.
        picks = {0, 1 + i % (len(STARTS) - 1), 1 + (i + 2) % (len(STARTS) - 1)}
        for j in sorted(picks):
            after = STARTS[j]
            nxt = ref_next(spec, after)
            assert nxt is not None, spec
            cases.append({"spec": spec, "after_ms": after, "next_ms": nxt})
            # Strictly after: asking again from the occurrence gives the one after it.
            cases.append({"spec": spec, "after_ms": nxt, "next_ms": ref_next(spec, nxt)})
    for spec, word in INVALID_SPECS.items():
        try:
            ref_parse(spec)
        except Invalid as exc:
            assert exc.word == word, (spec, exc.word, word)
        else:
            assert word == "never" and ref_next(spec, 0) is None, spec
        cases.append({"spec": spec, "error": word})
    return cases


def check_reference() -> None:
    """A few answers known from the calendar, so the reference itself is checked."""
    fri = ms(2024, 5, 17, 10, 30)
    assert ref_next("0 12 * * 7", fri) == ms(2024, 5, 19, 12, 0)  # Sunday the 19th
    assert ref_next("0 0 20 * 6", fri) == ms(2024, 5, 18)  # Saturday, before the 20th
    assert ref_next("0 0 29 2 *", ms(2097, 1, 1)) == ms(2104, 2, 29)
    assert ref_next("0 0 13 * 5", fri) == ms(2024, 5, 24)  # the next Friday (OR)
    assert ref_next("5/1 * * * *", fri) == ms(2024, 5, 17, 10, 31)
    assert ref_next("* * * * *", ms(2024, 12, 31, 23, 59, 59, 999)) == ms(2025, 1, 1)


# --------------------------------------------------------------------------- backoff
def backoff_vectors() -> list[dict[str, Any]]:
    cases = []
    for tries in (1, 2, 3, 5, 10, 100):
        for requested in (None, 0, 30, 400, -5, 86_400_000):
            for backoff in (0, 50, 300):
                if requested is not None:
                    delay = max(0, requested)
                elif backoff:
                    delay = backoff
                else:
                    delay = tries * tries * 1000
                cases.append(
                    {
                        "tries": tries,
                        "retry_delay_ms": requested,
                        "backoff_ms": backoff,
                        "delay_ms": delay,
                    }
                )
    return cases


# ------------------------------------------------------------------------------ keys
def key_vectors() -> list[dict[str, Any]]:
    cases = []
    for queue, lane, task_id in [
        ("default", "default", "0f1e2d3c"),
        ("orders", "high", "cron:tick:60000"),
        ("a:b", "low", "entry:1700000000000-0"),
        ("with space", "x y", "id with space"),
        ("ünï", "λ", "ид"),
        ("{braced}", "default", "{id}"),
    ]:
        p = f"ardiq:{{{queue}}}:"
        cases.append(
            {
                "queue": queue,
                "lane": lane,
                "id": task_id,
                "keys": {
                    "prefix": p,
                    "stream": f"{p}stream:{lane}",
                    "job": f"{p}job:{task_id}",
                    "result": f"{p}result:{task_id}",
                    "wait": f"{p}wait:{task_id}",
                    "dead": f"{p}dead:{task_id}",
                    "dead_index": f"{p}dead",
                    "delayed": f"{p}delayed",
                    "crons": f"{p}crons",
                    "workers": f"{p}workers",
                    "abort_channel": f"{p}abort",
                    "done_channel": f"{p}done",
                },
            }
        )
    return cases


# --------------------------------------------------------------------------- entries
def ref_int(raw: bytes) -> int:
    text = raw.strip(b" \t\n\r\x0b\x0c")
    if not re.fullmatch(rb"[+-]?[0-9]+", text):
        return 0
    value = int(text)
    return value if -(2**63) <= value < 2**63 else 0


def field_value(v: str | dict[str, str]) -> bytes:
    return bytes.fromhex(v["hex"]) if isinstance(v, dict) else v.encode()


def entry_case(fields: list[list[Any]], note: str) -> dict[str, Any]:
    got: dict[bytes, bytes] = {}
    for k, v in fields:
        got[k.encode()] = field_value(v)
    case: dict[str, Any] = {"note": note, "entry_id": "1700000000000-3", "lane": "high"}
    case["fields"] = fields
    if not all(got.get(k) is not None for k in (b"id", b"fn", b"p")) or not got[b"id"]:
        case["expect"] = "malformed"
        case["reason"] = "malformed entry (needs id, fn and p)"
        return case
    # Never converted lossily: a task must not run under an id or name not written.
    for name in (b"id", b"fn"):
        try:
            got[name].decode()
        except UnicodeDecodeError:
            case["expect"] = "malformed"
            case["reason"] = f"malformed entry ({name.decode()} is not UTF-8)"
            return case

    def count(name: bytes) -> int:
        return min(max(0, ref_int(got.get(name, b"0"))), 2**32 - 1)

    case["expect"] = {
        "task_id": got[b"id"].decode(),
        "fn": got[b"fn"].decode(),
        "payload_hex": got[b"p"].hex(),
        "tries": count(b"t"),
        "enqueued_ms": ref_int(got.get(b"enq", b"0")),
        "expire_ms": ref_int(got.get(b"x", b"0")),
        "reclaims": count(b"r"),
    }
    return case


def entry_vectors() -> list[dict[str, Any]]:
    full = [["id", "t1"], ["fn", "send"], ["p", {"hex": "93900080c0"}], ["t", "2"]]
    full += [["enq", "1700000000000"], ["x", "0"], ["r", "1"]]
    cases = [
        entry_case(full, "a full entry"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""]], "only the required fields"),
        entry_case([["fn", "f"], ["p", "x"], ["t", "1"]], "no id"),
        entry_case([["id", "a"], ["p", "x"]], "no fn"),
        entry_case([["id", "a"], ["fn", "f"]], "no p"),
        entry_case([["id", ""], ["fn", "f"], ["p", "x"]], "an empty id"),
        entry_case([], "no fields at all"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "-4"]], "negative tries"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["enq", "soon"]], "a word for a time"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", " 3 "]], "spaces around"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "+3"]], "a plus sign"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "1_0"]], "an underscore"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "2.5"]], "a fraction"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "\u0663"]], "a non-ASCII digit"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["t", "99999999999"]], "past u32"),
        entry_case(
            [["id", "a"], ["fn", "f"], ["p", ""], ["enq", "99999999999999999999"]], "past i64"
        ),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["enq", "-1"]], "a negative time"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["x", "1700000000001"]], "expiry"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["r", "-2"]], "negative reclaims"),
        entry_case([["id", {"hex": "ff61"}], ["fn", "f"], ["p", ""]], "an id not UTF-8"),
        entry_case([["id", "a"], ["fn", {"hex": "c3"}], ["p", ""]], "a name not UTF-8"),
        entry_case([["id", "a"], ["fn", "f"], ["p", {"hex": "00ff"}]], "binary payload"),
        entry_case([["id", "a"], ["id", "b"], ["fn", "f"], ["p", ""]], "a repeated field"),
        entry_case([["id", "a"], ["fn", "f"], ["p", ""], ["zz", "1"]], "an unknown field"),
        entry_case([["ID", "a"], ["fn", "f"], ["p", ""]], "field names are exact"),
    ]
    return cases


def main() -> None:
    check_reference()
    out = {
        "cron.json": cron_vectors(),
        "backoff.json": backoff_vectors(),
        "keys.json": key_vectors(),
        "entries.json": entry_vectors(),
    }
    for name, cases in out.items():
        text = json.dumps(cases, indent=1, ensure_ascii=False) + "\n"
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"{name}: {len(cases)} cases")


if __name__ == "__main__":
    main()
