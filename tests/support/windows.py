"""Counting over recorded times: what the limit checks of the tests and of the
reliability scenarios measure (grants of a rate limit, spans of capped bodies)."""

from __future__ import annotations


def max_in_window(times: list[float], window_ms: float) -> int:
    """The most of `times` (ms) within any closed window of `window_ms`."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def max_overlap(spans: list[tuple[int, int]]) -> int:
    """The most of `spans` (start, end) open at one time."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best
