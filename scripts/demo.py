"""`make demo`: enqueue the example's tasks, run a worker in burst mode, print results.

Uses ARDIQ_REDIS_URL when set; otherwise starts a throwaway redis-server on a free port
and stops it afterwards. Runs the native `ardiq` binary when it is installed in the
virtual environment, else the in-code worker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit(
            "redis-server is not installed: install it (apt-get install redis-server) "
            "or set ARDIQ_REDIS_URL"
        )
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ardiq-demo-")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}", folder


async def enqueue_and_report(run_worker: object) -> None:
    import example

    jobs = {
        "add(2, 3)": await example.add.enqueue(2, 3),
        "checksum('ardiq')": await example.checksum.enqueue("ardiq"),
        "flaky(succeed_on=2)": await example.flaky.enqueue(2),
        "slow_download('https://example.org')": await example.slow_download.enqueue(
            "https://example.org"
        ),
    }
    many = await example.app.enqueue_many([example.add.prepare(i, i) for i in range(100)])
    print(f"enqueued {len(jobs) + len(many)} tasks; queue size {await example.app.queue_size()}")
    await run_worker()  # type: ignore[operator]
    for label, job in jobs.items():
        result = await job.result(timeout=10)
        assert result is not None
        state = "ok" if result.success else "failed"
        print(
            f"  {label:<40} {state:<6} {result.value!r}  (tries={result.tries}, "
            f"{result.duration_ms} ms)"
        )
    sums = [(await j.result(timeout=10)) for j in many]
    print(f"  add(i, i) for i in 0..99: {sum(r.value for r in sums if r)} (expected 9900)")
    await example.app.aclose()


def main() -> None:
    redis_proc = folder = None
    url = os.environ.get("ARDIQ_REDIS_URL")
    if not url:
        redis_proc, url, folder = start_redis()
        os.environ["ARDIQ_REDIS_URL"] = url
        print(f"started a throwaway redis-server at {url}")
    sys.path.insert(0, str(ROOT))
    binary = Path(sys.executable).with_name("ardiq")
    try:

        async def run_worker() -> None:
            if binary.exists():
                shown = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
                print(f"running: {shown} run example:app --burst")
                code = await asyncio.to_thread(
                    subprocess.call, [str(binary), "run", "example:app", "--burst"], cwd=ROOT
                )
                if code != 0:
                    sys.exit(f"worker exited with {code}")
            else:
                import example

                print("running the in-code worker (await app.run()) in burst mode")
                example.app.burst = True
                await example.app.run()

        asyncio.run(enqueue_and_report(run_worker))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
            shutil.rmtree(folder or "", ignore_errors=True)


if __name__ == "__main__":
    main()
