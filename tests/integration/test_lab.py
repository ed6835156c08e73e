"""The namespace lab itself works, driven with plain swanctl (no extsock)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from extsock_py.lab import netns, roots
from extsock_py.lab.cli import lab as lab_cli
from extsock_py.lab.lab import FAIL_MODES, Lab, wait_until
from extsock_py.lab.topology import LabConfig
from tests.integration.conftest import PREFIX

pytestmark = pytest.mark.integration

INITIATE_TIMEOUT = 5.0


def _initiate(lab: Lab) -> float:
    """``swanctl --initiate`` ini's ``home``; the seconds it took."""
    started = time.monotonic()
    proc = lab.initiate_with_swanctl(timeout=INITIATE_TIMEOUT)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:]
    return elapsed


def _up_tunnel(lab: Lab) -> float:
    lab.load_ini_conf_with_swanctl()
    return _initiate(lab)


def _load_home_towards(lab: Lab, gateway: str) -> None:
    """Load ``home`` with remote_addrs = that one gateway (beside the rendered file, so the
    certs/ and private/ folders resolve)."""
    address = lab.config.link(gateway).gw_addr(lab.config.ipv6)
    text = re.sub(r"remote_addrs = .*", f"remote_addrs = {address}", lab.ini_conf.read_text())
    path = lab.node_dir("ini") / f"swanctl-{gateway}.conf"
    path.write_text(text)
    lab.swanctl("ini", "--load-all", "--file", str(path))


def _received_ike(lab: Lab, node: str) -> int:
    return len(re.findall(r"received packet", lab.log_path(node).read_text()))


def test_preflight_passes(lab: Lab) -> None:
    assert Lab.preflight() is None
    assert lab.vici_uri("ini") == f"unix://{lab.state_dir}/ini/charon.vici"


def test_tunnel_to_segw1_carries_traffic(fresh_lab: Lab) -> None:
    lab = fresh_lab
    elapsed = _up_tunnel(lab)
    assert lab.wait_child_installed("segw1", timeout=5)
    assert lab.which_gateway_has_child() == "segw1"
    assert lab.child_installed("ini", "net")
    assert lab.ping_through_tunnel(count=1, timeout=2)
    assert lab.udp_echo(timeout=1, tries=3) == "segw1"
    assert elapsed < 3, f"tunnel took {elapsed:.3f} s"
    print(f"tunnel up (swanctl --initiate, wall clock incl. swanctl start): {elapsed:.3f} s")


def test_no_traffic_without_tunnel(fresh_lab: Lab) -> None:
    assert not fresh_lab.ping_through_tunnel(timeout=1)
    assert fresh_lab.udp_echo(timeout=0.3) is None
    assert fresh_lab.which_gateway_has_child() is None


def test_segw2_serves_the_same_network(fresh_lab: Lab) -> None:
    lab = fresh_lab
    _load_home_towards(lab, "segw2")
    _initiate(lab)
    assert lab.wait_child_installed("segw2", timeout=5)
    assert lab.which_gateway_has_child() == "segw2"
    assert lab.udp_echo(timeout=1, tries=3) == "segw2"


@pytest.mark.parametrize("mode", FAIL_MODES)
def test_fail_makes_segw1_silent_and_heal_restores(fresh_lab: Lab, mode: str) -> None:
    lab = fresh_lab
    _up_tunnel(lab)
    assert lab.udp_echo(timeout=1, tries=3) == "segw1"
    lab.fail("segw1", "drop" if mode == "drop" else "link")
    assert not lab.ping_through_tunnel(timeout=1)
    assert lab.udp_echo(timeout=0.3, tries=2) is None
    status = {s.node: s for s in lab.status()}
    assert status["segw1"].fault is not None
    assert mode in status["segw1"].fault
    if mode == "link":
        assert status["segw1"].link == "DOWN"
    lab.heal("segw1")
    assert lab.status()[1].fault is None
    # The SAs survived the outage (charon retransmits DPD for minutes): traffic flows again.
    assert lab.udp_echo(timeout=1, tries=3) == "segw1"


@pytest.mark.parametrize("mode", FAIL_MODES)
def test_initiate_towards_failed_gateway_gets_no_answer(fresh_lab: Lab, mode: str) -> None:
    lab = fresh_lab
    lab.fail("segw1", "drop" if mode == "drop" else "link")
    before = _received_ike(lab, "segw1")
    lab.load_ini_conf_with_swanctl()
    proc = lab.initiate_with_swanctl(timeout=2)
    assert proc.returncode != 0
    assert _received_ike(lab, "segw1") == before
    assert lab.which_gateway_has_child() is None


def test_kill_and_start_gateway(fresh_lab: Lab) -> None:
    lab = fresh_lab
    _up_tunnel(lab)
    old_pid = lab.pid("segw1")
    lab.kill("segw1")
    assert not lab.is_running("segw1")
    with pytest.raises(OSError):
        lab.list_sas("segw1", timeout=1)
    assert lab.udp_echo(timeout=0.3) is None
    lab.start("segw1")
    assert lab.is_running("segw1")
    assert lab.pid("segw1") != old_pid
    assert "lab-ini" in lab.swanctl("segw1", "--list-conns").stdout
    # ini still holds the IKE_SA of the dead charon: drop it, then connect again.
    lab.swanctl("ini", "--terminate", "--ike", "home", "--force", "--timeout", "2", check=False)
    _initiate(lab)
    assert lab.wait_child_installed("segw1", timeout=5)
    assert lab.udp_echo(timeout=1, tries=3) == "segw1"


def test_kill_and_start_ini(fresh_lab: Lab) -> None:
    lab = fresh_lab
    _up_tunnel(lab)
    lab.kill("ini")
    assert not lab.is_running("ini")
    lab.start("ini")
    assert lab.is_running("ini")
    assert lab.list_sas("ini") == []
    assert "home" not in lab.swanctl("ini", "--list-conns").stdout


def test_cli_status_attaches(fresh_lab: Lab) -> None:
    result = CliRunner().invoke(lab_cli, ["--dir", str(fresh_lab.state_dir), "status"])
    assert result.exit_code == 0, result.output
    for node in fresh_lab.nodes:
        assert node in result.output
    assert "vici ok" in result.output


@pytest.mark.parametrize(
    "lab",
    [
        {"auth": "cert"},
        {"gateways": 3, "ipv6": True},
        {"gateways": 3, "ipv6": True, "auth": "cert"},
    ],
    indirect=True,
    ids=["cert", "3gw-ipv6-psk", "3gw-ipv6-cert"],
)
def test_variants(fresh_lab: Lab) -> None:
    lab = fresh_lab
    elapsed = _up_tunnel(lab)
    assert lab.wait_child_installed("segw1", timeout=5)
    assert lab.udp_echo(timeout=1, tries=3) == "segw1"
    (sa,) = lab.list_sas("ini")
    ike = sa["home"]
    assert ike["remote-id"] == "segw1.lab.extsock"
    assert ike["remote-host"] == lab.config.remote_addrs()[0]
    print(f"{lab.config.auth} ipv6={lab.config.ipv6}: tunnel up in {elapsed:.3f} s")
    last = lab.gateways[-1]
    lab.swanctl("ini", "--terminate", "--ike", "home", "--force", "--timeout", "2", check=False)
    _load_home_towards(lab, last)
    _initiate(lab)
    assert lab.wait_child_installed(last, timeout=5)
    assert lab.udp_echo(timeout=1, tries=3) == last


def _lab_charons(state_dir: Path) -> list[int]:
    marker = f"STRONGSWAN_CONF={state_dir}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _is_charon(pid: int) -> bool:
    try:
        return b"charon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_down_after_lost_state_cleans_everything(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second lab (other prefix, so the module's lab is untouched) whose state file is lost
    is still fully removed by ``down``."""
    cfg = LabConfig(gateways=3, prefix="ext-")
    state_dir = tmp_path_factory.mktemp("crashlab")
    other = Lab(cfg, state_dir=state_dir)
    try:
        other.up()
        assert len(_lab_charons(state_dir)) == 4
        (state_dir / "lab.json").unlink()
        Lab(cfg, state_dir=state_dir).down()
        assert wait_until(lambda: not _lab_charons(state_dir), 5)
        assert not any(netns.ns_exists(cfg.namespace(n)) for n in cfg.nodes)
        assert not state_dir.exists()
        Lab(cfg, state_dir=state_dir).down()  # idempotent
    finally:
        other.down()
    assert lab.is_running("ini")


def test_a_root_charon_after_lost_state_leaves_no_process_and_no_mount(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ini's charon from a Debian root (trixie): its mounts live in its own mount namespace,
    so once ``down`` has killed it nothing of the root is mounted in ours."""
    prefix = PREFIX[:-1][:4] + "c-"  # beside the module's lab, never the same names
    cfg = LabConfig(gateways=1, prefix=prefix, node_charon=("ini=trixie",))
    state_dir = tmp_path_factory.mktemp("rootcrash")
    other = Lab(cfg, state_dir=state_dir)
    try:
        other.up()
        assert other.charon_label("ini").startswith("trixie (6.")
        assert len(_lab_charons(state_dir)) == 2
        assert not _root_mounts()  # the chroot's mounts are not in our namespace
        (state_dir / "lab.json").unlink()
        Lab(cfg, state_dir=state_dir).down()
        assert wait_until(lambda: not _lab_charons(state_dir), 5)
        assert not any(netns.ns_exists(cfg.namespace(n)) for n in cfg.nodes)
        assert not _root_mounts()
    finally:
        other.down()
    assert lab.is_running("ini")


def test_down_leaves_nothing_then_up_again(lab: Lab) -> None:
    pids = [lab.pid(n) for n in lab.nodes]
    lab.down()
    assert not any(netns.ns_exists(lab.namespace(n)) for n in ("ini", "segw1", "segw2", "segw3"))
    assert not _lab_charons(lab.state_dir)
    assert not any(pid is not None and _is_charon(pid) for pid in pids)
    assert not lab.state_dir.exists()
    lab.down()
    lab.up()
    assert all(lab.is_running(n) for n in lab.nodes)


def _root_mounts() -> list[str]:
    """Mounts of the charon roots in this namespace (a root being built elsewhere excepted)."""
    return [p for p in roots.leftover_mounts() if ".build-" not in p]
