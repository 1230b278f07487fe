"""The long differential test (the short one is tests/test_differential.py): seeded
sequences run once on each engine behind `await app.run()` and every observable outcome
compared (tests/support/differential.py says what is compared and what is normalized).

    python integration/differential.py [--seeds N] [--start S] [--engines python,native]
        [--parallel K]

`--engines python,python` compares the pure loop with itself: the check that the
normalization hides only what is really nondeterministic. `--parallel K` runs K seeds at
once (load on the machine). Exit status 1 on any mismatch; each prints its seed, its
step list and a diff.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.differential import Outcome, compare, engines_under_test  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402


@dataclass
class Summary:
    engines: tuple[str, str]
    seeds: int = 0
    matched: int = 0
    jobs: int = 0
    keys: int = 0
    seconds: float = 0.0
    engine_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0])
    mismatches: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.seeds > 0 and self.matched == self.seeds

    def line(self) -> str:
        failed = ", ".join(str(o.seed) for o in self.mismatches) or "none"
        return (
            f"{self.matched}/{self.seeds} seeds identical ({self.engines[0]} vs "
            f"{self.engines[1]}), {self.jobs} jobs and {self.keys} keys at rest compared, "
            f"burst runs {self.engine_seconds[0]:.1f}s / {self.engine_seconds[1]:.1f}s, "
            f"{self.seconds:.0f}s in all; mismatching seeds: {failed}"
        )


async def run_seeds(
    seeds: int,
    start: int,
    engines: tuple[str, str],
    redis_url: str | None = None,
    parallel: int = 1,
    verbose: bool = True,
) -> Summary:
    """Compare `seeds` seeds from `start`; starts a redis-server of its own unless given
    one."""
    server = None
    if redis_url is None:
        server = RedisServer().start()
        redis_url = server.url
    summary = Summary(engines)
    t0 = time.monotonic()
    sem = asyncio.Semaphore(parallel)

    async def one(seed: int) -> None:
        async with sem:
            out = await compare(seed, redis_url, engines)
        summary.seeds += 1
        summary.jobs += out.jobs
        summary.keys += out.keys
        summary.engine_seconds[0] += out.seconds[0]
        summary.engine_seconds[1] += out.seconds[1]
        if out.same:
            summary.matched += 1
        else:
            summary.mismatches.append(out)
            print(out.report, flush=True)
        if verbose:
            verdict = "same" if out.same else "MISMATCH"
            print(
                f"   seed {seed}: {verdict} ({out.jobs} jobs, {out.keys} keys, "
                f"{out.seconds[0]:.1f}s / {out.seconds[1]:.1f}s)",
                flush=True,
            )

    try:
        await asyncio.gather(*(one(s) for s in range(start, start + seeds)))
    finally:
        if server is not None:
            server.cleanup()
    summary.seconds = time.monotonic() - t0
    return summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=1)
    ap.add_argument("--engines", default=None, help="two engines, e.g. python,native")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="show the workers' logs")
    args = ap.parse_args()
    if not args.verbose:  # the sequences fail tasks on purpose: their log is noise here
        logging.getLogger("ardiq").setLevel(logging.CRITICAL)
    if args.engines:
        a, b = args.engines.split(",")
        engines: tuple[str, str] = (a, b)
    else:
        found = engines_under_test()
        if isinstance(found, str):
            print(f"cannot compare the engines: {found}", file=sys.stderr)
            return 2
        engines = found
    summary = asyncio.run(run_seeds(args.seeds, args.start, engines, parallel=args.parallel))
    print(summary.line())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
