"""`python -m extsock_py.lab.chaos [--seed N] [--duration S] [--fault-every S]`: a chaos run
in the lab (root). Prints the schedule, runs it, writes summary.txt, schedule.txt and
timeline.png into `--out` (beside the lab's logs), exits 1 on any violation."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from extsock_py.lab.chaos import invariants, schedule, summary
from extsock_py.lab.chaos.observations import RunRecord, record_from_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m extsock_py.lab.chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    p.add_argument("--duration", type=float, default=600.0, help="s (default 600)")
    p.add_argument("--fault-every", type=float, default=10.0, help="s on average (default 10)")
    prefix = os.environ.get("EXTSOCK_LAB_PREFIX", "ch-")
    p.add_argument("--prefix", default=prefix, help="the lab's namespace prefix (default ch-)")
    p.add_argument("--out", type=Path, default=None, help="default .chaos/<time>-seed<N>")
    p.add_argument("--schedule-only", action="store_true", help="print the schedule, run nothing")
    again = "check a finished run's DIR/record.json again (summary.txt, timeline.png)"
    p.add_argument("--check", type=Path, default=None, metavar="DIR", help=again)
    return p


def _report(record: RunRecord, out: Path) -> int:
    from extsock_py.lab.chaos import timeline  # matplotlib only where a report is made

    violations = invariants.check_all(record)
    text = "\n".join(summary.lines(record, violations)) + "\n"
    (out / "summary.txt").write_text(text)
    timeline.draw(record, violations, out / "timeline.png")
    print(text + f"written: {out}/summary.txt, timeline.png", flush=True)
    return 1 if violations else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check is not None:
        data = json.loads((args.check / "record.json").read_text())
        return _report(record_from_json(data), args.check)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    try:
        plan = schedule.generate(seed, args.duration, args.fault_every)
    except ValueError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    print("\n".join(plan.lines()), flush=True)
    if args.schedule_only:
        return 0
    from extsock_py.lab.chaos.runner import ChaosRun, Options

    out = args.out or Path(".chaos") / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedule.txt").write_text("\n".join(plan.lines()) + "\n")
    log_file = (out / "run.log").open("a")

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    options = Options(seed, args.duration, args.fault_every, out, prefix=args.prefix)
    try:
        record = ChaosRun(options, plan, log).run()
    finally:
        log_file.close()
    (out / "record.json").write_text(json.dumps(asdict(record), default=list) + "\n")
    print(f"written: {out}/record.json, run.log, logs/, lab/chaos/extsock.log", flush=True)
    return _report(record, out)
