"""The failover commands through click's CliRunner, against a daemon loop on fakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from extsock_py.adapters.control.server import ControlServer, attach_control
from extsock_py.cli.failover import (
    COMMANDS,
    describe_event,
    failover,
    health,
    parse_since,
    reload,
    status_table,
    watch,
)
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.notices import ConnectionNotice, NoticeKind
from extsock_py.domain.reports import HistoryRecord
from tests.unit.test_control_support import HOME, Harness, running_daemon, short_dir, wait_until


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


@pytest.fixture
def server(harness: Harness) -> Iterator[ControlServer]:
    with short_dir() as d:
        srv = attach_control(harness.operator, harness.publisher, d / "extsock.sock")
        srv.start()
        yield srv
        srv.close()


def run(server: ControlServer | Path, command: click.Command, *args: str) -> Result:
    path = server.path if isinstance(server, ControlServer) else server
    return CliRunner().invoke(command, list(args), obj={"control_socket": str(path)})


def test_status_prints_a_table(harness: Harness, server: ControlServer) -> None:
    harness.bring_up("home")
    result = run(server, failover, "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "charon: reachable; 2 managed connections"
    assert lines[1].split() == [
        "CONNECTION",
        "STATE",
        "GATEWAY",
        "IKE",
        "GATEWAYS",
        "FAILURES",
        "NEXT",
    ]
    assert lines[2].split()[:6] == [
        "home",
        "up",
        HOME[0],
        "ESTABLISHED",
        "#7",
        f"{HOME[0]}*,{HOME[1]}",
    ]
    assert lines[3].split()[:3] == ["office", "connecting", "192.0.2.1"]
    assert "connect timeout on 192.0.2.1 in 5.0s" in lines[3]


def test_status_json_is_the_protocol_result(server: ControlServer) -> None:
    result = run(server, failover, "status", "office", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["charon_reachable"] is True
    (row,) = data["connections"]
    assert row["connection"] == "office" and row["phase"] == "connecting"


def test_no_daemon_is_exit_3_with_what_to_do() -> None:
    with short_dir() as d:
        result = run(d / "none.sock", failover, "status")
    assert result.exit_code == 3
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err.startswith(f"extsock: cannot reach the daemon at {d / 'none.sock'}: ")
    assert "is 'extsock run' running? (set --control-socket)" in err
    assert len(err.splitlines()) == 1


def test_the_socket_comes_from_the_environment_without_a_main_group(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXTSOCK_CONTROL_SOCKET", str(server.path))
    result = CliRunner().invoke(failover, ["status", "--json"])
    assert result.exit_code == 0, result.output


def test_attached_to_a_main_group(server: ControlServer) -> None:
    @click.group()
    @click.option("--control-socket")
    @click.pass_context
    def main(ctx: click.Context, control_socket: str) -> None:
        ctx.ensure_object(dict)
        ctx.obj["control_socket"] = control_socket

    for command in COMMANDS:
        main.add_command(command)
    result = CliRunner().invoke(
        main, ["--control-socket", str(server.path), "failover", "status", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(main.commands) == ["failover", "health", "reload", "watch"]


def test_operator_commands(harness: Harness, server: ControlServer) -> None:
    harness.bring_up("home")
    result = run(server, failover, "hold", "home")
    assert (result.exit_code, result.output) == (
        0,
        f"home: up (held) on {HOME[0]}; next: held by operator\n",
    )
    assert run(server, failover, "hold", "home").output.endswith("(no change)\n")
    assert run(server, failover, "release", "home").output == f"home: up on {HOME[0]}\n"
    result = run(server, failover, "switch", "home", "--to", HOME[1])
    assert result.output == f"home: up on {HOME[0]}, switching to {HOME[1]}\n"
    harness.bring_up("home", HOME[1], ike_id=8)
    assert run(server, failover, "terminate", "home").output.startswith(
        f"home: stopped on {HOME[1]}"
    )
    result = run(server, failover, "retry", "home", "--json")
    assert json.loads(result.output)["connection"]["phase"] == "connecting"


def test_a_refused_request_is_exit_1_with_one_line(server: ControlServer) -> None:
    result = run(server, failover, "switch", "home", "--to", "9.9.9.9")
    assert result.exit_code == 1
    assert result.stderr.startswith("extsock: switch failed: UnknownGateway: 9.9.9.9 is not")
    assert len(result.stderr.splitlines()) == 1
    result = run(server, failover, "hold", "nope")
    assert result.exit_code == 1
    assert "UnknownConnection: no managed connection named 'nope'" in result.stderr


def test_usage_errors_are_exit_2(server: ControlServer) -> None:
    assert run(server, failover, "switch").exit_code == 2
    result = run(server, failover, "history", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert "expected a time span such as 30m" in result.output + result.stderr


def test_history(harness: Harness, server: ControlServer) -> None:
    assert run(server, failover, "history").output == "no failover recorded\n"
    harness.bring_up("home")
    run(server, failover, "switch", "home")
    harness.bring_up("home", HOME[1], ike_id=8)
    harness.store.append_history(HistoryRecord(time=1.0, connection="office", result="gave-up"))
    result = run(server, failover, "history", "home")
    lines = result.output.splitlines()
    assert lines[0].split() == ["TIME", "CONNECTION", "FROM", "TO", "REASON", "RESULT", "DURATION"]
    assert lines[1].split()[1:] == ["home", HOME[0], HOME[1], "operator", "up", "0.0s"]
    data = json.loads(run(server, failover, "history", "--json").output)
    assert [r["connection"] for r in data["records"]] == ["home", "office"]
    # The fake clock's wall time is 2023: one hour ago excludes it, an old ISO time does not.
    assert json.loads(run(server, failover, "history", "--since", "1h", "--json").output) == {
        "records": []
    }
    old = run(server, failover, "history", "--since", "1971-01-01T00:00:00+00:00", "--json")
    assert [r["connection"] for r in json.loads(old.output)["records"]] == ["home"]


def test_reload(harness: Harness, server: ControlServer) -> None:
    result = run(server, reload)
    assert result.output == "reloaded: managed home, office; plain plain\n"
    assert json.loads(run(server, reload, "--json").output)["managed"] == ["home", "office"]
    harness.config.append(ConfigError("/etc/swanctl/swanctl.conf", 9, None, "syntax error"))
    result = run(server, reload)
    assert result.exit_code == 1
    assert result.stderr == (
        "extsock: reload failed: ReloadFailed: /etc/swanctl/swanctl.conf:9: syntax error; "
        "the running config is kept\n"
    )


def test_health(harness: Harness, server: ControlServer) -> None:
    assert (run(server, health).exit_code, run(server, health).output) == (0, "healthy\n")
    run(server, failover, "terminate", "office")
    result = run(server, health)
    assert (result.exit_code, result.output) == (1, "unhealthy: office: stopped\n")
    assert json.loads(run(server, health, "--json").output)["healthy"] is False


def test_load_and_unload(server: ControlServer, tmp_path: Path) -> None:
    body = tmp_path / "app.json"
    body.write_text(
        json.dumps({"remote_addrs": "203.0.113.1,%any,203.0.113.2", "local": {"id": "app"}})
    )
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"connect_timeout": "3s"}))
    result = run(server, failover, "load", "app", str(body), "--policy", str(policy))
    assert result.exit_code == 0, result.stderr
    assert result.output.splitlines() == [
        "app: connecting on 203.0.113.1; next: connect timeout on 203.0.113.1 in 3.0s",
        "note: remote_addrs entry '%any' ignored: %any matches any peer and names no gateway",
    ]
    assert run(server, failover, "unload", "app").output == "app: unloaded\n"
    body.write_text("{oops")
    assert run(server, failover, "load", "app", str(body)).exit_code == 2


def test_watch_prints_events(harness: Harness, server: ControlServer) -> None:
    done = threading.Event()

    def publish_until_done() -> None:
        wait_until(lambda: server.clients == 1)
        notice = ConnectionNotice(
            NoticeKind.FAILOVER,
            "home",
            gateway=HOME[1],
            from_gateway=HOME[0],
            reason="retransmit",
            duration=1.5,
        )
        while not done.is_set():
            harness.publish(notice)
            done.wait(0.02)

    publisher = threading.Thread(target=publish_until_done)
    publisher.start()
    try:
        human = run(server, watch, "--count", "2", "--event", "failover")
        assert human.exit_code == 0, human.stderr
        lines = human.output.splitlines()
        assert len(lines) == 2
        assert lines[0].endswith(f"home: failover {HOME[0]} -> {HOME[1]} (retransmit) in 1.500s")
        as_json = run(server, watch, "--json", "--count", "1")
        event = json.loads(as_json.output)
        assert (event["event"], event["from"], event["to"]) == ("failover", HOME[0], HOME[1])
    finally:
        done.set()
        publisher.join()


def test_watch_ends_with_exit_3_when_the_daemon_goes(harness: Harness) -> None:
    with short_dir() as d:
        srv = attach_control(harness.operator, harness.publisher, d / "s")
        srv.start()

        def close_once_watched() -> None:
            wait_until(lambda: srv.clients == 1)
            srv.close()

        closer = threading.Thread(target=close_once_watched)
        closer.start()
        result = run(srv, watch)
        closer.join()
    assert result.exit_code == 3
    assert "closed the connection" in result.stderr


def test_parse_since() -> None:
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("1h", now=7200.0) == 3600.0
    assert parse_since("2d", now=200000.0) == 200000.0 - 172800
    utc = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_since("2024-05-01T12:00:00+00:00") == utc
    assert parse_since("2024-05-01T12:00") == datetime(2024, 5, 1, 12, 0).timestamp()


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            {
                "event": "ike-state",
                "connection": "c",
                "gateway": "g",
                "old": "A",
                "new": "B",
                "ike_id": 3,
            },
            "c: IKE_SA #3 to g: A -> B",
        ),
        (
            {"event": "tunnel-up", "connection": "c", "gateway": "g", "reason": "adopted"},
            "c: tunnel up via g (adopted)",
        ),
        (
            {"event": "tunnel-down", "connection": "c", "gateway": "g", "reason": "monitor"},
            "c: tunnel down on g (monitor)",
        ),
        (
            {"event": "failover-started", "connection": "c", "from": "a", "to": "b"},
            "c: failing over a -> b",
        ),
        (
            {"event": "switch-failed", "connection": "c", "from": "a", "to": "b"},
            "c: switch a -> b failed",
        ),
        (
            {"event": "gave-up", "connection": "c", "gateway": "g"},
            "c: gave up on the last gateway g",
        ),
        ({"event": "held", "connection": "c", "gateway": "g"}, "c: held by the operator (on g)"),
        (
            {"event": "charon-lost", "reason": "eof"},
            "charon lost (eof): waiting for it to come back",
        ),
        ({"event": "charon-back"}, "charon back: connections reloaded"),
        ({"event": "reloaded", "managed": ["a", "b"]}, "config reloaded: managed a, b"),
        ({"event": "reload-failed", "error": "bad"}, "reload refused: bad"),
        ({"event": "missed", "count": 4}, "missed 4 events: this watcher read too slowly"),
        ({"event": "future-kind", "x": 1}, '{"event": "future-kind", "time": 0.0, "x": 1}'),
    ],
)
def test_describe_event(event: dict[str, Any], text: str) -> None:
    line = describe_event({**event, "time": 0.0})
    assert line.split(" ", 1)[1] == text


def test_status_table_without_connections() -> None:
    assert status_table({"charon_reachable": False, "connections": []}) == (
        "charon: UNREACHABLE; 0 managed connections"
    )


def test_the_status_table_marks_the_hot_standby() -> None:
    from extsock_py.cli.failover import _gateways_cell

    row = {
        "gateways": ["a", "b", "c"],
        "active_gateway": "a",
        "hot_standby": {"gateway": "b", "phase": "up"},
    }
    assert _gateways_cell(row) == "a*,b(standby),c"
    row["hot_standby"] = {"gateway": "b", "phase": "backoff"}
    assert _gateways_cell(row) == "a*,b(standby backoff),c"
    assert _gateways_cell({"gateways": ["a", "b"], "active_gateway": "a", "hot_standby": None}) == (
        "a*,b"
    )


def test_the_status_shows_the_drain_of_a_switch() -> None:
    from extsock_py.cli.failover import _gateways_cell, _one_line

    row: dict[str, object] = {
        "connection": "home",
        "phase": "up",
        "target_gateway": "b",
        "gateways": ["a", "b"],
        "active_gateway": "b",
        # 2026-12-02 04:12:03 UTC
        "draining": {"gateway": "a", "ike_id": 7, "in": 0.734, "until": 1796184723.0},
    }
    assert _gateways_cell(row) == "a(draining),b*"
    assert _one_line(row) == "home: up on b, draining a until 04:12:03 UTC (0.7s)"
    row["draining"] = None
    assert _one_line(row) == "home: up on b"
