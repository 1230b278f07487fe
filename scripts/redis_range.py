"""Run tests against the oldest and the newest redis-py that pyproject.toml allows.

`make test-redis-range` runs the fan-out tests (tests/test_fanout.py) in two throwaway
virtual environments under .tmp/redis-range/: one with the floor of the `redis`
requirement exactly, one with the newest release below its cap. They are made once and
reused; --refresh makes them again (the newest release may have moved). Extra arguments
go to pytest: `python scripts/redis_range.py -- tests/test_results.py -k timeout`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tmp" / "redis-range"
TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout")


def requirement(requirements: list[str], name: str) -> str:
    for req in requirements:
        if re.match(rf"{re.escape(name)}\s*([<>=!~;\[]|$)", req):
            return req
    raise SystemExit(f"pyproject.toml does not require {name}")


def environments(project: dict[str, object]) -> dict[str, str]:
    """Name -> the redis requirement to install there."""
    deps = project["dependencies"]
    assert isinstance(deps, list)
    spec = requirement(deps, "redis")
    floor = re.search(r">=\s*([\w.]+)", spec)
    if floor is None:
        raise SystemExit(f"the redis requirement {spec!r} has no floor (>=)")
    return {"oldest": f"redis=={floor.group(1)}", "newest": spec}


def make_venv(path: Path, redis_req: str, tools: list[str]) -> None:
    stamp = path / "ardiq-redis-range.txt"
    wanted = "\n".join([redis_req, *tools])
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", str(ROOT), redis_req, *tools], check=True)
    stamp.write_text(wanted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="make the environments again")
    parser.add_argument("pytest_args", nargs="*", default=["tests/test_fanout.py"])
    args = parser.parse_args()

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    dev = project["optional-dependencies"]["dev"]
    tools = [requirement(dev, tool) for tool in TEST_TOOLS]
    env = dict(os.environ)
    # The native worker under test: the repo venv's build unless ARDIQ_BIN says otherwise.
    built = ROOT / ".venv" / "bin" / "ardiq"
    if "ARDIQ_BIN" not in env and built.is_file():
        env["ARDIQ_BIN"] = str(built)

    outcomes = {}
    for name, redis_req in environments(project).items():
        path = CACHE / name
        if args.refresh:
            shutil.rmtree(path, ignore_errors=True)
        make_venv(path, redis_req, tools)
        python = str(path / "bin" / "python")
        version = subprocess.run(
            [python, "-c", "import redis; print(redis.__version__)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"== redis-py {version} ({name}: {redis_req})", flush=True)
        code = subprocess.run(
            [python, "-m", "pytest", "-q", *args.pytest_args], cwd=ROOT, env=env
        ).returncode
        outcomes[f"redis-py {version}"] = code
    for label, code in outcomes.items():
        print(f"{label}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return 0 if all(code == 0 for code in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
