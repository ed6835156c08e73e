"""Failover with three gateways, IPv6 gateway addresses and certificate authentication."""

from __future__ import annotations

import pytest

from extsock_py.lab.extsock_runner import running_extsock
from extsock_py.lab.lab import Lab, wait_until

pytestmark = pytest.mark.integration

POLICY = "    connect_timeout = 5s\n    dead_after_retransmits = 1\n"


@pytest.mark.parametrize("lab", [{"gateways": 3, "ipv6": True, "auth": "cert"}], indirect=True)
def test_three_ipv6_gateways_with_certificates(fresh_lab: Lab) -> None:
    with running_extsock(fresh_lab, POLICY) as extsock:
        status = extsock.status()
        assert status["gateways"] == ["fd99:1::2", "fd99:2::2", "fd99:3::2"]
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
        fresh_lab.fail("segw2", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw3"), 15.0), extsock.log_tail()
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw3"
        assert extsock.status()["active_gateway"] == "fd99:3::2"
        sas = fresh_lab.list_sas("ini")
        assert [next(iter(sa)) for sa in sas] == ["home@fd99:3::2"]


@pytest.mark.parametrize("lab", [{"gateways": 3, "auth": "cert"}], indirect=True)
def test_cycle_wraps_from_the_last_gateway_to_the_first(fresh_lab: Lab) -> None:
    with running_extsock(fresh_lab, POLICY) as extsock:
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
        fresh_lab.fail("segw2", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw3"), 15.0), extsock.log_tail()
        fresh_lab.heal("segw1")
        fresh_lab.fail("segw3", "link")
        # segw1 may still hold its stale CHILD_SA: watch the initiator's side instead.
        assert wait_until(lambda: extsock.status()["active_gateway"] == "10.99.1.2", 15.0), (
            extsock.log_tail()
        )
        assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
