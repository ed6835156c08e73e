"""``python -m extsock_py.bench``: runs every figure in order and reports them.

Modes: full (default), ``--quick`` (no charon-alone baseline, no 1000-connection parts,
shorter idle window), ``--smoke`` (tiny n everywhere, < 2 min, to check the bench works).
Every mode adds figures 2r and 3r (figures 2 and 3 with ini's charon on each strongSwan
release, ``--releases``); ``--only-releases`` runs nothing else.
The exit code is 0 whenever the bench ran, goals met or not; 2 when it could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

from extsock_py.bench import report
from extsock_py.bench.fig_alone import Background
from extsock_py.bench.labs import ALONE_FAST_PREFIX, ALONE_PREFIX, MAIN_PREFIX, POLICY
from extsock_py.bench.proc import LoadSampler, machine
from extsock_py.bench.runs import run_all
from extsock_py.bench.stats import Figure
from extsock_py.lab.lab import Lab
from extsock_py.lab.releases import RELEASES

ALL_RELEASES = tuple(RELEASES)
# --only GROUP: icmp = figures 2, 2m, 2i, 2s (main lab) and the ICMP monitor windows 2f, 2p,
# 2c;
# switch = figures 7 and 7g (switches and failbacks with a 200/s UDP stream).
ONLY_GROUPS = ("icmp", "switch")


@dataclass(frozen=True)
class Plan:
    mode: str
    reaction: int
    detection: int
    initial: int
    mass_n: int
    mass_trials: int
    big_n: int  # 0: skip the 1000-connection parts
    startup_trials: int
    idle_window: float
    events_trials: int
    events_count: int
    alone_cap: float  # 0: skip the charon-alone baseline
    releases: tuple[str, ...] = ALL_RELEASES  # figures 2 and 3 with ini on each (2r, 3r)
    only_releases: bool = False  # nothing but the 2r and 3r rows
    only: tuple[str, ...] = ()  # figure groups to run alone (ONLY_GROUPS)
    icmp_window: float | None = None  # s of the 2f/2p windows (None: by mode)

    @classmethod
    def make(
        cls,
        quick: bool,
        smoke: bool,
        trials: int | None,
        releases: tuple[str, ...] = ALL_RELEASES,
        only_releases: bool = False,
    ) -> Plan:
        plan = cls._make(quick, smoke, trials)
        mode = f"{plan.mode} (figures 2r and 3r only)" if only_releases else plan.mode
        return dataclasses.replace(plan, mode=mode, releases=releases, only_releases=only_releases)

    @classmethod
    def _make(cls, quick: bool, smoke: bool, trials: int | None) -> Plan:
        if smoke:
            plan = cls("smoke", 3, 1, 1, 10, 1, 0, 1, 3.0, 2, 2000, 0.0)
        elif quick:
            plan = cls("quick", 30, 5, 5, 200, 2, 0, 0, 20.0, 5, 20000, 0.0)
        else:
            plan = cls("full", 32, 7, 5, 200, 3, 1000, 3, 60.0, 7, 20000, 200.0)
        if trials is None:
            return plan
        return cls(
            plan.mode,
            max(trials, 1),
            trials,
            trials,
            plan.mass_n,
            trials,
            plan.big_n,
            trials if plan.big_n else plan.startup_trials,
            plan.idle_window,
            trials,
            plan.events_count,
            plan.alone_cap,
        )


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extsock_py.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 165 s baseline and 1000s")
    parser.add_argument("--smoke", action="store_true", help="tiny n: check the bench works")
    parser.add_argument("--trials", type=int, help="trials of every repeated figure")
    parser.add_argument(
        "--releases",
        default=",".join(ALL_RELEASES),
        help="Debian releases of ini's charon for figures 2r and 3r (comma list; '' for none)",
    )
    parser.add_argument(
        "--only-releases", action="store_true", help="run nothing but figures 2r and 3r"
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"run only these figure groups (comma list of: {', '.join(ONLY_GROUPS)})",
    )
    parser.add_argument(
        "--icmp-window",
        type=float,
        help="seconds of each ICMP monitor window, 2f, 2p, 2c (600 full, 60 quick, 5 smoke)",
    )
    args = parser.parse_args(argv)
    only = tuple(g for g in args.only.split(",") if g)
    if any(g not in ONLY_GROUPS for g in only):
        parser.error(f"--only: accepted: {', '.join(ONLY_GROUPS)}")
    releases = tuple(r for r in args.releases.split(",") if r)
    unknown = [r for r in releases if r not in RELEASES]
    if unknown:
        parser.error(f"--releases: unknown {', '.join(unknown)}; accepted: {', '.join(RELEASES)}")
    why = Lab.preflight()
    if why:
        print(f"bench: cannot build the lab here: {why}", file=sys.stderr)
        sys.exit(2)
    plan = Plan.make(args.quick, args.smoke, args.trials, releases, args.only_releases)
    plan = dataclasses.replace(plan, only=only, icmp_window=args.icmp_window)
    if only:
        plan = dataclasses.replace(plan, mode=f"{plan.mode} (only {', '.join(only)})")
    began = time.monotonic()
    load_before = machine()
    sampler = LoadSampler()
    sampler.start()
    background = Background(
        [(ALONE_PREFIX, None, plan.alone_cap), (ALONE_FAST_PREFIX, 1.0, 60.0)], log
    )
    if plan.alone_cap > 0 and not plan.only_releases and not plan.only:
        background.start()
    figures: list[Figure] = []
    try:
        figures = run_all(plan, background, log)
    except Exception:
        traceback.print_exc()
    finally:
        background.stop(timeout=60.0)  # a no-op when run_all joined it; else cut it short
    run_s = time.monotonic() - began
    meta = _meta(plan, load_before, run_s)
    meta["load_1min_during_run"] = load = sampler.stop()
    print(report.table(figures))
    path = report.write(figures, meta)
    print(
        f"\n{plan.mode} bench: {run_s:.0f} s on {load_before['cores']} cores; 1-min load during "
        f"the run {load} (before {load_before['loadavg']}); results in {path}"
    )


def _meta(plan: Plan, before: dict[str, object], run_s: float) -> dict[str, object]:
    try:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "strongswan-charon"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        version = ""
    return {
        "mode": plan.mode,
        "strongswan": f"strongSwan {version or '?'} (Debian strongswan-charon)",
        "run_s": round(run_s, 1),
        "machine_before": before,
        "machine_after": machine(),
        "plan": plan.__dict__,
        "settings": {
            "labs": {"main": MAIN_PREFIX, "charon_alone": [ALONE_PREFIX, ALONE_FAST_PREFIX]},
            "dpd_delay": "1s",
            "retransmit": "charon defaults (timeout 4 s, tries 5, base 1.8); figure 2b: timeout 1",
            "extsock_policy": " ".join(POLICY.split()),
            "extsock_log_level": "info",
        },
    }
