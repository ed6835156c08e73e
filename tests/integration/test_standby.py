"""Hot standby (`standby = yes`) against real charon daemons: a childless IKE_SA towards the
next gateway, and a failover that is one CREATE_CHILD_SA inside it.

Each test starts from a reset lab and a fresh extsock, and is bounded by its waits. Both run
with ini's charon from each Debian release below (the gateways keep the host's 5.9.8).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from tests.integration.resilience_support import FAST_POLICY, runner_tag

# ini's charon from bookworm (5.9.8, the host's) and trixie (6.0.1: loading a connection
# again closes its childless IKE_SAs, so the failover must not load the standby's clone).
RELEASES = ("bookworm", "trixie")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize(
        "lab", [{"node_charon": (f"ini={rel}",)} for rel in RELEASES], indirect=True, ids=RELEASES
    ),
]

GW1, GW2 = "10.99.1.2", "10.99.2.2"
POLICY = FAST_POLICY + "    standby = yes\n"


@pytest.fixture
def extsock(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(fresh_lab, POLICY, name=f"s-{runner_tag(request)}")
    runner.write_config()
    yield runner
    runner.stop()


def hot(runner: ExtsockRunner) -> dict[str, Any]:
    value = runner.status().get("hot_standby")
    return dict(value) if isinstance(value, dict) else {}


def standby_up_on(runner: ExtsockRunner, gateway: str) -> bool:
    return hot(runner) == {"gateway": gateway, "phase": "up"}


def ini_sas(lab: Lab, name: str) -> list[dict[str, Any]]:
    return [sa for entry in lab.list_sas("ini") for n, sa in entry.items() if n == name]


def log_since(lab: Lab, offset: int) -> str:
    return lab.log_path("ini").read_bytes()[offset:].decode(errors="replace")


def test_failover_onto_the_standby_is_one_create_child_sa(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert wait_until(lambda: standby_up_on(extsock, GW2), 10.0), extsock.log_tail()
    standby = ini_sas(fresh_lab, f"home@{GW2}")
    assert len(standby) == 1 and not standby[0].get("child-sas"), standby  # childless
    standby_id = int(standby[0]["uniqueid"])
    mark = fresh_lab.log_path("ini").stat().st_size

    sas = fresh_lab.list_sas("segw1")
    fresh_lab.swanctl("segw1", "--terminate", "--ike", next(iter(sas[0])), "--timeout", "5")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 10.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"

    carrying = ini_sas(fresh_lab, f"home@{GW2}")
    assert [int(sa["uniqueid"]) for sa in carrying] == [standby_id]  # the standby's IKE_SA
    # charon's own account: inside the standby's IKE_SA one CREATE_CHILD_SA, and no
    # IKE_SA_INIT or IKE_AUTH towards segw2 at all since the failure.
    tagged = [
        line
        for line in log_since(fresh_lab, mark).splitlines()
        if re.search(rf"<home@{re.escape(GW2)}\|\d+>", line)
    ]
    exchanges = [line for line in tagged if "generating" in line and "request" in line]
    assert any(
        f"<home@{GW2}|{standby_id}>" in line and "CREATE_CHILD_SA" in line for line in exchanges
    ), tagged
    assert not [line for line in exchanges if "IKE_SA_INIT" in line or "IKE_AUTH" in line]

    status = extsock.status()
    assert status["phase"] == "up" and status["active_gateway"] == GW2
    # The standby follows the list: now towards segw1 (after segw2, cyclic).
    assert wait_until(lambda: standby_up_on(extsock, GW1), 10.0), extsock.log_tail()
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["from"] == GW1 and history[-1]["to"] == GW2


def test_a_silent_gateway_fails_over_onto_the_standby(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    """segw1 goes silent (DPD retransmit): the tunnel moves into the standby's IKE_SA."""
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert wait_until(lambda: standby_up_on(extsock, GW2), 10.0), extsock.log_tail()
    standby_id = int(ini_sas(fresh_lab, f"home@{GW2}")[0]["uniqueid"])
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert [int(sa["uniqueid"]) for sa in ini_sas(fresh_lab, f"home@{GW2}")] == [standby_id]
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["to"] == GW2 and history[-1]["reason"] == "retransmit"
    # The standby now waits for segw1 (after segw2, cyclic), which stays silent.
    assert wait_until(lambda: hot(extsock).get("gateway") == GW1, 5.0)
    assert hot(extsock).get("phase") != "up"


def test_standby_is_set_up_again_after_its_gateway_dies(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert wait_until(lambda: standby_up_on(extsock, GW2), 10.0), extsock.log_tail()
    first = int(ini_sas(fresh_lab, f"home@{GW2}")[0]["uniqueid"])

    fresh_lab.fail("segw2", "link")
    # DPD (1 s) on the standby's IKE_SA retransmits after charon's 4 s: the standby is dead.
    assert wait_until(lambda: hot(extsock).get("phase") in ("backoff", "connecting"), 12.0)
    assert wait_until(lambda: hot(extsock).get("phase") != "up", 12.0)
    status = extsock.status()
    # Never a failure of the tunnel: it stays up on segw1 and counts nothing.
    assert status["phase"] == "up" and status["active_gateway"] == GW1
    assert status["failures_total"] == 0
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"

    fresh_lab.heal("segw2")
    # Backoff at most 1 s, a connect attempt at most 5 s: up again well within 20 s.
    assert wait_until(lambda: standby_up_on(extsock, GW2), 20.0), extsock.log_tail()
    again = [int(sa["uniqueid"]) for sa in ini_sas(fresh_lab, f"home@{GW2}")]
    assert again and first not in again
    assert extsock.status()["failures_total"] == 0
    assert "standby-down" in extsock.log_text() or "standby" in extsock.log_text()


def test_a_restarted_extsock_stands_by_again_with_one_standby(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    """extsock restarts (the tunnel stays up, and so may the standby's IKE_SA): the new run
    adopts the tunnel and ends with one standby IKE_SA towards segw2, not two."""
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert wait_until(lambda: standby_up_on(extsock, GW2), 10.0), extsock.log_tail()
    extsock.stop()
    extsock.start()
    assert wait_until(lambda: standby_up_on(extsock, GW2), 20.0), extsock.log_tail()
    status = extsock.status()
    assert status["phase"] == "up" and status["active_gateway"] == GW1
    assert wait_until(lambda: len(ini_sas(fresh_lab, f"home@{GW2}")) == 1, 10.0), ini_sas(
        fresh_lab, f"home@{GW2}"
    )
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
