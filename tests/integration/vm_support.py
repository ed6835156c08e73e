"""Integration tests on both data planes with one parameter, ``dataplane``.

A test that takes the ``dataplane`` fixture runs twice: ``[libipsec]`` on the host's lab, and
``[xfrm]`` on the kernel's IPsec, in a QEMU VM with Debian's kernel (``extsock_py.lab.vm``).

On the host each ``[xfrm]`` item is replaced by a ``VmItem`` (no fixtures, nothing set up on
the host). The first ``VmItem`` to run boots ONE VM for the session and runs every ``[xfrm]``
item of the session in ONE pytest inside it (``EXTSOCK_IN_VM=1``, labs on ``xfrm``), which
writes each test's outcome to a JSON report in the VM's control directory (``vm_report.py``).
Each ``VmItem`` then passes, fails (with the guest's report) or skips as its test did there.
The VM is powered off at the end of the session. Every wait is bounded: the boot by
``EXTSOCK_VM_BOOT_TIMEOUT`` (300 s), the guest's run by ``EXTSOCK_VM_SUITE_TIMEOUT`` (900 s).

Where no VM can run (no qemu, not root, no image and no way to build it) the ``[xfrm]`` items
skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from extsock_py.lab import vm as vmlib
from extsock_py.lab.lab import SLOWDOWN_ENV
from extsock_py.lab.topology import DATAPLANE_ENV

IN_VM_ENV = "EXTSOCK_IN_VM"
SUITE_TIMEOUT_ENV = "EXTSOCK_VM_SUITE_TIMEOUT"
DEFAULT_SUITE_TIMEOUT = 900.0
REPORT_ENV = "EXTSOCK_VM_REPORT"
XFRM = "xfrm"
PASSED_ENV_PREFIX = "EXTSOCK_XFRM_"


def in_vm() -> bool:
    return os.environ.get(IN_VM_ENV) == "1"


def suite_timeout() -> float:
    try:
        return float(os.environ.get(SUITE_TIMEOUT_ENV) or DEFAULT_SUITE_TIMEOUT)
    except ValueError:
        return DEFAULT_SUITE_TIMEOUT


@dataclass
class Outcome:
    outcome: str  # passed, failed, skipped
    text: str = ""
    seconds: float = 0.0


@dataclass
class VmSession:
    """The session's VM and the outcomes of the one guest run (made on first need)."""

    nodeids: list[str] = field(default_factory=list)
    outcomes: dict[str, Outcome] | None = None
    unavailable: str | None = None
    failure: str | None = None
    vm: vmlib.Vm | None = None
    workdir: Path | None = None

    def outcome(self, nodeid: str) -> Outcome:
        if self.outcomes is None and self.unavailable is None and self.failure is None:
            self._run_all()
        if self.unavailable is not None:
            return Outcome("skipped", f"XFRM lab unavailable: {self.unavailable}")
        if self.failure is not None:
            return Outcome("failed", self.failure)
        assert self.outcomes is not None
        return self.outcomes.get(nodeid) or Outcome(
            "failed", f"the guest's pytest did not report {nodeid}"
        )

    def _run_all(self) -> None:
        why = vmlib.preflight()
        if why:
            self.unavailable = why
            return
        self.workdir = Path(tempfile.mkdtemp(prefix="extsock-vm-"))
        self.vm = vmlib.Vm(self.workdir)
        try:
            self.vm.start()
        except vmlib.VmError as exc:
            self.failure = f"the VM did not start: {exc}"
            return
        report = self.vm.ctl / "report.json"
        timeout = suite_timeout()
        args = [
            "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.integration.vm_report",
            "-o", "addopts=", "-rs", "--basetemp=/tmp/pytest-vm", *self.nodeids,
        ]  # fmt: skip
        env = {
            IN_VM_ENV: "1",
            DATAPLANE_ENV: XFRM,
            REPORT_ENV: f"{vmlib.GUEST_CTL}/{report.name}",
            "EXTSOCK_LAB_PREFIX": os.environ.get("EXTSOCK_LAB_PREFIX", "exs-"),
            SLOWDOWN_ENV: "4",
            # the knobs of the [xfrm] tests themselves (cycles, opt-in tests) go through
            **{k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIX)},
        }
        began = time.monotonic()
        try:
            result = self.vm.python(args, timeout=timeout, env=env)
        except vmlib.VmError as exc:
            self.failure = f"the guest's pytest: {exc}"
            return
        took = time.monotonic() - began
        (self.workdir / "guest-pytest.txt").write_text(result.output)
        try:
            raw = json.loads(report.read_text())
        except (OSError, ValueError):
            tail = "\n".join(result.output.splitlines()[-30:])
            self.failure = (
                f"no report from the guest's pytest (exit {result.rc} after {took:.0f} s, "
                f"timeout {timeout:.0f} s):\n{tail}"
            )
            return
        self.outcomes = {
            k: Outcome(str(v["outcome"]), str(v.get("text", "")), float(v.get("seconds", 0)))
            for k, v in raw.items()
        }
        summary = result.output.strip().splitlines()[-1:] or [""]
        print(f"\n[xfrm VM] boot {self.vm.boot_seconds} s, guest pytest {took:.0f} s: {summary[0]}")

    def close(self) -> None:
        if self.vm is not None:
            self.vm.stop()
        if self.workdir is not None:
            keep = os.environ.get("EXTSOCK_VM_KEEP")
            if not keep:
                shutil.rmtree(self.workdir, ignore_errors=True)


VM_SESSION = pytest.StashKey[VmSession]()


class VmItem(pytest.Item):
    """An ``[xfrm]`` test, run in the session's VM; it reports what the guest saw."""

    def runtest(self) -> None:
        result = self.config.stash[VM_SESSION].outcome(self.nodeid)
        if result.outcome == "skipped":
            pytest.skip(result.text)
        if result.outcome != "passed":
            raise VmTestFailed(result.text)
        if result.text:
            print(result.text)  # what the test printed in the VM (figures), shown with -s

    def repr_failure(  # type: ignore[override]
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str:
        if isinstance(excinfo.value, VmTestFailed):
            return f"[in the XFRM VM]\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.name} (in the XFRM VM)"


class VmTestFailed(Exception):
    """The test failed in the VM; the message is the guest's report."""


def dataplane_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("dataplane") if callspec is not None else None
    return str(value) if value is not None else None


def delegate_xfrm_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Host: replace each ``[xfrm]`` item by a VmItem. Guest: drop the ``[libipsec]`` ones."""
    if in_vm():
        items[:] = [i for i in items if dataplane_of(i) != "libipsec"]
        return
    for k, item in enumerate(items):
        if dataplane_of(item) == XFRM and item.parent is not None:
            new = VmItem.from_parent(item.parent, name=item.name)
            new.own_markers = list(item.own_markers)
            items[k] = new
    config.stash.setdefault(VM_SESSION, VmSession())


def record_vm_items(session: pytest.Session) -> None:
    if VM_SESSION in session.config.stash:
        vms = session.config.stash[VM_SESSION]
        vms.nodeids = [i.nodeid for i in session.items if isinstance(i, VmItem)]


def close_vm(session: pytest.Session) -> None:
    if VM_SESSION in session.config.stash:
        session.config.stash[VM_SESSION].close()
