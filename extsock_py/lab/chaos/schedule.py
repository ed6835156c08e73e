"""The seeded fault schedule of a chaos run: pure, the same seed gives the same schedule.

A fault names its kind and the random choices it needs (which connection's gateway, how long
a link stays cut...). Which gateway that is is read from extsock when the fault runs; the
schedule only fixes what can be fixed in advance. Rules kept while drawing:
- at most one gateway down at a time (a cut link until its heal, a killed gateway charon until
  its restart, plus `GATEWAY_GAP` s), so that a path always exists;
- nothing that needs extsock to answer (switch, SIGHUP, a kill of extsock, another stall) while
  extsock is stalled;
- no fault in the first `warmup` s nor in the last `quiet + tail` s: the run ends with a quiet
  window (invariant I5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, get_args

FaultKind = Literal[
    "link-cut",
    "delete",
    "gateway-restart",
    "ini-restart",
    "extsock-kill",
    "sighup",
    "switch",
    "redirect",
    "stall",
]
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
GATEWAY_DOWN: frozenset[FaultKind] = frozenset({"link-cut", "gateway-restart"})
NEEDS_EXTSOCK: frozenset[FaultKind] = frozenset({"extsock-kill", "sighup", "switch", "stall"})
LINK_HEAL = (5.0, 20.0)  # s: a cut link is healed after this long
STALL = (2.0, 8.0)  # s: SIGSTOP to SIGCONT
RESTART_DELAY = (0.2, 2.0)  # s: a killed charon or extsock is started again after this long
GATEWAY_GAP = 2.0  # s after a gateway is back before another may go down
JITTER = 0.5  # a gap between two faults is fault_every * (1 +- JITTER)


@dataclass(frozen=True)
class Fault:
    """One fault: when (s from the run's start), what, and its drawn parameters."""

    at: float
    kind: FaultKind
    conn: int = 0  # which connection's active gateway (index into the run's connections)
    lasts: float = 0.0  # link-cut: until heal; stall: until SIGCONT; restarts: until start
    pick: int = 0  # switch, redirect: which of the healthy other gateways (modulo their count)
    scope: Literal["ike", "child", ""] = ""  # delete: of the IKE_SA or of the CHILD_SA
    changed: bool = False  # sighup: with the file changed

    def line(self) -> str:
        extra = {
            "link-cut": f" conn#{self.conn} heal after {self.lasts:.1f}s",
            "delete": f" conn#{self.conn} {self.scope}",
            "gateway-restart": f" conn#{self.conn} down {self.lasts:.1f}s",
            "ini-restart": f" down {self.lasts:.1f}s",
            "extsock-kill": f" down {self.lasts:.1f}s",
            "sighup": " file changed" if self.changed else " file as it was",
            "switch": f" conn#{self.conn} pick {self.pick}",
            "redirect": f" conn#{self.conn} pick {self.pick}",
            "stall": f" {self.lasts:.1f}s",
        }[self.kind]
        return f"{self.at:8.2f}s {self.kind}{extra}"


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration: float
    fault_every: float
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        head = (
            f"chaos schedule: seed {self.seed}, duration {self.duration:g}s, "
            f"a fault every {self.fault_every:g}s on average, {len(self.faults)} faults"
        )
        return [head, *(f.line() for f in self.faults)]

    @property
    def last_fault_end(self) -> float:
        return max((f.at + f.lasts for f in self.faults), default=0.0)


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return round(rng.uniform(*bounds), 2)


def _draw(rng: random.Random, kind: FaultKind, at: float, conns: int) -> Fault:
    conn = rng.randrange(conns)
    if kind == "link-cut":
        return Fault(at, kind, conn=conn, lasts=_uniform(rng, LINK_HEAL))
    if kind == "delete":
        return Fault(at, kind, conn=conn, scope=rng.choice(("ike", "child")))
    if kind in ("gateway-restart", "ini-restart", "extsock-kill"):
        return Fault(at, kind, conn=conn, lasts=_uniform(rng, RESTART_DELAY))
    if kind == "sighup":
        return Fault(at, kind, changed=rng.random() < 0.5)
    if kind in ("switch", "redirect"):
        return Fault(at, kind, conn=conn, pick=rng.randrange(1000))
    return Fault(at, kind, lasts=_uniform(rng, STALL))


def generate(
    seed: int,
    duration: float,
    fault_every: float,
    *,
    conns: int = 2,
    warmup: float = 20.0,
    quiet: float = 60.0,
    tail: float = 25.0,
    kinds: tuple[FaultKind, ...] = KINDS,
) -> Schedule:
    """The schedule of a run of `duration` s. Raises ValueError for values that make none."""
    if fault_every <= 0:
        raise ValueError(f"fault_every must be > 0 s, not {fault_every}")
    if conns < 1:
        raise ValueError(f"conns must be >= 1, not {conns}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}, not {kinds}")
    rng = random.Random(seed)
    last = duration - quiet - tail
    faults: list[Fault] = []
    gateway_free_at = 0.0  # when the gateway down now is back (plus the gap)
    extsock_free_at = 0.0  # when a stall ends
    at = warmup
    for _ in range(int(duration / (fault_every * (1 - JITTER))) + 2):  # bounded
        at = round(at + fault_every * rng.uniform(1 - JITTER, 1 + JITTER), 2)
        if at > last:
            break
        allowed = [
            k
            for k in kinds
            if not (k in GATEWAY_DOWN and at < gateway_free_at)
            and not (k in NEEDS_EXTSOCK and at < extsock_free_at)
        ]
        if not allowed:
            continue
        fault = _draw(rng, rng.choice(allowed), at, conns)
        # A fault must not outlast the schedule: the quiet window starts after its end.
        if fault.at + fault.lasts > duration - quiet - 5.0:
            continue
        if fault.kind in GATEWAY_DOWN:
            gateway_free_at = fault.at + fault.lasts + GATEWAY_GAP
        if fault.kind == "stall":
            extsock_free_at = fault.at + fault.lasts + 1.0
        faults.append(fault)
    return Schedule(seed, duration, fault_every, tuple(faults))
