"""Worker logs: start and stop lines with the reason, task lines with id/name/worker/try,
and never a task's arguments, return value or exception message."""

from __future__ import annotations

import re
from collections.abc import Callable

from apps.ledger import LANES, exit_code, stop_code
from ardiq import Ardiq
from support.workers import WorkerProcess

SECRET = "s3cr3t-do-not-log-7f1d"


async def test_log_lines_and_no_secrets(
    make_app: Callable[..., Ardiq], start_worker: Callable[..., WorkerProcess]
) -> None:
    app = make_app(priorities=LANES)
    echo = await app.ref("echo_secret").enqueue(SECRET)
    fail = await app.ref("fail_secret").enqueue(SECRET + "-exc")  # retried once, then fails
    kw = await app.ref("add").enqueue(a=1, b=2)
    burst = start_worker("apps.basic:app", "--burst", "--verbose")
    assert exit_code(burst, 20) == 0, burst.output()

    r = await echo.result()
    assert r is not None and r.value == SECRET  # it did pass through the worker
    r = await fail.result()
    assert r is not None and SECRET in r.value and r.tries == 2
    r = await kw.result()
    assert r is not None and r.value == 3

    out = burst.output()
    assert SECRET not in out
    lines = out.splitlines()
    start = [ln for ln in lines if "worker starting" in ln]
    stop = [ln for ln in lines if "worker stopped" in ln]
    assert len(start) == 1 and "INFO" in start[0], out
    assert len(stop) == 1 and "INFO" in stop[0] and "reason=burst" in stop[0], out
    # Every line about one of our tasks names it fully.
    for job in (echo, fail, kw):
        about = [ln for ln in lines if f"id={job.id}" in ln]
        assert about, (job.id, out)
        for ln in about:
            assert re.search(r"name=\w+", ln) and "worker=" in ln and re.search(r"try=\d", ln), ln
    retry = [ln for ln in lines if f"id={fail.id}" in ln and "try=1" in ln and "WARNING" in ln]
    assert retry and "delay_ms=10" in retry[0], out
    failed = [ln for ln in lines if f"id={fail.id}" in ln and "try=2" in ln and "ERROR" in ln]
    assert failed, out

    # A worker stopped by a signal says so.
    worker = start_worker("apps.basic:app")
    job = await app.ref("echo_secret").enqueue(SECRET)
    assert (await job.result(timeout=5)) is not None
    assert stop_code(worker) == 0
    out = worker.output()
    assert SECRET not in out
    stop = [ln for ln in out.splitlines() if "worker stopped" in ln]
    assert len(stop) == 1 and re.search(r"reason=(signal|stop)\b", stop[0]), out
