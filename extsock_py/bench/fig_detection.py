"""Figures 2 and 3: a silent gateway to traffic on the next one, and an initial connect to a
dead primary, with extsock; their baselines come from charon alone (``fig_alone``).

Figure 2: ``lab.fail(gw, "link")`` at t0; extsock's figure is t0 -> child-updown up of the
next clone on an independent listener.  Trials alternate between the gateways (the failed
one is healed after each trial).  Figure 3: segw1 silent from the start, extsock started;
from its first ``initiating IKE_SA`` towards segw1 to the CHILD_SA up on segw2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extsock_py.bench.labs import POLICY, BenchRunner, fresh_name, running
from extsock_py.bench.watch import EventWatch, Seen, child_up
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI, INI_ADDR, PROTECTED_ADDR, gateway_name

HOME = "home"


@dataclass
class Durations:
    """Seconds per trial, the detection part of each, and what went wrong."""

    total: list[float] = field(default_factory=list)
    noticed: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _retransmit_of(conn: str) -> Callable[[Seen], bool]:
    return lambda s: s.kind == "log" and s.conn == conn and s.text.startswith("retransmit")


def detection(lab: Lab, trials: int, timeout: float, policy: str = POLICY) -> Durations:
    """Figure 2 (and the monitor's figure, with a monitor policy): silence -> up elsewhere."""
    addrs = lab.config.remote_addrs()
    out = Durations()
    with (
        EventWatch(str(lab.vici_path(INI))) as watch,
        running(BenchRunner(lab, policy, name=fresh_name())),
    ):
        if watch.wait_for(child_up(f"{HOME}@{addrs[0]}"), 20.0) is None:
            raise RuntimeError("extsock's tunnel did not come up on segw1")
        active = 0
        for _ in range(trials):
            nxt = (active + 1) % len(addrs)
            node = gateway_name(active + 1)
            time.sleep(1.5)  # a steady state: DPD running on the new SA
            mark = watch.mark()
            t0 = time.monotonic()
            lab.fail(node, "link")
            try:
                up = watch.wait_for(child_up(f"{HOME}@{addrs[nxt]}"), timeout, mark)
                if up is None:
                    out.errors.append(f"not up on {addrs[nxt]} within {timeout:.0f} s")
                else:
                    out.total.append(up.at - t0)
                    seen = watch.find(_retransmit_of(f"{HOME}@{addrs[active]}"), mark)
                    if seen is not None:
                        out.noticed.append(seen.at - t0)
                    active = nxt
            finally:
                lab.heal(node)
    return out


def initial_connect(lab: Lab, trials: int, timeout: float) -> Durations:
    """Figure 3: segw1 silent, extsock started: first initiate towards segw1 -> up on segw2."""
    gw1, gw2 = lab.config.remote_addrs()[:2]
    out = Durations()
    for _ in range(trials):
        lab.reset()  # no SA, nothing loaded: a true initial connect
        lab.fail("segw1", "link")
        try:
            with EventWatch(str(lab.vici_path(INI))) as watch:
                spawned = time.monotonic()
                with running(BenchRunner(lab, POLICY, name=fresh_name())):
                    up = watch.wait_for(child_up(f"{HOME}@{gw2}"), timeout)
                    first = watch.find(
                        lambda s: s.conn == f"{HOME}@{gw1}" and s.text.startswith("initiating")
                    )
                if up is None or first is None:
                    out.errors.append(f"not up on {gw2} within {timeout:.0f} s")
                    continue
                out.total.append(up.at - first.at)
                out.noticed.append(up.at - spawned)  # here: from the process spawn
        finally:
            lab.heal("segw1")
    return out


# ---------------------------------------------------------------------------------------
# MONITOR (issue 8): "monitor detection to traffic", goal <= 2.0 s median, figure 2's family.
# The same trials as figure 2 with the tunnel monitor on (probes from ini's namespace through
# the tunnel to the protected net).  `families.monitor_figure` runs it when
# `monitor_available()`; a config the running extsock refuses is reported as skipped.
# ---------------------------------------------------------------------------------------

MONITOR_GOAL_S = 2.0


def monitor_available() -> str | None:
    """None when the code has the tunnel monitor, else why the figure is skipped."""
    try:
        from extsock_py.domain.policy import FailoverPolicy

        FailoverPolicy().monitor  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return f"no tunnel monitor in this code ({exc})"
    return None


def monitor_policy(lab: Lab) -> str:
    return POLICY + (
        "    monitor {\n"
        "        enabled = yes\n"
        f"        local = {INI_ADDR}\n"
        f"        remote = {PROTECTED_ADDR}\n"
        "        port = 33434\n"  # closed on the gateways: ICMP port unreachable answers
        "        interval = 500ms\n"
        "        misses = 3\n"
        f"        netns = {lab.namespace(INI)}\n"
        "    }\n"
    )
