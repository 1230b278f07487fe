"""Static typing: mypy flags a wrong enqueue and lets the result type flow (API §2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"

SNIPPET = """
from collections.abc import AsyncIterator
from typing import Any

from ardiq import Ardiq, Job, State, TaskResult, current_task
from ardiq.models import ErrorContext, TaskInfo

app = Ardiq("redis://127.0.0.1:1")


@app.lifespan
async def lifespan() -> AsyncIterator[dict[str, Any]]:
    yield {"db": 1}


@app.lifespan
async def lifespan_with_app(a: Ardiq) -> AsyncIterator[None]:
    yield


@app.on_error
def hook(ctx: ErrorContext) -> None:
    name, task_id, exc, tries, will_retry = ctx


@app.task
def f(a: int) -> str:
    return str(a)


@app.task(max_retries=1)
async def g(x: int, *, flag: bool = False) -> list[int]:
    return [x]


async def main() -> None:
    ok_job = await f.enqueue(1)
    reveal_type(ok_job)  # REVEAL-1
    result = await ok_job.result(timeout=1)
    reveal_type(result)  # REVEAL-2
    if result is not None:
        s: str = result.value
    await f.enqueue("x")  # BAD-1
    await f.enqueue(1, 2)  # BAD-2
    g_job = await g.enqueue(1, flag=True)
    reveal_type(g_job)  # REVEAL-3
    await g.enqueue(1, flag="yes")  # BAD-3
    await g.options(delay_ms=10).enqueue(2)
    await g.options(delay_ms=10).enqueue()  # BAD-4
    f.prepare(3)
    f.prepare(a="3")  # BAD-5
    j: Job[str] = f.enqueue_sync(3)
    r: TaskResult[str] | None = j.result_sync(timeout=1)
    direct: str = f(5)
    coro_value: list[int] = await g(5)
    if result is not None:  # ardiq 1.2 code: the result and the context unpack as tuples
        success, value, tries, enqueue_time, start, finish = result
        aborted: bool = result.aborted
        success, value = result  # BAD-6
    ctx = current_task()
    if ctx is not None:
        task_id, name, attempt = ctx
        headers: dict[str, str] = ctx.headers
    info: TaskInfo | None = await ok_job.info()
    if info is not None:
        args: tuple[Any, ...] = info.args
    names: list[str] = app.crons
    state: State = app.state
    app.state.cache = {}
    db: Any = app.state.db
"""


def run_mypy(tmp_path: Path) -> tuple[int, dict[int, list[str]], list[str]]:
    code = textwrap.dedent(SNIPPET)
    path = tmp_path / "snippet.py"
    path.write_text(code)
    env = {**os.environ, "MYPYPATH": str(PYTHON_DIR)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--no-error-summary",
            "--show-error-codes",
            "--python-version",
            "3.11",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    by_line: dict[int, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r".*snippet\.py:(\d+): (.*)", line)
        if m:
            by_line.setdefault(int(m.group(1)), []).append(m.group(2))
    return proc.returncode, by_line, code.splitlines()


def line_of(lines: list[str], marker: str) -> int:
    (n,) = [i + 1 for i, line in enumerate(lines) if line.rstrip().endswith(marker)]
    return n


def test_mypy_flags_wrong_calls_and_passes_right_ones(tmp_path: Path) -> None:
    code, by_line, lines = run_mypy(tmp_path)
    report = "\n".join(f"{n}: {m}" for n, ms in sorted(by_line.items()) for m in ms)
    assert code == 1, report

    bad = {line_of(lines, f"# BAD-{i}") for i in range(1, 7)}
    for n in sorted(bad):
        errors = [m for m in by_line.get(n, []) if m.startswith("error")]
        assert errors, f"line {n} ({lines[n - 1].strip()}) not flagged:\n{report}"

    reveals = {line_of(lines, f"# REVEAL-{i}") for i in range(1, 4)}
    for n, messages in by_line.items():
        if n in bad or n in reveals:
            continue
        errors = [m for m in messages if m.startswith("error")]
        assert not errors, f"line {n} ({lines[n - 1].strip()}) wrongly flagged:\n{report}"

    def revealed(marker: str) -> str:
        (msg,) = [m for m in by_line[line_of(lines, marker)] if "Revealed type" in m]
        return msg

    assert re.search(r"ardiq\.jobs\.Job\[(builtins\.)?str\]", revealed("# REVEAL-1")), report
    assert re.search(r"TaskResult\[(builtins\.)?str\]\]? \| None", revealed("# REVEAL-2")), report
    list_of_int = r"Job\[(builtins\.)?list\[(builtins\.)?int\]\]"
    assert re.search(list_of_int, revealed("# REVEAL-3")), report
