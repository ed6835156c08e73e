"""DNS names in remote_addrs (issue 14, point 6), against real charon daemons: a name with
two A records is two gateways tried in turn, and the name is resolved again at each attempt.

The names are the test's own: extsock runs in a mount namespace of its own where the test's
hosts file is bind-mounted over /etc/hosts (nothing outside that process sees them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from tests.integration.resilience_support import FAST_POLICY, runner_tag

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("lab", [{"gateways": 3}], indirect=True),
]

GW1, GW2, GW3 = "10.99.1.2", "10.99.2.2", "10.99.3.2"
NAME = "gws.extsock.test"
POLICY = FAST_POLICY


class NamedRunner(ExtsockRunner):
    """extsock with the test's hosts file as its /etc/hosts (a private mount namespace)."""

    def __init__(self, lab: Lab, hosts: Path, name: str, remote_addrs: str) -> None:
        super().__init__(lab, POLICY, name=name, conf_transform=self.by_name)
        self.hosts = hosts
        self.remote_addrs = remote_addrs

    def by_name(self, text: str) -> str:
        return text.replace(f"{GW1}, {GW2}, {GW3}", self.remote_addrs)

    def command(self) -> list[str]:
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, str(self.hosts), *super().command()]


def hosts_text(*addresses: str) -> str:
    return "127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in addresses)


@pytest.fixture
def named(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[NamedRunner]:
    tag = runner_tag(request)
    hosts = fresh_lab.state_dir / f"hosts-{tag}"
    hosts.write_text(hosts_text(GW1, GW2))
    remote_addrs = getattr(request, "param", f"{NAME}, {GW3}")
    runner = NamedRunner(fresh_lab, hosts, f"d-{tag}", remote_addrs)
    runner.write_config()
    try:
        yield runner
    finally:
        runner.stop()
        hosts.unlink(missing_ok=True)


def active(runner: ExtsockRunner) -> str | None:
    row = runner.status()
    return row["active_gateway"] if row["phase"] == "up" else None


def test_a_name_with_two_records_is_two_gateways_resolved_at_each_attempt(
    fresh_lab: Lab, named: NamedRunner
) -> None:
    named.start()
    assert wait_until(lambda: active(named) == GW1, 15.0), named.log_tail()
    assert named.status()["gateways"] == [GW1, GW2, GW3]
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
    # segw1 dies: the name's second address is the next gateway.
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: active(named) == GW2, 20.0), named.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    # The name moves back to segw1 alone; at the next attempt it is resolved again, so after
    # segw2 comes segw1 (the new list's first), not segw3 (the old list's next).
    fresh_lab.heal("segw1")
    named.hosts.write_text(hosts_text(GW1))
    fresh_lab.fail("segw2", "link")
    assert wait_until(lambda: active(named) == GW1, 20.0), named.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw1"
    assert named.status()["gateways"] == [GW1, GW3]


@pytest.mark.parametrize("named", [NAME], indirect=True)
def test_a_lone_name_with_two_records_is_managed_and_fails_over(
    fresh_lab: Lab, named: NamedRunner
) -> None:
    named.start()
    assert wait_until(lambda: active(named) == GW1, 15.0), named.log_tail()
    assert named.status()["gateways"] == [GW1, GW2]
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: active(named) == GW2, 20.0), named.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
