"""`ardiq.contrib.django`: Django's task framework on ArdiQ, end to end.

A minimal project (tests/djproject, tests/djapp, sqlite) enqueues from views through
Django's test client; worker processes (`ardiq.contrib.django:app`) run the tasks; results
are read back through Django's API. Django 6 (`django.tasks`) needs Python 3.12, where only
the pure-Python worker kind exists here; on 3.11 the `django-tasks` backport runs the same
tests on every worker kind. (`make test-django` runs both.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The dev extra installs Django (the django-tasks backport on Python 3.11): a missing one
# is an error, not a skip.
import django
import pytest

try:
    import django.tasks  # noqa: F401
except ImportError:
    import django_tasks  # noqa: F401

from support.redis_server import RedisServer
from support.workers import WorkerProcess, native_binary, native_extension_error

# Django 6 needs Python 3.12: neither native kind embeds that here.
KINDS = ["incode"] if sys.version_info >= (3, 12) else ["incode", "inproc", "native"]
if os.environ.get("ARDIQ_NATIVE", "1") != "1":
    KINDS = ["incode"]


@pytest.fixture(scope="module")
def django_env(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Configure Django once for this module (settings are process-wide); the variables
    are taken back afterwards, for the tests that follow in this process."""
    env = {
        "ARDIQ_REDIS_URL": redis_server.url,
        "ARDIQ_DJANGO_PREFIX": f"dj-{uuid.uuid4().hex[:8]}-",
        "ARDIQ_DJANGO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    yield env
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "native" and native_binary() is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    if kind == "inproc" and (why := native_extension_error()) is not None:
        pytest.fail(why)
    return kind


@pytest.fixture
def worker(
    kind: str, django_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(*flags: str, **env: str) -> WorkerProcess:
        proc = WorkerProcess(
            kind, "ardiq.contrib.django:app", *flags, env={**django_env, **env}, log_dir=tmp_path
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
        proc.close()


def post(name: str, **body: Any) -> str:
    from django.test import Client

    response = Client().post(f"/enqueue/{name}", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    task_id: str = response.json()["id"]
    return task_id


def wait_finished(task: Any, task_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = task.get_result(task_id)
        if result.is_finished:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not finished: {result.status}")
        time.sleep(0.05)


def status_name(result: Any) -> str:
    return str(result.status)


# ----------------------------------------------------------------- the backend declares
def test_backend_declares_what_it_supports(django_env: dict[str, str]) -> None:
    from djapp import tasks

    backend = tasks.add.get_backend()
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority
    from ardiq.contrib.django._compat import BACKPORT

    # each framework's documented default: Django 6 enqueues at once, the backport on commit
    assert backend.enqueue_on_commit is BACKPORT
    assert tasks.count_notes_on_commit.get_backend().enqueue_on_commit is True


def test_priorities_map_onto_lanes(django_env: dict[str, str]) -> None:
    from djapp import tasks

    backend = tasks.add.get_backend()
    three = ["low", "default", "high"]
    assert [backend.lane_for(p, three) for p in (-100, -1, 0, 1, 100)] == [
        "low", "low", "default", "high", "high"
    ]  # fmt: skip
    five = ["a", "b", "c", "d", "e"]
    assert [backend.lane_for(p, five) for p in (-100, -51, -50, -1, 0, 1, 50, 51, 100)] == [
        "a", "a", "b", "b", "c", "d", "d", "e", "e"
    ]  # fmt: skip
    assert backend.lane_for(100, ["only"]) == "only"


def test_unknown_result_id_does_not_exist(django_env: dict[str, str]) -> None:
    from ardiq.contrib.django._compat import TaskResultDoesNotExist
    from djapp import tasks

    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result("no-such-id")


def test_backend_refuses_what_django_says_is_invalid(django_env: dict[str, str]) -> None:
    """Validation happens at definition and at enqueue, before anything reaches Redis."""
    from datetime import datetime, timedelta

    from ardiq.contrib.django._compat import BACKPORT, Task
    from djapp import tasks

    if BACKPORT:
        from django_tasks import task
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
    else:
        from django.tasks import task
        from django.tasks.exceptions import InvalidTask

    def nested() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(tasks.add.func)
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=datetime.now() + timedelta(seconds=1))
    with pytest.raises(InvalidTask, match="Queue"):
        tasks.add.using(queue_name="nowhere")
    assert isinstance(tasks.double, Task)  # async tasks are accepted


def test_enqueue_sends_the_enqueued_signal(django_env: dict[str, str]) -> None:
    from ardiq.contrib.django._compat import TaskResultStatus, task_enqueued
    from djapp import tasks

    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = tasks.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(receiver)
    assert [r.id for r in seen] == [result.id]
    assert result.status == TaskResultStatus.READY and result.enqueued_at is not None
    assert result.backend == "default" and result.args == [1, 2]


# --------------------------------------------------------------- end to end, each kind
def test_view_enqueues_and_result_reads_back(worker: Callable[..., WorkerProcess]) -> None:
    from ardiq.contrib.django._compat import SUCCESSFUL, TaskResultStatus
    from djapp import tasks

    task_id = post("add", args=[2], kwargs={"b": 3})
    queued = tasks.add.get_result(task_id)
    assert queued.status == TaskResultStatus.READY
    assert queued.args == [2] and queued.kwargs == {"b": 3}
    with pytest.raises(ValueError, match="not finished"):
        _ = queued.return_value
    proc = worker()
    result = wait_finished(tasks.add, task_id)
    assert result.status == SUCCESSFUL, proc.output()
    assert result.return_value == 5
    assert result.errors == []
    assert result.attempts == 1 and len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    # refresh() updates a result in place
    queued.refresh()
    assert queued.status == SUCCESSFUL and queued.return_value == 5

    async_id = post("double", args=[21])  # an async task
    assert wait_finished(tasks.double, async_id).return_value == 42

    async def from_async_code() -> Any:  # Django's async API: aenqueue, aget_result
        enqueued = await tasks.add.aenqueue(20, 22)
        while not (await tasks.add.aget_result(enqueued.id)).is_finished:
            await asyncio.sleep(0.05)
        return await tasks.add.aget_result(enqueued.id)

    assert asyncio.run(from_async_code()).return_value == 42


def test_failure_records_error_and_does_not_retry(worker: Callable[..., WorkerProcess]) -> None:
    from ardiq.contrib.django._compat import TaskResultStatus
    from djapp import tasks

    task_id = post("boom", args=["it broke"])
    worker()
    result = wait_finished(tasks.boom, task_id)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 1  # Django's semantics: no retry unless configured
    (error,) = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "Traceback" in error.traceback and "it broke" in error.traceback
    assert "in boom" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_configured_retries_keep_each_attempts_error(
    worker: Callable[..., WorkerProcess],
) -> None:
    from ardiq.contrib.django._compat import SUCCESSFUL
    from djapp import tasks

    key = uuid.uuid4().hex
    task_id = post("flaky", args=[key, 2])
    proc = worker(ARDIQ_DJANGO_BACKEND="retrying")
    result = wait_finished(tasks.flaky, task_id)
    assert result.status == SUCCESSFUL, (result.errors, proc.output())
    assert result.return_value == 3
    assert result.attempts == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    assert "failure 1" in result.errors[0].traceback
    assert "failure 2" in result.errors[1].traceback


def test_context_deferred_run_priority_and_queues(
    worker: Callable[..., WorkerProcess], django_env: dict[str, str]
) -> None:
    from ardiq.contrib.django._compat import TaskResultStatus
    from djapp import tasks

    deferred = post("add", args=[1, 1], delay_s=1.5)
    high = post("whoami", args=["hi"], priority=100)
    other = post("add", args=[4, 4], queue="other")
    from django.conf import settings

    prefix = settings.TASKS["default"]["OPTIONS"]["queue_prefix"]
    # the high-priority task went to the top lane
    import redis

    r = redis.Redis.from_url(django_env["ARDIQ_REDIS_URL"])
    assert r.xlen(f"ardiq:{{{prefix}default}}:stream:high") == 1
    worker()
    result = wait_finished(tasks.whoami, high)
    assert result.return_value == {"id": high, "attempt": 1, "tag": "hi"}
    assert tasks.add.get_result(deferred).status == TaskResultStatus.READY
    finished = wait_finished(tasks.add, deferred)
    assert finished.return_value == 2
    assert finished.started_at >= finished.enqueued_at
    # a Django queue is an ArdiQ queue of its own: this worker serves "default" only
    assert tasks.add.get_result(other).status == TaskResultStatus.READY
    worker(ARDIQ_DJANGO_QUEUE="other")
    assert wait_finished(tasks.add, other).return_value == 8


def test_timeout_error_and_result_retention(worker: Callable[..., WorkerProcess]) -> None:
    """An attempt ArdiQ ends (the `timeout` option) is a failure with an error that says
    so; results last as long as `result_ttl_ms` says, then do not exist."""
    from ardiq.contrib.django._compat import SUCCESSFUL, TaskResultDoesNotExist, TaskResultStatus
    from djapp import tasks

    slow = post("sleepy", args=[30], backend="strict")
    quick = post("add", args=[1, 2], backend="strict")
    worker(ARDIQ_DJANGO_BACKEND="strict")
    sleepy = tasks.sleepy.using(backend="strict")
    add = tasks.add.using(backend="strict")
    result = wait_finished(sleepy, slow)
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class_path == "ardiq.errors.ArdiqError"
    assert "timed out after 0.5s" in error.traceback
    assert wait_finished(add, quick).status == SUCCESSFUL
    deadline = time.monotonic() + 20
    while True:
        try:
            add.get_result(quick)
        except TaskResultDoesNotExist:
            break
        assert time.monotonic() < deadline, "the result outlived result_ttl_ms"
        time.sleep(0.1)


def test_connections_are_closed_around_each_task(worker: Callable[..., WorkerProcess]) -> None:
    from djapp import tasks

    touched = post("touch_db")
    worker()
    assert wait_finished(tasks.touch_db, touched).return_value is True
    checked = post("db_closed")
    assert wait_finished(tasks.db_closed, checked).return_value == [True]


def test_enqueue_on_commit(worker: Callable[..., WorkerProcess]) -> None:
    from ardiq.contrib.django._compat import TaskResultDoesNotExist
    from django.test import Client
    from djapp import tasks

    worker(ARDIQ_DJANGO_BACKEND="oncommit")
    committed = Client().post("/note").json()["id"]
    result = wait_finished(tasks.count_notes_on_commit, committed)
    assert result.return_value >= 1  # the task saw the note: it was enqueued after commit
    rolled_back = Client().post("/note?fail=1").json()["id"]
    time.sleep(0.5)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.count_notes_on_commit.get_result(rolled_back)


def test_only_registered_django_tasks_run(
    worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """An entry naming an importable callable that is no Django task (`os.system`) fails
    as an unknown task: nothing runs, nothing is imported for it."""
    from ardiq import Ardiq
    from django.conf import settings

    options = settings.TASKS["default"]["OPTIONS"]
    app = Ardiq(queue_name=f"{options['queue_prefix']}default",
                priorities=["low", "default", "high"])  # fmt: skip
    marker = tmp_path / "pwned"
    attacks = [
        app.send_sync("os.system", f"touch {marker}"),
        app.send_sync("djapp.tasks._ledger.delete", "x"),  # a project object, not a task
        app.send_sync("djapp.models.Note.objects.all"),
    ]
    worker()
    for job in attacks:
        result = job.result_sync(timeout=30)
        assert result is not None and not result.success
        assert "unknown task" in str(result.value)
    assert not marker.exists()
    app.close_sync()


def test_mismatched_task_is_refused(django_env: dict[str, str]) -> None:
    from ardiq.contrib.django._compat import TaskResultMismatch
    from djapp import tasks

    task_id = post("add", args=[1, 2])
    with pytest.raises(TaskResultMismatch):
        tasks.boom.get_result(task_id)
