"""What a running task, an error hook and an enqueue hook are told."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

__all__ = ["EnqueueContext", "ErrorContext", "TaskContext", "current_task"]


class _TaskContextFields(NamedTuple):
    # The tuple ardiq 1.2 users unpack: these fields, in this order and number.
    task_id: str
    name: str
    tries: int


class TaskContext(_TaskContextFields):
    """The task being run, as a named tuple ``(task_id, name, tries)``: returned by
    :func:`current_task`, given to middleware. ``tries`` is this attempt's number,
    starting at 1.

    ``headers`` (what ``@app.on_enqueue`` hooks set) is an attribute beside the tuple: it
    takes no part in unpacking, indexing, ``_asdict()`` or equality.
    """

    # No __slots__: the instance dict holds `headers` (a tuple subclass cannot have slots
    # of its own). Pickling and copying carry it along.

    def __new__(
        cls, task_id: str, name: str, tries: int, *, headers: dict[str, str] | None = None
    ) -> Self:
        self = super().__new__(cls, task_id, name, tries)
        self.__dict__["headers"] = {} if headers is None else headers
        return self

    @property
    def headers(self) -> dict[str, str]:
        """The headers the task was enqueued with (empty when none were set)."""
        headers: dict[str, str] = self.__dict__.setdefault("headers", {})
        return headers

    def _replace(self, /, **changes: Any) -> Self:
        headers = changes.pop("headers", self.headers)
        fields = super()._replace(**changes)
        return type(self)(*fields, headers=headers)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, headers={self.headers!r})"


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
    """The task running in this context (sync tasks too), or ``None`` outside a task."""
    return _current.get()
