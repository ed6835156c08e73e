"""Failover against real charon daemons: extsock runs as a process next to the lab's ini.

Each test starts from a reset lab (no SA, every fault healed) and a fresh extsock, and is
bounded in time by the waits it makes. The tests that take ``dataplane`` run on libipsec here
and on the kernel's IPsec (XFRM) in the VM (vm_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from tests.integration.resilience_support import FAST_POLICY, runner_tag

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
POLICY = FAST_POLICY


@pytest.fixture
def extsock(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[ExtsockRunner]:
    # Its own state dir per test: persisted counters must not leak from one test to the next.
    # (a short name: the control socket's path must stay under 108 bytes)
    tag = runner_tag(request)
    runner = ExtsockRunner(fresh_lab, POLICY, name=f"x-{tag}")
    runner.write_config()
    yield runner
    runner.stop()


def clones(lab: Lab) -> list[str]:
    with lab.vici_session("ini") as session:
        names: list[str] = []
        for conn in session.list_conns():
            names.extend(conn.keys())
    return names


def test_initial_connect_with_a_silent_primary_lands_on_the_backup(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    fresh_lab.fail("segw1", "link")
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert extsock.status()["active_gateway"] == GW2
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    assert clones(fresh_lab) == [f"home@{GW2}"]


def test_dead_primary_moves_the_tunnel_and_traffic(
    fresh_lab: Lab, extsock: ExtsockRunner, dataplane: str
) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    status = extsock.status()
    assert status["phase"] == "up" and status["active_gateway"] == GW2
    assert clones(fresh_lab) == [f"home@{GW2}"]
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["from"] == GW1 and history[-1]["to"] == GW2
    assert history[-1]["reason"] == "retransmit"


def test_delete_from_the_gateway_moves_the_tunnel(
    fresh_lab: Lab, extsock: ExtsockRunner, dataplane: str
) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    sas = fresh_lab.list_sas("segw1")
    name = next(iter(sas[0]))
    fresh_lab.swanctl("segw1", "--terminate", "--ike", name, "--timeout", "5")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 10.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    history = extsock.request("history", conn="home")["records"]
    assert history[-1]["reason"] in ("ike-down", "child-down")


def test_cyclic_back_to_the_healed_primary(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    fresh_lab.heal("segw1")
    fresh_lab.fail("segw2", "drop")
    assert wait_until(lambda: extsock.status()["active_gateway"] == GW1, 15.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    assert clones(fresh_lab) == [f"home@{GW1}"]


def test_both_gateways_dead_gives_up_then_recovers_on_retry(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    fresh_lab.fail("segw1", "link")
    fresh_lab.fail("segw2", "link")
    extsock.start()
    # 2 cycles x 2 gateways x ~4 s per dead gateway (first retransmit), plus backoff.
    assert extsock.wait_phase("gave-up", 30.0), extsock.log_tail()
    status = extsock.status()
    assert status["cycles_failed"] == 2 and status["active_gateway"] is None
    assert clones(fresh_lab) == []
    assert fresh_lab.list_sas("ini") == []
    fresh_lab.heal("segw1")
    extsock.request("retry", conn="home")
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert extsock.wait_phase("up", 5.0)


def test_operator_terminate_is_not_a_failure(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    extsock.request("terminate", conn="home")
    assert extsock.wait_phase("stopped", 5.0)
    # No failover follows: nothing comes up anywhere for a while.
    assert not wait_until(
        lambda: fresh_lab.child_installed("segw1") or fresh_lab.child_installed("segw2"), 3.0
    )
    assert clones(fresh_lab) == []
    assert extsock.status()["failures_total"] == 0


def test_manual_switch_is_make_before_break(
    fresh_lab: Lab, extsock: ExtsockRunner, dataplane: str
) -> None:
    extsock.start()
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    # switch once extsock itself has the tunnel up: a switch while it still connects is a
    # new target for the connect, not a make-before-break switch (seen under load)
    assert wait_until(lambda: extsock.status()["phase"] == "up", 10.0), extsock.log_tail()
    extsock.request("switch", conn="home", to=GW2)
    assert wait_until(lambda: extsock.status()["active_gateway"] == GW2, 10.0), extsock.log_tail()
    assert wait_until(lambda: not fresh_lab.child_installed("segw1"), 5.0)
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert clones(fresh_lab) == [f"home@{GW2}"]

    def history() -> list[dict[str, object]]:
        return list(extsock.request("history", conn="home")["records"])

    # the record is written after the switch shows in status: wait for it, bounded
    assert wait_until(lambda: bool(history()), 5.0), extsock.log_tail()
    assert history()[-1]["reason"] == "operator"
