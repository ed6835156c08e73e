"""Options of newer strongSwan releases: sent as swanctl sends them, judged by the charon in use.

ini's charon from Debian sid (strongSwan 6.1) knows `connections.<conn>.ocsp` (6.0.0): the
connection loads and fails over with traffic. The host's 5.9.8 does not: extsock still
sends it (as swanctl would) and says, naming file, line and key, that this charon is too old.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from extsock_py.lab.extsock_runner import ExtsockRunner
from extsock_py.lab.lab import Lab, wait_until
from tests.integration.resilience_support import runner_tag

RELEASES = ("bookworm", "sid")
POLICY = "    connect_timeout = 5s\n    dead_after_retransmits = 1\n"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize(
        "lab",
        [{"auth": "cert", "node_charon": (f"ini={rel}",)} for rel in RELEASES],
        indirect=True,
        ids=RELEASES,
    ),
]


def with_ocsp(text: str) -> str:
    return re.sub(r"(\n(\s*)dpd_delay = [^\n]*)", r"\1\n\2ocsp = reply", text, count=1)


@pytest.fixture
def extsock(fresh_lab: Lab, request: pytest.FixtureRequest) -> Iterator[ExtsockRunner]:
    tag = runner_tag(request)
    runner = ExtsockRunner(fresh_lab, POLICY, name=f"r-{tag}", conf_transform=with_ocsp)
    runner.write_config()
    runner.start()
    yield runner
    runner.stop()


def test_an_option_of_strongswan_6_against_the_charon_in_use(
    fresh_lab: Lab, extsock: ExtsockRunner
) -> None:
    assert "ocsp = reply" in extsock.conf.read_text()
    note = re.compile(r"connections\.home\.ocsp needs strongSwan 6\.0\.0 or later, charon is 5\.9")
    if fresh_lab.config.charon_of("ini") == "bookworm":
        assert wait_until(lambda: note.search(extsock.log_text()) is not None, 5.0), (
            extsock.log_tail()
        )
        return
    assert wait_until(lambda: fresh_lab.child_installed("segw1"), 10.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=3) == "segw1"
    fresh_lab.fail("segw1", "link")
    assert wait_until(lambda: fresh_lab.child_installed("segw2"), 15.0), extsock.log_tail()
    assert fresh_lab.udp_echo(timeout=1.0, tries=5) == "segw2"
    assert note.search(extsock.log_text()) is None
