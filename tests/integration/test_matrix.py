"""The core scenarios with the initiator's charon at each strongSwan release users run.

ini's charon comes from Debian bookworm (the host's, 5.9.8), trixie (6.0.1) or sid (6.1.x,
the first with VICI `alert`s); the gateways stay on the host's charon. trixie and sid run from
Debian roots built with mmdebstrap on first use (cached; ~30 s each). Every lab of the matrix
authenticates with certificates, so each scenario also runs with pubkey authentication.

Scenarios: initial connect to a silent primary; dead peer found by retransmits; DELETE from
the gateway; charon restart; certificates; make-before-break switch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from tests.integration.resilience_support import (
    FAST_POLICY,
    GW1,
    GW2,
    conn_names,
    installed_on_ini,
    runner_tag,
)

RELEASES = ("bookworm", "trixie", "sid")
# What extsock must say it chose: (charon version, dialect, signal path).
EXPECTED = {
    "bookworm": (r"5\.9\.\d+", "strongSwan 5.9", "log lines"),
    "trixie": (r"6\.0\.[0-2]", "strongSwan 6.0", "log lines"),
    "sid": (r"6\.[1-9]\.\d+", "strongSwan 6.0.3", "alerts first"),
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize(
        "lab",
        [{"auth": "cert", "node_charon": (f"ini={rel}",)} for rel in RELEASES],
        indirect=True,
        ids=RELEASES,
    ),
]

POLICY = FAST_POLICY


@pytest.fixture
def extsock(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[ExtsockRunner]:
    tag = runner_tag(request)
    runner = ExtsockRunner(fresh_lab, POLICY, name=f"m-{tag}")
    runner.write_config()
    yield runner
    runner.stop()


def release_of(lab: Lab) -> str:
    return lab.config.charon_of(INI)


def assert_dialect(lab: Lab, runner: ExtsockRunner) -> None:
    version, dialect, path = EXPECTED[release_of(lab)]
    pattern = rf"charon {version}: dialect {re.escape(dialect)}, {path}"
    assert wait_until(lambda: re.search(pattern, runner.log_text()) is not None, 5.0), (
        f"no /{pattern}/ in:\n{runner.log_tail()}"
    )
    # the main loop takes the release from the event session just after it is logged
    assert wait_until(lambda: runner.request("status")["charon"] is not None, 5.0)
    charon = runner.request("status")["charon"]
    assert charon["dialect"] == dialect and re.fullmatch(version, charon["version"])
    assert charon["alerts"] is (path == "alerts first")


def last_record(runner: ExtsockRunner) -> dict[str, object]:
    def records() -> list[dict[str, object]]:
        return list(runner.request("history", conn="home")["records"])

    # the switch's record follows the status change (it is made when the old clone is gone)
    assert wait_until(lambda: bool(records()), 5.0), f"no failover recorded\n{runner.log_tail()}"
    return dict(records()[-1])


def test_initial_connect_to_a_silent_primary(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    fresh_lab.fail("segw1", "link")
    extsock.start()
    assert_dialect(fresh_lab, extsock)
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    # segw2 installs its CHILD_SA before ini's charon reports its own: wait for extsock's view
    assert wait_until(lambda: extsock.status()["active_gateway"] == GW2, 5.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    assert conn_names(fresh_lab) == [f"home@{GW2}"]


def test_dead_peer_found_by_retransmits(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    """With alerts first (sid) the retransmit log lines are dropped unread: the failover
    below can only come from charon's retransmit-send alert."""
    extsock.start()
    assert_dialect(fresh_lab, extsock)
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    fresh_lab.fail("segw1", "drop")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    record = last_record(extsock)
    assert (record["from"], record["to"], record["reason"]) == (GW1, GW2, "retransmit")


def test_delete_from_the_gateway(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    name = next(iter(fresh_lab.list_sas("segw1")[0]))
    fresh_lab.swanctl("segw1", "--terminate", "--ike", name, "--timeout", "5")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 10.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert last_record(extsock)["reason"] in ("ike-down", "child-down")


def test_charon_restart(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0)
    fresh_lab.kill(INI)
    assert wait_until(lambda: not extsock.request("status")["charon_reachable"], 5.0)
    fresh_lab.start(INI)
    assert wait_until(lambda: installed_on_ini(fresh_lab, "home") is not None, 10.0), (
        extsock.log_tail()
    )
    assert extsock.wait_phase("up", 5.0)
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    assert extsock.log_text().count(": dialect ") >= 2  # read again after the restart


def test_certificates(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    """ini's charon of this release sends its certificate and checks the gateway's."""
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    [entry] = fresh_lab.list_sas(INI)
    [(name, ike)] = entry.items()
    assert name == f"home@{GW1}"
    assert ike["local-id"] == "ini.lab.extsock" and ike["remote-id"] == "segw1.lab.extsock"
    log = fresh_lab.log_path(INI).read_text(errors="replace")
    # 5.9 logs "with ECDSA-256 signature successful", 6.x the signature scheme's name
    authenticated = re.search(r"authentication of 'segw1.lab.extsock' with (.*) successful", log)
    assert authenticated is not None, log[-3000:]
    assert "pre-shared key" not in authenticated.group(1)
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"


def test_make_before_break_switch(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    # switch once extsock itself has the tunnel up: a switch while it still connects is a
    # new target for the connect, not a make-before-break switch (seen under load)
    assert wait_until(lambda: extsock.status()["phase"] == "up", 10.0), extsock.log_tail()
    extsock.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: extsock.status()["active_gateway"] == GW2, 10.0), extsock.log_tail()
    assert wait_until(lambda: not fresh_lab.child_installed("segw1"), 5.0)
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert conn_names(fresh_lab) == [f"home@{GW2}"]
    assert last_record(extsock)["reason"] == "operator"
