"""Run an app's in-code worker (`await app.run()`) as a process, with the subset of the
`ardiq run` flags the behaviour tests use, so both worker kinds are driven alike."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import logging
import os
import signal
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("target")
    run.add_argument("--burst", "-b", action="store_true")
    run.add_argument("--verbose", "-v", action="store_true")
    run.add_argument("--concurrency", type=int)
    run.add_argument("--max-tasks-per-child", type=int)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    sys.path.insert(0, os.getcwd())
    module_name, _, attr = args.target.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    if args.burst:
        app.burst = True
    if args.max_tasks_per_child:
        app._max_tasks_per_child = args.max_tasks_per_child
    if args.concurrency:
        # As `ardiq run --concurrency N`: the prefetch follows (2 x N) unless the app set
        # its own, which must still be at least N.
        default_prefetch = app._prefetch == 2 * app._concurrency
        app._concurrency = args.concurrency
        if default_prefetch:
            app._prefetch = 2 * args.concurrency
        else:
            app._prefetch = max(app._prefetch, args.concurrency)

    # Diagnostics for a worker that hangs in a test: SIGUSR1 prints every thread's stack
    # (even with the loop blocked), SIGUSR2 every asyncio task's.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def dump_tasks() -> None:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        sys.stderr.flush()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop)
        loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
        await app.run()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
