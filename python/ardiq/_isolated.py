"""The child process behind isolated tasks (``@app.task(isolated=True)``), private.

The worker's pool (:mod:`ardiq.isolation`) starts ``python -m ardiq._isolated RFD WFD
PARENT`` with two pipe ends of its own (stdin is /dev/null; stdout and stderr are the
worker's, so prints and logs of task bodies land where the worker's do). It then talks
to the child in frames (a 4-byte big-endian length, then msgpack):

- parent -> child, once: ``{"path": sys.path, "main": path or None, "secrets": {...}}``;
- parent -> child, per task: ``["run", module, qualname, name, task_id, tries, lane,
  enqueue_ms, headers, payload]`` where `payload` is the app's serializer's bytes of
  ``[args, kwargs]``;
- child -> parent, as the body starts: ``["started"]`` (the task's timeout counts from
  there), then while it runs: ``["progress", value_json, message_json]``;
- child -> parent, once per task: ``["ok", result_bytes, rss]`` or ``["err", type_name,
  repr_text, retry, retry_message, retry_delay_ms, rss]`` (`rss` in bytes, measured
  after the body; the pool recycles a child above ``max_memory_per_child``).

The child imports the task's module, finds the :class:`~ardiq.Task` by its function's
qualified name and runs its body in the main thread, with ``current_task()`` set. It
dies with its worker: ``PR_SET_PDEATHSIG`` on Linux, and an end of file on its request
pipe between tasks everywhere. It ignores SIGINT (a Ctrl-C in a terminal is for the
worker, which drains); the pool kills it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import threading
from typing import Any

import msgpack  # type: ignore[import-untyped,unused-ignore]

_HEADER = struct.Struct(">I")


def read_frame(fd: int) -> bytes | None:
    """One frame from `fd`, or None at end of file (the other side is gone)."""
    head = _read_exactly(fd, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, data: bytes) -> None:
    """Write one frame to `fd` (all of it)."""
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


_STARTED = msgpack.packb(["started"])


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak (other systems)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the worker dies (Linux), so a worker
    killed with SIGKILL leaves no child behind, even one stuck in C code."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the worker died before the line above took effect
        os._exit(1)


class _Relay:
    """Stands in for the worker's runtime in this child's ``TaskContext``: progress goes
    up the pipe (checked here, so a bad value raises in the body as in the worker)."""

    def __init__(self, fd: int, lock: threading.Lock) -> None:
        self.fd = fd
        self.lock = lock

    def progress(self, _delivery: object, _tries: int, value: object, message: object) -> None:
        from .progress import encode

        text, message_text = encode(value, message)
        frame = pack(["progress", text, message_text])
        with self.lock:
            write_frame(self.fd, frame)


def _load_main(path: str) -> None:
    """Run the worker's ``__main__`` script here under the name ``__mp_main__`` (so its
    ``if __name__ == "__main__":`` block does not run), as ``multiprocessing`` does."""
    import runpy
    import types

    module = types.ModuleType("__mp_main__")
    module.__file__ = path
    sys.modules["__mp_main__"] = sys.modules["__main__"] = module
    module.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))


def _find_task(module_name: str, qualname: str, name: str) -> Any:
    """The task `name`: the :class:`~ardiq.Task` at `module_name`.`qualname`, or the one
    of that name whose function is there."""
    import importlib

    from .app import Ardiq
    from .task import Task

    module = importlib.import_module(module_name)
    obj: Any = module
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        obj = None
    if isinstance(obj, Task) and obj.name == name:
        return obj
    for value in list(vars(module).values()):
        if isinstance(value, Ardiq):
            task = value._tasks.get(name)
            if task is not None:
                return task
    raise LookupError(
        f"isolated task {name!r}: no task of that name at {module_name}.{qualname} "
        "in the child process (define isolated tasks at module level, on an app the "
        "module creates when imported)"
    )


def _run(request: list[Any], tasks: dict[tuple[str, str, str], Any], relay: _Relay) -> list[Any]:
    from .context import TaskContext, _current
    from .errors import Retry

    _, module_name, qualname, name, task_id, tries, lane, enqueue_ms, headers, payload = request
    try:
        key = (module_name, qualname, name)
        task = tasks.get(key)
        if task is None:
            task = tasks[key] = _find_task(module_name, qualname, name)
        args, kwargs = task.app.deserializer(payload)
        ctx = TaskContext(task_id, name, tries, headers=headers, lane=lane, enqueue_ms=enqueue_ms)
        ctx.__dict__["_runtime"] = relay
        ctx.__dict__["_delivery"] = None
        token = _current.set(ctx)
        try:
            with relay.lock:
                write_frame(relay.fd, _STARTED)  # the task's timeout counts from here
            value = task.fn(*args, **kwargs)
        finally:
            _current.reset(token)
        try:
            data = task.app.serializer(value)
        except Exception as exc:
            text = f"result could not be serialized: {exc!r}"
            return ["err", type(exc).__name__, text, False, None, None, rss_bytes()]
        return ["ok", data, rss_bytes()]
    except BaseException as exc:  # every failure of the body is reported
        if isinstance(exc, Retry):
            return ["err", "Retry", repr(exc), True, exc.message, exc.delay_ms, rss_bytes()]
        return ["err", type(exc).__name__, repr(exc), False, None, None, rss_bytes()]


def main(argv: list[str]) -> int:
    rfd, wfd, parent = int(argv[1]), int(argv[2]), int(argv[3])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = read_frame(rfd)
    if first is None:
        return 0
    init = unpack(first)
    sys.path[:] = init["path"]
    secrets = init.get("secrets") or {}
    if secrets:
        from . import _secrets

        _secrets.provide(secrets)
    main_path = init.get("main")
    loaded_main = False
    lock = threading.Lock()
    relay = _Relay(wfd, lock)
    tasks: dict[tuple[str, str, str], Any] = {}
    while True:
        frame = read_frame(rfd)
        if frame is None:
            return 0  # the worker closed the pipe, or died
        request = unpack(frame)
        if request[1] == "__main__" and not loaded_main:
            if not main_path:
                reply: list[Any] = [
                    "err",
                    "LookupError",
                    repr(
                        LookupError(
                            f"isolated task {request[3]!r} is defined in __main__ with no "
                            "script file (an interactive session): move it to a module"
                        )
                    ),
                    False,
                    None,
                    None,
                    rss_bytes(),
                ]
                with lock:
                    write_frame(wfd, pack(reply))
                continue
            try:
                _load_main(main_path)
            except BaseException as exc:  # reported as the attempt's error
                text = repr(exc)
                with lock:
                    write_frame(wfd, pack(["err", type(exc).__name__, text, False, None, None, 0]))
                continue
            loaded_main = True
        reply = _run(request, tasks, relay)
        with lock:
            write_frame(wfd, pack(reply))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
