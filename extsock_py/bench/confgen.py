"""Many connections for the mass figures: swanctl.conf text and the matching VICI bodies.

Connection ``c<i>`` (``c000``...) has its own identity ``c<i>.lab.extsock`` and its own
local traffic selector ``10.100.<1 + i // 250>.<1 + i % 250>/32`` (libipsec installs a
policy and a route per CHILD_SA: distinct selectors, each with its address on ini's lo).
The gateways' responder is widened to accept 10.100.0.0/16.
"""

from __future__ import annotations

from typing import Any

from extsock_py.bench.floorproc import base_body
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import ID_DOMAIN, INI_NET, PROTECTED_NET

WIDE_NET = "10.100.0.0/16"
MAX_CONNS = 250 * 250
LIMITS = "    block_threshold = 100000\n    cookie_threshold = 100000\n"


def conn_name(i: int) -> str:
    return f"c{i:03d}"


def conn_addr(i: int) -> str:
    if not 0 <= i < MAX_CONNS:
        raise ValueError(f"connection index {i} out of range")
    return f"10.100.{1 + i // 250}.{1 + i % 250}"


def swanctl_conf(lab: Lab, count: int, policy: str, dpd_delay: str | None = None) -> str:
    """`count` managed connections over all the lab's gateways, the PSK and an extsock section."""
    remote = ", ".join(lab.config.remote_addrs())
    dpd = dpd_delay or lab.config.dpd_delay
    blocks = []
    for i in range(count):
        name = conn_name(i)
        blocks.append(
            f"""    {name} {{
        version = 2
        local_addrs = %any
        remote_addrs = {remote}
        dpd_delay = {dpd}
        local {{
            auth = psk
            id = {name}.{ID_DOMAIN}
        }}
        remote {{
            auth = psk
            id = *.{ID_DOMAIN}
        }}
        children {{
            net {{
                local_ts = {conn_addr(i)}/32
                remote_ts = {PROTECTED_NET}
                esp_proposals = default
                dpd_action = restart
                start_action = none
            }}
        }}
    }}"""
        )
    return (
        "connections {\n" + "\n".join(blocks) + "\n}\n\n"
        f'secrets {{\n    ike-lab {{\n        secret = "{lab.config.psk}"\n    }}\n}}\n\n'
        "extsock {" + policy + "}\n"
    )


def direct_body(lab: Lab, i: int, gateway: str, dpd_delay: str | None = None) -> dict[str, Any]:
    """The VICI body of connection `i` towards one gateway, as the baseline loads it."""
    body = base_body(lab, f"{conn_addr(i)}/32", conn_name(i))
    return {**body, "remote_addrs": [gateway], "dpd_delay": dpd_delay or lab.config.dpd_delay}


def widen_gateways(lab: Lab) -> None:
    """Gateways for many clients behind one address (kept across resets, which reuse files).

    The responder accepts any 10.100.0.0/16 selector; and charon's half-open limits per peer
    address (block_threshold 5, cookie_threshold 10) are lifted: in the lab all connections
    share ini's one address, where a real SeGW sees each client from its own.
    """
    for gw in lab.gateways:
        conf = lab.node_dir(gw) / "strongswan.conf"
        conf.write_text(conf.read_text().replace("charon {\n", "charon {\n" + LIMITS, 1))
        path = lab.swanctl_conf(gw)
        text = path.read_text()
        path.write_text(text.replace(f"remote_ts = {INI_NET}", f"remote_ts = {WIDE_NET}"))
    lab.reset()  # every charon restarted: the gateways read both files again
