"""Figure 7: switches and failbacks with a 200/s UDP stream, datagrams lost (goal 0).

Each trial: extsock up on segw1 with failback on (first probe 1.5 s after a switch,
hold_down 0); a sequenced UDP stream, 200 datagrams/s, from ini's protected address to a
counting echo behind each gateway that answers 50 ms after it received (a far host 50 ms
behind its gateway; `extsock_py/lab/seqstream.py`); then `cycles` times: the operator
switches to segw2, the failback brings the tunnel back to segw1. Losses are counted each
way (ini -> far end, far end -> ini) and each one is put to the switch nearest in time.

extsock as shipped (switch_drain = 1 s) beside the baseline of the same run: the same
make-before-break switch with switch_drain = 0, the old tunnel terminated as soon as the
new one is up (what extsock did before issue 18). Trials alternate the two.
7g: the longest time between two datagrams in a row arriving, per switch, each way.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extsock_py.bench import labs
from extsock_py.bench.labs import MAIN_PREFIX, BenchRunner, bench_lab, fresh_name, running
from extsock_py.bench.stats import Figure, Summary, skipped
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.seqstream import SeqStream, StreamResult
from extsock_py.lab.topology import LabConfig

if TYPE_CHECKING:
    from extsock_py.bench.cli import Plan

Log = Callable[[str], None]
GW1, GW2 = "10.99.1.2", "10.99.2.2"
PERIOD = 0.005  # 200 datagrams/s
FAR_DELAY = 0.05
SETTLE = 1.3  # s after a failback before the next switch: past its drain (1 s)
NAME = "7 switch and failback with a 200/s UDP stream: datagrams lost in 10 switches"
GAP_NAME = "7g switch and failback: longest gap per switch at the far end (200/s stream)"
# the bench's policy, with a failback that probes segw1 soon and keeps no hold-down
POLICY = (
    labs.POLICY
    + """    failback {
        enabled = yes
        probe_interval = 1500ms
        probe_timeout = 2s
        hold_down = 0s
    }
"""
)


@dataclass
class Trial:
    """One stream through `cycles` switches and failbacks."""

    drained: bool
    lost_out: int = 0
    lost_back: int = 0
    sent: int = 0
    per_switch: list[int] = field(default_factory=list)  # losses, both ways, by switch
    gaps_out: list[float] = field(default_factory=list)  # s, longest per switch
    gaps_back: list[float] = field(default_factory=list)


def cycles_for(plan: Plan) -> int:
    return 2 if plan.mode.startswith("smoke") else 10


def _on(runner: BenchRunner, gateway: str, timeout: float = 10.0) -> bool:
    def there() -> bool:
        row = runner.status()
        return bool(row["phase"] == "up" and row["active_gateway"] == gateway)

    return wait_until(there, timeout, interval=0.02)


def trial(lab: Lab, drained: bool, cycles: int) -> Trial:
    lab.reset()
    policy = POLICY + ("" if drained else "    switch_drain = 0\n")
    runner = BenchRunner(lab, policy, name=fresh_name("switch"))
    marks: list[float] = []
    with running(runner):
        if not _on(runner, GW1):
            raise RuntimeError(f"extsock not up on segw1:\n{runner.log_tail()}")
        stream = SeqStream(lab, PERIOD, duration=cycles * 8.0 + 30.0, far_delay=FAR_DELAY)
        stream.start()
        try:
            time.sleep(0.5)
            for k in range(cycles):
                marks.append(time.monotonic())
                runner.request("switch", conn="home", to=GW2)
                if not _on(runner, GW2):
                    raise RuntimeError(f"switch {k + 1} never reached segw2")
                if not _on(runner, GW1):
                    raise RuntimeError(f"failback {k + 1} never came")
                marks.append(time.monotonic())
                time.sleep(SETTLE)
        finally:
            result = stream.stop()
    return _count(result, marks, drained)


def _count(result: StreamResult, marks: list[float], drained: bool) -> Trial:
    t = Trial(drained, len(result.lost_out()), len(result.lost_back()), len(result.sent))
    t.per_switch = [0] * len(marks)
    for seq in [*result.lost_out(), *result.lost_back()]:
        sent = result.sent[seq]
        t.per_switch[min(range(len(marks)), key=lambda k: abs(marks[k] - sent))] += 1
    bounds = [float("-inf")] + [(a + b) / 2 for a, b in itertools.pairwise(marks)]
    bounds.append(float("inf"))
    for way, out in (("out", t.gaps_out), ("back", t.gaps_back)):
        seen = result.far if way == "out" else result.back
        times = sorted(at for _, at in seen.values())
        for lo, hi in itertools.pairwise(bounds):
            inside = [x for x in times if lo <= x < hi]
            gaps = [b - a for a, b in itertools.pairwise(inside)]
            if gaps:
                out.append(max(gaps))
    return t


def measure(plan: Plan, log: Log) -> list[Figure]:
    """Alternated trials (plan.mass_trials of each side) in a lab of their own."""
    cycles = cycles_for(plan)
    trials: list[Trial] = []
    errors: list[str] = []
    with bench_lab(LabConfig(prefix=MAIN_PREFIX)) as lab:
        for i in range(max(1, plan.mass_trials)):
            for drained in (True, False):
                what = "extsock" if drained else "baseline (switch_drain = 0)"
                log(f"bench: 7 switches, {what} trial {i + 1}")
                try:
                    trials.append(trial(lab, drained, cycles))
                except Exception as exc:  # one failed trial is a note, the rest goes on
                    errors.append(f"{what} trial {i + 1}: {type(exc).__name__}: {exc}")
    return figures(trials, errors, cycles)


def figures(trials: list[Trial], errors: list[str], cycles: int) -> list[Figure]:
    ext = [t for t in trials if t.drained]
    base = [t for t in trials if not t.drained]
    label = "switch_drain = 0: the old tunnel goes as the new one is up (before issue 18)"
    name = NAME if cycles == 10 else NAME.replace("10 switches", f"{cycles} switches")
    lost = Figure(
        name=f"{name} + {cycles} failbacks (far end answers after {FAR_DELAY * 1000:g} ms)",
        unit="datagrams",
        extsock=Summary.of([t.lost_out + t.lost_back for t in ext]),
        baseline=Summary.of([t.lost_out + t.lost_back for t in base]),
        goal="0 lost in every trial",
        goal_value=0.0,
        baseline_label=label,
        notes=errors[:6],
    )
    lost.extra["also_required"] = [
        {"what": "0 lost in every trial", "met": bool(ext) and all(_lost(t) == 0 for t in ext)}
    ]
    lost.extra["trials"] = [_trial_dict(t) for t in trials]
    gap = Figure(
        name=GAP_NAME,
        unit="ms",
        extsock=Summary.of([g * 1000 for t in ext for g in t.gaps_out]),
        baseline=Summary.of([g * 1000 for t in base for g in t.gaps_out]),
        goal="",
        baseline_label=label,
    )
    gap.extra["back_ms"] = {
        "extsock": Summary.of([g * 1000 for t in ext for g in t.gaps_back]).to_dict(3),
        "baseline": Summary.of([g * 1000 for t in base for g in t.gaps_back]).to_dict(3),
    }
    if not trials:
        why = "; ".join(errors[:3]) or "no trial ran"
        return [skipped(lost.name, "datagrams", lost.goal, why), skipped(GAP_NAME, "ms", "", why)]
    return [lost, gap]


def _lost(t: Trial) -> int:
    return t.lost_out + t.lost_back


def _trial_dict(t: Trial) -> dict[str, Any]:
    return {
        "side": "extsock" if t.drained else "baseline",
        "sent": t.sent,
        "lost_out": t.lost_out,
        "lost_back": t.lost_back,
        "lost_per_switch": t.per_switch,
    }


def run(plan: Plan, log: Log) -> list[Figure]:
    """Figure 7 and 7g, or skipped rows naming what went wrong."""
    try:
        return measure(plan, log)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        return [
            skipped(NAME, "datagrams", "0 lost in every trial", why),
            skipped(GAP_NAME, "ms", "", why),
        ]
