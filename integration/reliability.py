"""`make reliability`: every fault scenario, full size, against each worker kind it
applies to; writes integration/RELIABILITY.md with the ledger's figures of this run.

    python integration/reliability.py [--fast] [--soak-seconds N] [--only NAME ...]
        [--diff-seeds N]

After the fault scenarios it runs the differential test of the two `app.run()` engines
(integration/differential.py; `--only differential` runs it alone).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ledger import Report  # noqa: E402
from scenarios import FAST, FULL, SCENARIOS  # noqa: E402


def row(rep: Report) -> str:
    dup = str(rep.duplicates)
    if rep.duplicate_reasons:
        dup += " (" + "; ".join(f"{n} {why}" for why, n in rep.duplicate_reasons.items()) + ")"
    dead = "; ".join(f"{n} {why}" for why, n in sorted(rep.dead.items())) or "0"
    left = f"{rep.pending} / {len(rep.leftover_keys)}"
    verdict = "PASS" if rep.ok else "FAIL: " + "; ".join(rep.problems)[:300]
    notes = "; ".join(rep.notes)
    overl = f"{rep.overlaps}" + (
        f" (+{rep.expected_overlaps} stalled)" if rep.expected_overlaps else ""
    )
    return (
        f"| {rep.scenario} | {rep.kind} | {rep.enqueued} | {rep.completed} | {rep.lost} | "
        f"{dup} | {overl} | {dead} | {rep.recovery()} | {left} | {rep.seconds:.0f} | "
        f"{verdict} | {notes} |"
    )


HEADER = (
    "| scenario | worker | enqueued | completed | lost | executed > once (why) | overlaps | "
    "dead letters by reason | recovery ms p50/p99/max | pending / leftover keys | s | "
    "verdict | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast", action="store_true", help="the short configuration")
    ap.add_argument("--soak-seconds", type=float, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--kinds", nargs="*", default=["native", "inproc", "incode"])
    ap.add_argument("--out", default=str(HERE / "RELIABILITY.md"))
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --out for the scenarios not run now (re-run a few)",
    )
    ap.add_argument(
        "--diff-seeds",
        type=int,
        default=None,
        help="seeds of the differential test (default 200, 20 with --fast; 0: skip it)",
    )
    args = ap.parse_args()
    scale = FAST if args.fast else FULL
    if args.soak_seconds is not None:
        scale = dataclasses.replace(scale, soak_s=args.soak_seconds)
    rows, failures = [], 0
    started = time.time()
    for name, (scenario, kinds, _) in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        for kind in kinds:
            if kind not in args.kinds:
                continue
            logs = Path(tempfile.mkdtemp(prefix=f"ardiq-{name}-{kind}-"))
            t0 = time.monotonic()
            print(f"== {name} [{kind}] ...", flush=True)
            try:
                rep = await scenario(kind, scale, logs)
            except Exception as exc:
                traceback.print_exc()
                rep = Report(name, kind, problems=[f"scenario crashed: {exc!r}"[:300]])
            rep.seconds = time.monotonic() - t0
            failures += not rep.ok
            print(row(rep), flush=True)
            rows.append(row(rep))
    diff_seeds = args.diff_seeds if args.diff_seeds is not None else (20 if args.fast else 200)
    differential: list[str] = []
    diff_ok = True
    if diff_seeds and (not args.only or "differential" in args.only):
        differential, diff_ok = await differential_step(diff_seeds)
    merged_note: list[str] = []
    if args.merge and Path(args.out).exists():
        old_text = Path(args.out).read_text()
        if not differential:  # not re-run: keep the earlier run's line
            differential = [ln for ln in old_text.splitlines() if ln.startswith("Differential")]
        merged_note = [
            line for line in old_text.splitlines() if line.startswith("Re-run and merged:")
        ]
        merged_note.append(
            f"Re-run and merged: {', '.join(args.only or ['all'])} at "
            f"{time.strftime('%H:%M', time.gmtime(started))} UTC (the other rows are from "
            "the earlier full run)."
        )
        fresh = {tuple(r.split(" | ")[:2]): r for r in rows}
        merged = []
        for line in Path(args.out).read_text().splitlines():
            if line.startswith("| ") and not line.startswith(("| scenario", "|---")):
                merged.append(fresh.pop(tuple(line.split(" | ")[:2]), line))
        rows = merged + list(fresh.values())
        failures = sum("| FAIL" in r for r in rows)
    text = [
        "# ArdiQ reliability run",
        "",
        f"Written by `make reliability` (integration/reliability.py, scale `{scale.name}`, "
        f"soak {scale.soak_s:.0f} s) on {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}"
        f" UTC, {platform.machine()}, Python {platform.python_version()}.",
        "",
        "Every figure comes from the LEDGER: task bodies record each start and finish (pid,"
        " time) in a separate redis-server; the producer records each id Redis accepted. "
        "*lost* = enqueued without a result or a finished, acknowledged execution; "
        "*overlaps* = two executions of one task overlapping in time while the first "
        "worker was alive and not stalled; *recovery* = fault to resumed progress (the "
        "fault's orphaned tasks completed elsewhere, or a probe task's round trip for "
        "Redis faults, or handback visibility for SIGTERM); *pending / leftover keys* at "
        "the end (allowed: streams, results, dead letters, workers, crons).",
        "",
        HEADER,
        *rows,
        "",
        f"{len(rows) - failures}/{len(rows)} scenarios passed.",
        "",
        *differential,
        "",
        *merged_note,
    ]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}: {len(rows) - failures}/{len(rows)} passed")
    return 1 if failures or not diff_ok else 0


async def differential_step(seeds: int) -> tuple[list[str], bool]:
    """The long differential test: `seeds` seeded sequences on the pure-Python loop and on
    the native engine of `app.run()`, every observable outcome compared."""
    import logging

    from differential import run_seeds
    from support.differential import engines_under_test

    print(f"== differential ({seeds} seeds) ...", flush=True)
    found = engines_under_test()
    if isinstance(found, str):
        line = f"Differential test (app.run() engines): FAIL: cannot run: {found}"
        print(line, flush=True)
        return [line], False
    logging.getLogger("ardiq").setLevel(logging.CRITICAL)  # tasks fail on purpose
    summary = await run_seeds(seeds, 1, found, verbose=False)
    verdict = "PASS" if summary.ok else "FAIL"
    line = f"Differential test (app.run() engines): {verdict}: {summary.line()}."
    print(line, flush=True)
    return [line], summary.ok


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
