"""The operator's typed records become the control protocol's JSON only in the adapter."""

from __future__ import annotations

import json

from extsock_py.adapters import reports_json as j
from extsock_py.adapters.state_store import history_record
from extsock_py.domain.reports import HealthReport, HistoryRecord, UnloadResult


def test_a_stored_record_keeps_its_keys_and_their_order() -> None:
    stored = {
        "id": 3,
        "time": 1714564800.5,
        "connection": "home",
        "from": "10.0.0.1",
        "to": "10.0.0.2",
        "reason": "operator",
        "result": "up",
        "duration": 0.4,
        "outage": None,
    }
    assert json.dumps(j.record_json(history_record(stored))) == json.dumps(stored)


def test_a_record_without_an_id_shows_none() -> None:
    record = HistoryRecord(time=1.0, connection="office", result="gave-up")
    assert "id" not in j.record_json(record)
    assert j.record_json(record)["from"] is None


def test_health_when_the_loop_did_not_answer_has_no_connections() -> None:
    silent = HealthReport(healthy=False, reasons=("did not answer",))
    assert j.health_json(silent) == {
        "healthy": False,
        "charon_reachable": None,
        "reasons": ["did not answer"],
    }
    fine = HealthReport(True, (), charon_reachable=True, connections={"home": "up"})
    assert list(j.health_json(fine)) == ["healthy", "charon_reachable", "connections", "reasons"]


def test_unload() -> None:
    assert j.unload_json(UnloadResult("app")) == {
        "connection": "app",
        "unloaded": True,
        "notes": [],
    }


def test_published_notices_become_the_protocols_fields_in_the_publisher() -> None:
    from extsock_py.adapters.publisher import notice_fields
    from extsock_py.domain.notices import (
        CharonBackNotice,
        ConnectionNotice,
        MonitorDeadNotice,
        NoticeKind,
        ReloadedNotice,
    )

    up = ConnectionNotice(NoticeKind.FAILOVER, "home", "b", "a", "monitor", 0.1234567, None)
    assert notice_fields(up) == {
        "connection": "home",
        "gateway": "b",
        "from_gateway": "a",
        "reason": "monitor",
        "duration": 0.123457,
    }
    dead = MonitorDeadNotice("home", "b", silence=1.23456, unanswered=3)
    assert notice_fields(dead) == {
        "connection": "home",
        "gateway": "b",
        "silence": 1.235,
        "unanswered": 3,
    }
    assert notice_fields(CharonBackNotice()) == {}
    assert notice_fields(ReloadedNotice(("home",))) == {"managed": ["home"]}
