"""The observability files against a real daemon in the lab: its /metrics passes
`promtool check metrics`; a real Prometheus scraping it evaluates the alerting rules of
contrib/prometheus and answers every query of the Grafana dashboard with data, before and
after a failover (tunnel monitor, hot standby on).

Bounded: each wait has its deadline; Prometheus listens on loopback, keeps its data in the
test's temporary directory and is stopped (then killed) on the way out.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from extsock_py.lab.monitor_check import monitor_policy
from tests.scrape_support import (
    RULES,
    dashboard_queries,
    exposed_names,
    extsock_names,
    promtool,
    run_promtool,
)

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
PROMETHEUS = shutil.which("prometheus")
# The dashboard's variables for these queries: a window that holds the whole run.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "5m", "$__interval": "1s"}
# Panels over counters that only move on events this run does not cause: no series is right.
QUIET = ("extsock_switch_failed_total",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


class Prometheus:
    """A Prometheus server scraping one extsock every second, with the rules loaded."""

    def __init__(self, workdir: Path, target: str) -> None:
        assert PROMETHEUS is not None
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(RULES))}]\n"
            "scrape_configs:\n"
            "  - job_name: extsock\n"
            f"    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
        )
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def ready(self) -> bool:
        try:
            return "Ready" in _get(self.url + "/-/ready")
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = json.loads(
            _get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        )
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(json.loads(_get(self.url + "/api/v1/alerts"))["data"]["alerts"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    if PROMETHEUS is None or promtool() is None:
        pytest.skip("prometheus/promtool missing (Debian's prometheus: scripts/install-deps.sh)")
    return tmp_path


@pytest.fixture
def extsock(fresh_lab: Lab) -> Iterator[tuple[ExtsockRunner, str]]:
    """extsock with the tunnel monitor and the hot standby, and its metrics address."""
    address = f"127.0.0.1:{_free_port()}"
    policy = monitor_policy(fresh_lab, extra="    standby = yes\n")
    runner = ExtsockRunner(fresh_lab, policy, name="obs", extra_args=("--metrics", address))
    runner.write_config()
    yield runner, address
    runner.stop()


def test_a_real_scrape_passes_promtool_and_feeds_the_rules_and_the_dashboard(
    fresh_lab: Lab, extsock: tuple[ExtsockRunner, str], prometheus_dir: Path
) -> None:
    runner, address = extsock
    started = time.monotonic()
    runner.start()
    metrics_url = f"http://{address}/metrics"
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), runner.log_tail()
    standby_on_gw2 = {"gateway": GW2, "phase": "up"}
    assert wait_until(lambda: runner.status().get("hot_standby") == standby_on_gw2, 10.0), (
        runner.log_tail()
    )
    prom = Prometheus(prometheus_dir, address)
    try:
        assert wait_until(prom.ready, 20.0), prom.log.read_text()[-2000:]
        assert wait_until(lambda: prom.query("extsock_standby_up == 1") != [], 10.0)
        fresh_lab.fail("segw1", "link")
        assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), runner.log_tail()
        record = runner.request("history", conn="home")["records"][-1]
        assert (record["from"], record["to"], record["reason"]) == (GW1, GW2, "monitor"), record

        scrape = _get(metrics_url)
        checked = run_promtool("check", "metrics", stdin=scrape)
        assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked
        exposed = exposed_names(scrape)
        for where, expr in [("rules", RULES.read_text()), *dashboard_queries()]:
            used = extsock_names(expr)
            assert used <= exposed, f"{where}: not in the scrape: {sorted(used - exposed)}"

        # Prometheus has scraped the failover (outage histogram) and the standby's move.
        outage = "extsock_failover_outage_seconds_count"
        assert wait_until(lambda: prom.query(f"{outage} > 0") != [], 10.0)
        assert wait_until(lambda: prom.query(f'extsock_standby_up{{gateway="{GW1}"}}') != [], 10.0)
        empty = [where for where, expr in dashboard_queries(_GRAFANA_VARS) if not prom.query(expr)]
        expected_empty = [
            w for w, e in dashboard_queries(_GRAFANA_VARS) if any(q in e for q in QUIET)
        ]
        assert empty == expected_empty, f"panels without data: {empty}"
        active = prom.query('extsock_active_gateway{connection="home"}')
        assert [r["metric"]["gateway"] for r in active] == [GW2]

        # The standby now points at the failed segw1: its alert is pending (for: 10m) and
        # no other alert is, with the tunnel up on segw2 and charon reachable.
        def pending() -> set[tuple[str, str]]:
            return {(a["labels"]["alertname"], a["state"]) for a in prom.alerts()}

        assert wait_until(lambda: pending() == {("ExtsockStandbyDown", "pending")}, 15.0), pending()
        standby_alert = next(
            a for a in prom.alerts() if a["labels"]["alertname"] == "ExtsockStandbyDown"
        )
        assert standby_alert["labels"]["gateway"] == GW1
        queries = len(dashboard_queries(_GRAFANA_VARS))
        took = time.monotonic() - started
        print(f"\nobservability lab run: {took:.1f}s; {queries} queries, {len(empty)} empty")
    finally:
        prom.stop()
        fresh_lab.heal("segw1")
