"""A scrape of /metrics from a daemon on fakes that has been through what the alerts and
the dashboard are about: a tunnel up, failovers (with an outage), a give-up, a failed
switch, charon lost and back, a hot standby."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

from extsock_py.adapters.metrics import attach_metrics
from extsock_py.domain.notices import (
    CharonBackNotice,
    CharonLostNotice,
    ConnectionNotice,
    NoticeKind,
)
from extsock_py.domain.policy import FailoverPolicy
from tests.unit.test_control_support import running_daemon, sample_config


def unit_scrape() -> str:
    config = sample_config()
    config = replace(config, policies={"home": FailoverPolicy(standby=True)})
    with running_daemon(config) as harness:
        server = attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0")
        server.start()
        try:
            harness.bring_up("home")
            office = ConnectionNotice(NoticeKind.FAILOVER, "office", gateway="b", from_gateway="a")
            harness.publish(replace(office, reason="monitor", duration=0.4, outage=1.2))
            harness.publish(ConnectionNotice(NoticeKind.GAVE_UP, "office", gateway="b"))
            harness.publish(replace(office, kind=NoticeKind.SWITCH_FAILED, reason="failback"))
            harness.publish(CharonLostNotice("gone"))
            harness.publish(CharonBackNotice())
            with urllib.request.urlopen(server.url + "/metrics", timeout=5) as reply:
                return str(reply.read().decode())
        finally:
            server.close()
