"""Defining tasks and crons (API §2): decoration, options, binding and cron schedules."""

from __future__ import annotations

import calendar
import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import ardiq
import pytest
from ardiq import Ardiq, BoundTask, PreparedTask, Task
from ardiq.cron import CronSpec, Every, parse_schedule

UNREACHABLE = "redis://127.0.0.1:1"


def ms(*when: int) -> int:
    """Epoch ms of a UTC datetime (year, month, day, hour, minute)."""
    return calendar.timegm(datetime(*when, tzinfo=UTC).timetuple()) * 1000  # type: ignore[misc]


def at(epoch_ms: int | None) -> datetime:
    assert epoch_ms is not None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


@pytest.fixture
def app() -> Ardiq:
    return Ardiq(UNREACHABLE, queue_name="tasks", priorities=["low", "default", "high"])


# ------------------------------------------------------------------ decoration
def test_bare_decorator_on_async_function(app: Ardiq) -> None:
    @app.task
    async def fetch(url: str) -> int:
        """Fetch a page."""
        return len(url)

    assert isinstance(fetch, Task)
    assert fetch.name == "fetch"
    assert fetch.is_async
    assert fetch.priority == "default"
    assert fetch.max_retries == 3
    assert fetch.backoff_ms == 0
    assert fetch.timeout is None
    assert fetch.unique is False
    assert fetch.__doc__ == "Fetch a page."
    assert app.tasks == ["fetch"]


def test_bare_decorator_on_sync_function(app: Ardiq) -> None:
    @app.task
    def resize(w: int, h: int) -> int:
        return w * h

    assert isinstance(resize, Task)
    assert not resize.is_async
    assert resize(2, 3) == 6


def test_decorator_with_options(app: Ardiq) -> None:
    @app.task(name="mail.send", max_retries=0, backoff_ms=250, timeout=1.5, priority="high")
    async def send_mail(to: str) -> None: ...

    assert send_mail.name == "mail.send"
    assert (send_mail.max_retries, send_mail.backoff_ms, send_mail.timeout) == (0, 250, 1.5)
    assert send_mail.priority == "high"
    assert app.tasks == ["mail.send"]


def test_decorator_with_empty_parentheses(app: Ardiq) -> None:
    @app.task()
    def f() -> int:
        return 1

    assert f.name == "f" and f() == 1


def test_unique_option(app: Ardiq) -> None:
    @app.task(unique=True)
    async def u() -> None: ...

    assert u.unique is True
    assert u.prepare().unique is True


async def test_call_runs_async_function_directly(app: Ardiq) -> None:
    @app.task
    async def double(x: int) -> int:
        return x * 2

    assert await double(21) == 42


def test_call_runs_sync_function_directly(app: Ardiq) -> None:
    calls: list[int] = []

    @app.task
    def record(x: int) -> int:
        calls.append(x)
        return x

    assert record(7) == 7
    assert record(x=8) == 8
    assert calls == [7, 8]


def test_duplicate_name_names_the_module_of_the_first(app: Ardiq) -> None:
    @app.task
    def job() -> None: ...

    def other() -> None: ...

    other.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match=__name__):
        app.task(name="job")(other)
    assert app.tasks == ["job"]


def test_duplicate_name_across_task_and_cron(app: Ardiq) -> None:
    @app.cron(every=10)
    def tick() -> None: ...

    with pytest.raises(ValueError, match="tick"):

        @app.task
        def tick() -> None: ...


def test_callable_without_name_needs_name(app: Ardiq) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    part = functools.partial(add, 1)
    with pytest.raises(TypeError, match="name="):
        app.task(part)
    named = app.task(name="add_one")(part)
    assert named.name == "add_one"
    assert named(2) == 3


def test_callable_object_without_name_needs_name(app: Ardiq) -> None:
    class Adder:
        def __call__(self, a: int) -> int:
            return a + 1

    with pytest.raises(TypeError):
        app.task(Adder())
    t = app.task(name="adder")(Adder())
    assert t(1) == 2


def test_async_callable_object_is_async(app: Ardiq) -> None:
    class Fetch:
        async def __call__(self) -> int:
            return 1

    t = app.task(name="fetch_obj")(Fetch())
    assert t.is_async


def test_partial_of_async_function_is_async(app: Ardiq) -> None:
    async def f(a: int) -> int:
        return a

    assert app.task(name="p")(functools.partial(f, 1)).is_async


def test_non_callable_is_rejected(app: Ardiq) -> None:
    with pytest.raises(TypeError):
        app.task(42)  # type: ignore[call-overload]


def test_unknown_priority_raises_at_decoration(app: Ardiq) -> None:
    with pytest.raises(ValueError, match="urgent") as info:

        @app.task(priority="urgent")
        def f() -> None: ...

    text = str(info.value)
    assert "no worker reads that lane" in text
    for lane in ("low", "default", "high"):
        assert lane in text
    assert app.tasks == []


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("max_retries", -1, ValueError),
        ("max_retries", "3", TypeError),
        ("backoff_ms", -1, ValueError),
        ("backoff_ms", 1.5, TypeError),
        ("timeout", 0, ValueError),
        ("timeout", -1.0, ValueError),
        ("timeout", "5", ValueError),
    ],
)
def test_bad_task_options(app: Ardiq, option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        app.task(**{option: value})(lambda: None)  # type: ignore[call-overload]
    assert app.tasks == []


def test_task_repr(app: Ardiq) -> None:
    @app.task(priority="low")
    def f() -> None: ...

    assert repr(f) == "Task('f', priority='low')"


# ------------------------------------------------------------------------ ref
def test_ref_calling_raises_type_error(app: Ardiq) -> None:
    handle = app.ref("elsewhere.task")
    assert isinstance(handle, Task)
    assert handle.name == "elsewhere.task"
    assert handle.priority == "default"
    with pytest.raises(TypeError, match="enqueue"):
        handle(1, 2)


def test_ref_options(app: Ardiq) -> None:
    handle = app.ref("t", priority="high", unique=True)
    p = handle.prepare(1, x=2)
    assert (p.name, p.args, p.kwargs, p.priority, p.unique) == ("t", (1,), {"x": 2}, "high", True)


def test_ref_unknown_priority(app: Ardiq) -> None:
    with pytest.raises(ValueError, match="urgent"):
        app.ref("t", priority="urgent")


def test_ref_needs_a_name(app: Ardiq) -> None:
    with pytest.raises(ValueError):
        app.ref("")


def test_ref_is_not_registered(app: Ardiq) -> None:
    app.ref("t")
    assert app.tasks == []


# ----------------------------------------------------------------- binding
async def test_enqueue_binds_arguments_before_redis(app: Ardiq) -> None:
    @app.task
    async def f(a: int, b: int = 2, *, c: int = 3) -> int:
        return a + b + c

    # The app's Redis is unreachable: a TypeError (not a BrokerError) proves the check
    # happens before anything is sent.
    with pytest.raises(TypeError, match="'f'"):
        await f.enqueue()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await f.enqueue(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await f.enqueue(1, d=4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await f.options(delay_ms=5).enqueue(b=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        f.prepare(1, 2, 3, 4)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await app.send("f", 1, 2, 3, 4)
    with pytest.raises(TypeError):
        f.enqueue_sync()  # type: ignore[call-arg]


async def test_bad_arguments_reach_nothing(make_app: Callable[..., Ardiq]) -> None:
    real = make_app()

    @real.task
    async def g(a: int) -> int:
        return a

    with pytest.raises(TypeError):
        await g.enqueue(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await real.enqueue_many([g.prepare(1), g.prepare(1, 2)])  # type: ignore[call-arg]
    assert await real.queue_size() == 0


def test_prepare_records_the_call(app: Ardiq) -> None:
    @app.task(priority="high")
    def f(a: int, *rest: int, k: str = "x", **extra: int) -> None: ...

    p = f.prepare(1, 2, 3, k="y", z=9)
    assert isinstance(p, PreparedTask)
    assert p.name == "f"
    assert p.args == (1, 2, 3)
    assert p.kwargs == {"k": "y", "z": 9}
    assert p.priority == "high"
    assert (p.task_id, p.delay_ms, p.schedule_ms, p.expire_ms, p.unique) == (
        None,
        0,
        0,
        0,
        False,
    )


# ----------------------------------------------------------------- options()
def test_options_returns_bound_task(app: Ardiq) -> None:
    @app.task
    def f(a: int) -> None: ...

    bound = f.options(
        task_id="id-1", priority="low", delay_ms=10, schedule_ms=20, expire_ms=30, unique=True
    )
    assert isinstance(bound, BoundTask)
    p = bound.prepare(5)
    assert (p.task_id, p.priority, p.delay_ms, p.schedule_ms, p.expire_ms, p.unique) == (
        "id-1",
        "low",
        10,
        20,
        30,
        True,
    )
    assert p.args == (5,)
    # The task itself is unchanged.
    assert f.prepare(5).priority == "default"


def test_options_unique_none_keeps_the_task_setting(app: Ardiq) -> None:
    @app.task(unique=True)
    def f() -> None: ...

    assert f.options().prepare().unique is True
    assert f.options(unique=False).prepare().unique is False


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"priority": "urgent"}, ValueError),
        ({"task_id": ""}, ValueError),
        ({"task_id": 5}, ValueError),
        ({"delay_ms": -1}, ValueError),
        ({"schedule_ms": -1}, ValueError),
        ({"expire_ms": -1}, ValueError),
        ({"delay_ms": 1.5}, TypeError),
        ({"schedule_ms": "5"}, TypeError),
        ({"expire_ms": True}, TypeError),
    ],
)
def test_options_validation(app: Ardiq, kwargs: dict[str, object], error: type[Exception]) -> None:
    @app.task
    def f() -> None: ...

    with pytest.raises(error):
        f.options(**kwargs)  # type: ignore[arg-type]


def test_options_unknown_priority_lists_lanes(app: Ardiq) -> None:
    @app.task
    def f() -> None: ...

    with pytest.raises(ValueError, match="low, default, high"):
        f.options(priority="nope")


def test_options_bind_arguments(app: Ardiq) -> None:
    @app.task
    def f(a: int) -> None: ...

    with pytest.raises(TypeError):
        f.options(delay_ms=1).prepare()  # type: ignore[call-arg]


# --------------------------------------------------------------------- crons
def test_cron_every_seconds(app: Ardiq) -> None:
    @app.cron(every=30)
    async def tick() -> None: ...

    assert app.crons == ["tick"]
    (job,) = app.cron_jobs
    assert isinstance(job, ardiq.CronJob)
    assert job.name == "tick" and job.task is tick
    assert job.schedule == Every(30_000)
    assert "tick" in app.tasks


def test_cron_every_timedelta_and_fraction(app: Ardiq) -> None:
    @app.cron(every=timedelta(hours=1), name="hourly")
    def a() -> None: ...

    @app.cron(every=0.5)
    def b() -> None: ...

    assert [c.schedule for c in app.cron_jobs] == [Every(3_600_000), Every(500)]
    assert [c.name for c in app.cron_jobs] == ["hourly", "b"]


def test_cron_options_reach_the_task(app: Ardiq) -> None:
    @app.cron("* * * * *", max_retries=0, backoff_ms=5, timeout=2, priority="high")
    def t() -> None: ...

    assert (t.max_retries, t.backoff_ms, t.timeout, t.priority) == (0, 5, 2, "high")


def test_cron_unknown_priority(app: Ardiq) -> None:
    with pytest.raises(ValueError, match="urgent"):

        @app.cron(every=5, priority="urgent")
        def t() -> None: ...

    assert app.crons == [] and app.tasks == []


def test_cron_needs_exactly_one_of_spec_and_every(app: Ardiq) -> None:
    with pytest.raises(TypeError):
        app.cron()
    with pytest.raises(TypeError):
        app.cron("* * * * *", every=60)
    assert app.crons == []


@pytest.mark.parametrize("every", [0, -1, 0.0001, timedelta(0), timedelta(seconds=-5), "60", True])
def test_bad_every(every: object) -> None:
    with pytest.raises(ValueError, match="every"):
        parse_schedule(None, every)  # type: ignore[arg-type]


def test_cron_spec_that_can_never_fire(app: Ardiq) -> None:
    with pytest.raises(ValueError, match="never"):
        app.cron("0 0 30 2 *")
    with pytest.raises(ValueError, match="never"):
        app.cron("0 0 31 4,6,9,11 *")
    assert app.crons == []


def test_cron_spec_on_leap_day_is_fine(app: Ardiq) -> None:
    @app.cron("0 0 29 2 *")
    def leap() -> None: ...

    assert app.cron_jobs[0].schedule.next_after(ms(2021, 1, 1)) == ms(2024, 2, 29)


@pytest.mark.parametrize(
    "spec",
    [
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * 0 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "a * * * *",
        "1,,2 * * * *",
        "-1 * * * *",
        "* * * * MON",
        "",
        "+5 * * * *",
        "\u0663 * * * *",
        "@reboot",
    ],
)
def test_bad_cron_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        CronSpec.parse(spec)


def test_cron_spec_must_be_a_string(app: Ardiq) -> None:
    with pytest.raises(TypeError):
        app.cron(5)  # type: ignore[arg-type]


# -------------------------------------------------------------- next_after
def test_next_after_every_minute_is_strictly_after() -> None:
    spec = CronSpec.parse("* * * * *")
    t = ms(2024, 3, 10, 12, 0)
    assert spec.next_after(t) == t + 60_000
    assert spec.next_after(t - 1) == t
    assert spec.next_after(t + 59_999) == t + 60_000


def test_next_after_fixed_time() -> None:
    spec = CronSpec.parse("30 14 * * *")
    assert spec.next_after(ms(2024, 3, 10, 12, 0)) == ms(2024, 3, 10, 14, 30)
    assert spec.next_after(ms(2024, 3, 10, 14, 30)) == ms(2024, 3, 11, 14, 30)
    assert spec.next_after(ms(2024, 12, 31, 15, 0)) == ms(2025, 1, 1, 14, 30)


def test_next_after_steps_ranges_and_lists() -> None:
    every_15 = CronSpec.parse("*/15 * * * *")
    assert every_15.next_after(ms(2024, 1, 1, 0, 1)) == ms(2024, 1, 1, 0, 15)
    assert every_15.next_after(ms(2024, 1, 1, 0, 45)) == ms(2024, 1, 1, 1, 0)
    offset = CronSpec.parse("5/20 * * * *")
    assert sorted(offset.minutes) == [5, 25, 45]
    ranged = CronSpec.parse("0 9-17/4 * * *")
    assert sorted(ranged.hours) == [9, 13, 17]
    listed = CronSpec.parse("0,30 8,20 * * *")
    assert listed.next_after(ms(2024, 1, 1, 8, 30)) == ms(2024, 1, 1, 20, 0)
    assert listed.next_after(ms(2024, 1, 1, 20, 30)) == ms(2024, 1, 2, 8, 0)


def test_a_value_with_a_step_runs_to_the_end_of_the_field() -> None:
    # As the engine reads it: `5/1` is 5-59, not {5}.
    assert sorted(CronSpec.parse("5/1 * * * *").minutes) == list(range(5, 60))
    assert sorted(CronSpec.parse("0 20/2 * * *").hours) == [20, 22]


@pytest.mark.parametrize(
    ("alias", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_cron_aliases_the_engine_accepts(alias: str, same_as: str) -> None:
    spec, plain = CronSpec.parse(alias), CronSpec.parse(same_as)
    assert spec.text == alias  # handed to the native engine as written
    t = ms(2024, 5, 17, 10, 30)
    assert spec.next_after(t) == plain.next_after(t)


def test_next_after_month_rollover() -> None:
    spec = CronSpec.parse("0 0 1 * *")
    assert spec.next_after(ms(2024, 1, 15)) == ms(2024, 2, 1)
    assert spec.next_after(ms(2024, 12, 1)) == ms(2025, 1, 1)
    thirty_first = CronSpec.parse("0 0 31 * *")
    assert thirty_first.next_after(ms(2024, 1, 31)) == ms(2024, 3, 31)


def test_seven_is_sunday() -> None:
    # 2024-03-09 is a Saturday, 2024-03-10 a Sunday.
    assert at(ms(2024, 3, 10)).weekday() == 6
    for text in ("0 0 * * 7", "0 0 * * 0"):
        spec = CronSpec.parse(text)
        assert spec.weekdays == frozenset({0})
        assert spec.next_after(ms(2024, 3, 9, 12, 0)) == ms(2024, 3, 10)
    weekend = CronSpec.parse("0 0 * * 6-7")
    assert weekend.weekdays == frozenset({6, 0})
    assert weekend.next_after(ms(2024, 3, 8, 12, 0)) == ms(2024, 3, 9)
    assert weekend.next_after(ms(2024, 3, 9, 12, 0)) == ms(2024, 3, 10)
    assert weekend.next_after(ms(2024, 3, 10, 12, 0)) == ms(2024, 3, 16)


def test_weekday_only() -> None:
    # Mondays at 09:00: 2024-03-11 is a Monday.
    spec = CronSpec.parse("0 9 * * 1")
    assert spec.next_after(ms(2024, 3, 9)) == ms(2024, 3, 11, 9, 0)
    assert spec.next_after(ms(2024, 3, 11, 9, 0)) == ms(2024, 3, 18, 9, 0)


def test_day_of_month_and_day_of_week_are_ored() -> None:
    # The 13th, or any Friday. From 2024-03-01 (a Friday itself, at noon):
    spec = CronSpec.parse("0 0 13 * 5")
    t = ms(2024, 3, 1, 12, 0)
    hits = []
    for _ in range(4):
        nxt = spec.next_after(t)
        assert nxt is not None
        hits.append(at(nxt).date().isoformat())
        t = nxt
    # Fridays 8th, 15th, 22nd, and Wednesday 13th.
    assert hits == ["2024-03-08", "2024-03-13", "2024-03-15", "2024-03-22"]


def test_day_of_month_alone_is_not_ored_with_any_weekday() -> None:
    spec = CronSpec.parse("0 0 13 * *")
    assert spec.next_after(ms(2024, 3, 1)) == ms(2024, 3, 13)
    assert spec.next_after(ms(2024, 3, 13)) == ms(2024, 4, 13)


def test_month_restricts_days() -> None:
    spec = CronSpec.parse("0 12 * 7 *")
    assert spec.next_after(ms(2024, 3, 1)) == ms(2024, 7, 1, 12, 0)
    assert spec.next_after(ms(2024, 7, 31, 12, 0)) == ms(2025, 7, 1, 12, 0)


def test_every_next_after_is_aligned_to_the_epoch() -> None:
    e = Every(60_000)
    assert e.next_after(0) == 60_000
    assert e.next_after(59_999) == 60_000
    assert e.next_after(60_000) == 120_000
    assert Every(1500).next_after(ms(2024, 1, 1) + 1) == ms(2024, 1, 1) + 1500


def test_cron_day_field_with_a_step_counts_as_unrestricted() -> None:
    """`*/2` in day-of-week does not OR with day-of-month (Vixie cron, like the engine)."""
    from ardiq.cron import CronSpec

    spec = CronSpec.parse("0 0 1 * */2")
    assert not spec.weekdays_restricted
    # 2026-12-01 is a Tuesday (dow 2): day 1 and an even weekday, so it fires.
    assert spec.next_after(1796083200000 - 60_000) == 1796083200000
    # 2026-11-29 (Sunday, dow 0) is an even weekday but not the 1st: no OR, so no fire.
    assert spec.next_after(1795910400000 - 60_000) != 1795910400000
