"""Soak: many failover cycles against real charon daemons, watching for leaks.

Each cycle fails the gateway carrying the tunnel (alternately segw1 and segw2, alternately
by link-down and by dropping IKE/ESP), waits for the other gateway's CHILD_SA on ini and
for traffic through it, then heals the failed gateway. At the end: every cycle ended with
the CHILD_SA up and traffic passing, ini holds no leaked clone, extsock's RSS grew < 10 %
after warm-up and its open file descriptors did not grow.

The lab is tuned (ini's charon: ``retransmit_timeout = 1``) with the policy's
``dead_after_retransmits = 1``: a silent gateway is declared dead about 1 s after the
next DPD request, so a cycle takes a couple of seconds.

``make soak`` runs ``pytest -m soak tests --soak-cycles=N`` (default 1000); the normal
run has a short variant of SHORT_CYCLES cycles.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import FailMode, Lab, wait_until
from tests.integration.resilience_support import (
    GATEWAY_NODE,
    GW1,
    conn_names,
    fd_count,
    ike_sas,
    installed_on_ini,
    rss_kib,
)

TUNED_LAB = {"retransmit_timeout": 1}
SHORT_CYCLES = 50
WARM_UP = 10  # cycles before the RSS and fd baseline is taken (imports, caches, sqlite)
CYCLE_BUDGET = 30.0  # s: the whole run may take at most cycles * CYCLE_BUDGET
MAX_CONSECUTIVE_LOST = 3  # stop early: the tunnel is not coming back
POLICY = """
    connect_timeout = 3s
    dead_after_retransmits = 1
    max_cycles = 0
    backoff {
        initial = 200ms
        maximum = 1s
    }
"""


@dataclass
class SoakReport:
    cycles: int = 0
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    rss_base: int = 0
    rss_end: int = 0
    fd_base: int = 0
    fd_end: int = 0

    @property
    def rss_growth(self) -> float:
        return 100.0 * (self.rss_end - self.rss_base) / self.rss_base if self.rss_base else 0.0

    def line(self) -> str:
        mean = sum(self.durations) / len(self.durations) if self.durations else 0.0
        worst = max(self.durations, default=0.0)
        return (
            f"cycles={self.cycles} ok={self.ok} lost={len(self.lost)} "
            f"leaked_conns={len(self.leaked)} rss_growth={self.rss_growth:.1f}% "
            f"(rss {self.rss_base}->{self.rss_end} KiB, fds {self.fd_base}->{self.fd_end}, "
            f"failover mean {mean:.2f}s max {worst:.2f}s)"
        )


@pytest.fixture
def soak_extsock(fresh_lab: Lab) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(fresh_lab, POLICY, name="soak")
    shutil.rmtree(runner.dir, ignore_errors=True)
    runner.write_config()
    runner.start()
    yield runner
    runner.stop()


def run_soak(lab: Lab, runner: ExtsockRunner, cycles: int) -> SoakReport:
    assert wait_until(lambda: installed_on_ini(lab, "home") is not None, 15.0), runner.log_tail()
    assert runner.process is not None
    pid = runner.process.pid
    report = SoakReport()
    deadline = time.monotonic() + cycles * CYCLE_BUDGET
    modes: tuple[FailMode, FailMode] = ("link", "drop")
    consecutive_lost = 0
    for n in range(cycles):
        if time.monotonic() > deadline or consecutive_lost >= MAX_CONSECUTIVE_LOST:
            break
        if n == min(WARM_UP, cycles // 2):
            report.rss_base, report.fd_base = rss_kib(pid), fd_count(pid)
        report.cycles += 1
        up = installed_on_ini(lab, "home")
        active = up[1] if up is not None else GW1
        failed = GATEWAY_NODE[active]
        other = next(node for gw, node in GATEWAY_NODE.items() if gw != active)
        began = time.monotonic()
        lab.fail(failed, modes[n // 2 % 2])
        try:
            moved = wait_until(partial(_on, lab, other), 20.0, 0.02)
            took = time.monotonic() - began
            echo = lab.udp_echo(timeout=0.5, tries=10) if moved else None
        finally:
            lab.heal(failed)
        if moved and echo == other:
            report.ok += 1
            report.durations.append(took)
            consecutive_lost = 0
        else:
            report.lost.append(f"cycle {n}: moved={moved} echo={echo}")
            consecutive_lost += 1
        names = conn_names(lab)
        # The one clone expected is the one towards `other`; anything else leaked.
        expected = f"home@{next(gw for gw, node in GATEWAY_NODE.items() if node == other)}"
        extra = [c for c in names if c != expected]
        if extra and not wait_until(partial(_only_clone, lab, expected), 3.0):
            report.leaked.append(f"cycle {n}: {conn_names(lab)}")
    report.rss_end, report.fd_end = rss_kib(pid), fd_count(pid)
    if report.rss_base == 0:
        report.rss_base, report.fd_base = report.rss_end, report.fd_end
    return report


def _on(lab: Lab, node: str) -> bool:
    """Whether ini's tunnel is installed through gateway `node`."""
    up = installed_on_ini(lab, "home")
    return up is not None and GATEWAY_NODE[up[1]] == node


def _only_clone(lab: Lab, name: str) -> bool:
    return conn_names(lab) == [name]


def check(report: SoakReport, lab: Lab, runner: ExtsockRunner, cycles: int) -> None:
    print("\n" + report.line())
    assert report.cycles == cycles, f"stopped early: {report.lost[-3:]}\n{runner.log_tail()}"
    assert report.ok == cycles and not report.lost, report.lost[:5]
    assert not report.leaked, report.leaked[:5]
    assert runner.alive()
    up = installed_on_ini(lab, "home")
    assert up is not None
    assert conn_names(lab) == [f"home@{up[1]}"]
    assert len([sa for sa in ike_sas(lab) if sa[2] == "ESTABLISHED"]) == 1, ike_sas(lab)
    assert report.rss_growth < 10.0, report.line()
    assert report.fd_end <= report.fd_base, report.line()
    history = runner.request("history", conn="home", limit=cycles + 10)["records"]
    assert len([r for r in history if r["result"] == "up"]) >= cycles


@pytest.mark.integration
@pytest.mark.parametrize("lab", [TUNED_LAB], indirect=True)
def test_short_soak(fresh_lab: Lab, soak_extsock: ExtsockRunner) -> None:
    report = run_soak(fresh_lab, soak_extsock, SHORT_CYCLES)
    check(report, fresh_lab, soak_extsock, SHORT_CYCLES)


@pytest.mark.soak
@pytest.mark.parametrize("lab", [TUNED_LAB], indirect=True)
def test_soak(fresh_lab: Lab, soak_extsock: ExtsockRunner, soak_cycles: int) -> None:
    report = run_soak(fresh_lab, soak_extsock, soak_cycles)
    check(report, fresh_lab, soak_extsock, soak_cycles)
