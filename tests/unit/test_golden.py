"""Golden scenarios (tests/golden/*.ci): recorded charon events in, VICI requests and
published events out, compared with the reviewed transcript. GOLDEN_UPDATE=1 rewrites.

The replay crosses the adapters without a daemon: events as VICI packets through the event
listener, requests as VICI packets from the command adapter (see tests/golden/replay.py)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from tests.golden.replay import HERE, replay

SCENARIOS = sorted(HERE.glob("*.ci"))


def test_every_scenario_of_the_issue_is_there() -> None:
    names = {path.stem for path in SCENARIOS}
    assert {
        "reuse",
        "redirect",
        "rekey",
        "switch",
        "failover",
        "standby-delete",
        "standby-silent",
    } <= names


def test_the_replay_drives_the_vici_adapters_and_no_daemon() -> None:
    import tests.golden.replay as replay_module

    tree = ast.parse(Path(replay_module.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {
        "extsock_py.adapters.vici.commands",
        "extsock_py.adapters.vici.listener",
        "extsock_py.usecases.event_usecase",
        "extsock_py.usecases.failover_manager",
    } <= imported
    daemon = ("extsock_py.app", "extsock_py.mainloop", "extsock_py.usecases.daemon_service")
    assert not [m for m in imported if m.startswith(daemon)]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden(path: Path) -> None:
    expected = path.read_text()
    got = replay(expected)
    if os.environ.get("GOLDEN_UPDATE") == "1":
        path.write_text(got)
        return
    assert got.splitlines() == expected.splitlines()
