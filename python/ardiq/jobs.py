"""Jobs and what can be learnt about them: results, status, info, dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Self, TypeVar

import msgpack  # type: ignore[import-untyped,unused-ignore]

from ._tuple_extras import TupleExtras
from .errors import ArdiqError
from .progress import Progress
from .serializers import Deserializer
from .signing import Signer

if TYPE_CHECKING:
    from .app import Ardiq

__all__ = ["Attempt", "DeadLetter", "HistoryEntry", "Job", "Status", "TaskInfo", "TaskResult"]

R = TypeVar("R")


class Status(StrEnum):
    """Where a task is. Compares equal to its string value."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETE = "complete"
    NOT_FOUND = "not_found"


class _TaskResultFields(NamedTuple, Generic[R]):
    # The tuple ardiq 1.2 users unpack: these fields, in this order and number.
    success: bool
    value: Any
    tries: int
    enqueue_time: int = 0
    start: int = 0
    finish: int = 0


class TaskResult(TupleExtras, _TaskResultFields[R]):
    """The outcome of a finished task: a named tuple ``(success, value, tries,
    enqueue_time, start, finish)``. Times are epoch milliseconds.

    On failure ``value`` is the error as text (the exception's ``repr``, ``"aborted"``,
    ``"unknown task 'x'"``, ...). ``aborted`` is an attribute beside the tuple: it takes
    no part in unpacking, indexing, ``_asdict()`` or equality.
    """

    _extras = ("aborted",)

    def __new__(
        cls,
        success: bool,
        value: Any,
        tries: int,
        enqueue_time: int = 0,
        start: int = 0,
        finish: int = 0,
        *,
        aborted: bool = False,
    ) -> Self:
        self = super().__new__(cls, success, value, tries, enqueue_time, start, finish)
        self.__dict__["aborted"] = aborted
        return self

    @property
    def aborted(self) -> bool:
        """Whether the task was aborted (or purged) rather than failing on its own."""
        return bool(self.__dict__.get("aborted", False))

    @property
    def duration_ms(self) -> int:
        """How long the last attempt ran (0 if it never started)."""
        return max(0, self.finish - self.start) if self.start else 0


class TaskInfo(NamedTuple):
    """A live task (queued, scheduled or running), as a named tuple."""

    task_id: str
    fn_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueue_time: int
    tries: int
    status: Status
    scheduled_at: int | None = None
    """Epoch ms at which a scheduled task becomes due (None when it is not waiting)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task kept after it failed for good, with why."""

    task_id: str
    fn_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: str
    error: str
    tries: int
    enqueue_time: int
    failed_at: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt of a task (``await job.attempts()``), kept by the workers while
    the app's ``history`` setting is on. Times are epoch milliseconds."""

    tries: int
    """The attempt's number (1 for the first)."""
    kind: str
    """How it ended: ``retry`` (it runs again), ``fail``, ``expired``, ``abort`` (aborted
    while running) or ``lost`` (its worker died once too often)."""
    worker: str
    """The worker that recorded it (for ``lost``: the one that found it lost)."""
    started_ms: int
    """When its body started; 0 when it never did."""
    finished_ms: int
    error: str
    """What went wrong (at most 2,000 bytes of it)."""


@dataclass(frozen=True, slots=True)
class CronState:
    """One cron of the app as the queue sees it (``await app.cron_states()``). Times are
    epoch milliseconds."""

    name: str
    schedule: str
    """The spec (``"0 9 * * 1-5"``) or the interval (``"every 60s"``)."""
    tz: str | None
    """The time zone the spec is read in (None: UTC, and always for ``every=``)."""
    paused: bool
    paused_ms: int | None
    """When it was paused (None: it is not)."""
    last_fired_ms: int | None
    """The last occurrence a worker fired (None: none yet). Triggered runs do not count."""
    next_ms: int | None
    """Its next occurrence after now, by this process's clock (skipped while paused; None:
    it never fires again)."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A completed task in the queue's history (``await app.history()``). Times are epoch
    milliseconds."""

    task_id: str
    fn_name: str
    priority: str
    """The lane it ran in."""
    kind: str
    """How it completed: ``ok``, ``fail``, ``expired``, ``abort`` or ``lost``."""
    tries: int
    enqueued_ms: int
    started_ms: int
    """When its last attempt started; 0 when it never did (expired, lost, aborted
    before running)."""
    finished_ms: int
    worker: str
    """The worker that completed it (for ``lost``: the one that found it lost)."""
    error: str | None
    """What went wrong (at most 2,000 bytes of it); None for ``ok``."""

    @property
    def duration_ms(self) -> int:
        """How long the last attempt ran (0 if it never started)."""
        return max(0, self.finished_ms - self.started_ms) if self.started_ms else 0


def decode_result(
    blob: bytes, deserialize: Deserializer, signer: Signer | None = None, task_id: str = ""
) -> TaskResult[Any]:
    """Decode a result record (PROTOCOL.md); a value that cannot be decoded says so.

    With a signing `signer`, a success value whose seal is missing or wrong raises
    :class:`~ardiq.signing.ResultSealError` before the deserializer sees it; a record that
    is not a result record raises :class:`ArdiqError`."""
    try:
        record = msgpack.unpackb(blob, raw=True)
        _version, ok, raw, tries, enq, start, fin, aborted = record
        if not isinstance(raw, bytes) or not all(type(n) is int for n in (tries, enq, start, fin)):
            raise ValueError("fields of the wrong type")
    except Exception as exc:
        raise ArdiqError(f"result record of task {task_id!r} is malformed: {exc}") from None
    value: Any
    if ok:
        if signer is not None:
            raw = signer.open_result(task_id, raw)
        try:
            value = deserialize(raw)
        except Exception as exc:  # the record is fine; only its value is not readable here
            ok, value = False, f"result could not be decoded: {exc!r}"
    else:
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return TaskResult(bool(ok), value, tries, enq, start, fin, aborted=bool(aborted))


def decode_payload(payload: bytes, deserialize: Deserializer) -> tuple[list[Any], dict[str, Any]]:
    """Arguments of a payload, or empty ones when it cannot be decoded (for display only)."""
    try:
        args, kwargs, *_ = deserialize(payload)
        return list(args), dict(kwargs)
    except Exception:
        return [], {}


class Job(Generic[R]):
    """A handle on one task by id: its result, status, info, and abort."""

    __slots__ = ("app", "id")

    def __init__(self, app: Ardiq, id: str) -> None:
        self.app = app
        self.id = id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    async def result(self, timeout: float | None = None) -> TaskResult[R] | None:
        """The result; ``None`` if there is none yet. With ``timeout`` (seconds), wait for
        it and raise ``TimeoutError`` if it does not arrive in time."""
        return await self.app.result(self.id, timeout=timeout)

    async def status(self) -> Status:
        """Where the task is now."""
        return await self.app.status(self.id)

    async def info(self) -> TaskInfo | None:
        """What the task is, while it is live; ``None`` once finished or unknown."""
        return await self.app.info(self.id)

    async def abort(self) -> bool:
        """Abort the task; ``False`` if it already finished or does not exist."""
        return await self.app.abort(self.id)

    async def progress(self) -> Progress | None:
        """The last progress the task reported, as a :class:`~ardiq.Progress` (value,
        message, tries, updated_ms); ``None`` when it reported none (yet). Kept as long
        as the result; cleared when an attempt is retried."""
        return await self.app.progress(self.id)

    def progress_sync(self) -> Progress | None:
        """Blocking twin of :meth:`progress`."""
        return self.app.progress_sync(self.id)

    async def attempts(self) -> list[Attempt]:
        """The task's failed attempts, oldest first (the last 25): kept while it is live
        and, once it completed, as long as its result. Empty when none failed, or when
        the workers keep no history (``history=0``)."""
        return await self.app.attempts(self.id)

    def result_sync(self, timeout: float | None = None) -> TaskResult[R] | None:
        """Blocking twin of :meth:`result`."""
        return self.app.result_sync(self.id, timeout=timeout)

    def status_sync(self) -> Status:
        """Blocking twin of :meth:`status`."""
        return self.app.status_sync(self.id)

    def info_sync(self) -> TaskInfo | None:
        """Blocking twin of :meth:`info`."""
        return self.app.info_sync(self.id)

    def abort_sync(self) -> bool:
        """Blocking twin of :meth:`abort`."""
        return self.app.abort_sync(self.id)

    def attempts_sync(self) -> list[Attempt]:
        """Blocking twin of :meth:`attempts`."""
        return self.app.attempts_sync(self.id)
