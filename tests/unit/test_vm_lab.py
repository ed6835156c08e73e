"""The XFRM lab's VM: its qemu command line, the guest's agent script, the lab's XFRM load
list and the `lab up --kernel xfrm` argument handling (pure parts; the VM itself runs in
the [xfrm] integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extsock_py.lab import vm, vmimage, vmlab
from extsock_py.lab.topology import LabConfig, render_strongswan_conf


def test_qemu_runs_emulated_without_network_on_a_throwaway_disk(tmp_path: Path) -> None:
    argv = vm.qemu_argv(tmp_path, tmp_path / "ctl", [Path("/srv/repo")], tmp_path / "c.log")
    line = " ".join(argv)
    assert argv[0] == vm.QEMU
    assert "-accel tcg -cpu max" in line  # KVM is not usable here
    assert "-nic none" in line and "-no-reboot" in line
    assert "snapshot=on" in line  # the cached image is never written
    assert f"init={vmimage.INIT_PATH}" in line
    assert f"mount_tag={vmimage.CTL_TAG}" in line and "path=/srv/repo,mount_tag=share0" in line


def test_the_agent_mounts_each_share_at_the_hosts_path_and_loads_esp() -> None:
    script = vm.agent_script([Path("/srv/repo"), Path("/opt/venv/lib")])
    assert "mount -t 9p -o trans=virtio" in script
    assert "share0 /srv/repo" in script and "share1 /opt/venv/lib" in script
    assert "esp4" in script and "xfrm_user" in script and "xfrm_interface" in script
    assert "/proc/sysrq-trigger" in script  # powers off when asked to stop
    for field in ("{ctl}", "{mounts}", "{modules}", "{tool_plugins}"):
        assert field not in script  # every template field filled


def test_one_share_covers_what_lies_below_it() -> None:
    kept = vm._outermost([Path("/a/b"), Path("/a"), Path("/c/d"), Path("/a/b/c")])
    assert kept == [Path("/a"), Path("/c/d")]


def test_the_xfrm_lab_loads_kernel_netlink_only_and_updown() -> None:
    libipsec, xfrm = LabConfig(), LabConfig(dataplane="xfrm")
    assert "kernel-libipsec" in libipsec.load_list("ini")
    assert "updown" not in libipsec.load_list("ini")
    assert "kernel-libipsec" not in xfrm.load_list("ini")
    assert {"kernel-netlink", "updown"} <= set(xfrm.load_list("segw1"))
    conf = render_strongswan_conf("ini", xfrm, vici_socket="/x.vici", log_path="/x.log")
    assert "kernel-libipsec" not in conf and "kernel-netlink" in conf


def test_an_unknown_dataplane_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="libipsec, xfrm"):
        LabConfig(dataplane="dpdk")  # type: ignore[arg-type]


def test_lab_up_in_the_vm_gets_every_argument_but_the_kernel() -> None:
    args = ["--gateways", "3", "--kernel", "xfrm", "--auth", "cert", "--kernel=xfrm"]
    assert vmlab.without_kernel(args) == ["--gateways", "3", "--auth", "cert"]


def test_no_qemu_is_said_with_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name: None)
    why = vm.preflight()
    assert why is not None and "qemu-system-x86" in why and vm.QEMU in why


def test_a_cache_of_another_image_version_is_not_ready(tmp_path: Path) -> None:
    for name in vmimage.FILES:
        (tmp_path / name).write_text("")
    (tmp_path / "ready").write_text("0 an older image\n")
    assert not vmimage.is_ready(tmp_path)
    (tmp_path / "ready").write_text(vmimage.IMAGE_VERSION + "\n")
    assert vmimage.is_ready(tmp_path)
