"""``python -m ardiq``: the ``ardiq`` command from the pure package (private).

When the native worker (the ``ardiq`` executable of the ``ardiq-worker`` package) is
installed in this environment, ``python -m ardiq ARGS`` hands over to it: the process
becomes ``ardiq ARGS`` (``exec``), pointed at this interpreter. Otherwise ``run`` serves
the app with the in-code worker (``await app.run()``) with the binary's flags, banner and
exit codes; the banner says how to get the faster native worker. The ops commands
(``check``, ``info``, ``dlq``, ...) need the native worker.

``ARDIQ_HANDOVER=0`` keeps ``python -m ardiq`` in Python even when the binary is there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from .worker_settings import WorkerSettings

OK, RUNTIME, USAGE = 0, 1, 2
HANDOVER_ENV = "ARDIQ_HANDOVER"
SUPERVISED_ENV = "ARDIQ_SUPERVISED"
NATIVE_HINT = 'pip install "ardiq[cli]"'

EXIT_CODES = """\
Exit codes:
  0  stopped as asked: a signal (graceful or not), a drained burst, the drain deadline
  1  runtime failure: the lifespan raised, Redis refused the credentials, internal error
  2  usage error: a bad option, or MODULE:ATTR cannot be imported or is not an app
  N  with --workers: the exit code of the first worker that failed"""

log = logging.getLogger("ardiq")


# ------------------------------------------------------------------- hand-over
def native_worker() -> Path | None:
    """The native ``ardiq`` executable installed beside this interpreter, if any (an
    executable file, not a script)."""
    if os.environ.get(HANDOVER_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return None
    candidates = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    if sys.prefix == sys.base_prefix:  # `pip install --user` outside a virtualenv
        candidates.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    for directory in dict.fromkeys(c for c in candidates if c):
        exe = Path(directory) / "ardiq"
        try:
            with exe.open("rb") as f:
                head = f.read(4)
        except OSError:
            continue
        if head == b"\x7fELF" and os.access(exe, os.X_OK):
            return exe
    return None


def hand_over(exe: Path, argv: Sequence[str]) -> NoReturn:
    """Becomes ``ardiq ARGV``, running in this interpreter's environment."""
    env = dict(os.environ)
    env.setdefault("ARDIQ_PYTHON", sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(exe, [str(exe), *argv], env)


# ------------------------------------------------------------------ arguments
def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return value in ("1", "true", "yes", "on", "y", "t")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"`{text}` is not in 1..=1000000")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number") from None
    if not 0 <= value <= 4_294_967_295:
        raise argparse.ArgumentTypeError(f"`{text}` is not in 0..=4294967295")
    return value


def _workers(text: str) -> int:
    value = _positive_int(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"`{text}` is not in 1..=1024")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 365 * 24 * 3600:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a number of seconds above 0 and at most 31536000 (a year)"
        )
    return value


def parser() -> argparse.ArgumentParser:
    from . import __version__

    top = argparse.ArgumentParser(
        prog="python -m ardiq",
        description="Runs ArdiQ workers for a Python app (the in-code worker; "
        f"`{NATIVE_HINT}` installs the faster native one, which this hands over to).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("-V", "--version", action="version", version=f"ardiq {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="serve an app's queue: run its tasks until stopped (or, with --burst, drained)",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="the app (`MODULE` means MODULE:app)")
    run.add_argument(
        "-b", "--burst", action="store_true", default=_env_flag("ARDIQ_BURST"),
        help="run what is queued now, then exit 0",
    )  # fmt: skip
    noise = run.add_mutually_exclusive_group()
    noise.add_argument(
        "-v", "--verbose", action="store_true", default=_env_flag("ARDIQ_VERBOSE"),
        help="debug logs",
    )  # fmt: skip
    noise.add_argument(
        "-q", "--quiet", action="store_true", default=_env_flag("ARDIQ_QUIET"),
        help="warnings and errors only, and no banner",
    )  # fmt: skip
    run.add_argument(
        "-w", "--workers", type=_workers, metavar="N",
        default=os.environ.get("ARDIQ_WORKERS", "1"),
        help="worker processes to run under one supervisor",
    )  # fmt: skip
    run.add_argument(
        "--concurrency", type=_positive_int, metavar="N",
        default=os.environ.get("ARDIQ_CONCURRENCY") or None,
        help="task bodies running at once, per worker process",
    )  # fmt: skip
    run.add_argument(
        "--prefetch", type=_positive_int, metavar="N",
        default=os.environ.get("ARDIQ_PREFETCH") or None,
        help="tasks held at once (running + waiting), at least --concurrency",
    )  # fmt: skip
    run.add_argument(
        "--redis-url", metavar="URL", default=None, help="Redis to serve [default: the app's]"
    )
    run.add_argument(
        "--shutdown-timeout", type=_seconds, metavar="SECONDS",
        default=os.environ.get("ARDIQ_SHUTDOWN_TIMEOUT") or None,
        help="after a stop signal, how long running tasks may take",
    )  # fmt: skip
    run.add_argument(
        "--history", type=_count, metavar="N",
        default=os.environ.get("ARDIQ_HISTORY") or None,
        help="completed tasks kept in the queue's history, about (0: keep no history)",
    )  # fmt: skip
    run.add_argument(
        "--history-ttl", type=_seconds, metavar="SECONDS",
        default=os.environ.get("ARDIQ_HISTORY_TTL") or None,
        help="how long history entries and throughput counters are kept",
    )  # fmt: skip
    run.add_argument(
        "--max-tasks-per-child", type=_positive_int, metavar="N",
        default=os.environ.get("ARDIQ_MAX_TASKS_PER_CHILD") or None,
        help="isolated tasks: replace a child process after N tasks",
    )  # fmt: skip
    run.add_argument(
        "--max-memory-per-child", type=_positive_int, metavar="MB",
        default=os.environ.get("ARDIQ_MAX_MEMORY_PER_CHILD") or None,
        help="isolated tasks: replace a child process above MB of memory after a task",
    )  # fmt: skip
    # Recycling is the native worker's (its supervisor replaces a recycled process): here
    # the options, and their environment twins, are refused rather than ignored.
    for flag, twin in (("--max-tasks", "ARDIQ_MAX_TASKS"), ("--max-memory", "ARDIQ_MAX_MEMORY")):
        run.add_argument(
            flag, metavar="N", default=os.environ.get(twin) or None,
            help="recycle worker processes (native worker only)",
        )  # fmt: skip
    return top


# --------------------------------------------------------------------- output
def error(message: str, detail: str | None = None, hint: str | None = None) -> None:
    """One `error:` line (after a traceback, before a hint), as the binary prints it."""
    if detail:
        sys.stderr.write(detail.rstrip() + "\n")
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"\nhint: {hint}\n")
    sys.stderr.flush()


class _Formatter(logging.Formatter):
    """``2024-01-01T00:00:00.000Z  INFO ardiq: message``, as the binary's text lines."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        line = f"{stamp}.{millis:03d}Z {record.levelname:>5} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # `-q` drops the banner only: the "worker starting" and "worker stopped" lines stay,
    # as with the binary (and ardiq 1.2).
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # Keep third-party chatter at the default level even under --verbose.
    for noisy in ("asyncio", "redis"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.INFO))


def banner(args: argparse.Namespace, settings: WorkerSettings | None, workers: int) -> str:
    from . import __version__
    from .settings import mask_url

    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    bold, dim, reset = ("\x1b[1m", "\x1b[2m", "\x1b[0m") if colour else ("", "", "")
    lines = [f"{bold}ardiq {__version__}{reset}"]

    def row(key: str, value: str) -> None:
        lines.append(f"  {dim}{key:<13}{reset}{value}")

    row("app", args.target)
    if settings is not None:
        s = settings
        row("queue", s.queue_name)
        row("lanes", " > ".join(reversed(s.priorities)))
        row("tasks", f"{s.tasks} ({len(s.crons)} cron)")
        row("redis", mask_url(s.redis_url))
        row("worker", s.worker_id)
        row("concurrency", f"{s.concurrency} (prefetch {s.prefetch})")
        if s.signing_key is not None:
            row("payloads", "signed (unsigned or altered ones are refused)")
        if s.burst:
            row("mode", "burst: exit once the queue is drained")
    else:
        row("workers", f"{workers} processes")
        if args.redis_url:
            row("redis", mask_url(args.redis_url))
    row("python", f"{sys.executable} (from python -m ardiq)")
    row("engine", f"in-code worker; `{NATIVE_HINT}` gives the faster native one")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    setup_logging(args)
    if args.max_tasks is not None or args.max_memory is not None:
        error(
            "recycling (`--max-tasks`, `--max-memory`) needs the native worker, which is not "
            "installed here",
            hint=f"`{NATIVE_HINT}` installs it (`ardiq run ... --max-tasks N`)",
        )
        return USAGE
    if args.workers > 1:
        return supervise(args)
    supervised = os.environ.get(SUPERVISED_ENV) or None
    if args.redis_url is None:
        # As the binary: the environment twin overrides the app's own URL.
        args.redis_url = os.environ.get("ARDIQ_REDIS_URL") or None

    from ._bridge import TargetError, configure, load_app

    try:
        app = load_app(args.target)
    except TargetError as exc:
        error(str(exc))
        return USAGE
    except BaseException as exc:
        kind = type(exc).__name__
        error(f"importing `{args.target}` raised {kind} (traceback above)", traceback.format_exc())
        return USAGE
    worker_id = app.worker_id + (f"-{supervised}" if supervised else "")
    overrides = {
        "redis_url": args.redis_url,
        "concurrency": args.concurrency,
        "prefetch": args.prefetch,
        "shutdown_timeout_s": args.shutdown_timeout,
        "burst": args.burst,
        "history": args.history,
        "history_ttl_s": args.history_ttl,
        "max_tasks_per_child": args.max_tasks_per_child,
        "max_memory_per_child": args.max_memory_per_child,
    }
    try:
        settings = configure(app, overrides, worker_id)
    except (ValueError, TypeError) as exc:
        error(f"invalid settings: {exc}")
        return USAGE
    if not args.quiet and supervised is None:
        sys.stderr.write(banner(args, settings, 1))
        sys.stderr.flush()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stops = 0

        def on_signal(signum: int) -> None:
            nonlocal stops
            stops += 1
            name = signal.Signals(signum).name
            if stops == 1:
                log.info("%s: stopping; signal again to exit at once", name)
            else:
                log.warning("%s again: exiting at once", name)
            app.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        if supervised is not None:
            parent = os.getppid()

            async def watch_parent() -> None:
                while os.getppid() == parent:
                    await asyncio.sleep(0.5)
                log.warning("the supervisor is gone: stopping")
                app.stop()
                app.stop()

            watcher = asyncio.ensure_future(watch_parent())
        try:
            await app.run()
        finally:
            if supervised is not None:
                watcher.cancel()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return OK
    except Exception as exc:
        error(f"the worker cannot go on: {exc}", traceback.format_exc() if args.verbose else None)
        return RUNTIME
    return OK


def supervise(args: argparse.Namespace) -> int:
    """``--workers N``: N worker processes of this interpreter; the first to fail stops
    the rest and gives the exit code. Signals are passed on."""
    if not args.quiet:
        sys.stderr.write(banner(args, None, args.workers))
        sys.stderr.flush()
    child_args = [sys.executable, "-m", "ardiq", "run", args.target]
    for on, flag in ((args.burst, "--burst"), (args.verbose, "--verbose"), (args.quiet, "--quiet")):
        if on:
            child_args.append(flag)
    for name, value in (
        ("--concurrency", args.concurrency),
        ("--prefetch", args.prefetch),
        ("--shutdown-timeout", args.shutdown_timeout),
        ("--history", args.history),
        ("--history-ttl", args.history_ttl),
        ("--max-tasks-per-child", args.max_tasks_per_child),
        ("--max-memory-per-child", args.max_memory_per_child),
    ):
        if value is not None:
            child_args.append(f"{name}={value}")
    env = {**os.environ, HANDOVER_ENV: "0"}
    env.pop("ARDIQ_WORKERS", None)
    if args.redis_url:  # never on a command line: it may hold a password
        env["ARDIQ_REDIS_URL"] = args.redis_url
    children = [
        subprocess.Popen(child_args, env={**env, SUPERVISED_ENV: str(i)})
        for i in range(args.workers)
    ]
    stop_signals: list[int] = []
    wake = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stop_signals.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
        wake.set()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    failed: int | None = None
    while any(c.poll() is None for c in children):
        for c in children:
            code = c.poll()
            if code is not None and code != 0 and failed is None and not stop_signals:
                failed = code if code > 0 else RUNTIME
                log.error("worker %d exited with %d: stopping the others", c.pid, code)
                for other in children:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        wake.wait(0.2)
        wake.clear()
    if failed is None:
        codes = [c.returncode for c in children]
        failed = next((c if c > 0 else RUNTIME for c in codes if c != 0 and not stop_signals), OK)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    exe = native_worker()
    if exe is not None:
        hand_over(exe, argv)
    if argv and argv[0] in ("check", "info", "dlq", "purge", "job", "functions"):
        error(
            f"`{argv[0]}` needs the native worker, which is not installed here",
            hint=f"`{NATIVE_HINT}` installs it (`ardiq {argv[0]} ...`)",
        )
        return USAGE
    args = parser().parse_args(argv)
    return run(args)
