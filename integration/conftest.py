"""Fault tests: the FAST versions of the scenarios run under `make test`
(`pytest integration -m "not slow"`); `make reliability` runs the FULL ones
(integration/reliability.py) and writes RELIABILITY.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long fault scenario (make reliability)")
