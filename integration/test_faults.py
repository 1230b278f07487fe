"""Each fault scenario, short configuration, against each worker kind it applies to.
The ones marked slow run under `make reliability` only."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenarios import FAST, SCENARIOS

CASES = [
    pytest.param(name, kind, marks=() if fast else pytest.mark.slow, id=f"{name}-{kind}")
    for name, (_, kinds, fast) in SCENARIOS.items()
    for kind in kinds
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "kind"), CASES)
async def test_fault(name: str, kind: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name][0]
    rep = await scenario(kind, FAST, tmp_path)
    assert rep.ok, (rep.problems, rep)
    assert rep.lost == 0 and rep.overlaps == 0 and rep.pending == 0
