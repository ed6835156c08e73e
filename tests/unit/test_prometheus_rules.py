"""contrib/prometheus/extsock.rules.yml: promtool accepts it and its unit tests pass; every
alert has a case where it fires; it names only metrics, phases and reasons extsock has."""

from __future__ import annotations

import re

import pytest

from extsock_py.adapters.metrics import PLANNED_REASONS
from extsock_py.domain.failover import Phase
from tests.scrape_support import (
    RULE_TESTS,
    RULES,
    exposed_names,
    extsock_names,
    promtool,
    run_promtool,
)
from tests.unit.metrics_scrape import unit_scrape

needs_promtool = pytest.mark.skipif(
    promtool() is None, reason="promtool missing (Debian's prometheus: scripts/install-deps.sh)"
)

# What the rules are for (issue 27): a tunnel down too long, failovers above a rate, a
# connection that gave up, charon unreachable, extsock down or not scraped (or stuck), a hot
# standby down.
ALERTS = {
    "ExtsockTunnelDown",
    "ExtsockFailoversFrequent",
    "ExtsockConnectionGaveUp",
    "ExtsockCharonUnreachable",
    "ExtsockDown",
    "ExtsockNotScraped",
    "ExtsockNotAnswering",
    "ExtsockStandbyDown",
}


def _alerts() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    out = run_promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    out = run_promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_each_alert_is_there_once_and_has_a_case_where_it_fires() -> None:
    assert sorted(_alerts()) == sorted(ALERTS)
    tests = RULE_TESTS.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels:", tests))
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    assert firing == ALERTS, "alerts never seen firing: " + str(ALERTS - firing)
    assert quiet == ALERTS, "alerts never seen quiet: " + str(ALERTS - quiet)


def test_the_rules_use_only_metrics_a_scrape_has() -> None:
    exposed = exposed_names(unit_scrape())
    for path in (RULES, RULE_TESTS):
        used = extsock_names(path.read_text())
        assert used, path
        assert used <= exposed, f"{path.name}: not in a scrape: {sorted(used - exposed)}"


def test_the_phases_and_reasons_the_rules_name_are_extsocks() -> None:
    text = RULES.read_text()
    phases = {p for group in re.findall(r'phase=~?"([^"]+)"', text) for p in group.split("|")}
    assert phases and phases <= {str(p) for p in Phase}, phases
    planned = re.findall(r'reason!~"([^"]+)"', text)
    assert planned and all(set(p.split("|")) == set(PLANNED_REASONS) for p in planned), planned
