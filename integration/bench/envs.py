"""The peers' virtual environments under integration/bench/envs/ (gitignored).

Each queue gets its own venv, created on first use and reused after: a marker file holds
the exact requirement list, so changing a pin rebuilds that venv and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVS = HERE / "envs"
ROOT = HERE.parents[1]
REPO_VENV = ROOT / ".venv"
PY312 = Path("/root/.pyenv/versions/3.12.1/bin/python")

# Pinned so that a rerun measures the same code. hiredis is left out everywhere: every
# queue talks to Redis through its own default client stack.
PEERS: dict[str, list[str]] = {
    "ardiq-pypi": ["ardiq==1.2.0"],
    "taskiq": ["taskiq==0.13.0", "taskiq-redis==1.2.4"],
    "streaq": ["streaq==7.2.0"],
    "arq": ["arq==0.28.0"],
    "saq": ["saq[redis]==0.26.4", "typing_extensions"],
    "dramatiq": ["dramatiq[redis]==2.2.1"],
    "celery": ["celery[redis]==5.7.0"],
    "rq": ["rq==2.12.0"],
}


@dataclass
class Env:
    name: str
    python: Path | None  # None: unavailable (see `why`)
    why: str = ""


def base_python(name: str) -> Path | None:
    if name == "ardiq-pypi":
        return PY312 if PY312.is_file() else None
    # Every other peer runs on the same interpreter as the repo's .venv (base of it).
    return Path(getattr(sys, "_base_executable", sys.executable))


def ensure(name: str, log=print) -> Env:
    """The venv of one queue, created (or rebuilt after a pin change) when needed."""
    if name in ("ardiq-native", "ardiq-incode"):
        return Env(name, REPO_VENV / "bin" / "python")
    reqs = PEERS[name]
    base = base_python(name)
    if base is None:
        return Env(name, None, f"needs Python >= 3.12 and {PY312} is missing")
    path = ENVS / name
    python = path / "bin" / "python"
    marker = path / ".bench-requirements"
    want = "\n".join(reqs) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == want:
        return Env(name, python)
    log(f"[envs] creating {path} with {' '.join(reqs)} (one-time)")
    shutil.rmtree(path, ignore_errors=True)
    try:
        subprocess.run([str(base), "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *reqs], check=True)
    except subprocess.CalledProcessError as exc:
        return Env(name, None, f"venv setup failed: {exc}")
    marker.write_text(want)
    return Env(name, python)


if __name__ == "__main__":
    for n in sys.argv[1:] or list(PEERS):
        e = ensure(n)
        print(n, e.python, e.why)
