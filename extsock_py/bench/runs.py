"""The order of the bench: which lab runs which figures, and the figures built from them.

Each measurement is guarded: one that fails becomes a skipped row with its error, and the
bench goes on (labs are downed by their own context managers).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from extsock_py.bench import (
    confgen,
    families,
    fig_detection,
    fig_events,
    fig_icmp,
    fig_mass,
    fig_reaction,
    fig_releases,
    fig_standby,
    fig_switch,
)
from extsock_py.bench.fig_alone import AloneResult, Background
from extsock_py.bench.fig_detection import Durations
from extsock_py.bench.labs import ALONE_FAST_PREFIX, ALONE_PREFIX, MAIN_PREFIX, bench_lab
from extsock_py.bench.stats import Figure, skipped
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import LabConfig

if TYPE_CHECKING:
    from extsock_py.bench.cli import Plan

T = TypeVar("T")
Log = Callable[[str], None]
DETECT_TIMEOUT = 30.0
MASS_TIMEOUT = 180.0
BIG_DPD = "30s"


def guard(what: str, work: Callable[[], T], log: Log) -> T | str:
    """The result of `work`, or the error as a string (logged with its traceback)."""
    log(f"bench: {what}")
    try:
        return work()
    except Exception as exc:
        log(traceback.format_exc())
        return f"{what} failed: {type(exc).__name__}: {exc}"


def run_releases(plan: Plan, log: Log, known: dict[str, fig_releases.ReleaseRun]) -> list[Figure]:
    """Figures 2r and 3r: each release of `plan.releases` not `known` (measured already)."""
    runs = [
        known.get(r) or fig_releases.measure(r, plan.detection, DETECT_TIMEOUT, log)
        for r in plan.releases
    ]
    return fig_releases.figures(runs)


def run_all(plan: Plan, background: Background, log: Log) -> list[Figure]:
    if plan.only_releases:
        return run_releases(plan, log, {})
    if "switch" in plan.only:
        return fig_switch.run(plan, log)
    seconds = fig_icmp.window_for(plan.mode, plan.icmp_window)
    if "icmp" in plan.only:
        return _icmp_only(plan, fig_icmp.Windows(seconds, log).start(), log)
    started: list[fig_icmp.Windows] = []
    figures = _run_all(
        plan, background, log, lambda: started.append(fig_icmp.Windows(seconds, log).start())
    )
    log("bench: waiting for the ICMP monitor windows")
    windows = [f for w in started for f in w.figures(seconds + 180.0)]
    return sorted([*figures, *windows], key=lambda f: f.name.split()[0])


def _icmp_only(plan: Plan, windows: fig_icmp.Windows, log: Log) -> list[Figure]:
    """`--only icmp`: figures 2, 2m, 2i and 2s in the main lab, 2f, 2p and 2c in theirs."""
    figures: list[Figure] = []

    def main_lab() -> None:
        with bench_lab(LabConfig(prefix=MAIN_PREFIX)) as lab:
            _detections(lab, plan, log, figures)

    broken = guard("the main lab", main_lab, log)
    if isinstance(broken, str):
        figures.append(skipped("2 (main lab)", "", "", broken))
    why = "charon-alone baseline not run (--only icmp)"
    for k, f in enumerate(figures):
        if f.name.startswith("2 ") and f.skipped is None:
            figures[k] = _detection_fig(f.name, f.extra.pop("_raw"), None, 6.0, why)
    figures += windows.figures(windows.seconds + 180.0)
    return sorted(figures, key=lambda f: f.name.split()[0])


def _run_all(
    plan: Plan, background: Background, log: Log, start_windows: Callable[[], None]
) -> list[Figure]:
    figures: list[Figure] = []
    got = guard(
        "6 event throughput",
        lambda: fig_events.measure(plan.events_trials, plan.events_count, log),
        log,
    )
    events = got if isinstance(got, Figure) else skipped("6 event throughput", "events/s", "", got)

    def main_lab() -> None:
        with bench_lab(LabConfig(prefix=MAIN_PREFIX)) as lab:
            _main_lab(lab, plan, log, figures)
            _mass_lab(lab, plan, log, figures)

    def fast_lab() -> Durations | str:
        with bench_lab(LabConfig(prefix=MAIN_PREFIX, retransmit_timeout=1.0)) as lab:
            return fig_detection.detection(lab, plan.detection, DETECT_TIMEOUT)

    broken = guard("the main lab", main_lab, log)
    if isinstance(broken, str):
        figures.append(skipped("1-5 (main lab)", "", "", broken))
    # 2f, 2p: their 10-minute windows run beside the figures that follow (2b, 7, 2r, 3r), not
    # beside the CPU and throughput figures 4-6 of the main lab: in a run with the windows
    # beside those, 5a's baseline, 5c and 6 (both sides) moved by a factor of 2-3.
    start_windows()
    fast = guard("2b detection, retransmit_timeout=1", fast_lab, log)
    figures += fig_switch.run(plan, log)  # 7, 7g: a lab of their own
    alone: dict[str, AloneResult] = {}
    if plan.alone_cap > 0:
        log("bench: waiting for the charon-alone baseline")
        alone = background.join(plan.alone_cap + 120.0)
    releases = run_releases(plan, log, {"bookworm": _host_run(figures)})
    why = "charon-alone baseline skipped (--quick/--smoke): ~165 s to notice, never moves"
    figures.insert(
        2,
        _detection_fig(
            "2b detection, retransmit_timeout=1", fast, alone.get(ALONE_FAST_PREFIX), 2.0, why
        ),
    )
    for k, f in enumerate(figures):
        if f.name.startswith("2 ") and f.skipped is None:
            figures[k] = _detection_fig(
                f.name, f.extra.pop("_raw"), alone.get(ALONE_PREFIX), 6.0, why
            )
        elif f.name.startswith("3 ") and f.skipped is None:
            figures[k] = families.initial(f.extra.pop("_raw"), alone.get(ALONE_PREFIX), why)
    return sorted([*figures, *releases, events], key=lambda f: f.name.split()[0])


def _host_run(figures: list[Figure]) -> fig_releases.ReleaseRun:
    """Figures 2 and 3 of the main lab (every charon the host's) as the bookworm release run."""
    raw: dict[str, Durations | str] = {}
    for f in figures:
        key = f.name.split()[0]
        if key in ("2", "3"):
            got = f.extra.get("_raw")
            raw[key] = got if isinstance(got, Durations) else (f.skipped or "not measured")
    label = f"bookworm ({fig_releases.host_version()})"
    return fig_releases.ReleaseRun(
        "bookworm", label, raw.get("2", "not measured"), raw.get("3", "not measured")
    )


def _detection_fig(
    name: str, got: Durations | str, alone: AloneResult | None, goal: float, why: str
) -> Figure:
    full = f"{name.split()[0]} detection: gateway silenced -> CHILD_SA up on next" + (
        " (retransmit_timeout=1)" if name.startswith("2b") else " (DPD 1s, default retransmit)"
    )
    if isinstance(got, str):
        return skipped(full, "s", f"<= {goal:g} s median", got)
    return families.detection(full, got, alone, goal, why)


def _raw(name: str, got: Durations | str) -> Figure:
    """A placeholder row holding raw durations until the charon-alone baseline is in."""
    if isinstance(got, str):
        return skipped(name, "s", "", got)
    fig = skipped(name, "s", "", "")
    fig.skipped = None
    fig.extra["_raw"] = got
    return fig


def _main_lab(lab: Lab, plan: Plan, log: Log, out: list[Figure]) -> None:
    got = guard("1 reaction", lambda: fig_reaction.measure(lab, plan.reaction, log), log)
    out.append(got if isinstance(got, Figure) else skipped("1 reaction", "ms", "", got))
    lab.reset()
    fig1 = got if isinstance(got, Figure) else None
    hot = guard("1s standby", lambda: fig_standby.measure(lab, plan.reaction, log, fig1), log)
    out.append(hot if isinstance(hot, Figure) else skipped(fig_standby.NAME, "ms", "", hot))
    _detections(lab, plan, log, out)
    init = guard(
        "3 initial connect",
        lambda: fig_detection.initial_connect(lab, plan.initial, DETECT_TIMEOUT),
        log,
    )
    out.append(_raw("3 initial", init))


def _detections(lab: Lab, plan: Plan, log: Log, out: list[Figure]) -> None:
    """Figures 2, 2m, 2i and 2s: the same silent gateway, four ways of noticing it."""
    lab.reset()
    dpd = guard(
        "2 detection", lambda: fig_detection.detection(lab, plan.detection, DETECT_TIMEOUT), log
    )
    out.append(_raw("2 detection", dpd))
    why = fig_detection.monitor_available()
    mon: Durations | None = None
    if why is None:
        lab.reset()
        policy = fig_detection.monitor_policy(lab)
        got_mon = guard(
            "2m monitor detection",
            lambda: fig_detection.detection(lab, plan.detection, DETECT_TIMEOUT, policy),
            log,
        )
        if isinstance(got_mon, str):
            why = got_mon
        else:
            mon = got_mon
    out.append(families.monitor(mon, dpd if isinstance(dpd, Durations) else None, why))
    lab.reset()
    icmp = guard(
        "2i ICMP monitor detection",
        lambda: fig_icmp.detection(lab, plan.detection, DETECT_TIMEOUT),
        log,
    )
    out.append(fig_icmp.detection_figure(icmp, mon, dpd if isinstance(dpd, Durations) else None))
    lab.reset()
    fast = guard(
        "2s ICMP monitor 30ms x 3 with hot standby",
        lambda: fig_icmp.detection(
            lab, plan.detection, DETECT_TIMEOUT, fig_icmp.FAST_INTERVAL, standby=True
        ),
        log,
    )
    out.append(fig_icmp.standby_figure(fast, icmp))


@dataclass
class MassRuns:
    """Alternated extsock and baseline trials of one mass-failover figure."""

    trials: list[fig_mass.MassTrial] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def first(self) -> fig_mass.MassTrial:
        """The trial that measured idle CPU (the first), or an empty one."""
        return self.trials[0] if self.trials else fig_mass.MassTrial()


def _mass_runs(
    lab: Lab, plan: Plan, n: int, log: Log, label: str, dpd_delay: str | None = None
) -> MassRuns:
    """plan.mass_trials alternated trials; with `dpd_delay` (the 1000 figure), the failure
    is segw1 deleting every SA, else segw1 silenced. Idle CPU is sampled in the first."""
    runs = MassRuns()
    delete = dpd_delay is not None
    for i in range(max(1, plan.mass_trials)):
        window = plan.idle_window if i == 0 else 0.0

        def trial(w: float = window) -> fig_mass.MassTrial:
            return fig_mass.extsock_trial(
                lab, n, MASS_TIMEOUT, w, dpd_delay=dpd_delay, delete=delete
            )

        got = guard(f"{label} mass {n}, extsock trial {i + 1}", trial, log)
        if isinstance(got, str):
            runs.errors.append(got)
        else:
            runs.trials.append(got)
        base = guard(
            f"{label} mass {n}, baseline trial {i + 1}",
            lambda: fig_mass.direct_trial(lab, n, MASS_TIMEOUT, dpd_delay=dpd_delay),
            log,
        )
        if isinstance(base, str):
            runs.errors.append(base)
        elif base[0] is not None:
            runs.direct.append(base[0])
        elif base[1]:
            runs.errors.append(base[1])
    return runs


def _mass_lab(lab: Lab, plan: Plan, log: Log, out: list[Figure]) -> None:
    n, big = plan.mass_n, plan.big_n
    fig_mass.prepare(lab, max(n, big))
    runs = _mass_runs(lab, plan, n, log, "4")
    out.append(families.mass(n, runs.trials, runs.direct, runs.errors))
    idle = runs.first
    out.append(families.idle_cpu(n, idle.cpu_pct, idle.floor_cpu_pct, idle.events_per_s))
    out += _big(lab, plan, big or n, log)


def _big(lab: Lab, plan: Plan, n: int, log: Log) -> list[Figure]:
    """RSS and start-up with `n` connections, and (1000 only) their mass failover."""
    starts: list[fig_mass.MassTrial] = []
    for i in range(max(1, plan.startup_trials)):
        got = guard(f"5 start-up {n}, trial {i + 1}", lambda: fig_mass.startup_trial(lab, n), log)
        if not isinstance(got, str):
            starts.append(got)
    conf = confgen.swanctl_conf(lab, n, fig_mass.MASS_POLICY)
    loads: list[float] = []
    for i in range(max(1, plan.startup_trials)):
        got_load = guard(
            f"5 swanctl load {n}, trial {i + 1}", lambda: fig_mass.swanctl_load(lab, n, conf), log
        )
        if not isinstance(got_load, str):
            loads.append(got_load)
    out = [
        families.rss(
            n,
            [t.rss_mb for t in starts if t.rss_mb is not None],
            [t.floor_rss_mb for t in starts if t.floor_rss_mb is not None],
        ),
        families.startup(n, [t.startup_s for t in starts if t.startup_s is not None], loads),
    ]
    if not plan.big_n:
        out.append(
            skipped(
                "4b mass failover, 1000 conns",
                "s",
                "ratio <= 1.2",
                f"{plan.mode} mode skips the 1000-connection parts",
            )
        )
        return out

    # 1000 tunnels with DPD every second keep ini's charon at a full core and send ~5000 log
    # events/s to every listener on this lab: the 1000 figure uses DPD 30s and a DELETE of
    # every SA by segw1 as its synchronised failure signal.
    runs = _mass_runs(lab, plan, n, log, "4b", dpd_delay=BIG_DPD)
    fig = families.mass(n, runs.trials, runs.direct, runs.errors, label="4b")
    idle = runs.first
    out.append(
        families.idle_cpu(
            n, idle.cpu_pct, idle.floor_cpu_pct, idle.events_per_s, label="5a2", dpd=BIG_DPD
        )
    )
    out.insert(0, fig)
    return out
