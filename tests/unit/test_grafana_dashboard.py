"""contrib/grafana/extsock.json: it parses, its panels are laid out and complete, every
query is PromQL promtool accepts, and every metric it uses is in a scrape of extsock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.scrape_support import (
    dashboard,
    dashboard_panels,
    dashboard_queries,
    exposed_names,
    extsock_names,
    promtool,
    run_promtool,
)
from tests.unit.metrics_scrape import unit_scrape

# What the dashboard shows (issue 27), each by the metrics it must use.
SHOWS = {
    "tunnel state per connection": {"extsock_tunnel_up", "extsock_connection_phase"},
    "active gateway per connection": {"extsock_active_gateway"},
    "failovers and their reasons": {"extsock_failovers_total", "extsock_gave_up_total"},
    "detection histogram": {"extsock_failover_detection_to_up_seconds_bucket"},
    "outage histogram": {"extsock_failover_outage_seconds_bucket"},
    "the standby": {"extsock_standby_up"},
    "charon reachability": {"extsock_charon_reachable", "extsock_charon_lost_total"},
}
# Grafana's variables, as a query sees them after substitution.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "30s"}


def _variable_queries(data: dict[str, Any]) -> list[str]:
    return [v["definition"] for v in data["templating"]["list"] if v["type"] == "query"]


def test_it_parses_and_its_panels_are_laid_out() -> None:
    data = dashboard()
    assert data["uid"] == "extsock-failover" and data["title"]
    assert isinstance(data["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard_panels(data)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard_panels(data):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


def test_every_variable_a_query_uses_is_defined() -> None:
    data = dashboard()
    defined = {v["name"] for v in data["templating"]["list"]}
    for where, expr in dashboard_queries():
        used = set(re.findall(r"\$(\w+)", expr)) - {k[1:] for k in _GRAFANA_VARS}
        assert used <= defined, f"{where}: {sorted(used - defined)}"


def test_it_shows_what_it_is_for() -> None:
    used = set().union(*(extsock_names(expr) for _, expr in dashboard_queries()))
    for what, metrics in SHOWS.items():
        assert metrics <= used, f"{what}: {sorted(metrics - used)} not in any panel"


def test_every_metric_it_uses_is_in_a_scrape() -> None:
    data = dashboard()
    exposed = exposed_names(unit_scrape())
    for where, expr in [
        *dashboard_queries(),
        *(("variable", q) for q in _variable_queries(data)),
    ]:
        used = extsock_names(expr)
        # `up` is Prometheus's own (the scrape of extsock succeeded)
        assert used or re.search(r"\bup\{", expr), f"{where}: uses no extsock metric"
        assert used <= exposed, f"{where}: not in a scrape: {sorted(used - exposed)}"


@pytest.mark.skipif(promtool() is None, reason="promtool missing (scripts/install-deps.sh)")
def test_every_query_is_promql(tmp_path: Path) -> None:
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    queries = dashboard_queries(_GRAFANA_VARS)
    for n, (_, expr) in enumerate(queries):
        lines += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    out = run_promtool("check", "rules", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(queries)} rules found" in out.stdout
