"""The bench's output: a table on stdout, ``.bench/results.json`` and a markdown table."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from extsock_py.bench.stats import Figure, Summary

RESULTS_DIR = Path(".bench")


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def _side(s: Summary) -> str:
    if s.n == 0:
        return "-"
    return f"{_num(s.median)} (p95 {_num(s.p95)}, {_num(s.min)}-{_num(s.max)}, n={s.n})"


def _verdict(f: Figure) -> str:
    if f.skipped:
        return "skipped"
    return "met" if f.met else "NOT MET"


def rows(figures: list[Figure]) -> list[list[str]]:
    out = []
    for f in figures:
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
        out.append(
            [f.name, f.unit, _side(f.extsock), _side(f.baseline), ratio, f.goal, _verdict(f)]
        )
    return out


HEADER = [
    "figure",
    "unit",
    "extsock median (p95, min-max, n)",
    "baseline median (...)",
    "ratio",
    "goal",
    "result",
]


def table(figures: list[Figure]) -> str:
    body = rows(figures)
    widths = [min(90, max(len(r[i]) for r in [HEADER, *body])) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    for f in figures:
        extra = [f"baseline: {f.baseline_label}"] if f.baseline_label else []
        if f.skipped:
            extra.append(f"skipped: {f.skipped}")
        extra += f.notes
        if extra:
            lines.append(f"  [{f.name.split()[0]}] " + "; ".join(extra))
    return "\n".join(lines)


def markdown(figures: list[Figure]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(figures)]
    return "\n".join(out)


def write(figures: list[Figure], meta: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **meta,
        "figures": [f.to_dict() for f in figures],
    }
    path = directory / "results.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    (directory / "results.md").write_text(markdown(figures) + "\n")
    return path
