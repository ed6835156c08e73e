"""Turn the measurements of figures 2 to 5 into report rows (Figure), with their baselines."""

from __future__ import annotations

from extsock_py.bench.fig_alone import AloneResult
from extsock_py.bench.fig_detection import MONITOR_GOAL_S, Durations
from extsock_py.bench.fig_mass import MassTrial
from extsock_py.bench.stats import Figure, Summary

NEVER = (
    "charon alone never reached segw2 (observed {cap:.0f} s); the ratio is against the time it "
    "took just to {what}, a lower bound of its time to traffic"
)


def _alone(
    result: AloneResult | None, what: str, value: float | None, why_missing: str
) -> tuple[Summary, list[str], dict[str, object]]:
    if result is None:
        return Summary.of([]), [why_missing], {"baseline_never": None}
    notes = []
    if result.error:
        notes.append(f"charon-alone run: {result.error}")
    reached = result.home_reached_gw2 if what == "notice" else result.first_reached_gw2
    if value is None:
        notes.append(
            f"charon alone did not {what} within {result.cap:.0f} s: >= {result.cap:.0f} s"
        )
    if not reached:
        notes.append(NEVER.format(cap=result.cap, what=what))
    if result.targets_after:
        notes.append("charon alone went next to: " + ", ".join(result.targets_after))
    extra: dict[str, object] = {"baseline_never": not reached, "baseline_cap_s": result.cap}
    return Summary.of([] if value is None else [value]), notes, extra


def detection(
    name: str, got: Durations, alone: AloneResult | None, goal: float, skipped_why: str
) -> Figure:
    value = None if alone is None else alone.notice_s
    base, notes, extra = _alone(alone, "notice", value, skipped_why)
    fig = Figure(
        name=name,
        unit="s",
        extsock=Summary.of(got.total),
        baseline=base,
        goal=f"<= {goal:g} s median",
        goal_value=goal,
        baseline_label="charon alone, dpd_action=restart: time to notice (never moves)",
        notes=[*got.errors[:5], *notes],
    )
    fig.extra.update(extra)
    fig.extra["extsock_noticed_s"] = Summary.of(got.noticed).to_dict()
    return fig


def monitor(got: Durations | None, dpd: Durations | None, why: str | None) -> Figure:
    """Monitor detection to traffic; its baseline is figure 2 (DPD + retransmit) of this run."""
    fig = Figure(
        name="2m monitor: gateway silenced -> CHILD_SA up on next (monitor 500ms x 3)",
        unit="s",
        extsock=Summary.of(got.total if got else []),
        baseline=Summary.of(dpd.total if dpd else []),
        goal=f"<= {MONITOR_GOAL_S:g} s median",
        goal_value=MONITOR_GOAL_S,
        baseline_label="extsock without monitor (figure 2, DPD 1s + first retransmit)",
        skipped=why,
        notes=got.errors[:5] if got else [],
    )
    return fig


def initial(got: Durations, alone: AloneResult | None, skipped_why: str) -> Figure:
    value = None if alone is None else alone.first_gave_up_s
    base, notes, extra = _alone(alone, "give up on segw1", value, skipped_why)
    fig = Figure(
        name="3 initial connect, dead primary: first initiate -> CHILD_SA up on segw2",
        unit="s",
        extsock=Summary.of(got.total),
        baseline=base,
        goal="<= 6 s median (connect_timeout 5 s)",
        goal_value=6.0,
        baseline_label="charon alone, remote_addrs = gw1, gw2: time to give up (never moves)",
        notes=[*got.errors[:5], *notes],
    )
    fig.extra.update(extra)
    fig.extra["extsock_spawn_to_up_s"] = Summary.of(got.noticed).to_dict()
    return fig


def mass(
    n: int, ext: list[MassTrial], direct: list[float], errors: list[str], label: str = "4"
) -> Figure:
    how = (
        "segw1 silenced, DPD 1s: first retransmit"
        if label == "4"
        else "segw1 DELETEs all, DPD 30s: first down event"
    )
    target = "up on segw2" if label == "4" else "up again"
    # 4b: issue 18 asks the storm to run at charon's own pace (<= 1.2); 4 keeps its 1.5
    limit = 1.5 if label == "4" else 1.2
    fig = Figure(
        name=f"{label} mass failover, {n} conns ({how}) -> all CHILD_SAs {target}",
        unit="s",
        extsock=Summary.of([t.failover_s for t in ext if t.failover_s is not None]),
        baseline=Summary.of(direct),
        goal=f"ratio <= {limit}",
        goal_ratio=limit,
        baseline_label=f"charon: {n} initiates towards segw2 from 4 VICI sessions",
        notes=[e for t in ext for e in t.errors][:5] + errors[:5],
    )
    fig.extra["silence_to_all_up_s"] = Summary.of(
        [t.silence_s for t in ext if t.silence_s is not None]
    ).to_dict()
    return fig


def idle_cpu(
    n: int,
    ext: list[float],
    floor: list[float],
    events_per_s: float | None,
    label: str = "5a",
    dpd: str = "1s",
) -> Figure:
    rate = "?" if events_per_s is None else f"{events_per_s:.0f}"
    return Figure(
        name=f"{label} idle CPU, {n} tunnels up (DPD {dpd}): % of one core",
        unit="%",
        extsock=Summary.of(ext),
        baseline=Summary.of(floor),
        goal="< 0.5 % of one core",
        goal_value=0.5,
        baseline_label="vici script listening to the same events",
        notes=[f"charon sent {rate} events/s to each listener meanwhile (DPD log lines)"],
    )


def rss(n: int, ext: list[float], floor: list[float]) -> Figure:
    return Figure(
        name=f"5b RSS with {n} managed connections loaded",
        unit="MB",
        extsock=Summary.of(ext),
        baseline=Summary.of(floor),
        goal="< 80 MB",
        goal_value=80.0,
        baseline_label="vici script (python + vici, listening)",
    )


def startup(n: int, ext: list[float], swanctl: list[float]) -> Figure:
    return Figure(
        name=f"5c start-up to first initiate, {n} connections",
        unit="s",
        extsock=Summary.of(ext),
        baseline=Summary.of(swanctl),
        goal="(none set)",
        baseline_label="swanctl --load-all of the same file (load only)",
    )
