"""Tasks: what ``@app.task`` returns, and the bound and prepared forms of a call."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .limits import TaskLimits, limit_key_text, parse_limits
from .settings import check_int, check_lane

if TYPE_CHECKING:
    from .app import Ardiq
    from .jobs import Job

__all__ = ["BoundTask", "PreparedTask", "Task"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PreparedTask:
    """One call of a task, ready for :meth:`Ardiq.enqueue_many`. Made by ``prepare``."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    priority: str
    task_id: str | None = None
    delay_ms: int = 0
    schedule_ms: int = 0
    expire_ms: int = 0
    unique: bool = False
    task: Task[Any, Any] | None = field(default=None, repr=False, compare=False)
    limit_key: str | None = None
    """The call's limit key (PROTOCOL.md, Limits), computed from the argument the task's
    ``limit_key`` names; None when the task has none."""


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call options of :meth:`Task.options`."""

    task_id: str | None = None
    priority: str | None = None
    delay_ms: int = 0
    schedule_ms: int = 0
    expire_ms: int = 0
    unique: bool | None = None


class Task(Generic[P, R]):
    """A registered task (or, from :meth:`Ardiq.ref`, a handle on one by name).

    Calling it runs the function directly; ``enqueue`` sends it to the queue.
    """

    def __init__(
        self,
        app: Ardiq,
        fn: Callable[..., Any] | None,
        name: str,
        *,
        max_retries: int = 3,
        backoff_ms: int = 0,
        timeout: float | None = None,
        priority: str | None = None,
        unique: bool = False,
        isolated: bool = False,
        rate_limit: str | None = None,
        burst: float | None = None,
        max_concurrency: int | None = None,
        limit_key: str | None = None,
    ) -> None:
        check_int("max_retries", max_retries)
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        check_int("backoff_ms", backoff_ms)
        if backoff_ms < 0:
            raise ValueError(f"backoff_ms must be >= 0, got {backoff_ms}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.app = app
        self.fn = fn
        self.name = name
        self.max_retries = max_retries
        self.backoff_ms = backoff_ms
        self.timeout = timeout
        self.priority = check_lane(priority, app.priorities) if priority else app.default_priority
        self.unique = unique
        self.limits: TaskLimits | None = parse_limits(
            name, fn, rate_limit, burst, max_concurrency, limit_key
        )
        # The argument whose value keys the limits (a ref may name it without limits: the
        # producer passes the key on, the workers hold the limits).
        self.limit_key: str | None = limit_key
        self.is_async = fn is not None and _is_async_callable(fn)
        self.isolated = bool(isolated)
        if isolated:
            _check_isolatable(fn, name, self.is_async)
        if fn is not None:
            self.__doc__ = fn.__doc__
            self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"Task({self.name!r}, priority={self.priority!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function directly, with no queue."""
        if self.fn is None:
            raise TypeError(
                f"task {self.name!r} is a reference made by app.ref(): it has no function "
                "to call here; enqueue it instead"
            )
        return self.fn(*args, **kwargs)

    @cached_property
    def signature(self) -> inspect.Signature | None:
        if self.fn is None:
            return None
        try:
            return inspect.signature(self.fn)
        except (TypeError, ValueError):  # some builtins have no signature: skip the check
            return None

    @cached_property
    def _positional_counts(self) -> tuple[int, float] | None:
        """(fewest, most) positional arguments that fit the signature on their own, or None
        when a call without keywords still needs the full check (a required keyword-only
        parameter, or no signature at all)."""
        sig = self.signature
        if sig is None:
            return None
        fewest, most = 0, 0.0
        for param in sig.parameters.values():
            if param.kind is param.VAR_POSITIONAL:
                most = math.inf
            elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                most += 1
                fewest += param.default is param.empty
            elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
                return None
        return fewest, most

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Check the arguments against the function's signature (TypeError if they fit not)."""
        sig = self.signature
        if sig is None:
            return
        counts = self._positional_counts
        # The common call, positional arguments only, checked by counting: Signature.bind
        # costs more than the rest of an enqueue's Python work together.
        if not kwargs and counts is not None and counts[0] <= len(args) <= counts[1]:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"bad arguments for task {self.name!r}: {exc}") from None

    def options(
        self,
        *,
        task_id: str | None = None,
        priority: str | None = None,
        delay_ms: int = 0,
        schedule_ms: int = 0,
        expire_ms: int = 0,
        unique: bool | None = None,
    ) -> BoundTask[P, R]:
        """This task with per-call options: a custom id, a lane, a delay (``delay_ms``,
        relative) or a time (``schedule_ms``, epoch ms, wins over the delay), an expiry
        (``expire_ms`` after enqueue, dropped if not started by then), uniqueness."""
        if task_id is not None and (not isinstance(task_id, str) or not task_id):
            raise ValueError("task_id must be a non-empty string")
        if priority is not None:
            check_lane(priority, self.app.priorities)
        for name, value in (
            ("delay_ms", delay_ms),
            ("schedule_ms", schedule_ms),
            ("expire_ms", expire_ms),
        ):
            check_int(name, value)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        opts = EnqueueOptions(task_id, priority, delay_ms, schedule_ms, expire_ms, unique)
        return BoundTask(self, opts)

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask:
        """This call, ready for :meth:`Ardiq.enqueue_many`."""
        return self._prepare(EnqueueOptions(), args, kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Send this call to the queue; returns its :class:`Job`."""
        (job,) = await self.app.enqueue_many([self.prepare(*args, **kwargs)])
        return job

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Blocking twin of :meth:`enqueue`, for code that is not async."""
        return self.app.sync.run(self.enqueue(*args, **kwargs))

    def _prepare(
        self, opts: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PreparedTask:
        self.bind(args, kwargs)
        key = None if self.limit_key is None else self._limit_key_of(args, kwargs)
        return PreparedTask(
            name=self.name,
            args=tuple(args),
            kwargs=dict(kwargs),
            priority=opts.priority or self.priority,
            task_id=opts.task_id,
            delay_ms=opts.delay_ms,
            schedule_ms=opts.schedule_ms,
            expire_ms=opts.expire_ms,
            unique=self.unique if opts.unique is None else opts.unique,
            task=self,
            limit_key=key,
        )

    def _limit_key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """This call's limit key: the value of the argument ``limit_key`` names (bound with
        the signature; a ref without a function takes it from the keywords)."""
        arg = self.limit_key
        assert arg is not None
        sig = self.signature
        if sig is None:
            if arg not in kwargs:
                raise TypeError(
                    f"task {self.name!r} is limited per {arg!r}: pass {arg}=... by keyword"
                )
            return limit_key_text(self.name, arg, kwargs[arg])
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        if arg in bound.arguments:
            value = bound.arguments[arg]
        else:
            extra: dict[str, Any] = next(
                (
                    v
                    for k, v in bound.arguments.items()
                    if sig.parameters[k].kind is inspect.Parameter.VAR_KEYWORD
                ),
                {},
            )
            if arg not in extra:
                raise TypeError(f"task {self.name!r} is limited per {arg!r}, which was not passed")
            value = extra[arg]
        return limit_key_text(self.name, arg, value)


class BoundTask(Generic[P, R]):
    """A task with per-call options, from :meth:`Task.options`."""

    __slots__ = ("_opts", "task")

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self._opts = opts

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedTask:
        """This call with these options, ready for :meth:`Ardiq.enqueue_many`."""
        return self.task._prepare(self._opts, args, kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Send this call with these options; returns its :class:`Job`."""
        (job,) = await self.task.app.enqueue_many([self.prepare(*args, **kwargs)])
        return job

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Blocking twin of :meth:`enqueue`."""
        return self.task.app.sync.run(self.enqueue(*args, **kwargs))


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _check_isolatable(fn: Callable[..., Any] | None, name: str, is_async: bool) -> None:
    """``isolated=True`` needs a sync function a child process can import by module and
    qualified name: TypeError at decoration otherwise."""
    if fn is None:
        return
    if is_async:
        raise TypeError(
            f"task {name!r}: isolated=True runs a sync `def` body in a child process; "
            "an `async def` body cannot be isolated (drop isolated=True, or make it a def)"
        )
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise TypeError(
            f"task {name!r}: isolated=True needs a function defined at module level (the "
            f"child process imports it by module and name), got {fn!r}"
        )
