"""Coexistence with `swanctl --load-all` (what strongswan.service runs), on real charons.

swanctl loads the managed connection as written, with `start_action = start`: it comes up
on segw1 as `home`. extsock is then started on the same file. It must take over: one
tunnel (its clone), the as-written config unloaded, through a failover and through the
failed gateway's return (failback).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
POLICY = """
    connect_timeout = 5s
    dead_after_retransmits = 1
    backoff {
        initial = 500ms
        maximum = 1s
    }
    failback {
        enabled = yes
        probe_interval = 1s
        probe_timeout = 2s
        hold_down = 2s
    }
"""


def as_written(text: str) -> str:
    """The lab's `home` as a user writes it for swanctl: its child starts by itself."""
    return text.replace("start_action = none", "start_action = start")


@pytest.fixture
def extsock(fresh_lab: Lab) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(fresh_lab, POLICY, name="x-takeover", conf_transform=as_written)
    runner.write_config()
    yield runner
    runner.stop()


def ike_names(lab: Lab, node: str = "ini") -> list[str]:
    """The IKE_SAs that carry a tunnel (failback's childless probes aside)."""
    return sorted(name for entry in lab.list_sas(node) for name in entry if "~" not in name)


def conn_names(lab: Lab) -> list[str]:
    with lab.vici_session("ini") as session:
        return sorted(name for conn in session.list_conns() for name in conn)


def steady(lab: Lab, names: list[str], seconds: float) -> list[str]:
    """`names` still the only IKE_SAs on ini after `seconds` (checked every 0.25 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ike_names(lab) != names:
            return ike_names(lab)
        time.sleep(0.25)
    return ike_names(lab)


def test_extsock_takes_over_what_swanctl_loaded_and_keeps_one_tunnel(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    assert "start_action = start" in extsock.conf.read_text()
    fresh_lab.swanctl("ini", "--load-all", "--file", str(extsock.conf))
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0)
    assert ike_names(fresh_lab) == ["home"]

    extsock.start()
    assert wait_until(lambda: ike_names(fresh_lab) == [f"home@{GW1}"], 15.0), (
        ike_names(fresh_lab),
        extsock.log_tail(),
    )
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert extsock.status()["phase"] == "up"
    took = [line for line in extsock.log_text().splitlines() if "took over" in line]
    assert len(took) == 1 and "home: took over the as-written connection" in took[0], (
        took,
        extsock.log_text(),
    )
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"

    # failover: nothing restarts towards the dead segw1 beside extsock's tunnel on segw2
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: ike_names(fresh_lab) == [f"home@{GW2}"], 20.0), (
        ike_names(fresh_lab),
        extsock.log_tail(),
    )
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert steady(fresh_lab, [f"home@{GW2}"], 3.0) == [f"home@{GW2}"]
    assert "home" not in conn_names(fresh_lab)

    # the failed gateway returns: failback moves the one tunnel back, no second one
    fresh_lab.heal("segw1")
    assert wait_until(lambda: ike_names(fresh_lab) == [f"home@{GW1}"], 20.0), (
        ike_names(fresh_lab),
        extsock.log_tail(),
    )
    assert steady(fresh_lab, [f"home@{GW1}"], 3.0) == [f"home@{GW1}"]
    assert conn_names(fresh_lab) == [f"home@{GW1}"]
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    # (segw1 itself may still list the IKE_SA it had before its link failed: the lab's
    # gateways run no DPD, and the initiator could not reach it to delete it)
