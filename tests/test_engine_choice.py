"""Which engine `await app.run()` uses, and what the native one does in the caller's
program: its logs in Python's `logging`, `app.burst` switched while it serves, a run that
is cancelled, an extension of another version."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Callable, Iterator

import pytest
from ardiq import Ardiq, NativeUnavailable
from ardiq.worker import Worker
from ardiq.worker.native import NativeWorker, choose
from conftest import WORKER_KINDS

# The in-code engines: the Rust engine through the extension, and the pure-Python loop.
ENGINES = ["native", "python"] if "inproc" in WORKER_KINDS else ["python"]


@pytest.fixture
def no_extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`import ardiq_native` fails, as where the extension is not installed."""
    monkeypatch.setitem(sys.modules, "ardiq_native", None)
    yield


def fake_extension(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    module = types.ModuleType("ardiq_native")
    module.BRIDGE_VERSION = version  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ardiq_native", module)


def test_choice_follows_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARDIQ_ENGINE", "python")
    assert choose(None) == ("python", None)
    if "native" in ENGINES:
        kind, module = choose("native")  # the argument wins over the variable
        assert kind == "native" and module is not None
        monkeypatch.setenv("ARDIQ_ENGINE", " Native ")
        assert choose(None)[0] == "native"
        monkeypatch.delenv("ARDIQ_ENGINE")
        assert choose(None)[0] == "native"  # auto, with the extension installed
    monkeypatch.setenv("ARDIQ_ENGINE", "rust")
    with pytest.raises(ValueError, match="ARDIQ_ENGINE must be 'auto', 'native' or 'python'"):
        choose(None)
    with pytest.raises(ValueError, match="engine= must be"):
        choose("fast")


@pytest.mark.usefixtures("no_extension")
def test_without_the_extension_auto_is_the_pure_loop_and_native_says_why() -> None:
    assert choose("auto") == ("python", None)
    with pytest.raises(NativeUnavailable, match="`ardiq_native` extension is not installed"):
        choose("native")


def test_an_extension_of_another_bridge_version_is_never_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_extension(monkeypatch, 999)
    assert choose("auto") == ("python", None)
    with pytest.raises(NativeUnavailable, match="bridge version 999"):
        choose("native")


@pytest.mark.parametrize("engine", ENGINES)
async def test_run_uses_the_chosen_engine(make_app: Callable[..., Ardiq], engine: str) -> None:
    app = make_app(burst=True, poll_block_ms=100)
    kinds: list[type] = []

    @app.task
    async def which() -> None:
        assert app._worker is not None
        kinds.append(type(app._worker))

    job = await which.enqueue()
    await asyncio.wait_for(app.run(engine=engine), 20)  # type: ignore[arg-type]
    assert (await job.result()) is not None
    assert kinds == [NativeWorker if engine == "native" else Worker]


@pytest.mark.usefixtures("no_extension")
async def test_run_native_without_the_extension_fails_before_taking_work(
    make_app: Callable[..., Ardiq],
) -> None:
    app = make_app(burst=True)

    @app.task
    async def noop() -> None:
        pass

    await noop.enqueue()
    with pytest.raises(NativeUnavailable):
        await app.run(engine="native")
    assert await app.queue_size() == 1  # nothing was taken
    assert app._worker is None  # and run() may be called again


@pytest.mark.parametrize("engine", ENGINES)
async def test_engine_logs_reach_python_logging(
    make_app: Callable[..., Ardiq], engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ardiq")
    app = make_app(burst=True, poll_block_ms=100, worker_id="log-test")

    @app.task
    async def noop() -> None:
        pass

    await noop.enqueue()
    await asyncio.wait_for(app.run(engine=engine), 20)  # type: ignore[arg-type]
    # Every line of the run is out when run() returns, through the `ardiq` logger.
    lines = [r.getMessage() for r in caplog.records if r.name == "ardiq"]
    starting = [ln for ln in lines if ln.startswith("worker starting")]
    stopped = [ln for ln in lines if ln.startswith("worker stopped")]
    assert len(starting) == 1 and "worker=log-test" in starting[0], lines
    assert len(stopped) == 1 and "reason=burst" in stopped[0], lines


@pytest.mark.parametrize("engine", ENGINES)
async def test_burst_switched_on_while_serving_returns_once_drained(
    make_app: Callable[..., Ardiq], engine: str
) -> None:
    app = make_app(poll_block_ms=100)
    done: list[int] = []

    @app.task
    async def work(n: int) -> None:
        done.append(n)

    runner = asyncio.create_task(app.run(engine=engine))  # type: ignore[arg-type]
    jobs = [await work.enqueue(n) for n in range(20)]
    await jobs[-1].result(timeout=20)
    app.burst = True
    await asyncio.wait_for(runner, 20)
    assert sorted(done) == list(range(20))
    assert await app.queue_size() == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_cancelled_run_leaves_running_tasks_for_reclaim_and_can_run_again(
    make_app: Callable[..., Ardiq], engine: str
) -> None:
    app = make_app(poll_block_ms=100, idle_timeout_ms=1000)
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    @app.task
    async def slow() -> str:
        runs.append(1)
        started.set()
        if len(runs) == 1:
            await release.wait()  # the first attempt never ends on its own
        return "done"

    job = await slow.enqueue()
    runner = asyncio.create_task(app.run(engine=engine))  # type: ignore[arg-type]
    await asyncio.wait_for(started.wait(), 20)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 10)
    assert app._worker is None
    # Not finished, not lost: the next run reclaims it once its lease lapsed (a burst
    # worker leaves alone what may still be renewed).
    await asyncio.sleep(1.5)
    app.burst = True
    await asyncio.wait_for(app.run(engine=engine), 30)  # type: ignore[arg-type]
    r = await job.result(timeout=5)
    assert r is not None and r.success and r.value == "done"
    assert len(runs) == 2
