"""The control socket: every command, hostile input, subscribers, many clients."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters.control import protocol as p
from extsock_py.adapters.control.client import ControlClient, ControlError, DaemonUnreachable
from extsock_py.adapters.control.server import ControlServer, ControlSocketError, attach_control
from extsock_py.domain.notices import (
    CharonBackNotice,
    CharonLostNotice,
    ConnectionNotice,
    IkeStateNotice,
    NoticeKind,
    ReloadFailedNotice,
)
from tests.unit.test_control_support import (
    HOME,
    Harness,
    make_harness,
    running_daemon,
    short_dir,
    wait_until,
)


class Raw:
    """A client speaking bytes, to send what a real client never would."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(json.dumps(message).encode() + b"\n")
        return self.line()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


@pytest.fixture
def sock_path() -> Iterator[Path]:
    with short_dir() as d:
        yield d / "run" / "extsock.sock"


@pytest.fixture
def server(harness: Harness, sock_path: Path) -> Iterator[ControlServer]:
    srv = attach_control(harness.operator, harness.publisher, sock_path)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def client(server: ControlServer) -> Iterator[ControlClient]:
    with ControlClient(server.path, timeout=5.0) as c:
        yield c


@pytest.fixture
def raw(server: ControlServer) -> Iterator[Raw]:
    r = Raw(server.path)
    yield r
    r.close()


# --- the socket file ----------------------------------------------------------------------


def test_socket_file_mode_and_removal(server: ControlServer) -> None:
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    server.close()
    assert not server.path.exists()


def test_a_stale_socket_is_replaced_and_a_live_one_refused(harness: Harness) -> None:
    with short_dir() as d:
        path = d / "x.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens
        with ControlServer(harness.operator, harness.publisher, path, mode=0o600) as first:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            with pytest.raises(ControlSocketError, match="another process is listening"):
                ControlServer(harness.operator, harness.publisher, path).start()
            assert first.operator.status().charon_reachable is True


def test_a_file_in_the_way_is_not_removed(harness: Harness) -> None:
    with short_dir() as d:
        path = d / "x.sock"
        path.write_text("keep me")
        with pytest.raises(ControlSocketError, match="is not a socket"):
            ControlServer(harness.operator, harness.publisher, path).start()
        assert path.read_text() == "keep me"


def test_unknown_owner_is_a_clear_error(harness: Harness) -> None:
    with pytest.raises(ControlSocketError, match="no user named 'no-such-user-xyz'"):
        ControlServer(
            harness.operator, harness.publisher, "/tmp/unused.sock", owner="no-such-user-xyz"
        )
    with pytest.raises(ControlSocketError, match="no group named 'no-such-group-xyz'"):
        ControlServer(
            harness.operator, harness.publisher, "/tmp/unused.sock", group="no-such-group-xyz"
        )


def test_owner_and_group_by_number(harness: Harness) -> None:
    with (
        short_dir() as d,
        ControlServer(
            harness.operator, harness.publisher, d / "s", owner=os.getuid(), group=str(os.getgid())
        ) as srv,
    ):
        st = os.stat(srv.path)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


# --- every command ------------------------------------------------------------------------


def test_every_command_over_the_socket(harness: Harness, client: ControlClient) -> None:
    assert client.request("ping") == {"pong": True, "v": 1}
    status = client.request("status")
    assert [r["connection"] for r in status["connections"]] == ["home", "office"]
    assert client.request("status", conn="home")["connections"][0]["gateways"] == list(HOME)
    harness.bring_up("home")
    assert client.request("hold", conn="home")["connection"]["held"] is True
    assert client.request("release", conn="home")["connection"]["held"] is False
    switched = client.request("switch", conn="home", to=HOME[1])
    assert switched["connection"]["standby_gateway"] == HOME[1]
    harness.bring_up("home", HOME[1], ike_id=11)
    history = client.request("history", conn="home")
    assert [(r["from"], r["to"]) for r in history["records"]] == [HOME]
    assert client.request("history", since=time.time() + 3600)["records"] == []
    assert client.request("terminate", conn="home")["connection"]["phase"] == "stopped"
    assert client.request("retry", conn="home")["connection"]["phase"] == "connecting"
    assert client.request("reload")["managed"] == ["home", "office"]
    loaded = client.request(
        "load",
        conn="app",
        body={"remote_addrs": "203.0.113.1,203.0.113.2", "local": {"id": "app"}},
        policy={},
    )
    assert loaded["started"] is True
    assert client.request("unload", conn="app")["unloaded"] is True
    health = client.request("health")
    assert health["healthy"] is True and health["connections"]["home"] == "connecting"


def test_errors_name_the_command_the_kind_and_what_to_do(raw: Raw) -> None:
    reply = raw.ask({"v": 1, "id": "a1", "cmd": "hold", "conn": "nope"})
    assert reply == {
        "v": 1,
        "id": "a1",
        "ok": False,
        "error": "hold failed: UnknownConnection: no managed connection named 'nope' "
        "(managed: home, office)",
    }
    reply = raw.ask({"v": 1, "id": 2, "cmd": "switch", "conn": "home", "to": "1.2.3.4"})
    assert reply["error"].startswith("switch failed: UnknownGateway: 1.2.3.4 is not a gateway")
    reply = raw.ask({"id": 3, "cmd": "load", "conn": "x", "body": {"remote_addrs": "1.1.1.1"}})
    assert reply["error"].startswith("load failed: InvalidConnection: x: remote_addrs needs two")


def test_client_error_is_raised_with_the_daemons_text(client: ControlClient) -> None:
    with pytest.raises(ControlError, match=r"^retry failed: UnknownConnection"):
        client.request("retry", conn="nope")
    assert client.request("ping")["pong"] is True  # still usable


# --- hostile input ------------------------------------------------------------------------

BAD_LINES: list[tuple[bytes, str]] = [
    (b"\x00\xff\xfegarbage", "request failed: InvalidRequest: not valid JSON"),
    (b"{not json", "request failed: InvalidRequest: not valid JSON"),
    (b"[1, 2]", "request failed: InvalidRequest: a request must be a JSON object"),
    (b'"status"', "request failed: InvalidRequest: a request must be a JSON object"),
    (b'{"v": 1, "id": 5}', "request failed: InvalidRequest: missing field 'cmd'"),
    (b'{"cmd": 42}', "request failed: InvalidRequest: field 'cmd'"),
    (b'{"cmd": "selfdestruct"}', "selfdestruct failed: UnknownCommand: unknown command"),
    (b'{"cmd": "hold"}', "hold failed: InvalidRequest: missing field 'conn'"),
    (b'{"cmd": "hold", "conn": 7}', "hold failed: InvalidRequest: field 'conn'"),
    (b'{"cmd": "status", "bogus": 1}', "status failed: InvalidRequest: unknown field 'bogus'"),
    (b'{"v": 2, "cmd": "status"}', "status failed: InvalidRequest: protocol version 2"),
    (b'{"cmd": "history", "limit": -1}', "history failed: InvalidRequest: field 'limit'"),
    (b'{"cmd": "load", "conn": "x", "body": []}', "load failed: InvalidRequest: field 'body'"),
    (b"[" * 100_00 + b"]" * 100_00, "request failed: InvalidRequest: not valid JSON"),
    (b'{"cmd": "subscribe", "events": ["nope"]}', "subscribe failed: InvalidRequest: unknown"),
]


@pytest.mark.parametrize(("line", "error"), BAD_LINES, ids=[e for _, e in BAD_LINES])
def test_malformed_requests_get_an_error_and_the_connection_stays_usable(
    raw: Raw, line: bytes, error: str
) -> None:
    raw.send(line + b"\n")
    reply = raw.line()
    assert reply["ok"] is False
    assert reply["error"].startswith(error), reply["error"]
    assert raw.ask({"cmd": "ping", "id": 9}) == {"v": 1, "id": 9, "ok": True, "result": ANY_PONG}


ANY_PONG = {"pong": True, "v": 1}


def test_the_id_of_a_bad_request_is_echoed_when_readable(raw: Raw) -> None:
    assert raw.ask({"id": "q", "cmd": "nope"})["id"] == "q"
    assert raw.ask({"id": True, "cmd": "ping"})["id"] is None  # a bool is no id


def test_blank_lines_are_ignored_and_pipelined_requests_answered_in_order(raw: Raw) -> None:
    raw.send(b"\n\r\n" + b"".join(f'{{"cmd":"ping","id":{i}}}\n'.encode() for i in range(20)))
    assert [raw.line()["id"] for _ in range(20)] == list(range(20))


def test_an_oversized_line_is_refused_and_the_next_one_served(raw: Raw) -> None:
    big = b'{"cmd": "status", "pad": "' + b"x" * (p.MAX_REQUEST + 10) + b'"}'
    raw.send(big + b"\n" + b'{"cmd": "ping", "id": 1}\n')
    reply = raw.line()
    assert reply["error"].startswith("request failed: InvalidRequest: request longer than 65536")
    assert raw.line()["id"] == 1


def test_an_oversized_line_sent_in_pieces_is_skipped_to_its_newline(raw: Raw) -> None:
    for _ in range(5):
        raw.send(b"y" * 30_000)  # 150 KB without a newline: refused once, then skipped
    assert "request longer than" in raw.line()["error"]
    raw.send(b"tail of the big line\n" + b'{"cmd": "ping", "id": 2}\n')
    assert raw.line() == {"v": 1, "id": 2, "ok": True, "result": ANY_PONG}


def test_a_line_at_the_limit_is_accepted(raw: Raw) -> None:
    head = b'{"cmd": "ping", "id": 3}'
    raw.send(head + b" " * (p.MAX_REQUEST - len(head)) + b"\n")
    assert raw.line()["ok"] is True


def test_a_client_that_vanishes_mid_request_harms_nobody(
    server: ControlServer, client: ControlClient
) -> None:
    for _ in range(10):
        r = Raw(server.path)
        r.send(b'{"cmd": "status"}\n{"cmd": "sta')
        r.close()
    wait_until(lambda: server.clients == 1)
    assert client.request("ping")["pong"] is True


def test_unreachable_daemon() -> None:
    with short_dir() as d, pytest.raises(DaemonUnreachable, match="is 'extsock run' running"):
        ControlClient(d / "none.sock").connect()


# --- many clients -------------------------------------------------------------------------


def test_100_concurrent_clients_get_their_status(server: ControlServer) -> None:
    start = threading.Barrier(100)

    def one(i: int) -> list[str]:
        with ControlClient(server.path, timeout=10.0) as c:
            start.wait(timeout=10)
            return [r["connection"] for r in c.request("status")["connections"]]

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(one, range(100)))
    assert results == [["home", "office"]] * 100


def test_clients_beyond_the_limit_are_refused_clearly(harness: Harness) -> None:
    with (
        short_dir() as d,
        ControlServer(harness.operator, harness.publisher, d / "s", max_clients=2) as srv,
    ):
        kept = [Raw(srv.path), Raw(srv.path)]
        for r in kept:
            assert r.ask({"cmd": "ping"})["ok"] is True
        refused = Raw(srv.path)
        reply = refused.line()
        assert reply["error"].startswith("connect failed: TooManyClients: the daemon serves 2")
        with pytest.raises((EOFError, ConnectionResetError)):
            refused.line()
        assert srv.refused == 1
        kept[0].close()
        wait_until(lambda: srv.clients == 1)
        again = Raw(srv.path)
        assert again.ask({"cmd": "ping"})["ok"] is True
        for r in (kept[1], again, refused):
            r.close()


# --- subscribers --------------------------------------------------------------------------


def test_subscribe_streams_events_in_the_documented_schema(
    harness: Harness, client: ControlClient
) -> None:
    assert client.subscribe() == sorted(p.EVENT_KINDS)
    harness.bring_up("home")
    harness.publish(CharonLostNotice("socket closed"))
    harness.publish(CharonBackNotice())
    kinds = []
    while "charon-back" not in kinds:
        event = client.next_event()
        kinds.append(event["event"])
        assert event["v"] == 1 and isinstance(event["time"], float)
        if event["event"] == "ike-state":
            assert {k: event[k] for k in ("connection", "gateway", "new")} == {
                "connection": "home",
                "gateway": HOME[0],
                "new": "ESTABLISHED",
            }
        if event["event"] == "tunnel-up":
            assert (event["connection"], event["gateway"]) == ("home", HOME[0])
        if event["event"] == "charon-lost":
            assert event["reason"] == "socket closed"
    assert kinds == ["ike-state", "tunnel-up", "charon-lost", "charon-back"]


def test_failover_events_say_from_and_to(harness: Harness, client: ControlClient) -> None:
    client.subscribe(["failover", "failover-started", "tunnel-down", "gave-up"])
    started = ConnectionNotice(
        NoticeKind.FAILOVER_STARTED, "home", gateway="b", from_gateway="a", reason="retransmit"
    )
    harness.publish(started)
    harness.publish(replace(started, kind=NoticeKind.FAILOVER, duration=1.25))
    harness.publish(IkeStateNotice("home", (), "home", None, "x", "y", None, ()))  # filtered
    harness.publish(ConnectionNotice(NoticeKind.TUNNEL_DOWN, "home", gateway="b", reason="monitor"))
    harness.publish(ConnectionNotice(NoticeKind.GAVE_UP, "home", gateway="b", reason="x"))
    got = [client.next_event() for _ in range(4)]
    for event in got:
        del event["time"]
    assert got == [
        {
            "v": 1,
            "event": "failover-started",
            "connection": "home",
            "from": "a",
            "to": "b",
            "reason": "retransmit",
        },
        {
            "v": 1,
            "event": "failover",
            "connection": "home",
            "from": "a",
            "to": "b",
            "reason": "retransmit",
            "duration": 1.25,
        },
        {"v": 1, "event": "tunnel-down", "connection": "home", "gateway": "b", "reason": "monitor"},
        {"v": 1, "event": "gave-up", "connection": "home", "gateway": "b", "reason": "x"},
    ]


def test_requests_still_work_while_subscribed_and_double_subscribe_fails(
    harness: Harness, client: ControlClient
) -> None:
    client.subscribe(["held"])
    harness.bring_up("home")
    assert client.request("hold", conn="home")["connection"]["held"] is True
    assert client.next_event()["event"] == "held"
    with pytest.raises(ControlError, match="subscribed already"):
        client.subscribe()


def test_a_subscriber_that_leaves_is_unsubscribed(harness: Harness, server: ControlServer) -> None:
    subscriber = ControlClient(server.path).connect()
    subscriber.subscribe()
    wait_until(lambda: server.clients == 1)
    subscriber.close()
    wait_until(lambda: server.clients == 0)
    harness.publish(CharonBackNotice())  # nobody to deliver to: nothing breaks
    assert server.operator.status().charon_reachable is True


def test_a_slow_subscriber_never_blocks_the_daemon_and_learns_what_it_missed(
    harness: Harness,
) -> None:
    count = 5000
    padding = "p" * 2000  # ~10 MB in all: far more than the socket buffers hold
    with (
        short_dir() as d,
        ControlServer(harness.operator, harness.publisher, d / "s", event_queue=16) as srv,
    ):
        slow = Raw(srv.path, timeout=10)
        assert slow.ask({"cmd": "subscribe", "events": ["reload-failed"]})["ok"] is True
        others = ControlClient(srv.path, timeout=5).connect()

        def flood() -> None:
            for i in range(count):
                harness.publisher.publish(ReloadFailedNotice(f"{i} {padding}"))

        started = time.monotonic()
        harness.on_loop(flood, timeout=10)  # on the main loop, as the daemon publishes
        assert time.monotonic() - started < 5.0
        assert others.request("status")["charon_reachable"] is True  # the loop is not stuck
        delivered, missed, seen = 0, list[int](), list[int]()
        while delivered + sum(missed) < count:
            event = slow.line()
            if event["event"] == "missed":
                missed.append(event["count"])
            else:
                delivered += 1
                seen.append(int(event["error"].split()[0]))
        assert missed and sum(missed) > 0
        assert delivered + sum(missed) == count
        assert seen == sorted(seen)  # in order, with gaps
        # The subscriber reads again: new events flow after the gap, and nothing is pending.
        harness.publish(ReloadFailedNotice("after"))
        assert slow.line()["error"] == "after"
        others.close()
        slow.close()


def test_missed_is_reported_where_the_gap_is() -> None:
    from extsock_py.adapters.control.server import _Subscription

    sub = _Subscription(None, capacity=2)
    for i in range(5):
        sub.offer("reload-failed", {"error": str(i)})
    sub.offer("held", {"connection": "c"})  # no room either
    sub.offer("not-a-protocol-kind", {})  # never queued
    lines = [sub.next_line(), sub.next_line()]
    sub.offer("released", {"connection": "c", "gateway": "g"})
    lines += [sub.next_line(), sub.next_line()]
    events = [json.loads(line or b"null") for line in lines]
    assert [e["event"] for e in events] == ["reload-failed", "reload-failed", "missed", "released"]
    assert events[2]["count"] == 4
    sub.offer("held", {"connection": "c"})
    sub.close()
    assert sub.next_line() is None


def test_a_publisher_without_subscribe_is_refused() -> None:
    harness = make_harness()
    with pytest.raises(TypeError, match="subscribe"):
        ControlServer(harness.operator, object(), "/tmp/unused.sock")


def test_close_drops_connected_clients(harness: Harness) -> None:
    with short_dir() as d:
        srv = ControlServer(harness.operator, harness.publisher, d / "s")
        srv.start()
        subscriber = ControlClient(srv.path).connect()
        subscriber.subscribe()
        idle = Raw(srv.path)
        srv.close()
        with pytest.raises(DaemonUnreachable, match="closed the connection"):
            subscriber.next_event()
        with pytest.raises((EOFError, ConnectionResetError)):
            idle.line()
        idle.close()
        subscriber.close()


def test_the_client_waits_out_a_full_listen_backlog() -> None:
    with short_dir() as d:
        path = d / "busy.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(0)
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        first.connect(str(path))  # the backlog is full now
        timer = threading.Timer(0.1, lambda: listener.accept()[0].close())
        timer.start()
        try:
            client = ControlClient(path, timeout=5).connect()  # EAGAIN until the accept
            client.close()
        finally:
            timer.join()
            first.close()
            listener.close()


def test_the_reload_reply_line_is_the_protocols(raw: Raw) -> None:
    raw.send(b'{"v": 1, "id": 7, "cmd": "reload"}\n')
    while b"\n" not in raw.buffer:
        raw.buffer += raw.sock.recv(65536)
    line, _, raw.buffer = raw.buffer.partition(b"\n")
    assert line == (
        b'{"v":1,"id":7,"ok":true,"result":{"managed":["home","office"],"plain":["plain"],'
        b'"removed":[],"notes":[],"failures":[]}}'
    )


def test_a_deferred_reload_replies_as_before() -> None:
    from extsock_py.adapters.reports_json import reload_json
    from extsock_py.domain.reports import ReloadReport

    assert json.dumps(reload_json(ReloadReport(deferred=True))) == '{"deferred": true}'


STATUS_KEYS = [
    "connection",
    "gateways",
    "active_gateway",
    "target_gateway",
    "phase",
    "ike_id",
    "held",
    "failures_total",
    "failures_in_cycle",
    "cycles_failed",
    "next_action",
    "next_action_in",
    "standby_gateway",
    "redirected_to",
    "hot_standby",
    "draining",
    "virtual_ips",
    "ike_state",
    "ike_gateway",
    "next_action_at",
    "source",
]


def test_the_status_row_keeps_its_keys_their_order_and_types(raw: Raw, harness: Harness) -> None:
    harness.bring_up("home")
    raw.send(b'{"v": 1, "id": 8, "cmd": "status", "conn": "home"}\n')
    while b"\n" not in raw.buffer:
        raw.buffer += raw.sock.recv(65536)
    line, _, raw.buffer = raw.buffer.partition(b"\n")
    row = json.loads(line)["result"]["connections"][0]
    assert list(row) == STATUS_KEYS
    assert row["gateways"] == list(HOME) and row["virtual_ips"] == []
    assert (row["phase"], row["active_gateway"], row["ike_id"], row["ike_state"]) == (
        "up",
        HOME[0],
        7,
        "ESTABLISHED",
    )
    assert (row["held"], row["source"], row["next_action"]) == (False, "config", None)
    prefix = b'{"v":1,"id":8,"ok":true,"result":{"charon_reachable":true,"charon":'
    assert line.startswith(prefix)
    assert b'"connections":[{"connection":"home","gateways":["' in line


def test_every_event_of_the_protocol_is_a_notice_kind() -> None:
    assert set(p.EVENT_KINDS) <= {str(kind) for kind in NoticeKind}
    # What the protocol does not carry (the tunnel monitor's verdict is in metrics and logs).
    assert {str(kind) for kind in NoticeKind} - set(p.EVENT_KINDS) == {"monitor-dead"}
