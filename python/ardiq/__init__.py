"""ArdiQ: a fast, light Redis Streams task queue that never loses a task.

Define tasks on an :class:`Ardiq` app, enqueue them from anywhere, and run workers with
the ``ardiq`` executable or ``await app.run()``.
"""

from . import _logsafe
from .app import Ardiq, CronJob
from .context import EnqueueContext, ErrorContext, TaskContext, current_task
from .errors import ArdiqError, BrokerError, IsolatedTaskError, NativeUnavailable, Retry
from .jobs import Attempt, CronState, DeadLetter, HistoryEntry, Job, Status, TaskInfo, TaskResult
from .lifespan import State
from .progress import Progress
from .task import BoundTask, PreparedTask, Task

__version__ = "0.1.0"

_logsafe.install()

__all__ = [
    "Ardiq",
    "ArdiqError",
    "Attempt",
    "BoundTask",
    "BrokerError",
    "CronJob",
    "CronState",
    "DeadLetter",
    "EnqueueContext",
    "ErrorContext",
    "HistoryEntry",
    "IsolatedTaskError",
    "Job",
    "NativeUnavailable",
    "PreparedTask",
    "Progress",
    "Retry",
    "State",
    "Status",
    "Task",
    "TaskContext",
    "TaskInfo",
    "TaskResult",
    "__version__",
    "current_task",
]
