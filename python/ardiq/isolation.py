"""Isolated tasks: sync bodies run in child processes from a small pool per worker.

``@app.task(isolated=True)`` sends each attempt to a child (:mod:`ardiq._isolated`), so
a timeout or an abort can end the body for real (the child is killed: SIGTERM, then
SIGKILL after :data:`KILL_GRACE_S`), and a body that crashes its process (a segfault,
``os._exit``, the OOM killer) fails its attempt instead of the worker. The
:class:`~ardiq.runtime.Runtime` calls :meth:`ChildPool.call` in place of the thread pool;
everything else an attempt goes through (middleware, timeout, retry decision, hooks,
result encoding) stays in the worker, the same for both worker kinds.

The pool starts children lazily, never more than one per running isolated attempt (so
at most the worker's concurrency), reuses an idle one when there is one, and retires a
child after ``max_tasks_per_child`` tasks or when its resident memory after a task is
above ``max_memory_per_child`` MB. Each call runs on a thread of its own that blocks on
the child's pipe, so the event loop never waits on a child.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._isolated import pack, read_frame, unpack, write_frame
from .errors import ArdiqError, IsolatedTaskError, Retry
from .runtime import _deadline

if TYPE_CHECKING:
    from .app import Ardiq
    from .context import TaskContext
    from .runtime import _DaemonPool
    from .task import Task

__all__ = ["ChildDied", "ChildPool", "python_executable"]

log = logging.getLogger("ardiq")

KILL_GRACE_S = 1.0
"""How long a child told to stop (SIGTERM) has before it is killed (SIGKILL)."""
START_ALLOWANCE_S = 30.0
"""How long getting an attempt's body started in a child (starting the child, importing
the task's module, decoding the arguments) may take on top of the task's timeout, which
counts from the body's start."""


class ChildDied(ArdiqError):
    """The process running an isolated attempt died before it answered (a segfault,
    ``os._exit``, the OOM killer). The attempt fails (and is retried like any failure);
    the pool starts a new child for the next attempt."""


def python_executable() -> str:
    """The interpreter children run on: ``sys.executable`` (inside ``ardiq run`` the
    launcher makes it the environment's Python), else the environment's ``python3``."""
    exe = sys.executable
    if exe and not os.path.basename(exe).startswith("ardiq") and os.access(exe, os.X_OK):
        return exe
    candidates = [
        os.path.join(sys.prefix, "bin", "python3"),
        os.path.join(sys.prefix, "bin", "python"),
        getattr(sys, "_base_executable", ""),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ArdiqError(
        f"isolated tasks need a Python interpreter to start children, and none was found "
        f"(sys.executable is {exe!r}, sys.prefix {sys.prefix!r})"
    )


_REMOTE_TYPES: dict[str, type[IsolatedTaskError]] = {}


def remote_error(type_name: str, text: str) -> IsolatedTaskError:
    """The error for what an isolated body raised. For a built-in exception type (such as
    ``ValueError`` or ``KeyError``) it is also an instance of that type, named like it, so
    ``on_error`` hooks and ``except`` clauses in middleware that test for it still match;
    for any other type a plain :class:`~ardiq.errors.IsolatedTaskError`."""
    cls = _REMOTE_TYPES.get(type_name)
    if cls is None:
        cls = IsolatedTaskError
        builtin = getattr(builtins, type_name, None)
        if (
            isinstance(builtin, type)
            and issubclass(builtin, Exception)
            # Raised through a coroutine, StopIteration would turn into a RuntimeError;
            # groups want a list of exceptions.
            and not issubclass(builtin, StopIteration | StopAsyncIteration | BaseExceptionGroup)
            and builtin is not Exception
        ):
            try:
                made = type(type_name, (IsolatedTaskError, builtin), {})
                made(type_name, text)  # some built-in layouts cannot be combined
                cls = made
            except Exception:
                pass
        _REMOTE_TYPES[type_name] = cls
    return cls(type_name, text)


def describe_exit(code: int) -> str:
    """`killed by signal SIGSEGV (11)` or `exited with code 3`."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by signal {name} ({-code})"
    return f"exited with code {code}"


class _Child:
    """One child process and its two pipe ends."""

    def __init__(self, python: str, init: bytes) -> None:
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "ardiq._isolated",
                    str(to_child_r),
                    str(from_child_w),
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(to_child_r, from_child_w),
                # A terminal's Ctrl-C (and any signal to the worker's process group) is
                # for the worker, which drains: its children finish their attempts.
                start_new_session=True,
            )
        except BaseException:
            for fd in (self.to_child, self.from_child):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.tasks = 0
        self._closed = False
        self._lock = threading.Lock()
        self.send(init)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, frame: bytes) -> None:
        write_frame(self.to_child, frame)

    def recv(self) -> bytes | None:
        return read_frame(self.from_child)

    def kill(self, grace: float = KILL_GRACE_S) -> None:
        """SIGTERM now, SIGKILL after `grace` if still alive (0: SIGKILL now); never
        blocks. The signal goes to the child's process group (it leads one), so what
        the body started goes with it."""
        if grace <= 0:
            self._signal(signal.SIGKILL)
            return
        self._signal(signal.SIGTERM)
        timer = threading.Timer(grace, self._sigkill)
        timer.daemon = True
        timer.start()

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return  # reaped: its pid may belong to another process now
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(OSError):
            self.proc.send_signal(sig)

    def _sigkill(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(5)

    def close(self) -> None:
        """Close our pipe ends (the child reads end of file and exits)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fd in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                os.close(fd)

    def retire(self) -> None:
        """Let an idle child go: it exits on end of file; killed if it lingers."""
        self.close()
        if self.alive():
            self.kill(KILL_GRACE_S)


class _Call:
    """One attempt on its way to a child; cancelling it kills the child it runs on."""

    __slots__ = ("cancelled", "child", "done", "lock", "on_start")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.child: _Child | None = None
        self.done = False
        """Set on the loop once the caller stopped waiting."""
        self.on_start: Callable[[], object] | None = None
        """Called (on the pool thread) when the child starts the body."""

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            child = self.child
        if child is not None:
            child.kill()


class ChildPool:
    """The children of one worker's isolated tasks (see the module's docstring)."""

    def __init__(self, app: Ardiq, threads: _DaemonPool) -> None:
        self._app = app
        self._threads = threads
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._python: str | None = None

    async def call(
        self, task: Task[Any, Any], ctx: TaskContext, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Run `task`'s body with `args`/`kwargs` in a child and return its value, or
        raise what it raised (see :class:`~ardiq.errors.IsolatedTaskError`). Cancelled
        (a timeout, an abort), it kills the child."""
        app = self._app
        payload = app.serializer([args, kwargs])
        fn = task.fn
        module = getattr(fn, "__module__", None) or ""
        qualname = getattr(fn, "__qualname__", None) or task.name
        request = pack(
            [
                "run",
                module,
                qualname,
                task.name,
                ctx.task_id,
                ctx.tries,
                ctx.lane,
                ctx.enqueue_ms,
                dict(ctx.headers),
                payload,
            ]
        )
        call = _Call()
        loop = asyncio.get_running_loop()
        timeout = task.timeout
        limit = _deadline.get() if timeout is not None else None
        if limit is not None and timeout is not None:
            # The timeout bounds the body: starting a child (an interpreter importing the
            # task's module) is not counted, up to START_ALLOWANCE_S.
            limit.reschedule(loop.time() + timeout + START_ALLOWANCE_S)

            def body_started() -> None:  # on the loop, once the child runs the body
                if not call.done:
                    with contextlib.suppress(RuntimeError):  # the timeout fired meanwhile
                        limit.reschedule(loop.time() + timeout)

            call.on_start = lambda: loop.call_soon_threadsafe(body_started)
        try:
            reply = await loop.run_in_executor(self._threads, self._run, call, ctx, request)
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            call.done = True
        if reply[0] == "ok":
            return app.deserializer(reply[1])
        _, type_name, text, retry, message, delay_ms = reply[:6]
        if retry:
            raise Retry(message, delay_ms=delay_ms)
        raise remote_error(type_name, text)

    def _run(self, call: _Call, ctx: TaskContext, request: bytes) -> list[Any]:
        """On a pool thread: take or start a child, hand it the attempt, wait for its
        answer (passing progress on), and give the child back or retire it."""
        child = self._take()
        with call.lock:
            if call.cancelled:
                child.kill(0)
                self._forget(child)
                raise asyncio.CancelledError
            call.child = child
        try:
            child.send(request)
            while True:
                frame = child.recv()
                if frame is None:
                    break
                reply = unpack(frame)
                if reply[0] == "progress":
                    self._progress(ctx, reply[1], reply[2])
                    continue
                if reply[0] == "started":
                    if call.on_start is not None:
                        with contextlib.suppress(RuntimeError):  # the loop is closed
                            call.on_start()
                    continue
                child.tasks += 1
                self._give_back(child, reply[-1])
                return list(reply)
        except OSError:
            pass  # the pipe broke: the child is gone
        # The child died before it answered: say how (waiting for it is short, its pipe
        # is closed already).
        self._forget(child)
        child.close()
        try:
            code = child.proc.wait(KILL_GRACE_S + 5)
        except subprocess.TimeoutExpired:
            child.kill(0)
            code = child.proc.wait()  # SIGKILL: at once
        if call.cancelled:
            raise asyncio.CancelledError
        raise ChildDied(f"the isolated task's process {describe_exit(code)}")

    def _progress(self, ctx: TaskContext, text: str, message: str) -> None:
        runtime = ctx.__dict__.get("_runtime")
        delivery = ctx.__dict__.get("_delivery")
        if runtime is not None and delivery is not None:
            runtime.progress_encoded(delivery, ctx.tries, text, message)

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise ArdiqError("the worker is stopping: no isolated task starts now")
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                self._children.discard(child)
                child.close()
            if self._python is None:
                self._python = python_executable()
            python = self._python
        child = _Child(python, self._init())
        log.debug("isolated child started pid=%d", child.pid)
        with self._lock:
            self._children.add(child)
            closed = self._closed
        if closed:
            self._forget(child)
            child.kill(0)
            raise ArdiqError("the worker is stopping: no isolated task starts now")
        return child

    def _init(self) -> bytes:
        from . import _secrets

        main = sys.modules.get("__main__")
        main_path = getattr(main, "__file__", None)
        return pack(
            {
                "path": list(sys.path),
                "main": os.path.abspath(main_path) if main_path else None,
                "secrets": dict(_secrets._provided),
            }
        )

    def _give_back(self, child: _Child, rss: int) -> None:
        app = self._app
        max_tasks = app.max_tasks_per_child
        max_memory = app.max_memory_per_child
        recycle = (max_tasks is not None and child.tasks >= max_tasks) or (
            max_memory is not None and rss > max_memory * 1024 * 1024
        )
        with self._lock:
            if not recycle and not self._closed:
                self._idle.append(child)
                return
            self._children.discard(child)
        if recycle:
            log.debug(
                "isolated child recycled pid=%d tasks=%d rss_mb=%d",
                child.pid,
                child.tasks,
                rss // (1024 * 1024),
            )
        child.retire()

    def _forget(self, child: _Child) -> None:
        with self._lock:
            self._children.discard(child)
            with contextlib.suppress(ValueError):
                self._idle.remove(child)

    def close(self) -> None:
        """Kill every child, idle or running (the worker is stopping: what still runs
        was abandoned, and is reclaimed or finished as the worker decided)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
            self._children.clear()
            self._idle.clear()
        for child in children:
            child.kill(0)
            child.close()
        # Reaped here (SIGKILL is quick): no zombie, and no child left "still running".
        deadline = time.monotonic() + 2.0
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(max(0.0, deadline - time.monotonic()))
