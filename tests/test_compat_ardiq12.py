"""Code written to the public ardiq 1.2's documented API runs on ours unchanged (issue 13,
"Same API, same behaviour"): the lifespan forms, the named-tuple models, the import
paths, `app.crons`, the errors users match on, the failure values, and `ardiq run -q`.

Behaviour that involves a worker runs against every worker kind (apps/compat12.py is the
app, written as 1.2's documentation shows)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import ardiq
import pytest
from apps.ledger import Ledger, exit_code
from ardiq import Ardiq, ErrorContext, Retry, State, TaskContext, TaskInfo, TaskResult
from support.workers import ROOT, TESTS, WorkerProcess, native_binary

UNREACHABLE = "redis://127.0.0.1:1"
APP = "apps.compat12:app"


@pytest.fixture
async def ledger(redis_url: str, queue: str) -> AsyncIterator[Ledger]:
    ledger = Ledger(redis_url, queue)
    yield ledger
    await ledger.close()


async def entries(ledger: Ledger, kind: str) -> list[Any]:
    return [json.loads(x) for x in await ledger.items(kind)]


# ------------------------------------------------------------------ lifespan
def test_lifespan_takes_no_argument_or_the_app() -> None:
    app = Ardiq(UNREACHABLE)

    async def documented() -> AsyncIterator[dict[str, Any]]:
        yield {}

    async def with_app(a: Ardiq) -> AsyncIterator[None]:
        yield

    assert app.lifespan(documented) is documented
    assert app.lifespan(with_app) is with_app


@pytest.mark.parametrize("form", ["no argument", "the app", "an optional app"])
async def test_lifespan_of_either_form_sets_state(redis_url: str, queue: str, form: str) -> None:
    app = Ardiq(redis_url, queue_name=queue, burst=True, poll_block_ms=50)
    seen: list[object] = []

    if form == "no argument":

        @app.lifespan
        async def lifespan() -> AsyncIterator[dict[str, Any]]:
            yield {"db": 1}
            seen.append("closed")

    elif form == "the app":

        @app.lifespan
        async def lifespan_app(a: Ardiq) -> AsyncIterator[dict[str, Any]]:
            seen.append(a)
            yield {"db": 1}
            seen.append("closed")

    else:

        @app.lifespan
        async def lifespan_opt(a: Ardiq | None = None) -> AsyncIterator[dict[str, Any]]:
            seen.append(a)
            yield {"db": 1}
            seen.append("closed")

    await app.run(engine="python")
    await app.aclose()
    assert app.state.db == 1
    assert seen == (["closed"] if form == "no argument" else [app, "closed"])


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda: None, id="lambda"),
        pytest.param(print, id="builtin"),
        pytest.param("not callable", id="string"),
    ],
)
def test_lifespan_that_is_not_an_async_generator_function(fn: Any) -> None:
    app = Ardiq(UNREACHABLE)
    with pytest.raises(TypeError, match="async generator"):
        app.lifespan(fn)


def test_lifespan_refuses_coroutine_and_plain_generator_functions() -> None:
    app = Ardiq(UNREACHABLE)

    async def coroutine() -> None: ...

    def generator() -> Any:
        yield {}

    for fn in (coroutine, generator):
        with pytest.raises(TypeError, match="async generator"):
            app.lifespan(fn)  # type: ignore[arg-type]


def test_lifespan_with_two_required_parameters_is_refused() -> None:
    app = Ardiq(UNREACHABLE)

    async def two(a: Any, b: Any) -> AsyncIterator[None]:
        yield

    with pytest.raises(TypeError, match="no argument or the app"):
        app.lifespan(two)  # type: ignore[type-var]


async def test_zero_argument_lifespan_around_every_worker_kind(
    redis_url: str,
    queue: str,
    make_app: Callable[..., Ardiq],
    start_worker: Callable[..., WorkerProcess],
    ledger: Ledger,
) -> None:
    producer = make_app()
    state = await producer.send("uses_state")
    worker = start_worker(APP, "--burst")
    assert exit_code(worker, 60) == 0, worker.output()
    assert await entries(ledger, "lifespan") == ["start", "stop"]
    r = await state.result()
    assert r is not None and r.success and r.value == "connected", r


async def test_lifespan_yielding_a_non_mapping_stops_the_worker(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    producer = make_app()
    job = await producer.send("uses_state")
    worker = start_worker(APP, "--burst", env={"COMPAT_LIFESPAN_YIELD": "list"})
    code = exit_code(worker, 60)
    out = worker.output()
    assert code != 0, out
    assert re.search(r"TypeError: .*mapping", out), out
    # What the lifespan set up was released (its `finally` ran), and nothing ran.
    assert await entries(ledger, "lifespan") == ["start", "stop"]
    assert await job.status() == "queued"


# ------------------------------------------------------------ named tuples
def test_task_result_is_the_six_field_tuple() -> None:
    r: TaskResult[int] = TaskResult(True, 5, 2, 100, 110, 150)
    assert isinstance(r, tuple) and len(r) == 6
    success, value, tries, enqueue_time, start, finish = r
    assert (success, value, tries, enqueue_time, start, finish) == (True, 5, 2, 100, 110, 150)
    assert r[1] == 5 and r[-1] == 150 and r[:3] == (True, 5, 2)
    assert TaskResult._fields == ("success", "value", "tries", "enqueue_time", "start", "finish")
    assert r._asdict() == {
        "success": True,
        "value": 5,
        "tries": 2,
        "enqueue_time": 100,
        "start": 110,
        "finish": 150,
    }
    assert r == (True, 5, 2, 100, 110, 150)
    assert r.duration_ms == 40 and r.aborted is False
    # The times default to 0, as there.
    assert TaskResult(False, "x", 1) == (False, "x", 1, 0, 0, 0)


def test_task_result_keeps_aborted_beside_the_tuple() -> None:
    r: TaskResult[Any] = TaskResult(False, "aborted", 1, 100, 0, 120, aborted=True)
    assert len(r) == 6 and r.aborted is True
    assert "aborted" not in r._asdict()
    assert r._replace(tries=2).aborted is True and r._replace(tries=2).tries == 2
    assert r._replace(aborted=False).aborted is False
    for copy in (pickle.loads(pickle.dumps(r)), __import__("copy").deepcopy(r)):
        assert type(copy) is TaskResult and copy == r and copy.aborted is True
    assert "aborted=True" in repr(r)
    with pytest.raises(AttributeError):
        r.aborted = False  # type: ignore[misc]
    # The tuple's own constructor (as `_make` uses it) gives a not-aborted result.
    assert TaskResult._make([False, "x", 1, 0, 0, 0]).aborted is False


def test_task_context_is_the_three_field_tuple_with_headers_beside() -> None:
    ctx = TaskContext("id-1", "send_email", 2, headers={"trace": "t"})
    task_id, name, tries = ctx
    assert (task_id, name, tries) == ("id-1", "send_email", 2) and len(ctx) == 3
    assert ctx[0] == "id-1" and TaskContext._fields == ("task_id", "name", "tries")
    assert ctx._asdict() == {"task_id": "id-1", "name": "send_email", "tries": 2}
    assert ctx.headers == {"trace": "t"}
    again = ctx._replace(tries=3)
    assert again.tries == 3 and again.headers == {"trace": "t"}
    assert pickle.loads(pickle.dumps(ctx)).headers == {"trace": "t"}
    assert TaskContext("a", "b", 1).headers == {}


def test_error_context_is_the_five_field_tuple() -> None:
    exc = ValueError("boom")
    ctx = ErrorContext("t", "id-1", exc, 1, True)
    name, task_id, error, tries, will_retry = ctx
    assert (name, task_id, error, tries, will_retry) == ("t", "id-1", exc, 1, True)
    assert ErrorContext._fields == ("name", "task_id", "exc", "tries", "will_retry")
    assert ctx._replace(will_retry=False).will_retry is False
    assert ctx[2] is exc


def test_task_info_is_the_eight_field_tuple() -> None:
    assert TaskInfo._fields == (
        "task_id",
        "fn_name",
        "args",
        "kwargs",
        "enqueue_time",
        "tries",
        "status",
        "scheduled_at",
    )
    info = TaskInfo("id", "f", (1,), {}, 5, 0, ardiq.Status.QUEUED)
    assert info.scheduled_at is None and len(info) == 8


async def test_info_and_result_from_redis_are_the_tuples(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    producer = make_app()
    job = await producer.send("unpacks_context")
    info = await job.info()
    assert isinstance(info, TaskInfo)
    task_id, fn_name, args, kwargs, enqueue_time, tries, status, scheduled_at = info
    assert (task_id, fn_name, args, kwargs, tries, status, scheduled_at) == (
        job.id,
        "unpacks_context",
        (),
        {},
        0,
        "queued",
        None,
    )
    assert type(args) is tuple and enqueue_time > 0
    delayed = await producer.ref("uses_state").options(delay_ms=60_000).enqueue()
    later = await delayed.info()
    assert later is not None and later.status == "scheduled" and later.scheduled_at

    worker = start_worker(APP, "--burst")
    assert exit_code(worker, 60) == 0, worker.output()
    result = await job.result()
    assert isinstance(result, TaskResult) and len(result) == 6
    success, value, tries, enqueue_time, start, finish = result
    assert success and tries == 1 and enqueue_time <= start <= finish
    # Inside the task, current_task() unpacked as three fields, indexing and _asdict too.
    assert value == [job.id, "unpacks_context", 1, "unpacks_context", list(TaskContext._fields), 9]
    assert result.aborted is False


# ------------------------------------------------------------- import paths
def test_import_paths() -> None:
    import ardiq.models as models

    # `from ardiq import State` (above) and `from ardiq.models import ...` both work.
    assert models.State is State
    assert (models.TaskResult, models.TaskInfo) == (TaskResult, TaskInfo)
    assert (models.TaskContext, models.ErrorContext) == (TaskContext, ErrorContext)
    assert "State" in ardiq.__all__
    app = Ardiq(UNREACHABLE)
    assert isinstance(app.state, State)
    with pytest.raises(AttributeError, match=r"@app\.lifespan"):
        _ = app.state.missing


def test_import_ardiq_models_stays_lean() -> None:
    probe = "import sys, ardiq.models; print('redis' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------- crons
def test_crons_are_names_and_cron_jobs_the_objects() -> None:
    app = Ardiq(UNREACHABLE)

    @app.cron(every=60)
    def first() -> None: ...

    @app.task
    def plain() -> None: ...

    @app.cron("0 * * * *", name="second")
    def other() -> None: ...

    assert app.crons == ["first", "second"]
    assert app.tasks == ["first", "plain", "second"]
    assert [job.name for job in app.cron_jobs] == ["first", "second"]
    assert isinstance(app.cron_jobs[0], ardiq.CronJob) and app.cron_jobs[1].task is other


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("url", ["", " ", "\t\n"])
def test_blank_redis_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url"):
        Ardiq(url)


def test_duplicate_task_name_says_who_registered_it() -> None:
    app = Ardiq(UNREACHABLE)

    @app.task
    def job() -> None: ...

    def other() -> None: ...

    with pytest.raises(ValueError, match=rf"already registered by {re.escape(__name__)}"):
        app.task(name="job")(other)
    with pytest.raises(ValueError, match=rf"already registered by {re.escape(__name__)}"):
        app.cron(every=5, name="job")(other)

    @app.cron(every=5)
    def tick() -> None: ...

    with pytest.raises(ValueError, match=rf"already registered by {re.escape(__name__)}"):
        app.task(name="tick")(other)


def test_callable_without_name_asks_for_an_explicit_name() -> None:
    app = Ardiq(UNREACHABLE)

    def add(a: int, b: int) -> int:
        return a + b

    part = functools.partial(add, 1)
    with pytest.raises(TypeError, match="explicit name"):
        app.task(part)
    with pytest.raises(TypeError, match="explicit name"):
        app.cron(every=5)(functools.partial(add, 1, 2))
    assert app.task(name="add_one")(part)(2) == 3


def test_unknown_default_priority_is_not_one_of_the_lanes() -> None:
    with pytest.raises(ValueError, match="not one of") as info:
        Ardiq(UNREACHABLE, priorities=["low", "high"], default_priority="urgent")
    assert "low" in str(info.value) and "high" in str(info.value)


# ------------------------------------------------------------ failure values
def test_retry_repr_is_what_the_user_wrote() -> None:
    assert repr(Retry("msg")) == "Retry('msg')"
    assert repr(Retry("msg", delay_ms=50)) == "Retry('msg')"
    assert Retry("msg", delay_ms=50).delay_ms == 50
    assert repr(Retry()) == "Retry('retry requested')"


async def test_failure_values_of_timeouts_and_spent_retries(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess], ledger: Ledger
) -> None:
    producer = make_app()
    jobs = {
        name: await producer.send(name)
        for name in (
            "slow_float",
            "slow_int",
            "gives_up",
            "gives_up_after_delay",
            "gives_up_default",
        )
    }
    # A serving worker, not a burst one: what is checked here is the values, and each
    # result is awaited as it lands (a retry falls due a second after its attempt).
    worker = start_worker(APP)
    values = {}
    for name, job in jobs.items():
        r = await job.result(timeout=60)
        assert r is not None and not r.success, (name, r, worker.output())
        values[name] = r.value
    assert worker.stop() == 0, worker.output()
    assert values == {
        "slow_float": "timed out after 0.2s",
        "slow_int": "timed out after 1s",
        "gives_up": "Retry('msg')",
        "gives_up_after_delay": "Retry('later')",
        "gives_up_default": "Retry('retry requested')",
    }
    dead = {d.fn_name: d.error for d in await producer.dead_letters()}
    assert dead["slow_float"] == "timed out after 0.2s"
    assert dead["gives_up"] == "Retry('msg')"
    # The error hooks unpacked five fields; a timeout is a TimeoutError there.
    errors = {e[0]: e for e in await entries(ledger, "errors")}
    assert errors["slow_float"][2:5] == ["TimeoutError", 1, False]
    assert errors["gives_up"][1] == jobs["gives_up"].id
    assert errors["gives_up"][2:] == ["Retry", 2, False, list(ErrorContext._fields)]


# --------------------------------------------------------------- ardiq run -q
def binary() -> str:
    exe = native_binary()
    if exe is None:
        pytest.fail("the native `ardiq` binary is not built: run `make build` first")
    return exe


def run_binary(*args: str, redis_url: str, queue: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "VIRTUAL_ENV": sys.prefix,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT / "python")]),
        "ARDIQ_REDIS_URL": redis_url,
        "ARDIQ_TEST_QUEUE": queue,
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [binary(), *args], env=env, cwd=TESTS, capture_output=True, text=True, timeout=90
    )


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_quiet_prints_no_banner_but_one_starting_line_and_the_stop_line(
    redis_url: str, queue: str, flag: str
) -> None:
    out = run_binary(
        "run", APP, "--burst", flag, "--concurrency", "3", redis_url=redis_url, queue=queue
    )
    assert out.returncode == 0, out.stderr
    assert "ardiq 0." not in out.stderr and "concurrency  " not in out.stderr  # no banner
    info = [ln for ln in out.stderr.splitlines() if " INFO " in ln]
    starting = [ln for ln in info if "worker starting" in ln]
    assert len(starting) == 1, out.stderr
    line = starting[0]
    assert f"queue={queue}" in line, line
    assert "concurrency=3" in line and "prefetch=6" in line and "burst=true" in line, line
    assert "tasks=8" in line and "crons=1" in line, line  # hourly is a cron, counted in tasks
    assert [ln for ln in info if "worker stopped" in ln], out.stderr


def test_without_quiet_the_banner_shows(redis_url: str, queue: str) -> None:
    out = run_binary("run", APP, "--burst", redis_url=redis_url, queue=queue)
    assert out.returncode == 0, out.stderr
    assert "ardiq 0." in out.stderr and "worker starting" in out.stderr
