"""The tunnel monitor against real charon daemons: probes through the CHILD_SA from ini's
namespace (extsock itself runs in the root namespace), failover when they go unanswered.

Bounded: detection waits at most 10 s; the idle and load runs last 30 s and 15 s (the
10-minute runs belong to `make bench`, through extsock_py.lab.monitor_check).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab
from extsock_py.lab.monitor_check import (
    false_failover_check,
    measure_detection,
    monitor_policy,
)

pytestmark = pytest.mark.integration

GW1, GW2 = "10.99.1.2", "10.99.2.2"
IDLE_SECONDS = 30.0
LOAD_SECONDS = 15.0
_RUNS = itertools.count(1)  # one state dir (history) per test: nothing leaks between tests


@pytest.fixture
def extsock(fresh_lab: Lab) -> Iterator[ExtsockRunner]:
    runner = ExtsockRunner(fresh_lab, monitor_policy(fresh_lab), name=f"mon{next(_RUNS)}")
    runner.write_config()
    yield runner
    runner.stop()


def test_silent_gateway_is_detected_and_traffic_moves_within_2s(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    result = measure_detection(fresh_lab, extsock)
    took = result["traffic_on_segw2_after"]
    print(f"\nmonitor 500ms x 3: segw1 silent -> traffic on segw2 after {took}s ({result})")
    assert took is not None, extsock.log_tail()
    assert result["reason"] == "monitor" and result["from"] == GW1 and result["to"] == GW2
    assert took <= 2.0, extsock.log_tail()
    # The outage runs from the monitor's last sign of life, just before the fault, to the
    # tunnel up on segw2: longer than detection-to-up, about the traffic's own gap.
    assert result["outage"] is not None and result["duration"] is not None
    assert result["duration"] < result["outage"] <= took + 0.5, result


def test_no_false_failover_while_idle(fresh_lab: Lab, extsock: ExtsockRunner) -> None:
    result = false_failover_check(fresh_lab, extsock, IDLE_SECONDS)
    print(f"\nidle {IDLE_SECONDS}s: {result}")
    assert result["failures_total"] == 0 and result["history"] == [], extsock.log_tail()
    assert result["active_gateway"] == GW1
    assert result["probes"] >= IDLE_SECONDS / 0.5 - 4  # it did probe, every interval


def test_no_false_failover_under_load_and_probes_back_off(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    result = false_failover_check(fresh_lab, extsock, LOAD_SECONDS, load_period=0.005)
    print(f"\nload {LOAD_SECONDS}s at 200 pps: {result}")
    assert result["failures_total"] == 0 and result["history"] == [], extsock.log_tail()
    assert result["active_gateway"] == GW1
    assert result["load_answered"] >= 0.9 * result["load_sent"]
    assert result["probes"] <= 3  # inbound packets are life: no probing while they flow


def test_a_local_address_not_in_the_namespace_is_a_clear_error(fresh_lab: Lab) -> None:
    policy = monitor_policy(fresh_lab, local="10.100.1.99")
    runner = ExtsockRunner(fresh_lab, policy, name=f"mon{next(_RUNS)}")
    conf = runner.write_config()
    check = subprocess.run(
        [sys.executable, "-m", "extsock_py", "check-config", "--file", str(conf)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode != 0
    line = next(
        i for i, text in enumerate(conf.read_text().splitlines(), 1) if "10.100.1.99" in text
    )
    ns = fresh_lab.namespace("ini")
    expected = (
        f"{conf}:{line}: key 'extsock.monitor.local': address 10.100.1.99 is not an address "
        f"of network namespace '{ns}'"
    )
    assert expected in check.stderr, check.stderr
    with pytest.raises(RuntimeError, match=r"extsock\.monitor\.local"):
        runner.start(timeout=10.0)  # `extsock run` refuses to start, charon untouched
    assert fresh_lab.list_sas("ini") == []
