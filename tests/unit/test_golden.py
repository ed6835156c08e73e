"""Golden scenarios (tests/golden/*.ci): recorded charon events in, VICI requests and
published events out, compared with the reviewed transcript. GOLDEN_UPDATE=1 rewrites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.golden.replay import HERE, replay

SCENARIOS = sorted(HERE.glob("*.ci"))


def test_every_scenario_of_the_issue_is_there() -> None:
    names = {path.stem for path in SCENARIOS}
    assert {"reuse", "redirect", "rekey", "switch", "failover"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden(path: Path) -> None:
    expected = path.read_text()
    got = replay(expected)
    if os.environ.get("GOLDEN_UPDATE") == "1":
        path.write_text(got)
        return
    assert got.splitlines() == expected.splitlines()
