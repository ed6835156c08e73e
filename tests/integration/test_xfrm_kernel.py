"""On the kernel's IPsec (XFRM, in the VM): nothing is left in the kernel after failovers and
switches (issue 23, item 4). ini's SAs (`ip xfrm state`), its policies (`ip xfrm policy`,
charon's per-socket IKE bypass policies aside) and its routes in table 220 are counted after
failovers by DELETE and operator switches, once the last drain is over: exactly one
CHILD_SA's worth must remain (2 SAs, in/out/fwd policies, 1 route).

The counts are of lines, never printed whole: `ip xfrm state` shows the SAs' keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from tests.integration.resilience_support import FAST_POLICY, GW1, GW2, runner_tag

pytestmark = pytest.mark.integration

# 100 each for the figure (EXTSOCK_XFRM_LEAK_CYCLES=100); CI runs fewer under emulation.
CYCLES = int(os.environ.get("EXTSOCK_XFRM_LEAK_CYCLES") or 4)
POLICY = FAST_POLICY.replace("connect_timeout = 5s", "connect_timeout = 20s")
NODE = {GW1: "segw1", GW2: "segw2"}
LIVE = {"states": 2, "policies": 3, "routes": 1}  # one CHILD_SA: in + out SA; in, out, fwd


@pytest.fixture
def extsock(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(fresh_lab, POLICY, name=f"k-{runner_tag(request)}")
    runner.write_config()
    yield runner
    runner.stop()


def kernel_counts(lab: Lab) -> dict[str, int]:
    """ini's SAs, its policies (in/out/fwd; not the IKE sockets') and table 220's routes."""
    states = lab.ns_exec(INI, ["ip", "xfrm", "state", "list"], check=True).stdout
    policies = lab.ns_exec(INI, ["ip", "xfrm", "policy", "list"], check=True).stdout
    routes = lab.ns_exec(INI, ["ip", "route", "show", "table", "220"]).stdout
    return {
        "states": len(re.findall(r"^src ", states, re.MULTILINE)),
        "policies": len(re.findall(r"^\s+dir (?:in|out|fwd) ", policies, re.MULTILINE)),
        "routes": len([line for line in routes.splitlines() if line.strip()]),
    }


def on(extsock: ExtsockRunner, gateway: str, timeout: float = 40.0) -> bool:
    def there() -> bool:
        row = extsock.status()
        return bool(row["phase"] == "up" and row["active_gateway"] == gateway)

    return wait_until(there, timeout, interval=0.1)


@pytest.mark.parametrize("dataplane", ["xfrm"])
def test_after_failovers_and_switches_the_kernel_holds_only_the_live_tunnel(
    fresh_lab: Lab, extsock: ExtsockRunner, dataplane: str
) -> None:
    extsock.start()
    assert on(extsock, GW1), extsock.log_tail()
    current = GW1
    for k in range(CYCLES):  # failovers: the active gateway deletes the IKE_SA
        sas = fresh_lab.list_sas(NODE[current])
        assert sas, f"failover {k}: no IKE_SA on {NODE[current]}"
        fresh_lab.swanctl(
            NODE[current], "--terminate", "--ike", next(iter(sas[0])), "--timeout", "10"
        )
        current = GW2 if current == GW1 else GW1
        assert on(extsock, current), f"failover {k}\n{extsock.log_tail()}"
    for k in range(CYCLES):  # make-before-break switches by the operator
        current = GW2 if current == GW1 else GW1
        assert extsock.request("switch", conn="home", to=current)["changed"] is True, k
        assert on(extsock, current), f"switch {k}\n{extsock.log_tail()}"
    assert wait_until(lambda: extsock.status()["draining"] is None, 20.0), extsock.log_tail()
    wait_until(lambda: kernel_counts(fresh_lab) == LIVE, 20.0, interval=0.5)
    counts = kernel_counts(fresh_lab)
    print(f"\nafter {CYCLES} failovers + {CYCLES} switches on XFRM: {counts}")
    assert counts == LIVE, counts
    assert fresh_lab.udp_echo(timeout=2.0, tries=5) == NODE[current]
