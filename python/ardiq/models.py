"""The data types ArdiQ hands back, in one module: what a job reports (results, live
info, dead letters), what tasks and hooks are told, and ``app.state``.

``from ardiq.models import TaskResult, TaskInfo, TaskContext, ErrorContext, State`` works
as it does with ardiq 1.2; every name is also importable from ``ardiq``.
"""

from .context import EnqueueContext, ErrorContext, TaskContext
from .jobs import DeadLetter, Status, TaskInfo, TaskResult
from .lifespan import State

__all__ = [
    "DeadLetter",
    "EnqueueContext",
    "ErrorContext",
    "State",
    "Status",
    "TaskContext",
    "TaskInfo",
    "TaskResult",
]
