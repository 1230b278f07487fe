"""Helpers for users' own tests.

``async with ardiq.testing.inline(app):`` makes every enqueue run its task to completion
before returning, in this process and without Redis. Results, status, dead letters and
replay are kept in memory. Tasks run through the same runtime as a real worker (arguments
are serialized and decoded, middleware, hooks, timeouts and retries all apply), except that
retry backoffs, delays and schedules are not waited for. Progress a task reports is kept
in memory as a worker keeps it: ``job.progress()`` returns the last value once the task
ran (values are throttled and pass through JSON, as with a worker), cleared on retry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .jobs import DeadLetter, Job, Status, TaskResult, decode_payload
from .progress import Progress
from .runtime import FAIL, OK, RETRY, Delivery, Runtime, now_ms
from .signing import Binding, SignatureError

if TYPE_CHECKING:
    from .app import Ardiq
    from .client import EncodedTask

__all__ = ["InlineQueue", "inline"]


class InlineQueue:
    """The in-memory queue behind :func:`inline`."""

    def __init__(self, app: Ardiq) -> None:
        self.app = app
        self.runtime = Runtime(app, "inline")
        self.results: dict[str, TaskResult[Any]] = {}
        self.dead: dict[str, tuple[EncodedTask, DeadLetter]] = {}
        self.progress: dict[str, Progress] = {}
        self.paused_crons: dict[str, int] = {}
        """Crons paused while inline (crons do not fire inline; triggers run at once)."""
        self._running: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._runs = itertools.count()
        self.runtime.write_progress_with(asyncio.get_running_loop(), self._write_progress)

    def _write_progress(self, d: Delivery, tries: int, value: str, message: str) -> None:
        # Kept as a worker's `progress` script would keep it (JSON in, JSON out).
        self.progress[d.task_id] = Progress(json.loads(value), json.loads(message), tries, now_ms())

    async def enqueue(self, tasks: list[EncodedTask]) -> list[Job[Any]]:
        for task in tasks:
            if task.task_id not in self._running:
                await self._run(task)
        return [Job(self.app, t.task_id) for t in tasks]

    async def _run(self, task: EncodedTask) -> None:
        self.results.pop(task.task_id, None)
        self.progress.pop(task.task_id, None)
        self._running.add(task.task_id)
        enqueued, tries = now_ms(), 0
        try:
            while True:
                # An entry id of its own per attempt (a body may enqueue, and so run,
                # another task inline while it runs).
                d = Delivery(
                    f"inline-{next(self._runs)}",
                    task.lane,
                    task.task_id,
                    task.name,
                    task.payload,
                    tries,
                    enqueued,
                )
                outcome = await self.runtime.execute(d)
                tries = outcome.tries
                if outcome.kind != RETRY:
                    break
                self.progress.pop(task.task_id, None)  # as `finish` deletes it on retry
        finally:
            self._running.discard(task.task_id)
        ok = outcome.kind == OK
        value: Any
        if ok:
            # Sealed by the runtime and checked here, as a producer checks a stored result.
            value = self.app.deserializer(self.app._signer.open_result(task.task_id, outcome.value))
        else:
            value = outcome.value.decode("utf-8", "replace")
        self.results[task.task_id] = TaskResult(
            ok, value, tries, enqueued, outcome.start_ms, now_ms(), aborted=outcome.kind == "abort"
        )
        if outcome.kind == FAIL:
            try:
                binding = Binding(self.app.queue_name, task.lane, task.task_id, task.name)
                body = self.app._signer.open(binding, task.payload).body
            except SignatureError:
                body = b""
            args, kwargs = decode_payload(body, self.app.deserializer)
            letter = DeadLetter(
                task.task_id, task.name, args, kwargs, task.lane, value, tries, enqueued, now_ms()
            )
            self.dead[task.task_id] = (task, letter)
        for fut in self._waiters.pop(task.task_id, []):
            if not fut.done():
                fut.set_result(None)

    def result(self, task_id: str) -> TaskResult[Any] | None:
        return self.results.get(task_id)

    async def wait(self, task_id: str, timeout: float) -> TaskResult[Any]:
        """The result, waiting up to `timeout` seconds for a task enqueued meanwhile."""
        result = self.results.get(task_id)
        if result is not None:
            return result
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"no result for task {task_id!r} within {timeout}s") from None
        finally:
            group = self._waiters.get(task_id)
            if group is not None and fut in group:
                group.remove(fut)
                if not group:
                    del self._waiters[task_id]
        return self.results[task_id]

    def last_progress(self, task_id: str) -> Progress | None:
        return self.progress.get(task_id)

    def status(self, task_id: str) -> Status:
        if task_id in self._running:
            return Status.RUNNING
        return Status.COMPLETE if task_id in self.results else Status.NOT_FOUND

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        letters = [letter for _, letter in self.dead.values()]
        return sorted(letters, key=lambda x: x.failed_at, reverse=True)[:limit]

    async def replay(self, task_id: str) -> Job[Any] | None:
        entry = self.dead.pop(task_id, None)
        if entry is None:
            return None
        await self._run(entry[0])
        return Job(self.app, task_id)

    def delete_dead(self, task_id: str) -> bool:
        return self.dead.pop(task_id, None) is not None


@asynccontextmanager
async def inline(app: Ardiq) -> AsyncIterator[InlineQueue]:
    """Run every task enqueued on `app` inline, to completion, without Redis."""
    if app._inline is not None:
        raise RuntimeError("ardiq.testing.inline is already active for this app")
    queue = InlineQueue(app)
    app._inline = queue
    try:
        yield queue
    finally:
        app._inline = None
        queue.runtime.close()
