"""What a running task, an error hook and an enqueue hook are told."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EnqueueContext", "ErrorContext", "TaskContext", "current_task"]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The task being run: returned by :func:`current_task`, given to middleware."""

    task_id: str
    name: str
    tries: int
    """This attempt's number, starting at 1."""
    headers: dict[str, str] = field(default_factory=dict)
    lane: str = ""
    """The lane (priority) this attempt was read from."""
    enqueue_ms: int = 0
    """When the task was enqueued (Redis server time, epoch ms; a replay enqueues anew)."""


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Given to ``@app.on_error`` hooks for every failed attempt."""

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
