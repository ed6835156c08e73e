"""The operator usecase against a real daemon loop on fakes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from extsock_py.adapters.control.pushed import profile_from_request
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.profile import clone_name
from extsock_py.domain.reports import HistoryRecord, UnloadResult
from extsock_py.usecases.operator import (
    ConnectionConflict,
    InvalidConnection,
    NoHistory,
    NotAnswering,
    OperatorUsecase,
    ReloadFailed,
    UnknownConnection,
    UnknownGateway,
)
from tests.unit.test_control_support import (
    HOME,
    SECRET,
    Harness,
    make_harness,
    running_daemon,
    sample_config,
)

APP_BODY: dict[str, Any] = {
    "remote_addrs": "203.0.113.1, 203.0.113.2",
    "version": 2,
    "mobike": False,
    "local": {"auth": "psk", "id": "app"},
    "remote": {"auth": "psk"},
    "children": {"app-net": {"remote_ts": ["10.9.0.0/16"]}},
}


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


@pytest.fixture
def op(harness: Harness) -> OperatorUsecase:
    return OperatorUsecase(harness.daemon, harness.daemon.service, harness.store, timeout=5.0)


def test_status_lists_the_managed_connections_with_their_ike_state(
    harness: Harness, op: OperatorUsecase
) -> None:
    harness.bring_up("home")
    result = op.status()
    assert result.charon_reachable is True
    rows = {r.connection: r for r in result.connections}
    assert set(rows) == {"home", "office"}  # "plain" has one gateway: charon's alone
    home = rows["home"]
    assert home.gateways == HOME
    assert home.active_gateway == HOME[0]
    assert home.phase == "up"
    assert home.ike_state == "ESTABLISHED"
    assert home.ike_id == 7
    assert home.source == "config"
    office = rows["office"]
    assert office.phase == "connecting"
    assert office.next_action is not None and office.next_action.startswith("connect timeout")
    assert office.next_action_in == 5.0
    assert office.next_action_at == pytest.approx(harness.clock.wall() + 5.0)


def test_status_of_one_connection_and_of_an_unknown_one(op: OperatorUsecase) -> None:
    assert [r.connection for r in op.status("office").connections] == ["office"]
    with pytest.raises(UnknownConnection, match=r"'nope' \(managed: home, office\)"):
        op.status("nope")


@pytest.mark.parametrize("command", ["switch", "hold", "release", "retry", "terminate", "unload"])
def test_every_mutation_refuses_an_unknown_connection(op: OperatorUsecase, command: str) -> None:
    with pytest.raises(UnknownConnection, match="no managed connection named 'plain'"):
        getattr(op, command)("plain")


def test_switch_while_up_is_make_before_break_and_recorded(
    harness: Harness, op: OperatorUsecase
) -> None:
    harness.bring_up("home")
    result = op.switch("home", HOME[1])
    assert result.changed is True
    assert result.connection.switch_gateway == HOME[1]
    assert result.connection.active_gateway == HOME[0]  # the old SA stays until then
    harness.bring_up("home", HOME[1], ike_id=9)
    assert op.status("home").connections[0].active_gateway == HOME[1]
    (record,) = op.history("home")
    assert (record.from_gateway, record.to_gateway, record.reason) == (HOME[0], HOME[1], "operator")


def test_switch_to_a_gateway_of_another_connection_is_refused(op: OperatorUsecase) -> None:
    with pytest.raises(UnknownGateway, match=r"192.0.2.9 is not a gateway of home \(gateways"):
        op.switch("home", "192.0.2.9")


def test_switch_without_target_moves_to_the_next_gateway(op: OperatorUsecase) -> None:
    row = op.switch("office").connection
    assert row.target_gateway == "192.0.2.2"
    assert row.phase == "connecting"


def test_hold_and_release(harness: Harness, op: OperatorUsecase) -> None:
    harness.bring_up("home")
    held = op.hold("home")
    assert held.changed is True and held.connection.held is True
    assert op.hold("home").changed is False
    assert op.health().healthy is True  # held is sanctioned
    released = op.release("home")
    assert released.connection.held is False


def test_terminate_is_no_failure_and_retry_starts_again(
    harness: Harness, op: OperatorUsecase
) -> None:
    harness.bring_up("home")
    row = op.terminate("home").connection
    assert row.phase == "stopped"
    assert row.failures_total == 0
    health = op.health()
    assert health.healthy is False
    assert health.reasons == ("home: stopped",)
    row = op.retry("home").connection
    assert (row.phase, row.target_gateway) == ("connecting", HOME[0])


def test_reload_reports_and_a_bad_file_is_refused(harness: Harness, op: OperatorUsecase) -> None:
    result = op.reload().applied
    assert result is not None
    assert result.managed == ["home", "office"]
    assert result.plain == ["plain"]
    harness.config.append(ConfigError("/etc/swanctl/swanctl.conf", 3, "extsock.x", "unknown key"))
    with pytest.raises(ReloadFailed, match=r"swanctl\.conf:3: key 'extsock\.x': unknown key"):
        op.reload()
    assert [r.connection for r in op.status().connections] == ["home", "office"]


def test_reload_removes_a_connection_gone_from_the_file(
    harness: Harness, op: OperatorUsecase
) -> None:
    harness.config.append(sample_config(with_office=False))
    result = op.reload().applied
    assert result is not None and result.removed == ["office"]
    assert [r.connection for r in op.status().connections] == ["home"]


def test_history_needs_a_store_and_filters(harness: Harness) -> None:
    with pytest.raises(NoHistory, match="no state store"):
        OperatorUsecase(harness.daemon, harness.daemon.service, None).history()
    harness.store.append_history(HistoryRecord(time=100.0, connection="home", result="up"))
    harness.store.append_history(HistoryRecord(time=200.0, connection="office", result="gave-up"))
    op = OperatorUsecase(harness.daemon, harness.daemon.service, harness.store)
    assert len(op.history()) == 2
    assert [r.connection for r in op.history("office")] == ["office"]
    assert [r.time for r in op.history(since=150.0)] == [200.0]
    assert len(op.history(limit=1)) == 1


def test_a_loop_that_does_not_answer_gives_a_clear_error() -> None:
    harness = make_harness()  # never started: nothing runs the submitted work
    op = OperatorUsecase(harness.daemon, harness.daemon.service, harness.store, timeout=0.05)
    with pytest.raises(NotAnswering, match=r"did not answer status within 0.05s"):
        op.status()
    with pytest.raises(NotAnswering):
        op.hold("home")
    health = op.health()
    assert health.healthy is False and "did not answer" in health.reasons[0]
    assert health.charon_reachable is None and health.connections is None


# --- connections pushed by an application ---------------------------------------------------


def test_load_manages_and_starts_a_pushed_connection(harness: Harness, op: OperatorUsecase) -> None:
    result = op.load(
        profile_from_request("app", APP_BODY, {"connect_timeout": "2s", "max_cycles": 3}),
        privileged=True,
    )
    assert result.started is True
    row = result.connection
    assert (row.phase, row.target_gateway, row.source) == (
        "connecting",
        "203.0.113.1",
        "control",
    )
    assert row.next_action_in == 2.0  # the pushed policy
    clone = harness.on_loop(lambda: harness.charon.conns[clone_name("app", "203.0.113.1")])
    assert clone["remote_addrs"] == ["203.0.113.1"]
    assert clone["version"] == "2" and clone["mobike"] == "no"  # made VICI strings
    assert clone["children"]["app-net"]["start_action"] == "none"


def test_a_pushed_connection_survives_a_reload_without_a_bounce(
    harness: Harness, op: OperatorUsecase
) -> None:
    op.load(profile_from_request("app", APP_BODY), privileged=True)
    harness.bring_up("app")
    result = op.reload().applied
    assert result is not None
    assert "app" in result.managed and "app" not in result.removed
    row = op.status("app").connections[0]
    assert (row.phase, row.active_gateway) == ("up", "203.0.113.1")


def test_loading_again_updates_and_unload_forgets(harness: Harness, op: OperatorUsecase) -> None:
    op.load(profile_from_request("app", APP_BODY), privileged=True)
    again = op.load(profile_from_request("app", {**APP_BODY, "mobike": True}), privileged=True)
    assert again.started is False
    assert "updated" in again.notes[0]
    assert op.unload("app") == UnloadResult("app", ())
    with pytest.raises(UnknownConnection):
        op.status("app")
    result = op.reload().applied
    assert result is not None and "app" not in result.managed  # a reload does not bring it back


def test_a_file_connection_cannot_be_unloaded_over_the_socket(op: OperatorUsecase) -> None:
    with pytest.raises(ConnectionConflict, match="'terminate' brings it down"):
        op.unload("office")
    assert op.status().connections[1].connection == "office"


def test_load_refuses_a_name_the_config_file_owns(op: OperatorUsecase) -> None:
    with pytest.raises(ConnectionConflict, match="'home' is defined in the config file"):
        op.load(profile_from_request("home", APP_BODY))


@pytest.mark.parametrize(
    ("name", "body", "policy", "message"),
    [
        ("app", {**APP_BODY, "remote_addrs": "203.0.113.1"}, None, "needs two or more gateways"),
        ("app", {**APP_BODY, "remote_addrs": ["%any", "10.0.0.0/8"]}, None, "'%any'"),
        ("app", {"version": "2"}, None, "key 'remote_addrs': missing"),
        ("app", {**APP_BODY, "remote_addrs": 5}, None, "key 'remote_addrs'"),
        ("app", {**APP_BODY, "children": ["x"]}, None, "key 'children'"),
        ("app", {**APP_BODY, "proposals": None}, None, "proposals: null is not a VICI value"),
        ("app", APP_BODY, {"conect_timeout": "2s"}, "key 'conect_timeout'"),
        ("app", APP_BODY, {"connect_timeout": "soon"}, "invalid duration 'soon'"),
        ("a@b", APP_BODY, None, "invalid connection name"),
        ("x~probe", APP_BODY, None, "invalid connection name"),
        ("", APP_BODY, None, "invalid connection name"),
    ],
)
def test_load_validates_what_the_application_sends(
    op: OperatorUsecase,
    name: str,
    body: dict[str, Any],
    policy: dict[str, Any] | None,
    message: str,
) -> None:
    with pytest.raises(InvalidConnection, match=message):
        op.load(profile_from_request(name, body, policy))


def test_profile_from_request_keeps_the_rejected_entries_as_notes() -> None:
    profile = profile_from_request(
        "app",
        {"remote_addrs": "203.0.113.1,%any,203.0.113.2,203.0.113.1", "local": {"id": "app"}},
        None,
    )
    assert profile.gateways == ("203.0.113.1", "203.0.113.2")
    assert [v.address for v in profile.not_gateways] == ["%any"]


def test_no_secret_in_any_view(harness: Harness, op: OperatorUsecase) -> None:
    text = repr(op.status()) + repr(op.health()) + repr(op.reload())
    assert SECRET not in text
