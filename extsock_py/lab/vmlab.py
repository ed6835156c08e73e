"""``extsock lab up --kernel xfrm``: the same lab in a QEMU VM with Debian's kernel.

The VM (``vm.py``) is started detached and recorded in ``<state dir>.vm/`` (``vm.json``, its
control directory, the console log). Inside it, the lab's own command runs from the working
tree with ``EXTSOCK_LAB_DATAPLANE=xfrm``: the same namespaces, addresses, echo servers and
commands, with charon on kernel-netlink. While that VM runs, the lab's other commands
(status, fail, heal, kill, start, ping, exec, down) are run in it; ``down`` then powers it off.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from extsock_py.lab import vm as vmlib
from extsock_py.lab.topology import DATAPLANE_ENV

FORWARDED = ("status", "fail", "heal", "kill", "start", "ping", "exec", "down")
COMMAND_TIMEOUT = 600.0


def vm_dir(state_dir: Path) -> Path:
    return Path(f"{state_dir}.vm")


def attached(state_dir: Path) -> vmlib.Vm | None:
    return vmlib.Vm.attach(vm_dir(state_dir))


def lab_argv(args: Sequence[str]) -> list[str]:
    """``python -m extsock_py lab ARGS`` as the guest runs it."""
    return ["-m", "extsock_py", "lab", *args]


def run_in_vm(the_vm: vmlib.Vm, args: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> int:
    """Run ``extsock lab ARGS`` in the VM, print what it printed; its exit status."""
    result = the_vm.python(lab_argv(args), timeout=timeout, env={DATAPLANE_ENV: "xfrm"})
    print(result.output, end="")
    return result.rc


def up(state_dir: Path, args: Sequence[str], timeout: float) -> int:
    """Boot the VM (detached, it outlives this command) and bring the lab up in it."""
    old = attached(state_dir)
    if old is not None:
        print(f"a VM lab is already up ({vm_dir(state_dir)}): powering it off first")
        old.stop()
    why = vmlib.preflight()
    if why:
        raise vmlib.VmError(f"the XFRM lab cannot run here: {why}")
    the_vm = vmlib.Vm(vm_dir(state_dir))
    print("starting the VM (software emulation: the first start builds its image, ~2-5 min)")
    the_vm.start(detach=True)
    print(f"VM ready in {the_vm.boot_seconds} s (console: {the_vm.console})")
    rc = run_in_vm(the_vm, ["up", *args], timeout=timeout + 120.0)
    if rc != 0:
        print("lab up failed in the VM: powering it off")
        the_vm.stop()
    return rc


def forward(state_dir: Path, argv: Sequence[str], command: str) -> int | None:
    """If a VM lab runs, run ``command`` (with the arguments after it in ``argv``) in it."""
    if command not in FORWARDED:
        return None
    the_vm = attached(state_dir)
    if the_vm is None:
        return None
    try:
        args = list(argv[list(argv).index(command) :])
    except ValueError:
        return None
    rc = run_in_vm(the_vm, args)
    if command == "down":
        the_vm.stop()
        shutil.rmtree(vm_dir(state_dir), ignore_errors=True)
        print("VM powered off")
    return rc


def without_kernel(args: Sequence[str]) -> list[str]:
    """``args`` of ``lab up`` minus ``--kernel X`` / ``--kernel=X`` (the guest's lab is local)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--kernel":
            skip = True
        elif not arg.startswith("--kernel="):
            out.append(arg)
    return out
