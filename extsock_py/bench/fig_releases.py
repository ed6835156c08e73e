"""Figures 2 and 3 for each strongSwan release, side by side: ini's charon from bookworm
(5.9.8), trixie (6.0.1) and sid (6.1.x), the gateways on the host's charon.

Same trials as figures 2 and 3 (``fig_detection``); each release's row has the bookworm row
of the same run as its baseline, so the ratio reads "this release against 5.9.8". The
detection part of figure 2 (silence -> first retransmit seen) is kept in ``extra``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from extsock_py.bench import fig_detection
from extsock_py.bench.fig_detection import Durations
from extsock_py.bench.labs import RELEASE_PREFIX, bench_lab
from extsock_py.bench.stats import Figure, Summary, skipped
from extsock_py.lab.releases import DEFAULT_RELEASE, RELEASES
from extsock_py.lab.topology import INI, LabConfig

Log = Callable[[str], None]
GOAL_S = 6.0


@dataclass
class ReleaseRun:
    """What one release's lab measured (an error string where a part failed)."""

    release: str
    label: str  # "sid (6.1.0)"
    detection: Durations | str
    initial: Durations | str


def measure(release: str, trials: int, timeout: float, log: Log) -> ReleaseRun:
    """Figures 2 and 3 on a lab whose ini runs ``release``'s charon."""
    config = LabConfig(prefix=RELEASE_PREFIX, node_charon=(f"{INI}={release}",))
    label = release
    try:
        with bench_lab(config) as lab:
            label = lab.charon_label(INI)
            log(f"bench: 2r detection, ini on {label}")
            det: Durations | str = _guarded(lambda: fig_detection.detection(lab, trials, timeout))
            lab.reset()
            log(f"bench: 3r initial connect, ini on {label}")
            init: Durations | str = _guarded(
                lambda: fig_detection.initial_connect(lab, trials, timeout)
            )
    except Exception as exc:
        why = f"lab with ini on {release}: {type(exc).__name__}: {exc}"
        return ReleaseRun(release, label, why, why)
    return ReleaseRun(release, label, det, init)


def host_version() -> str:
    """The host's strongSwan (the bookworm rows of a full run reuse figures 2 and 3)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "strongswan-charon"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip
    except OSError:
        out = ""
    match = re.match(r"(?:\d+:)?([0-9.]+)", out)
    return match.group(1) if match else RELEASES[DEFAULT_RELEASE].strongswan


def _guarded(work: Callable[[], Durations]) -> Durations | str:
    try:
        return work()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def figures(runs: list[ReleaseRun]) -> list[Figure]:
    """Two rows per release (2r, 3r), each against the bookworm row of the same run."""
    base = next((r for r in runs if r.release == DEFAULT_RELEASE), None)
    out: list[Figure] = []
    for kind in ("2r", "3r"):
        ref = None if base is None else _part(base, kind)
        ref_label = base.label if base else RELEASES[DEFAULT_RELEASE].name
        for run in runs:
            out.append(_row(run, kind, ref, ref_label))
    return out


def _part(run: ReleaseRun, kind: str) -> Durations | str:
    return run.detection if kind == "2r" else run.initial


def _row(run: ReleaseRun, kind: str, ref: Durations | str | None, ref_label: str) -> Figure:
    what = (
        "gateway silenced -> CHILD_SA up on next (DPD 1s, default retransmit)"
        if kind == "2r"
        else "initial connect, dead primary: first initiate -> CHILD_SA up on segw2"
    )
    name = f"{kind} ini on {run.label}: {what}"
    goal = f"<= {GOAL_S:g} s median"
    got = _part(run, kind)
    if isinstance(got, str):
        return skipped(name, "s", goal, got)
    baseline = ref.total if isinstance(ref, Durations) else []
    fig = Figure(
        name=name,
        unit="s",
        extsock=Summary.of(got.total),
        baseline=Summary.of(baseline),
        goal=goal,
        goal_value=GOAL_S,
        baseline_label=f"the same with ini on {ref_label}, this run",
        notes=got.errors[:5],
    )
    fig.extra["release"] = run.release
    fig.extra["charon"] = run.label
    if kind == "2r":
        fig.extra["silence_to_first_retransmit_s"] = Summary.of(got.noticed).to_dict()
    return fig
