"""`make wheels`: every wheel `pip install --no-index --find-links dist "ardiq[cli]"` needs,
into dist/.

- `ardiq` (pure Python, one wheel for every Python);
- `ardiq-worker` (the `ardiq` executable) and `ardiq-native` (the extension module), once
  for every CPython 3.11 or newer found here (pyenv's versions, /usr/bin, /usr/local/bin,
  PATH), built by maturin with that interpreter: tagged `cpXY-cpXY-linux_<arch>` (the
  interpreter version whose libpython they link, this platform);
- the wheels of the dependencies, as pip resolves them for each interpreter found (two
  builds of one version may need different ones: redis-py wants `async-timeout` before
  3.11.3), downloaded once from the index into dist/.

Interpreters without a shared libpython get no native wheels (they would not run the
worker): their venvs install the pure package and `python -m ardiq` runs the in-code
worker. Usage: scripts/wheels.py [--out dist] [--fast] (LTO off, 16 codegen units).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import json, sys, sysconfig; print(json.dumps({"
    "'impl': sys.implementation.name, 'version': list(sys.version_info[:3]), "
    "'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')), "
    "'real': __import__('os').path.realpath(sys.executable)}))"
)


@dataclass(frozen=True)
class Python:
    path: str
    version: tuple[int, int, int]
    shared: bool

    @property
    def minor(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def label(self) -> str:
        return f"{'.'.join(map(str, self.version))} at {self.path}"


def candidates() -> list[str]:
    """Interpreter paths worth asking, most specific names only (`python3.X`)."""
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(f"{pyenv_root}/versions/*/bin/python3.*"))
    for d in ["/usr/local/bin", "/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        found += sorted(glob.glob(f"{d}/python3.*"))
    return [p for p in found if os.path.basename(p)[len("python3.") :].isdigit()]


def find_pythons() -> list[Python]:
    """Every CPython >= 3.11 here, one per real executable, in a stable order."""
    seen: set[str] = set()
    pythons = []
    for path in candidates():
        try:
            out = subprocess.run(
                [path, "-I", "-S", "-c", PROBE],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        info = json.loads(out)
        if info["impl"] != "cpython" or tuple(info["version"][:2]) < (3, 11):
            continue
        if info["real"] in seen:
            continue
        seen.add(info["real"])
        pythons.append(Python(path, tuple(info["version"]), info["shared"]))
    return pythons


def builders(pythons: list[Python]) -> dict[str, Python]:
    """One interpreter per version to build the native wheels with (a shared one, pyenv's
    first as found)."""
    chosen: dict[str, Python] = {}
    for p in pythons:
        if p.shared and p.minor not in chosen:
            chosen[p.minor] = p
    return chosen


def run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--fast", action="store_true", help="LTO off, 16 codegen units")
    opts = parser.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which(
        "maturin"
    )
    if maturin is None:
        sys.exit("maturin is not installed (pip install maturin, or `make venv`)")
    pythons = find_pythons()
    if not pythons:
        sys.exit("no CPython 3.11 or newer found")
    env = dict(os.environ)
    if opts.fast:
        env |= {"CARGO_PROFILE_RELEASE_LTO": "off", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16"}

    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    chosen = builders(pythons)
    for minor, py in chosen.items():
        print(f"== native wheels for Python {minor}, built with {py.label}", flush=True)
        for crate in ("ardiq-worker", "ardiq-native"):
            manifest = ROOT / "crates" / crate / "Cargo.toml"
            cmd = [maturin, "build", "--release", "-q", "-i", py.path, "-o", str(out)]
            run([*cmd, "-m", str(manifest)], env={**env, "PYO3_PYTHON": py.path})
    for py in pythons:
        if py.minor not in chosen:
            print(f"== {py.label}: no shared libpython, no native wheels", flush=True)

    # Dependencies, resolved by each interpreter's own pip (in a throwaway venv).
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    cache = ROOT / ".tmp" / "wheels"
    for py in pythons:
        venv = cache / ("venv-" + py.path.strip("/").replace("/", "_"))
        if not (venv / "bin" / "pip").exists():
            run([py.path, "-m", "venv", "--clear", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip", "download", "-q"]
        run([*pip, "--disable-pip-version-check", "--only-binary", ":all:", "-d", str(out), *deps])
    print(f"\nwheels in {out}:")
    for wheel in sorted(out.glob("*.whl")):
        print(f"  {wheel.name}")


if __name__ == "__main__":
    main()
