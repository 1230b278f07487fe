"""`make test-install`: the documented local install, in fresh virtual environments.

For every CPython 3.11 or newer found (as `make wheels` finds them: pyenv's versions,
Debian's /usr/bin/python3.11, ...), a new venv gets exactly
`pip install --no-index --find-links dist "ardiq[cli]"`, then, from an empty
environment (`env -i`, as systemd starts it) against a throwaway redis-server:

1. `ardiq run example:app --burst` serves the example's tasks (the native worker, in that
   venv's interpreter, with that interpreter's libpython and standard library);
2. `python -m ardiq run example:app --burst` hands over to it;
3. with `ARDIQ_HANDOVER=0` it runs the in-code worker instead (the pure package's path).

Needs dist/ from `make wheels`. Usage: scripts/install_test.py [--dist dist] [--keep].
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import start_redis
from wheels import ROOT, Python, find_pythons

ENQUEUE = """
import sys
import example
jobs = [example.add.enqueue_sync(2, 3), example.checksum.enqueue_sync("ardiq", 10)]
print(" ".join(j.id for j in jobs))
"""
# Imported by `ardiq check`: which libpython and standard library the worker runs on.
PROBE_APP = """
import os, sys
from ardiq import Ardiq
libs = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "libpython" in ln})
print("PROBE", sys.version.split()[0], os.path.dirname(os.__file__), *libs, file=sys.stderr)
app = Ardiq(queue_name="probe")
"""
EXPECTED = """
import os, sys, sysconfig
lib = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
print("PROBE", sys.version.split()[0], os.path.dirname(os.__file__), os.path.realpath(lib))
"""
RESULTS = """
import sys
import example
for task_id in sys.argv[1:]:
    r = example.app.job(task_id).result_sync(timeout=10)
    assert r is not None and r.success, (task_id, r)
print("results ok")
"""


def check(cmd: list[str], env: dict[str, str], what: str) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"FAILED {what} (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def one(py: Python, dist: Path, work: Path) -> list[str]:
    venv = work / f"venv-{py.path.strip('/').replace('/', '_')}"
    subprocess.run([py.path, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    check(
        [
            *pip,
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(dist),
            "ardiq[cli]",
        ],
        {"PATH": "/usr/bin:/bin", "HOME": str(work)},
        f"pip install into {venv}",
    )
    python = str(venv / "bin" / "python")
    assert (venv / "bin" / "ardiq").is_file(), "no `ardiq` command installed"
    server, url, folder = start_redis()
    lines = []
    try:
        env = {"PATH": "/usr/bin:/bin", "ARDIQ_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        runs = [
            ("ardiq run", [str(venv / "bin" / "ardiq"), "run", "example:app", "--burst"], {}),
            (
                "python -m ardiq (hand-over)",
                [python, "-m", "ardiq", "run", "example:app", "-b"],
                {},
            ),
            (
                "python -m ardiq (in-code)",
                [python, "-m", "ardiq", "run", "example:app", "-b"],
                {"ARDIQ_HANDOVER": "0"},
            ),
        ]
        for label, cmd, extra in runs:
            ids = check([python, "-c", ENQUEUE], env, "enqueue").split()
            output = check(cmd, {**env, **extra}, f"{label} in {venv}")
            in_code = "in-code worker" in output
            if in_code != (extra != {}):
                raise SystemExit(f"FAILED {label}: wrong worker kind\n{output}")
            if f"python       {python} " not in output:
                raise SystemExit(f"FAILED {label}: not this venv's interpreter\n{output}")
            check([python, "-c", RESULTS, *ids], env, "results")
            lines.append(f"  ok  {label}")
        # The worker embeds this interpreter's libpython and standard library.
        (work / "probe_app.py").write_text(PROBE_APP)
        probe = subprocess.run(
            [str(venv / "bin" / "ardiq"), "check", "probe_app:app"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        seen = next((ln for ln in probe.stderr.splitlines() if ln.startswith("PROBE")), "")
        libs = seen.split()[3:]
        seen = " ".join([*seen.split()[:3], *(os.path.realpath(x) for x in libs)])
        expected = check([python, "-c", EXPECTED], env, "expected libpython").strip()
        if seen != expected:
            raise SystemExit(f"FAILED libpython: worker {seen!r}, interpreter {expected!r}")
        lines.append(f"  ok  embeds {expected.removeprefix('PROBE ')}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(ROOT / "dist"))
    parser.add_argument("--keep", action="store_true", help="keep the venvs")
    opts = parser.parse_args()
    dist = Path(opts.dist).resolve()
    if not any(dist.glob("ardiq_worker-*.whl")):
        sys.exit(f"no worker wheels in {dist}: run `make wheels` first")
    pythons = find_pythons()
    (ROOT / ".tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="install-test-", dir=ROOT / ".tmp"))
    try:
        for py in pythons:
            print(f"== Python {py.label}", flush=True)
            for line in one(py, dist, work):
                print(line, flush=True)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"install test passed for {len(pythons)} interpreters")


if __name__ == "__main__":
    main()
