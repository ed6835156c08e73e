"""examples/ in the lab: each example swanctl.conf, adapted to the lab (its gateways'
addresses, its traffic selectors, its identities, certificates and secrets: only those
values, each checked to be in the example), run by a real `extsock run` against ini's
charon: the tunnel comes up on the first gateway and then on the second (an operator's
switch, or for the monitor example a silent gateway the monitor detects).

Two labs: certificates with virtual IPs (small cell, road warrior), PSK (cloud, branch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.topology import (
    DEFAULT_PSK,
    INI,
    INI_ADDR,
    INI_NET,
    PROTECTED_ADDR,
    PROTECTED_NET,
)

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GW1, GW2 = "10.99.1.2", "10.99.2.2"
INI_ID, GW_IDS = "ini.lab.extsock", "*.lab.extsock"
CERT_LAB = {"auth": "cert", "virtual_ips": True}
PSK_LAB = {"auth": "psk"}
POOLS = {"segw1": "10.100.0.64/28", "segw2": "10.100.0.80/28"}
TUNNEL_PSKS = {"segw1": "tunnel1-pre-shared-key-from-the-cloud-console",
               "segw2": "tunnel2-pre-shared-key-from-the-cloud-console"}  # fmt: skip


def adapt(name: str, values: dict[str, str]) -> str:
    """The example with each of `values` (example's value -> the lab's) replaced; every
    one must be there, as a whole word or address."""
    text = (EXAMPLES / name).read_text()
    for old, new in values.items():
        pattern = rf"(?<![\w.*@-]){re.escape(old)}(?![\w.@-]|\.\d)"
        text, count = re.subn(pattern, new.replace("\\", "\\\\"), text)
        assert count, f"{name}: {old!r} is not in the example any more"
    return text


@pytest.fixture
def run_example(fresh_lab: Lab) -> Iterator[Callable[[str, str], ExtsockRunner]]:
    runners: list[ExtsockRunner] = []

    def start(name: str, text: str) -> ExtsockRunner:
        runner = ExtsockRunner(fresh_lab, "", name=f"ex-{name[:10]}", conf_transform=lambda _: text)
        runner.write_config()
        runners.append(runner)
        runner.start()
        return runner

    yield start
    for runner in runners:
        runner.stop()


def up_on(runner: ExtsockRunner, conn: str, gateway: str, timeout: float) -> bool:
    def check() -> bool:
        row = runner.status(conn)
        return row.get("phase") == "up" and row.get("active_gateway") == gateway

    return wait_until(check, timeout, 0.1)


def up_then_switched(lab: Lab, runner: ExtsockRunner, conn: str) -> None:
    assert up_on(runner, conn, GW1, 20.0), runner.log_tail()
    assert lab.udp_echo(timeout=1.0, tries=3, source=_source(runner, conn)) == "segw1"
    assert runner.request("switch", conn=conn, to=GW2)["changed"] is True
    assert up_on(runner, conn, GW2, 20.0), runner.log_tail()
    assert lab.udp_echo(timeout=1.0, tries=3, source=_source(runner, conn)) == "segw2"


def _source(runner: ExtsockRunner, conn: str) -> str:
    vips = runner.status(conn).get("virtual_ips") or []
    return str(vips[0]) if vips else INI_ADDR


def give_pools(lab: Lab) -> None:
    """Each gateway hands out virtual IPs from its own pool, inside ini's net."""
    for gw, pool in POOLS.items():
        text = lab.swanctl_conf(gw).read_text()
        text = text.replace("unique = replace\n", "unique = replace\n        pools = vpool\n", 1)
        text += f"\npools {{\n    vpool {{\n        addrs = {pool}\n    }}\n}}\n"
        path = lab.node_dir(gw) / "swanctl-pools.conf"
        path.write_text(text)
        lab.swanctl(gw, "--load-all", "--file", str(path))


@pytest.mark.parametrize("lab", [CERT_LAB], indirect=True)
def test_small_cell_towards_a_segw_pair(
    fresh_lab: Lab, run_example: Callable[[str, str], ExtsockRunner]
) -> None:
    text = adapt("small-cell-segw-pair.conf", {
        "192.0.2.1": GW1, "192.0.2.2": GW2,
        "smallcell-0001.pem": f"{INI}.pem", "smallcell-0001.ran.operator.example": INI_ID,
        "*.segw.operator.example": GW_IDS,
        "10.10.1.0/24": INI_NET, "10.20.0.0/16": PROTECTED_NET,
    })  # fmt: skip
    up_then_switched(fresh_lab, run_example("small-cell-segw-pair.conf", text), "s1")


@pytest.mark.parametrize("lab", [CERT_LAB], indirect=True)
def test_road_warrior_with_a_virtual_ip_from_each_concentrator(
    fresh_lab: Lab, run_example: Callable[[str, str], ExtsockRunner]
) -> None:
    give_pools(fresh_lab)
    text = adapt("road-warrior-vips.conf", {
        "198.51.100.10": GW1, "198.51.100.20": GW2,
        "alice.pem": f"{INI}.pem", "alice@corp.example": INI_ID, "*.vpn.corp.example": GW_IDS,
        "10.30.0.0/16": PROTECTED_NET,
    })  # fmt: skip
    runner = run_example("road-warrior-vips.conf", text)
    up_then_switched(fresh_lab, runner, "corp")
    [vip] = runner.status("corp")["virtual_ips"]
    assert vip.startswith("10.100.0.8"), vip  # from segw2's pool, 10.100.0.80/28


@pytest.mark.parametrize("lab", [PSK_LAB], indirect=True)
def test_site_to_two_cloud_endpoints_with_a_psk_each(
    fresh_lab: Lab, run_example: Callable[[str, str], ExtsockRunner]
) -> None:
    # The endpoints identify as their address, each with its own PSK.
    for gw, address in (("segw1", GW1), ("segw2", GW2)):
        gw_text = fresh_lab.swanctl_conf(gw).read_text()
        gw_text = gw_text.replace(f"id = {gw}.lab.extsock", f"id = {address}", 1)
        gw_text = gw_text.replace(DEFAULT_PSK, TUNNEL_PSKS[gw])
        path = fresh_lab.node_dir(gw) / "cloud-endpoint.conf"
        path.write_text(gw_text)
        fresh_lab.swanctl(gw, "--load-all", "--clear", "--file", str(path))
    text = adapt("site-to-cloud-psk.conf", {
        "203.0.113.10": GW1, "198.51.100.20": GW2,
        "10.50.0.0/16": INI_NET, "172.31.0.0/16": PROTECTED_NET,
    })  # fmt: skip
    up_then_switched(fresh_lab, run_example("site-to-cloud-psk.conf", text), "cloud")


@pytest.mark.parametrize("lab", [PSK_LAB], indirect=True)
def test_branch_with_the_monitor_and_the_hot_standby(
    fresh_lab: Lab, run_example: Callable[[str, str], ExtsockRunner]
) -> None:
    text = adapt("monitor-and-standby.conf", {
        "203.0.113.1": GW1, "203.0.113.2": GW2,
        "10.40.17.0/24": INI_NET, "10.0.0.0/16": PROTECTED_NET,
        "10.40.17.1": INI_ADDR, "10.0.0.1": PROTECTED_ADDR,
        "one-pre-shared-key-for-both-head-ends": DEFAULT_PSK,
        # extsock runs beside the lab, not in ini's namespace: the probes go from there
        "probe = icmp": f"probe = icmp\n        netns = {fresh_lab.namespace(INI)}",
    })  # fmt: skip
    runner = run_example("monitor-and-standby.conf", text)
    assert up_on(runner, "hq", GW1, 20.0), runner.log_tail()
    standby = {"gateway": GW2, "phase": "up"}
    assert wait_until(lambda: runner.status("hq").get("hot_standby") == standby, 15.0)
    fresh_lab.fail("segw1", "link")
    try:
        assert up_on(runner, "hq", GW2, 10.0), runner.log_tail()
        record = runner.request("history", conn="hq")["records"][-1]
        assert (record["from"], record["to"], record["reason"]) == (GW1, GW2, "monitor"), record
        assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw2"
    finally:
        fresh_lab.heal("segw1")
