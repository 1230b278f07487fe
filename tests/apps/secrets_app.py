"""The app of tests/test_secrets.py: `Ardiq()` takes its Redis URL and signing keys from
wherever the package finds them (the binary's hand-over, ARDIQ_REDIS_URL[_FILE],
ARDIQ_SIGNING_KEY[_FILE]); its task reports what task code can see of them."""

from __future__ import annotations

import os
import subprocess

from ardiq import Ardiq

app = Ardiq(queue_name=os.environ.get("ARDIQ_TEST_QUEUE", "secrets"), poll_block_ms=100)

NAMES = ("ARDIQ_REDIS_URL", "ARDIQ_SIGNING_KEY")


@app.task
async def environment(secret: str) -> dict[str, object]:
    """What of the secrets this process and a process it spawns can see."""
    spawned = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    return {
        "names": sorted(k for k in os.environ if k.startswith(NAMES)),
        "in_environ": any(secret in v for v in os.environ.values()),
        "in_child": secret in spawned,
        "keys": len(app._signing_keys),
    }
