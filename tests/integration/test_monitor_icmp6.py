"""The ICMP echo monitor over IPv6 (`probe = icmp`, 100 ms x 3) against real charon daemons.

The lab is IPv6 inside and out: the gateways are fd99:K::2, and the CHILD_SA's traffic
selectors carry fd00:100::/64 <-> fd00:200::/64 beside the IPv4 nets (`inner_ipv6`). The
monitor sends ICMPv6 echo requests fd00:100::1 -> fd00:200::1 through the CHILD_SA; only the
tunnel routes between the two (no other path exists in the lab), so every answer crossed it.

- segw1 silenced (its link downed): the tunnel must come up on segw2 within 1 s from the fault
  to IPv6 traffic through segw2, as in the IPv4 tests (test_monitor_icmp.py), with a raw
  ICMPv6 socket and with a ping socket (`net.ipv4.ping_group_range`, which also governs
  ICMPv6 ping sockets, opened in ini's namespace for the test).
- segw1 alive, IKE and ESP flowing, only its echo replies gone (echo requests dropped in its
  namespace): the monitor must declare segw1 dead all the same and move the tunnel. The
  check that what keeps a gateway in place is the ICMPv6 answers, nothing else.

Bounded: each detection waits at most 10 s for traffic through segw2.
"""

from __future__ import annotations

import itertools
import time

import pytest

from extsock_py.lab import netns
from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.monitor_check import measure_detection, monitor_policy
from extsock_py.lab.topology import INI_ADDR6, INI_NET6, PROTECTED_ADDR6

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("lab", [{"ipv6": True, "inner_ipv6": True}], indirect=True),
]

GW1, GW2 = "fd99:1::2", "fd99:2::2"
BOUND_S = 1.0
_RUNS = itertools.count(1)
# Echo requests to the protected address dropped on their way in (after libipsec decrypted
# them); in the lab's fault table, which `heal` and `reset` remove.
_DROP_ECHO = f"""table inet {netns.FAULT_TABLE} {{
  chain input {{ type filter hook input priority -10; policy accept;
    ip6 daddr {PROTECTED_ADDR6} icmpv6 type echo-request drop; }}
}}
"""


def _runner(lab: Lab) -> ExtsockRunner:
    policy = monitor_policy(
        lab, interval="100ms", misses=3, probe="icmp", local=INI_ADDR6, remote=PROTECTED_ADDR6
    )
    runner = ExtsockRunner(lab, policy, name=f"icmp6-{next(_RUNS)}")
    runner.write_config()
    return runner


def _carries_ipv6(lab: Lab, gateway: str) -> bool:
    """Whether `gateway`'s installed CHILD_SA has ini's IPv6 net among its remote selectors."""
    for entry in lab.list_sas(gateway):
        for ike in entry.values():
            for child in (ike.get("child-sas") or {}).values():
                if child.get("state") == "INSTALLED" and INI_NET6 in child.get("remote-ts", []):
                    return True
    return False


def test_silent_gateway_icmpv6_monitor_moves_traffic_to_segw2(
    fresh_lab: Lab, socket_kind: str
) -> None:
    runner = _runner(fresh_lab)
    try:
        try:
            result = measure_detection(fresh_lab, runner, settle=1.0, idle=True, ipv6=True)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{runner.log_tail()}") from exc
        log = runner.log_text()
        history = runner.request("history", conn="home")["records"]
    finally:
        runner.stop()
    took = result["traffic_on_segw2_after"]
    print(
        f"\nICMPv6 monitor 100ms x 3 ({socket_kind} socket, idle): segw1 silent -> failure "
        f"declared after {result['detected_after']}s, IPv6 traffic on segw2 after {took}s"
    )
    # one failover only: had the echoes gone unanswered, the monitor would have left segw1
    # during the settling second already
    assert [(r["reason"], r["from"], r["to"]) for r in history] == [("monitor", GW1, GW2)], history
    assert f"echo socket {INI_ADDR6} -> {PROTECTED_ADDR6}: {socket_kind}" in log, log[-3000:]
    assert took is not None, runner.log_tail()
    assert took <= BOUND_S, runner.log_tail()
    assert _carries_ipv6(fresh_lab, "segw2")


def test_unanswered_icmpv6_echoes_alone_move_the_tunnel(fresh_lab: Lab) -> None:
    """Idle tunnel (traffic would count as life): only the probes can tell."""
    runner = _runner(fresh_lab)
    runner.start()
    try:
        assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), runner.log_tail()
        assert wait_until(lambda: "monitoring the tunnel via" in runner.log_text(), 5.0)
        time.sleep(1.0)  # answered probes: no failover
        assert runner.status()["failures_total"] == 0, runner.log_tail()
        dropped_at = time.monotonic()
        netns.run(netns.ns_argv(fresh_lab.namespace("segw1"), ["nft", "-f", "-"]), stdin=_DROP_ECHO)
        moved = wait_until(lambda: runner.status()["active_gateway"] == GW2, 10.0, 0.02)
        took = time.monotonic() - dropped_at
        via = fresh_lab.udp_echo(timeout=1.0, tries=3, source=INI_ADDR6)
        history = runner.request("history", conn="home")["records"]
        log = runner.log_text()
    finally:
        runner.stop()
        fresh_lab.heal("segw1")
    print(f"\nICMPv6 echoes dropped at segw1 (IKE and ESP alive): up on segw2 after {took:.3f}s")
    assert moved, log[-3000:]
    assert [(r["reason"], r["from"], r["to"]) for r in history] == [("monitor", GW1, GW2)], history
    assert "probes unanswered): gateway dead" in log
    assert took <= BOUND_S, log[-3000:]
    assert via == "segw2"
