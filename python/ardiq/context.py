"""What a running task, an error hook and an enqueue hook are told."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

from ._tuple_extras import TupleExtras

__all__ = ["EnqueueContext", "ErrorContext", "TaskContext", "current_task"]


class _TaskContextFields(NamedTuple):
    # The tuple ardiq 1.2 users unpack: these fields, in this order and number.
    task_id: str
    name: str
    tries: int


class TaskContext(TupleExtras, _TaskContextFields):
    """The task being run, as a named tuple ``(task_id, name, tries)``: returned by
    :func:`current_task`, given to middleware. ``tries`` is this attempt's number,
    starting at 1.

    Beside the tuple, as attributes that take no part in unpacking, indexing,
    ``_asdict()`` or equality: ``headers`` (what ``@app.on_enqueue`` hooks set), ``lane``
    (the lane this attempt was read from) and ``enqueue_ms`` (when the task was enqueued:
    Redis server time, epoch ms; a replay enqueues anew).
    """

    _extras = ("headers", "lane", "enqueue_ms")

    def __new__(
        cls,
        task_id: str,
        name: str,
        tries: int,
        *,
        headers: dict[str, str] | None = None,
        lane: str = "",
        enqueue_ms: int = 0,
    ) -> Self:
        self = super().__new__(cls, task_id, name, tries)
        self.__dict__["headers"] = {} if headers is None else headers
        self.__dict__["lane"] = lane
        self.__dict__["enqueue_ms"] = enqueue_ms
        return self

    @property
    def headers(self) -> dict[str, str]:
        """The headers the task was enqueued with (empty when none were set)."""
        headers: dict[str, str] = self.__dict__.setdefault("headers", {})
        return headers

    @property
    def lane(self) -> str:
        """The lane (priority) this attempt was read from."""
        lane: str = self.__dict__.get("lane", "")
        return lane

    @property
    def enqueue_ms(self) -> int:
        """When the task was enqueued (Redis server time, epoch ms; a replay enqueues
        anew)."""
        enqueue_ms: int = self.__dict__.get("enqueue_ms", 0)
        return enqueue_ms

    def progress(self, value: float | Mapping[str, Any], message: str | None = None) -> None:
        """Report this attempt's progress: `value` a number from 0 to 100 or a mapping
        ``json.dumps`` accepts (str keys), `message` an optional text. Callable from async
        and sync bodies (any thread) as often as you like: at most one write per attempt
        every 0.5 s goes to Redis (the latest value replacing a waiting one), and the last
        value is written before the attempt's outcome. Readers see it with
        ``await job.progress()``; it is kept as long as the result, and cleared when the
        attempt is retried. Raises ``TypeError`` or ``ValueError`` for a bad value or
        message, or a JSON record over 64 KiB, and ``RuntimeError`` on a context no
        worker made."""
        runtime = self.__dict__.get("_runtime")
        if runtime is None:
            raise RuntimeError(
                "progress() reports for a task a worker (or ardiq.testing.inline) runs; "
                "this TaskContext was not made by one"
            )
        runtime.progress(self.__dict__["_delivery"], self.tries, value, message)

    def __getstate__(self) -> dict[str, Any]:
        # The worker's runtime stays behind: a pickled or copied context reports nothing.
        return {k: v for k, v in self.__dict__.items() if k not in ("_runtime", "_delivery")}


class ErrorContext(NamedTuple):
    """Given to ``@app.on_error`` hooks for every failed attempt, as a named tuple.
    ``tries`` is the attempt that failed (from 1); ``will_retry`` says whether another
    one is coming."""

    name: str
    task_id: str
    exc: BaseException
    tries: int
    will_retry: bool


@dataclass(slots=True)
class EnqueueContext:
    """Given to ``@app.on_enqueue`` hooks before a task is sent; ``headers`` travel with it."""

    name: str
    task_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


_current: ContextVar[TaskContext | None] = ContextVar("ardiq_current_task", default=None)


def current_task() -> TaskContext | None:
    """The task running in this context (sync tasks too), or ``None`` outside a task.
    ``current_task().progress(value, message)`` reports progress (see
    :meth:`TaskContext.progress`)."""
    return _current.get()
