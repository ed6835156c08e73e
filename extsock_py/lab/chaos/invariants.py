"""The invariants of issue 26, checked on a run's observations. Pure.

I1 one installed CHILD_SA per connection, but for `drain + 3` s at most;
I2 traffic again within a bound per fault kind (`BOUNDS`);
I3 extsock never dies unasked, `status` answers within 2 s (outside a stall or a kill);
I4 no leak: per extsock process living past warm-up, RSS grows < 10 %, fds and threads do
   not grow; never more than two clones of a connection in charon;
I5 after the last fault (and its recovery), 60 quiet s: no failover, no history entry;
I6 history and faults agree: each failover follows a fault that explains it, each fault
   that took a tunnel down has a failover or a recovery after it, no outage without a fault.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from extsock_py.lab.chaos.observations import FaultRun, RunRecord, Sample, Violation
from extsock_py.lab.chaos.schedule import FaultKind

# s from a fault's action to traffic through every connection again: detection (DPD 1 s,
# one retransmit 1 s later) + a connect (up to connect_timeout 5 s when the first gateway
# tried fails too) + margin. A stall and a kill of extsock add their own length.
BOUNDS: dict[FaultKind, float] = {
    "link-cut": 15.0,
    "delete": 12.0,
    "gateway-restart": 15.0,
    "ini-restart": 20.0,
    "extsock-kill": 10.0,
    "sighup": 10.0,
    "switch": 10.0,
    "redirect": 15.0,  # charon may take the target's answer on the retransmit 4 s later
    "stall": 15.0,
}
IN_FLIGHT = 0.05  # s: answers already on their way when a fault struck
STATUS_LIMIT = 2.0
WARMUP = 60.0
RSS_GROWTH = 0.10
WINDOW = 10.0  # s of samples that make a baseline and an end value (I4)
MAX_CLONES = 2
QUIET = 60.0
DOWN_AFTER = 1.0  # s without traffic after a fault: it took the tunnel down (I6)
OUTAGE = 2.0  # s without an answer: an outage that a fault must explain (I6)


def bound(fault: FaultRun) -> float:
    """The I2 bound of a fault, counted from its action (`done`)."""
    extra = fault.end - fault.done if fault.kind in ("stall", "extsock-kill") else 0.0
    return BOUNDS[fault.kind] + extra


@dataclass(frozen=True)
class Recovery:
    fault: FaultRun
    conn: str
    seconds: float | None  # from the fault's start to the first answer after it; None: never


def recoveries(record: RunRecord) -> list[Recovery]:
    out: list[Recovery] = []
    for fault in record.faults:
        for conn in record.conns:
            first = record.answers.first_after(conn, fault.done + IN_FLIGHT)
            out.append(Recovery(fault, conn, None if first is None else first - fault.at))
    return out


def _deadline(fault: FaultRun, faults: Sequence[FaultRun], recovered: float) -> float:
    """The fault's deadline, carried on by each later fault that struck before the connection
    was back (its recovery then also waits for that one)."""
    deadline = fault.done + bound(fault)
    for other in faults:
        if fault.at < other.at < min(recovered, deadline) and not other.error:
            deadline = max(deadline, other.done + bound(other))
    return deadline


def _i1_violation(conn: str, start: float, end: float, worst: int, seen: set[str],
                  limit: float) -> Violation:  # fmt: skip
    return Violation(
        "I1",
        start,
        f"{conn}: {worst} installed CHILD_SAs for {end - start:.1f} s (limit {limit:g} s) "
        f"through {', '.join(sorted(seen)) or '?'}",
    )


def check_i1(record: RunRecord) -> list[Violation]:
    limit = record.drain + 3.0
    out: list[Violation] = []
    for conn in record.conns:
        start: float | None = None
        last: Sample | None = None
        worst = 0
        seen: set[str] = set()
        for sample in record.samples:
            cs = sample.conns.get(conn)
            if cs is None or cs.installed < 0:
                continue  # unknown: neither starts nor ends an interval
            if cs.installed > 1:
                if start is None:
                    start, worst, seen = sample.t, 0, set()
                worst = max(worst, cs.installed)
                seen |= set(cs.carriers)
                last = sample
            elif start is not None:
                # from the first to the last sample that saw two: never longer than it was
                if last is not None and last.t - start > limit:
                    out.append(_i1_violation(conn, start, last.t, worst, seen, limit))
                start = None
        if start is not None and last is not None and last.t - start > limit:
            out.append(_i1_violation(conn, start, last.t, worst, seen, limit))
    return out


def check_i2(record: RunRecord) -> list[Violation]:
    end = record.samples[-1].t if record.samples else record.duration
    out: list[Violation] = []
    for rec in recoveries(record):
        fault = rec.fault
        if fault.error:
            continue
        recovered = fault.at + rec.seconds if rec.seconds is not None else end
        deadline = _deadline(fault, record.faults, recovered)
        if recovered > deadline and deadline < end:
            took = "none until the end" if rec.seconds is None else f"after {rec.seconds:.1f} s"
            out.append(
                Violation(
                    "I2",
                    fault.at,
                    f"{rec.conn}: traffic {took} after {fault.kind} ({fault.detail}); "
                    f"bound {bound(fault):g} s from its action",
                )
            )
    return out


def check_i3(record: RunRecord) -> list[Violation]:
    out = [Violation("I3", t, f"extsock died unasked: {why}") for t, why in record.unexpected_exits]
    for sample in record.samples:
        if sample.stalled or sample.expected_down or not sample.extsock_alive:
            continue
        if sample.status_s is None:
            out.append(Violation("I3", sample.t, f"status: no answer ({sample.status_error})"))
        elif sample.status_s > STATUS_LIMIT:
            out.append(Violation("I3", sample.t, f"status answered after {sample.status_s:.2f} s"))
    return out


def _incarnations(samples: Sequence[Sample]) -> Iterator[list[Sample]]:
    by_pid: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.pid is not None and sample.rss_kib is not None and not sample.stalled:
            by_pid.setdefault(sample.pid, []).append(sample)
    yield from by_pid.values()


@dataclass(frozen=True)
class Life:
    """One extsock process judged by I4: from the end of its warm-up to its end."""

    pid: int
    start: float
    end: float
    rss0: float  # KiB, median of the WINDOW after the warm-up
    rss1: float  # KiB, median of the last WINDOW
    fds0: int  # highest of the WINDOW after the warm-up
    fds1: int  # lowest of the last WINDOW
    threads0: int
    threads1: int


def lives(record: RunRecord, warmup: float = WARMUP) -> list[Life]:
    """The extsock processes that lived long enough to tell a trend."""
    out: list[Life] = []
    for life in _incarnations(record.samples):
        born, died = life[0].t, life[-1].t
        if died - born < warmup + 2 * WINDOW:
            continue
        base = [s for s in life if born + warmup <= s.t <= born + warmup + WINDOW]
        tail = [s for s in life if s.t >= died - WINDOW]
        out.append(
            Life(
                life[0].pid or 0, born + warmup, died,
                statistics.median(s.rss_kib or 0 for s in base),
                statistics.median(s.rss_kib or 0 for s in tail),
                max(s.fds or 0 for s in base), min(s.fds or 0 for s in tail),
                max(s.threads or 0 for s in base), min(s.threads or 0 for s in tail),
            )
        )  # fmt: skip
    return out


def check_i4(record: RunRecord, warmup: float = WARMUP) -> list[Violation]:
    out: list[Violation] = []
    for life in lives(record, warmup):
        rss0, rss1, pid, died = life.rss0, life.rss1, life.pid, life.end
        if rss0 and (rss1 - rss0) / rss0 >= RSS_GROWTH:
            out.append(
                Violation("I4", died, f"extsock {pid}: RSS {rss0:.0f} -> {rss1:.0f} KiB "
                          f"(+{100 * (rss1 - rss0) / rss0:.1f} %, limit {RSS_GROWTH:.0%})")
            )  # fmt: skip
        for what, before, after in (
            ("fds", life.fds0, life.fds1),
            ("threads", life.threads0, life.threads1),
        ):
            if after > before:
                out.append(Violation("I4", died, f"extsock {pid}: {what} grew {before} -> {after}"))
    for conn in record.conns:
        over = False
        for sample in record.samples:
            cs = sample.conns.get(conn)
            clones = cs.clones if cs is not None else -1
            if clones > MAX_CLONES and not over:
                out.append(Violation("I4", sample.t, f"{conn}: {clones} clones loaded in charon"))
            if clones >= 0:
                over = clones > MAX_CLONES
    return out


def quiet_start(record: RunRecord) -> float:
    """When the last fault's effects are over: its end plus its I2 bound (what it moves may
    move until then: a redirect's new gateway shows after the traffic went on), or the
    traffic back after it if later."""
    start = 0.0
    for rec in recoveries(record):
        if not rec.fault.error:
            start = max(start, rec.fault.end + bound(rec.fault))
        if rec.seconds is not None:
            start = max(start, rec.fault.at + rec.seconds)
    return start


def check_i5(record: RunRecord, quiet: float = QUIET) -> list[Violation]:
    begin = quiet_start(record)
    end = record.samples[-1].t if record.samples else record.duration
    out: list[Violation] = []
    if end - begin < quiet:
        out.append(Violation("I5", begin, f"the quiet window lasted {end - begin:.1f} s only"))
    for entry in record.history:
        if entry.t > begin:
            out.append(
                Violation("I5", entry.t, f"{entry.conn}: history entry in the quiet window: "
                          f"{entry.reason} {entry.from_gw} -> {entry.to_gw} ({entry.result})")
            )  # fmt: skip
    for conn in record.conns:
        last: str | None = None
        for sample in record.samples:
            cs = sample.conns.get(conn)
            if cs is None or cs.active is None:
                continue
            if sample.t > begin and last is not None and cs.active != last:
                out.append(
                    Violation("I5", sample.t, f"{conn}: moved {last} -> {cs.active} in the "
                              "quiet window")
                )  # fmt: skip
            last = cs.active
    return out


def _explains(fault: FaultRun, t: float, slack: float = 0.0) -> bool:
    return not fault.error and fault.at - 0.5 <= t <= fault.end + bound(fault) + slack


def check_i6(record: RunRecord) -> list[Violation]:
    out: list[Violation] = []
    for entry in record.history:
        if not any(_explains(f, entry.t) for f in record.faults):
            out.append(
                Violation("I6", entry.t, f"{entry.conn}: {entry.reason} {entry.from_gw} -> "
                          f"{entry.to_gw} ({entry.result}) follows no fault that explains it")
            )  # fmt: skip
    end = record.samples[-1].t if record.samples else record.duration
    for rec in recoveries(record):
        if rec.fault.error or (rec.seconds is not None and rec.seconds <= DOWN_AFTER):
            continue
        moved = any(e.conn == rec.conn and e.t >= rec.fault.at for e in record.history)
        if rec.seconds is None and not moved:
            out.append(
                Violation("I6", rec.fault.at, f"{rec.conn}: down after {rec.fault.kind} "
                          f"({rec.fault.detail}), neither a failover nor traffic after it")
            )  # fmt: skip
    start = record.samples[0].t if record.samples else 0.0
    for conn in record.conns:
        for a, b in record.answers.gaps(conn, OUTAGE, start, end):
            if not any(_explains(f, a, slack=0.0) for f in record.faults):
                out.append(
                    Violation("I6", a, f"{conn}: no traffic answered from {a:.1f} s to "
                              f"{b:.1f} s and no fault explains it")
                )  # fmt: skip
    return out


CHECKS = (check_i1, check_i2, check_i3, check_i4, check_i5, check_i6)


def check_all(record: RunRecord) -> list[Violation]:
    found = [v for check in CHECKS for v in check(record)]
    return sorted(found, key=lambda v: (v.t, v.invariant))
