"""What the observability files (contrib/prometheus, contrib/grafana) are checked against:
the metric names a scrape of extsock exposes, the names a PromQL expression uses, and
promtool (Debian's prometheus package; scripts/install-deps.sh installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "contrib/prometheus/extsock.rules.yml"
RULE_TESTS = ROOT / "contrib/prometheus/extsock.rules.test.yml"
DASHBOARD = ROOT / "contrib/grafana/extsock.json"

_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.M)
_EXTSOCK_NAME = re.compile(r"\bextsock_[a-z0-9_]+\b")
_SUFFIXES = {  # the series a family of each type has (a gauge's is its own name)
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def exposed_names(scrape: str) -> set[str]:
    """Every series name a query may use on this scrape: its samples, and each declared
    family with the suffixes of its type (a labelled metric with no child yet counts)."""
    names = set(_SAMPLE.findall(scrape))
    for family, kind in _TYPE.findall(scrape):
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def extsock_names(text: str) -> set[str]:
    """The extsock metric names an expression (or a whole file) uses."""
    return set(_EXTSOCK_NAME.findall(text))


def promtool() -> str | None:
    return shutil.which("promtool")


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run(
        [tool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its own


def dashboard_queries(variables: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target; with `variables`, Grafana's `$__...` replaced
    by their values and the dashboard's own variables by `.*` (as when set to All)."""
    out = []
    for panel in dashboard_panels(dashboard()):
        for target in panel.get("targets", []):
            expr = str(target["expr"])
            if variables is not None:
                for name, value in variables.items():
                    expr = expr.replace(name, value)
                expr = re.sub(r"\$\w+", ".*", expr)
            out.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", expr))
    return out
