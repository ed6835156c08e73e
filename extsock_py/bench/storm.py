"""``python -m extsock_py.bench.storm``: figure 4b (or 4) alone, its trials alternated with
the baseline's as in the full bench: for working on the storm without the whole bench.

``--n 1000 --trials 3`` are the full bench's parameters of 4b; ``--silence`` runs figure 4's
kind of trial (segw1 silenced, DPD 1 s) instead of the DELETE storm.
"""

from __future__ import annotations

import argparse
import sys

from extsock_py.bench import confgen, families, fig_mass, report
from extsock_py.bench.cli import Plan
from extsock_py.bench.floorproc import load_psk
from extsock_py.bench.labs import MAIN_PREFIX, bench_lab
from extsock_py.bench.runs import BIG_DPD, MASS_TIMEOUT, _mass_runs
from extsock_py.bench.stats import Summary
from extsock_py.bench.watch import EventWatch
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI, LabConfig


class _Kept(EventWatch):
    """An EventWatch that stays readable after its trial: for the --profile timeline."""

    last: _Kept | None = None
    marked = 0

    def __enter__(self) -> EventWatch:
        _Kept.last = self
        return super().__enter__()

    def mark(self) -> int:
        self.marked = super().mark()
        return self.marked


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    q = [values[min(len(values) - 1, int(len(values) * f))] for f in (0.5, 0.9)]
    return (
        f"n={len(values)} min {values[0]:.2f} median {q[0]:.2f} p90 {q[1]:.2f} max {values[-1]:.2f}"
    )


def timeline(watch: _Kept) -> str:
    """Per connection, from the storm's start (the DELETE, or the baseline's first initiate):
    its down event, charon starting its attempt (`initiating` log line), its CHILD_SA up."""
    seen = watch.all(lambda s: True, watch.marked)
    if not seen:
        return "profile: nothing seen"

    def base(conn: str) -> str:
        return conn.partition("@")[0]

    down: dict[str, float] = {}
    start: dict[str, float] = {}
    up: dict[str, float] = {}
    for s in seen:
        conn = base(s.conn)
        if s.kind in ("ike-updown", "child-updown") and not s.up:
            down.setdefault(conn, s.at)
        elif s.text.startswith("initiating"):
            start.setdefault(conn, s.at)
        elif s.kind == "child-updown" and s.up:
            up.setdefault(conn, s.at)
    t0 = min(down.values()) if down else min(start.values(), default=seen[0].at)
    waits = [start[c] - down[c] for c in start if c in down]
    shakes = [up[c] - start[c] for c in up if c in start]
    return (
        "profile (s):\n"
        f"  down event after t0:      {_spread([t - t0 for t in down.values()])}\n"
        f"  attempt start after t0:   {_spread([t - t0 for t in start.values()])}\n"
        f"  down -> attempt start:    {_spread(waits)}\n"
        f"  attempt start -> up:      {_spread(shakes)}\n"
        f"  up after t0:              {_spread([t - t0 for t in up.values()])}"
    )


def load_direct_trial(
    lab: Lab, n: int, timeout: float, dpd_delay: str | None
) -> tuple[float | None, str | None]:
    """charon asked directly for what a failover needs: each connection's config loaded
    AND initiated (`load-conn` then `initiate`), from THREADS sessions in threads; first
    request -> last CHILD_SA up. The baseline of figure 4b loads every config beforehand."""
    gw2 = lab.config.remote_addrs()[1]
    lab.reset()
    load_psk(lab)
    names = [confgen.conn_name(i) for i in range(n)]
    bodies = {name: confgen.direct_body(lab, i, gw2, dpd_delay) for i, name in enumerate(names)}
    errors: list[str] = []

    def work(part: list[str]) -> None:
        try:
            with lab.vici_session(INI, timeout=60.0) as session:
                for name in part:
                    session.load_conn({name: bodies[name]})
                    list(session.initiate({"ike": name, "child": "net", "timeout": "-1"}))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    watch_kind: type[EventWatch] = getattr(fig_mass, "EventWatch")  # noqa: B009 (_Kept, --profile)
    with watch_kind(str(lab.vici_path(INI))) as watch:
        t0, up = fig_mass.timed_fan_out(watch, names, work, timeout)
    if len(up) < n:
        return None, f"load baseline: only {len(up)} of {n} up {errors[:1]}"
    return up[-1].at - t0, None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extsock_py.bench.storm", description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="connections (default 1000)")
    parser.add_argument("--trials", type=int, default=3, help="alternated trial pairs")
    parser.add_argument("--profile", action="store_true", help="print each storm's timeline")
    parser.add_argument(
        "--load-baseline",
        action="store_true",
        help="also time charon asked for load-conn + initiate of each (no config preloaded)",
    )
    parser.add_argument(
        "--idle", type=float, default=0.0, help="idle CPU window of the first trial (5a), s"
    )
    parser.add_argument("--silence", action="store_true", help="figure 4's trial, not 4b's")
    args = parser.parse_args(argv)
    why = Lab.preflight()
    if why:
        print(f"bench: cannot build the lab here: {why}", file=sys.stderr)
        sys.exit(2)
    plan = Plan.make(quick=False, smoke=False, trials=args.trials, releases=())
    if args.profile:
        setattr(fig_mass, "EventWatch", _Kept)  # noqa: B010 (the trials build their watch there)
    label = "4" if args.silence else "4b"
    with bench_lab(LabConfig(prefix=MAIN_PREFIX)) as lab:
        fig_mass.prepare(lab, args.n)

        def log(text: str) -> None:
            print(text, file=sys.stderr, flush=True)
            if args.profile and "trial" in text and _Kept.last is not None:
                print(timeline(_Kept.last), file=sys.stderr, flush=True)
                _Kept.last = None

        runs = _mass_runs(
            lab,
            plan.__class__(**{**plan.__dict__, "idle_window": args.idle}),
            args.n,
            log,
            label,
            dpd_delay=None if args.silence else BIG_DPD,
        )
        loaded: list[float] = []
        for i in range(args.trials if args.load_baseline else 0):
            log(f"{label} mass {args.n}, load+initiate baseline trial {i + 1}")
            took, why = load_direct_trial(
                lab, args.n, MASS_TIMEOUT, None if args.silence else BIG_DPD
            )
            if took is not None:
                loaded.append(took)
            elif why:
                runs.errors.append(why)
    if args.profile and _Kept.last is not None:
        print(timeline(_Kept.last), file=sys.stderr, flush=True)
    fig = families.mass(args.n, runs.trials, runs.direct, runs.errors, label=label)
    figures = [fig]
    if args.idle:
        first = runs.first
        figures.append(
            families.idle_cpu(
                args.n,
                first.cpu_pct,
                first.floor_cpu_pct,
                first.events_per_s,
                label="5a" if args.silence else "5a2",
                dpd="1s" if args.silence else BIG_DPD,
            )
        )
    print(report.table(figures))
    for trial in runs.trials:
        print(f"extsock trial: {trial.failover_s} s (silence -> all up {trial.silence_s} s)")
    print(f"baseline trials: {runs.direct}")
    if args.load_baseline:
        print(f"load-conn + initiate baseline trials: {loaded} (median {Summary.of(loaded)})")
    for note in fig.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
