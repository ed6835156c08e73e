"""Summaries of repeated measurements and the figures the bench reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Summary:
    """median, p95, min, max and n of one side of a figure (n = 0: nothing measured)."""

    median: float | None
    p95: float | None
    min: float | None
    max: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        data = sorted(float(v) for v in values if v is not None and math.isfinite(v))
        if not data:
            return cls(None, None, None, None, 0)
        # Nearest-rank p95: with few samples it is the maximum, never an interpolation.
        rank = max(1, math.ceil(0.95 * len(data)))
        return cls(statistics.median(data), data[rank - 1], data[0], data[-1], len(data))

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "median": r(self.median),
            "p95": r(self.p95),
            "min": r(self.min),
            "max": r(self.max),
            "n": self.n,
        }


@dataclass
class Figure:
    """One row: extsock beside its baseline, the ratio of medians, and the goal."""

    name: str
    unit: str
    extsock: Summary
    baseline: Summary
    goal: str
    better: Better = "lower"
    goal_ratio: float | None = None  # ratio <= (lower) or >= (higher) this
    goal_value: float | None = None  # extsock median <= (lower) or >= (higher) this
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    baseline_label: str = ""
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        a, b = self.extsock.median, self.baseline.median
        if a is None or b is None or b == 0:
            return None
        return a / b

    @property
    def met(self) -> bool:
        if self.skipped is not None or self.extsock.median is None:
            return False
        ok = True  # a figure without a goal is "met" once measured (reported only)
        if self.goal_ratio is not None:
            ok = ok and self.ratio is not None and _cmp(self.ratio, self.goal_ratio, self.better)
        if self.goal_value is not None:
            ok = ok and _cmp(self.extsock.median, self.goal_value, self.better)
        for check in self.extra.get("also_required", []):
            ok = ok and bool(check.get("met"))
        return ok

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "unit": self.unit,
            "extsock": self.extsock.to_dict(),
            "baseline": self.baseline.to_dict(),
            "baseline_label": self.baseline_label,
            "ratio": None if ratio is None else round(ratio, 4),
            "goal": self.goal,
            "met": self.met,
            "skipped": self.skipped,
            "notes": self.notes,
            **self.extra,
        }


def _cmp(value: float, limit: float, better: Better) -> bool:
    return value <= limit if better == "lower" else value >= limit


def skipped(name: str, unit: str, goal: str, why: str) -> Figure:
    empty = Summary.of([])
    return Figure(name, unit, empty, empty, goal, skipped=why)
