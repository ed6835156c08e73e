"""What a chaos run observes, as plain values: samples every 0.5 s, the faults as they ran,
the answers of the traffic, the history. Pure: the checks and the report read only these."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extsock_py.lab.chaos.schedule import FaultKind


@dataclass(frozen=True)
class ConnSample:
    """One connection at one sample. -1 / None: not known at that moment (charon or extsock
    did not answer)."""

    phase: str | None = None  # extsock's `status`
    active: str | None = None  # extsock's active gateway
    installed: int = -1  # INSTALLED CHILD_SAs of the connection in ini's charon
    carriers: tuple[str, ...] = ()  # the gateways of the IKE_SAs that carry them
    clones: int = -1  # clones of the connection loaded in ini's charon


@dataclass(frozen=True)
class Sample:
    t: float  # s since the run's start
    conns: Mapping[str, ConnSample]
    extsock_alive: bool = True
    expected_down: bool = False  # killed by the run, not started again yet
    stalled: bool = False  # SIGSTOPped by the run
    status_s: float | None = None  # how long `status` took; None: no answer (see status_error)
    status_error: str = ""
    pid: int | None = None
    rss_kib: int | None = None
    fds: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class FaultRun:
    """A fault as it ran: started at `at`, its action done at `done`, over at `end` (a link
    healed, a daemon started again, a stall ended; `done` for the others)."""

    at: float
    kind: FaultKind
    done: float
    end: float
    detail: str = ""
    error: str = ""  # why it could not be applied (then no effect is expected)


@dataclass(frozen=True)
class HistoryEntry:
    t: float  # s since the run's start
    conn: str
    from_gw: str | None
    to_gw: str | None
    reason: str
    result: str


@dataclass
class Answers:
    """When each connection's traffic was answered (at most one mark per `resolution` s) and
    through which gateway. Sorted by time: answers are noted as they come."""

    resolution: float = 0.05
    times: dict[str, list[float]] = field(default_factory=dict)
    gateways: dict[str, list[str]] = field(default_factory=dict)

    def note(self, conn: str, t: float, gateway: str) -> None:
        times = self.times.setdefault(conn, [])
        gws = self.gateways.setdefault(conn, [])
        if times and t - times[-1] < self.resolution and gws[-1] == gateway:
            return
        times.append(t)
        gws.append(gateway)

    def first_after(self, conn: str, t: float) -> float | None:
        times = self.times.get(conn, [])
        k = bisect.bisect_right(times, t)
        return times[k] if k < len(times) else None

    def gaps(
        self, conn: str, longer_than: float, start: float, end: float
    ) -> list[tuple[float, float]]:
        """(last answer, next answer) pairs more than `longer_than` apart, within start..end
        (the run's start and end count as answers, so a dead end shows)."""
        times = [start, *(x for x in self.times.get(conn, []) if start <= x <= end), end]
        return [(a, b) for a, b in itertools.pairwise(times) if b - a > longer_than]


@dataclass(frozen=True)
class Violation:
    invariant: str  # I1..I6
    t: float
    what: str

    def line(self) -> str:
        return f"{self.invariant} at {self.t:8.2f}s: {self.what}"


@dataclass(frozen=True)
class RunRecord:
    """Everything a finished run hands to the checks and the report."""

    seed: int
    duration: float
    conns: tuple[str, ...]
    drain: float
    samples: Sequence[Sample]
    faults: Sequence[FaultRun]
    answers: Answers
    history: Sequence[HistoryEntry]
    unexpected_exits: Sequence[tuple[float, str]] = ()  # extsock died unasked: (t, why)
    ike_rekeys: int = 0
    child_rekeys: int = 0
    gateway_names: Mapping[str, str] = field(default_factory=dict)  # address -> segwN


def record_from_json(data: dict[str, Any]) -> RunRecord:
    """A RunRecord from what `asdict` made of it (record.json of a run)."""
    answers = data["answers"]
    samples = [
        Sample(**{**x, "conns": {c: ConnSample(**{**cs, "carriers": tuple(cs["carriers"])})
                                 for c, cs in x["conns"].items()}})
        for x in data["samples"]
    ]  # fmt: skip
    return RunRecord(
        seed=int(data["seed"]),
        duration=float(data["duration"]),
        conns=tuple(data["conns"]),
        drain=float(data["drain"]),
        samples=samples,
        faults=[FaultRun(**f) for f in data["faults"]],
        answers=Answers(float(answers["resolution"]), answers["times"], answers["gateways"]),
        history=[HistoryEntry(**h) for h in data["history"]],
        unexpected_exits=[(float(t), str(w)) for t, w in data["unexpected_exits"]],
        ike_rekeys=int(data["ike_rekeys"]),
        child_rekeys=int(data["child_rekeys"]),
        gateway_names=dict(data["gateway_names"]),
    )
