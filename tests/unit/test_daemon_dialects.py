"""The whole daemon against fake charons of several releases: the version read at connect
picks the dialect; alerts are the signal where charon has them; a newer charon still works."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes import charon_messages as cm
from tests.fakes.fake_charon import FakeCharon
from tests.unit.test_daemon_resilience import GW1, GW2, Running, _start

RETRANSMIT = "retransmit 1 of request with message ID 2"


@contextmanager
def daemon_on(tmp_path: Path, version: str, alerts: bool) -> Iterator[Running]:
    fake = FakeCharon(version=version, alert_supported=alerts)
    fake._dir = str(tmp_path / "charon")
    Path(fake._dir).mkdir()
    fake.start()
    r = _start(tmp_path, fake=fake)
    try:
        assert r.wait(lambda: r.status()["phase"] == "up"), r.status()
        yield r
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        r.fake.stop()
        assert not r.thread.is_alive()


def test_a_newer_charon_works_with_the_newest_dialect_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with daemon_on(tmp_path, "7.0.0", alerts=True) as r:
        assert "charon 7.0.0 is newer than every release extsock knows" in caplog.text
        assert "charon 7.0.0: dialect strongSwan 6.0.3, alerts first" in caplog.text
        _, sa = r.clone_sa(GW1)
        r.fake.emit("alert", cm.alert("retransmit-send", f"home@{GW1}", sa))
        assert r.wait(lambda: r.status()["active_gateway"] == GW2), r.status()


def test_with_alerts_the_log_line_no_longer_moves_the_tunnel(tmp_path: Path) -> None:
    with daemon_on(tmp_path, "6.1.0", alerts=True) as r:
        uid, sa = r.clone_sa(GW1)
        processed = r.daemon.service.events.processed
        r.fake.emit_log(RETRANSMIT, ike_name=f"home@{GW1}", ike_id=uid)
        r.fake.emit("ike-update", cm.ike_updown(f"home@{GW1}", sa, up=True))  # a marker
        assert r.wait(lambda: r.daemon.service.events.processed > processed)
        assert r.status()["active_gateway"] == GW1  # the line was dropped unread
        r.fake.emit("alert", cm.alert("retransmit-send", f"home@{GW1}", sa))
        assert r.wait(lambda: r.status()["active_gateway"] == GW2), r.status()
        assert r.status()["phase"] == "up"


@pytest.mark.parametrize("version", ["5.9.8", "6.0.1"])
def test_without_alerts_the_log_line_moves_the_tunnel(tmp_path: Path, version: str) -> None:
    with daemon_on(tmp_path, version, alerts=False) as r:
        uid, _ = r.clone_sa(GW1)
        r.fake.emit_log(RETRANSMIT, ike_name=f"home@{GW1}", ike_id=uid)
        assert r.wait(lambda: r.status()["active_gateway"] == GW2), r.status()


def test_the_release_read_at_connect_is_kept_for_status(tmp_path: Path) -> None:
    from extsock_py.cli.failover import status_table
    from extsock_py.domain.observations import CharonRelease

    with daemon_on(tmp_path, "6.1.0", alerts=True) as r:
        assert r.wait(lambda: r.daemon.service.charon_release is not None)
        assert r.daemon.service.charon_release == CharonRelease("6.1.0", "strongSwan 6.0.3", True)
    head = status_table(
        {
            "charon_reachable": True,
            "charon": {"version": "6.1.0", "dialect": "strongSwan 6.0.3", "alerts": True},
            "connections": [],
        }
    )
    assert head == (
        "charon: reachable (strongSwan 6.1.0, dialect strongSwan 6.0.3, alerts); "
        "0 managed connections"
    )


def test_with_alerts_a_late_answer_to_a_connect_is_slow_not_dead(tmp_path: Path) -> None:
    """A connect is judged by connect_timeout alone, whichever signal reports the retransmit:
    the retransmit-send alert of a CONNECTING IKE_SA moves nothing, the late answer is kept."""
    fake = FakeCharon(version="6.1.0", alert_supported=True)
    fake.silent = {GW1}
    fake._dir = str(tmp_path / "charon")
    Path(fake._dir).mkdir()
    fake.start()
    r = _start(tmp_path, fake=fake)
    try:
        assert r.wait(lambda: any(n == f"home@{GW1}" for n, _ in list(fake.sas.values())))
        uid, sa = r.clone_sa(GW1)
        assert r.wait(lambda: r.status()["phase"] == "connecting")
        processed = r.daemon.service.events.processed
        fake.emit("alert", cm.alert("retransmit-send", f"home@{GW1}", sa))
        assert r.wait(lambda: r.daemon.service.events.processed > processed)
        status = r.status()
        assert (status["phase"], status["target_gateway"]) == ("connecting", GW1)
        # the gateway answers late, within connect_timeout (2 s)
        sa["state"] = b"ESTABLISHED"
        child = cm.child_sa("net", uid, "INSTALLED")
        fake.emit("ike-updown", cm.ike_updown(f"home@{GW1}", sa, up=True))
        fake.emit("child-updown", cm.child_updown(f"home@{GW1}", sa, child, up=True))
        assert r.wait(lambda: r.status()["phase"] == "up"), r.status()
        assert r.status()["active_gateway"] == GW1 and r.status()["failures_total"] == 0
    finally:
        r.daemon.request_stop()
        r.thread.join(5.0)
        fake.stop()
