"""Lab.is_running across the exec chain that starts a charon (ip netns exec -> unshare -> sh
-> charon): /proc/PID/cmdline reads back empty at each exec, which once made `lab up` report
a healthy charon as "died at start". No root, no namespace: a plain child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from extsock_py.lab import lab as lab_module
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import LabConfig


def _lab_with_pid(tmp_path: Path, pid: int) -> Lab:
    lab = Lab(LabConfig(prefix="exu-"), state_dir=tmp_path / "lab")
    state = lab._state()
    state["pids"]["ini"] = pid
    lab._write_state(state)
    return lab


def test_own_child_is_judged_by_its_exit_not_by_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    lab = _lab_with_pid(tmp_path, child.pid)
    lab._children[child.pid] = child
    monkeypatch.setattr(lab_module, "_proc_cmdline", lambda pid: "")  # caught mid-exec
    try:
        assert lab.is_running("ini")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    assert not lab.is_running("ini")


def test_foreign_process_mid_exec_counts_as_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another `extsock lab` process (status, kill) has no Popen: an alive pid whose cmdline is
    empty is taken as running; one that names something else is not ours."""
    lab = _lab_with_pid(tmp_path, 4242)
    monkeypatch.setattr(lab_module, "_proc_alive", lambda pid: True)
    monkeypatch.setattr(lab_module, "_proc_cmdline", lambda pid: "")
    assert lab.is_running("ini")
    monkeypatch.setattr(lab_module, "_proc_cmdline", lambda pid: "/usr/lib/ipsec/charon")
    assert lab.is_running("ini")
    monkeypatch.setattr(lab_module, "_proc_cmdline", lambda pid: "/usr/bin/vim notes")
    assert not lab.is_running("ini")
    monkeypatch.setattr(lab_module, "_proc_alive", lambda pid: False)
    monkeypatch.setattr(lab_module, "_proc_cmdline", lambda pid: "/usr/lib/ipsec/charon")
    assert not lab.is_running("ini")
