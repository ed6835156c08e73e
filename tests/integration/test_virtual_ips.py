"""Virtual IPs fail over (issue 14, point 5): gateways with pools, `vips = 0.0.0.0` on the
managed connection; the virtual IP each gateway assigns shows in status and in events, and
traffic from it passes the tunnel. Real charon daemons; ini installs the virtual IPs (on
kernel-libipsec's TUN device)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import INI
from tests.integration.test_topologies import GW1, GW2, Events, start

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("lab", [{"gateways": 3, "virtual_ips": True}], indirect=True),
]
__all__ = ["start"]  # the fixture, shared with test_topologies


POOLS = {"segw1": "10.100.0.64/28", "segw2": "10.100.0.80/28", "segw3": "10.100.0.96/28"}


def with_vips(text: str) -> str:
    """`home` asks for a virtual IP; its child's local side is that address (dynamic)."""
    text = text.replace("        version = 2\n", "        version = 2\n        vips = 0.0.0.0\n", 1)
    return re.sub(r"\n\s*local_ts = [^\n]*", "", text, count=1)


def give_pools(lab: Lab) -> None:
    """Each gateway hands out addresses from its own pool (inside the initiator's net)."""
    for gw, pool in POOLS.items():
        text = lab.swanctl_conf(gw).read_text()
        text = text.replace("unique = replace\n", "unique = replace\n        pools = vpool\n", 1)
        text += f"\npools {{\n    vpool {{\n        addrs = {pool}\n    }}\n}}\n"
        path = lab.node_dir(gw) / "swanctl-pools.conf"
        path.write_text(text)
        lab.swanctl(gw, "--load-all", "--file", str(path))


def charon_logs(lab: Lab, lines: int = 25) -> str:
    out = []
    for node in (INI,):
        text = lab.log_path(node).read_text(errors="replace").splitlines()
        keep = ("CHILD", "child", "virtual", "failed", "TS", "error", "installing")
        out += [f"--- {node}", *[t for t in text if any(k in t for k in keep)][-lines:]]
    return "\n".join(out)


def vip_in(pool: str, vips: list[str]) -> str:
    [vip] = vips
    assert ipaddress.ip_address(vip) in ipaddress.ip_network(pool), (vip, pool)
    return vip


def test_virtual_ips_fail_over_and_show_in_status_and_events(
    fresh_lab: Lab, start: Callable[..., tuple[ExtsockRunner, Events]]
) -> None:
    give_pools(fresh_lab)
    runner, events = start(with_vips)
    assert wait_until(lambda: runner.status()["active_gateway"] == GW1, 15.0), charon_logs(
        fresh_lab
    )
    vip1 = vip_in(POOLS["segw1"], runner.status()["virtual_ips"])
    assert fresh_lab.udp_echo(timeout=1.0, tries=3, source=vip1) == "segw1"
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: runner.status()["active_gateway"] == GW2, 20.0), runner.log_tail()
    vip2 = vip_in(POOLS["segw2"], runner.status()["virtual_ips"])
    assert fresh_lab.udp_echo(timeout=1.0, tries=5, source=vip2) == "segw2"
    ups = [e for e in events.of("tunnel-up") if e["gateway"] == GW2]
    assert ups and ups[-1]["virtual_ips"] == [vip2]
    states = [e for e in events.of("ike-state") if e["new"] == "ESTABLISHED"]
    assert states[-1]["virtual_ips"] == [vip2] and states[-1]["gateway"] == GW2
