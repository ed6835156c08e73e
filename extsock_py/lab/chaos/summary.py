"""The text summary of a chaos run: faults by kind, rekeys, failovers, recovery times per
fault kind (median, p95, max), violations per invariant. Pure."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

from extsock_py.lab.chaos.invariants import BOUNDS, lives, recoveries
from extsock_py.lab.chaos.observations import RunRecord, Violation
from extsock_py.lab.chaos.schedule import KINDS

INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "I6")


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _by_kind(record: RunRecord) -> dict[str, list[float]]:
    """Per fault kind, the recovery of each fault: its slowest connection (s from the fault)."""
    worst: dict[int, float] = {}
    kinds: dict[int, str] = {}
    for rec in recoveries(record):
        if rec.fault.error or rec.seconds is None:
            continue
        key = id(rec.fault)
        kinds[key] = rec.fault.kind
        worst[key] = max(worst.get(key, 0.0), rec.seconds)
    out: dict[str, list[float]] = {}
    for key, seconds in worst.items():
        out.setdefault(kinds[key], []).append(seconds)
    return out


def lines(record: RunRecord, violations: Sequence[Violation]) -> list[str]:
    ran = Counter(f.kind for f in record.faults if not f.error)
    failed = Counter(f.kind for f in record.faults if f.error)
    times = _by_kind(record)
    end = record.samples[-1].t if record.samples else record.duration
    out = [
        f"chaos run: seed {record.seed}, {end:.0f} s, connections {', '.join(record.conns)}, "
        f"{len(record.samples)} samples",
        f"faults: {sum(ran.values())} applied, {sum(failed.values())} not applicable",
        f"rekeys (ini's charon): {record.ike_rekeys} IKE, {record.child_rekeys} CHILD",
    ]
    reasons = Counter(f"{e.reason}/{e.result}" for e in record.history)
    listed = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) or "none"
    out.append(f"history entries: {len(record.history)} ({listed})")
    out.append("")
    out.append(f"{'fault':16} {'ran':>4} {'n/a':>4} {'median s':>9} {'p95 s':>7} {'max s':>7} "
               f"{'bound s':>8}")  # fmt: skip
    for kind in KINDS:
        got = times.get(kind, [])
        stats = (
            f"{statistics.median(got):9.2f} {p95(got):7.2f} {max(got):7.2f}"
            if got
            else f"{'-':>9} {'-':>7} {'-':>7}"
        )
        out.append(f"{kind:16} {ran[kind]:4d} {failed[kind]:4d} {stats} {BOUNDS[kind]:8g}")
    out.append("(recovery: from the fault to traffic answered through every connection again)")
    judged = lives(record)
    out.append(f"I4: {len(judged)} extsock process(es) lived past the warm-up + 20 s:")
    out.extend(
        f"  pid {x.pid} {x.start:.0f}-{x.end:.0f} s: RSS {x.rss0:.0f} -> {x.rss1:.0f} KiB "
        f"({100 * (x.rss1 - x.rss0) / x.rss0 if x.rss0 else 0:+.1f} %), fds {x.fds0} -> "
        f"{x.fds1}, threads {x.threads0} -> {x.threads1}"
        for x in judged
    )
    out.append("")
    count = Counter(v.invariant for v in violations)
    out.append("violations: " + ", ".join(f"{i} {count[i]}" for i in INVARIANTS)
               + f"; total {len(violations)}")  # fmt: skip
    out.extend("  " + v.line() for v in violations[:200])
    if len(violations) > 200:
        out.append(f"  ... and {len(violations) - 200} more")
    not_applied = [f for f in record.faults if f.error]
    if not_applied:
        out.append("faults not applied:")
        out.extend(f"  {f.at:8.2f}s {f.kind}: {f.error}" for f in not_applied[:50])
    return out
