"""Dialects: charon's version picks the events and the wording; the listener applies them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from extsock_py.adapters.vici.dialects import DIALECTS, choose, parse_version
from extsock_py.adapters.vici.listener import ViciEventListener
from extsock_py.domain import observations as ob
from tests.fakes import charon_messages as cm
from tests.fakes.fake_charon import FakeCharon
from tests.unit.test_vici_listener import FAST, Inbox

CONN = "home@10.99.1.2"
RETRANSMIT = "retransmit 1 of request with message ID 2"


@pytest.mark.parametrize(
    ("version", "dialect", "warned"),
    [
        ("5.9.8", "strongSwan 5.9", False),
        ("5.9.13", "strongSwan 5.9", False),
        ("6.0.1", "strongSwan 6.0", False),
        ("6.0.2", "strongSwan 6.0", False),
        ("6.0.3", "strongSwan 6.0.3", False),
        ("6.1.0", "strongSwan 6.0.3", False),
        ("6.1.0rc1", "strongSwan 6.0.3", False),
        ("7.0.0", "strongSwan 6.0.3", True),
        ("6.2.0", "strongSwan 6.0.3", True),
        ("5.8.2", "strongSwan 5.9", True),
        ("", "strongSwan 6.0.3", True),
        (None, "strongSwan 6.0.3", True),
    ],
)
def test_choose(version: str | None, dialect: str, warned: bool) -> None:
    choice = choose(version)
    assert choice.dialect.name == dialect
    assert (choice.warning is not None) is warned


def test_parse_version() -> None:
    assert parse_version("6.0.3") == (6, 0, 3)
    assert parse_version("6.1") == (6, 1, 0)
    assert parse_version("strongSwan 5.9.8") == (5, 9, 8)
    assert parse_version("x") is None


def test_dialects_are_ordered_oldest_first() -> None:
    assert [d.since for d in DIALECTS] == sorted(d.since for d in DIALECTS)


LINES = [
    ("initiating IKE_SA home@10.99.1.2[3] to 10.99.1.2", ob.Signal.INITIATING),
    (RETRANSMIT, ob.Signal.RETRANSMIT),
    ("path probing attempt 2", ob.Signal.RETRANSMIT),
    ("giving up after 5 retransmits", ob.Signal.GAVE_UP),
    ("giving up after 10 path probings", ob.Signal.GAVE_UP),
    ("establishing IKE_SA failed, peer not responding", ob.Signal.GAVE_UP),
    ("no route found to reach 10.99.1.2, MOBIKE update deferred", ob.Signal.NO_ROUTE),
    ("no route found to reach peer, MOBIKE update deferred", ob.Signal.NO_ROUTE),
    ("received NO_PROPOSAL_CHOSEN notify error", ob.Signal.REFUSED),
    ("received AUTHENTICATION_FAILED notify error", ob.Signal.REFUSED),
    # an IKE_SA rekey: the new SA [4] logged in the old SA's (3) context
    ("initiating IKE_SA home@10.99.1.2[4] to 10.99.1.2", None),
    ("sending DPD request", None),
    ("old path is not available anymore, try to find another", None),
    ("IKE_SA home@10.99.1.2[3] established between 10.0.0.100[home]...10.99.1.2[gw]", None),
]


@pytest.mark.parametrize("version", ["5.9.8", "6.0.1"])
@pytest.mark.parametrize(("message", "signal"), LINES)
def test_log_lines_without_alerts(version: str, message: str, signal: ob.Signal | None) -> None:
    reader = choose(version).dialect.reader(alerts=False)
    got = reader.translate(ob.LogLine("IKE", 1, message, CONN, 3))
    assert got == (ob.IkeSignal(signal, CONN, 3, message) if signal else None)


def test_a_line_without_an_ike_sa_means_nothing() -> None:
    reader = choose("5.9.8").dialect.reader(alerts=False)
    assert reader.translate(ob.LogLine("IKE", 1, RETRANSMIT, CONN, None)) is None
    assert reader.translate(ob.LogLine("IKE", 1, RETRANSMIT, None, None)) is None


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (RETRANSMIT, False),  # the alert retransmit-send says it
        ("giving up after 5 retransmits", False),  # retransmit-send-timeout
        ("establishing IKE_SA failed, peer not responding", False),  # peer-init-unreachable
        ("path probing attempt 2", True),  # no alert for path probing
        ("giving up after 10 path probings", True),
        ("no route found to reach peer, MOBIKE update deferred", True),
        ("received TS_UNACCEPTABLE notify error", True),
        ("initiating IKE_SA home@10.99.1.2[3] to 10.99.1.2", True),
    ],
)
def test_alerts_first_where_charon_has_them(message: str, kept: bool) -> None:
    reader = choose("6.1.0").dialect.reader(alerts=True)
    assert reader.uses_alerts
    assert (reader.translate(ob.LogLine("IKE", 1, message, CONN, 3)) is not None) is kept
    if kept:  # the prefilter never drops a line the dialect reads
        assert any(message.startswith(p) for p in reader.log_prefixes)
    assert not any(RETRANSMIT.startswith(p) for p in reader.log_prefixes)  # the chattiest


@pytest.mark.parametrize(
    ("kind", "signal"),
    [
        ("retransmit-send", ob.Signal.RETRANSMIT),
        ("retransmit-send-cleared", ob.Signal.ANSWERED),
        ("retransmit-send-timeout", ob.Signal.GAVE_UP),
        ("peer-init-unreachable", ob.Signal.GAVE_UP),
        ("ike-sa-expired", ob.Signal.EXPIRED),
        ("proposal-mismatch-ike", None),
        ("shutdown-signal", None),
    ],
)
def test_alerts(kind: str, signal: ob.Signal | None) -> None:
    reader = choose("6.1.0").dialect.reader(alerts=True)
    got = reader.translate(ob.Alert(kind, CONN, 3))
    assert got == (ob.IkeSignal(signal, CONN, 3, kind) if signal else None)
    assert reader.translate(ob.Alert(kind)) is None  # no IKE_SA: nothing to attribute


def test_a_refused_alert_registration_falls_back_to_log_lines() -> None:
    reader = choose("6.1.0").dialect.reader(alerts=False)
    assert not reader.uses_alerts
    assert reader.translate(ob.Alert("retransmit-send", CONN, 3)) is None
    assert reader.translate(ob.LogLine("IKE", 1, RETRANSMIT, CONN, 3)) is not None


# --- the listener reads the version and applies the dialect --------------------------------


def _listen(fake: FakeCharon, inbox: Inbox) -> Iterator[ViciEventListener]:
    lst = ViciEventListener(inbox, fake.uri, wait=FAST, dialects=choose)
    lst.start()
    try:
        assert lst.wait_ready(1.0)
        yield lst
    finally:
        lst.stop()


def test_598_registers_no_alert_and_reads_log_lines() -> None:
    inbox = Inbox()
    with FakeCharon(version="5.9.8") as fake:
        for lst in _listen(fake, inbox):
            assert lst.charon_version == "5.9.8"
            assert lst.dialect is not None and lst.dialect.dialect.name == "strongSwan 5.9"
            assert "alert" not in [e for _, e in fake.registrations]
            assert lst.alert_supported is False
            fake.emit("log", cm.log("sending DPD request", ike_name=CONN, ike_id=3))
            fake.emit("log", cm.log(RETRANSMIT, ike_name=CONN, ike_id=3))
            [sig] = inbox.wait_for_type(ob.IkeSignal)
            assert sig == ob.IkeSignal(ob.Signal.RETRANSMIT, CONN, 3, RETRANSMIT)
            assert not any(isinstance(x, ob.LogLine) for x in inbox.items)


def test_610_registers_alerts_and_uses_them_first() -> None:
    inbox = Inbox()
    with FakeCharon(version="6.1.0", alert_supported=True) as fake:
        for lst in _listen(fake, inbox):
            assert lst.alert_supported is True and lst.dialect is not None
            assert lst.dialect.uses_alerts
            fake.emit("log", cm.log(RETRANSMIT, ike_name=CONN, ike_id=3))  # dropped: alert says it
            fake.emit("alert", cm.alert("retransmit-send", CONN, cm.ike_sa(3, "ESTABLISHED")))
            [sig] = inbox.wait_for_type(ob.IkeSignal)
            assert sig == ob.IkeSignal(ob.Signal.RETRANSMIT, CONN, 3, "retransmit-send")
            assert lst.dropped_logs >= 1


def test_a_newer_charon_works_with_the_newest_dialect_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = Inbox()
    caplog.set_level(logging.WARNING)
    with FakeCharon(version="7.0.0", alert_supported=True) as fake:
        for lst in _listen(fake, inbox):
            assert lst.dialect is not None and lst.dialect.dialect is DIALECTS[-1]
            assert "charon 7.0.0 is newer than every release extsock knows" in caplog.text
            fake.emit("alert", cm.alert("peer-init-unreachable", CONN, cm.ike_sa(5, "CONNECTING")))
            [sig] = inbox.wait_for_type(ob.IkeSignal)
            assert sig.signal is ob.Signal.GAVE_UP and sig.ike_id == 5


def test_a_restarted_charon_of_another_release_gets_its_dialect() -> None:
    inbox = Inbox()
    with FakeCharon(version="6.0.1") as fake:
        for lst in _listen(fake, inbox):
            assert lst.dialect is not None and not lst.dialect.uses_alerts
            fake.stop()
            inbox.wait_for_type(ob.CharonLost)
            fake.version, fake.known_events = "6.1.0", fake.known_events | {"alert"}
            fake.start()
            inbox.wait_for_type(ob.CharonBack, timeout=2.0)
            assert lst.charon_version == "6.1.0" and lst.dialect.uses_alerts
