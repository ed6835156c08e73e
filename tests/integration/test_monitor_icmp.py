"""The ICMP echo monitor (`probe = icmp`, 100 ms x 3) against real charon daemons: echo
requests from ini's namespace through the CHILD_SA to 10.200.0.1 behind the gateway;
segw1 silenced (its link downed, as the bench's figures 2 and 2m do it); the tunnel must
come up on segw2, within 1 s from the fault to traffic through segw2 (the bench's goal for
this, figure 2i, is 0.5 s median; the bound here leaves room for a loaded machine).

Both kinds of echo socket are run for real: a raw socket (the lab's namespaces keep the
kernel's default `net.ipv4.ping_group_range = 1 0`: no ping sockets) and a ping socket
(the range opened in ini's namespace for the test, closed again after it).

Bounded: each detection waits at most 10 s for traffic through segw2.
"""

from __future__ import annotations

import itertools

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab
from extsock_py.lab.monitor_check import measure_detection, monitor_policy

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
BOUND_S = 1.0
_RUNS = itertools.count(1)


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "traffic"])
def test_silent_gateway_icmp_monitor_moves_traffic_to_segw2(
    fresh_lab: Lab, socket_kind: str, idle: bool
) -> None:
    policy = monitor_policy(fresh_lab, interval="100ms", misses=3, probe="icmp")
    runner = ExtsockRunner(fresh_lab, policy, name=f"icmp{next(_RUNS)}")
    runner.write_config()
    try:
        try:
            result = measure_detection(fresh_lab, runner, settle=1.0, idle=idle)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{runner.log_tail()}") from exc
        log = runner.log_text()
    finally:
        runner.stop()
    took = result["traffic_on_segw2_after"]
    print(
        f"\nICMP monitor 100ms x 3 ({socket_kind} socket, {'idle' if idle else 'traffic'}): "
        f"segw1 silent -> failure declared after {result['detected_after']}s, traffic on "
        f"segw2 after {took}s ({result})"
    )
    assert f"echo socket 10.100.0.1 -> 10.200.0.1: {socket_kind}" in log, runner.log_tail()
    assert took is not None, runner.log_tail()
    assert result["reason"] == "monitor" and result["from"] == GW1 and result["to"] == GW2
    assert took <= BOUND_S, runner.log_tail()
