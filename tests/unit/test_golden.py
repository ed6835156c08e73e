"""Golden scenarios (tests/golden/*.ci): recorded charon events in, VICI requests and
published events out, compared with the reviewed transcript. GOLDEN_UPDATE=1 rewrites.

The replay crosses the adapters without a daemon: events as VICI packets through the event
listener, requests as VICI packets from the command adapter (see tests/golden/replay.py)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from tests.golden.replay import HERE, inputs, release_of, replay

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
        "standby-delete-6.0.1",
        "standby-silent-6.0.1",
        "failover-6.0.1",
        "failover-6.1.0",
        # issue 26: shared IKE_SAs after a CHILD_SA rekey and a drain
        "reuse-child-rekey",
        "reuse-switch-back",
    } <= names


def test_every_transcript_names_its_release_and_the_name_agrees() -> None:
    """The host's 5.9.8 writes `<scenario>.ci`, another release `<scenario>-<version>.ci`."""
    for path in SCENARIOS:
        version = release_of(path.read_text())
        suffix = re.search(r"-(\d+\.\d+\.\d+)$", path.stem)
        assert (suffix.group(1) if suffix else "5.9.8") == version, path.name


def _failover() -> str:
    return (HERE / "failover.ci").read_text()


def _retransmit_line(text: str) -> str:
    return next(line for line in inputs(text) if "retransmit 1 of request" in line)


def test_a_transcript_without_its_release_is_refused() -> None:
    text = "\n".join(line for line in _failover().splitlines() if not line.startswith("charon "))
    with pytest.raises(ValueError, match="charon VERSION"):
        replay(text)
    with pytest.raises(ValueError, match="newer than every release"):
        replay(_failover().replace("charon 5.9.8", "charon 9.9.9"))


def test_the_release_line_picks_the_dialect_events_are_read_with() -> None:
    """6.1.0 has alerts: its dialect skips the retransmit log line the alert covers, so the
    5.9.8 recording replayed as 6.1.0 does not fail over at the retransmit; an alert does."""
    text = _failover()
    as_610 = text.replace("charon 5.9.8", "charon 6.1.0")
    assert 'reason="retransmit"' in replay(text)
    assert 'reason="retransmit"' not in replay(as_610)

    line = _retransmit_line(text)
    delta = line.split()[1]
    alert = (
        f"< {delta} alert "
        '{"type":"retransmit-send","ike-sa":{"home@10.99.1.2":{"uniqueid":"1",'
        '"state":"ESTABLISHED","remote-host":"10.99.1.2"}}}'
    )
    assert 'reason="retransmit"' in replay(as_610.replace(line, alert))


def test_the_6_1_0_recording_fails_over_on_the_alert_and_not_without_it() -> None:
    text = (HERE / "failover-6.1.0.ci").read_text()
    assert any(line.startswith("< +") and " alert " in line for line in inputs(text))
    assert 'reason="retransmit"' in replay(text)
    # Read as 6.0.1 (no alerts; the recording has no retransmit log line): no failover.
    assert 'reason="retransmit"' not in replay(text.replace("charon 6.1.0", "charon 6.0.1"))


def test_a_changed_transcript_fails_the_comparison() -> None:
    """What the test compares is regenerated: an output line removed, or one input changed,
    and the replay no longer gives back the file."""
    for path in SCENARIOS:
        text = path.read_text()
        lines = text.splitlines()
        first_request = next(i for i, line in enumerate(lines) if line.startswith("> "))
        dropped = "\n".join(lines[:first_request] + lines[first_request + 1 :]) + "\n"
        assert replay(dropped).splitlines() == lines, path.name
        delayed = text.replace(" +0.0", " +9.0", 1)  # a connect timeout passes somewhere
        assert replay(delayed).splitlines() != delayed.splitlines(), path.name


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


@pytest.mark.parametrize("name", ["standby-delete-6.0.1", "standby-silent-6.0.1"])
def test_on_6_0_1_the_standby_clone_is_not_loaded_again_before_the_hand_over(name: str) -> None:
    """strongSwan 6 closes the childless IKE_SAs of a connection loaded again: between the
    standby coming up and its child's initiate there is no load-conn of its clone."""
    lines = (HERE / f"{name}.ci").read_text().splitlines()
    up = next(i for i, line in enumerate(lines) if line.startswith("! standby-up "))
    gateway = lines[up].split('gateway="')[1].rstrip('"')
    hand_over = lines.index(f"> initiate home@{gateway} child=net")
    between = [line for line in lines[up:hand_over] if line.startswith("> ")]
    assert not [line for line in between if line.startswith(f"> load-conn home@{gateway}")]
    assert f"> load-conn home@{gateway} remote_addrs={gateway}" in lines[:up]
