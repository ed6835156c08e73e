"""Hostile clients against a daemon on the fake charon: the probes of issue 15, each kept.

Idle floods, clients that hog their uid's share, slow and silent subscribers, oversized and
malformed input, role checks, pushed bodies that reach for root or for a configured
connection. Each test asserts that root still gets an answer and, where it says so, that a
failover still happens during the flood. No real sleeps: idleness is judged on an injected
clock, and every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from extsock_py.adapters.control.client import ControlClient, DaemonRefused, NotPermitted
from extsock_py.adapters.control.server import ControlServer
from extsock_py.cli.failover import EXIT_NOT_PERMITTED, EXIT_REFUSED, failover
from extsock_py.domain import observations as ob
from extsock_py.domain.access import ControlAccess, Peer
from extsock_py.domain.errors import CharonError
from extsock_py.domain.notices import ReloadFailedNotice
from extsock_py.domain.profile import clone_name
from tests.unit.test_control_server import Raw
from tests.unit.test_control_support import Harness, running_daemon, short_dir, wait_until

ROOT = Peer(1, 0, frozenset({0}))
READER = Peer(2, 1000, frozenset({1000, 2000}))
OPERATOR = Peer(3, 1001, frozenset({1001, 3000}))
STRANGER = Peer(4, 1002, frozenset({1002}))
ACCESS = ControlAccess(read_gids=frozenset({2000}), operate_gids=frozenset({3000}))


class Identities:
    """Stands in for SO_PEERCRED: the next connection accepted is `current`."""

    def __init__(self) -> None:
        self.current = ROOT

    def __call__(self, sock: socket.socket) -> Peer:
        return self.current


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


def serve(harness: Harness, path: Path, **options: Any) -> tuple[ControlServer, Identities, Clock]:
    ids, clock = Identities(), Clock()
    options.setdefault("access", lambda: ACCESS)
    srv = ControlServer(
        harness.operator, harness.publisher, path, peer_of=ids, clock=clock, **options
    )
    srv.start()
    return srv, ids, clock


def connect_as(srv: ControlServer, ids: Identities, peer: Peer) -> Raw:
    """A connection accepted as `peer` (the accept is waited for, admitted or refused)."""
    ids.current = peer
    before = srv.admitted + srv.refused
    raw = Raw(srv.path)
    wait_until(lambda: srv.admitted + srv.refused != before)
    return raw


def ask_line(raw: Raw, message: dict[str, Any]) -> dict[str, Any]:
    raw.send(json.dumps(message).encode() + b"\n")
    return raw.line()


def fail_home_over(harness: Harness) -> None:
    """home's IKE_SA on its primary dies: the daemon must move it to the second gateway."""
    sa = ob.IkeSaInfo(name=clone_name("home", "10.0.0.1"), unique_id=7, state="DELETING")
    harness.daemon.post(ob.IkeUpdown(sa, False))
    wait_until(lambda: harness.phase("home") == "connecting")
    target = harness.on_loop(
        lambda: harness.daemon.service.manager.status("home")[0].target_gateway
    )
    assert target == "10.0.0.2"
    harness.bring_up("home", "10.0.0.2", ike_id=8)


# --- idle floods, per-uid share, the root slot ----------------------------------------------


def test_an_idle_flood_locks_out_nobody_and_a_failover_still_happens(harness: Harness) -> None:
    harness.bring_up("home")
    with short_dir() as d:
        srv, ids, clock = serve(harness, d / "s", max_clients=24, max_per_uid=8)
        idle: list[Raw] = []
        try:
            for uid in range(2000, 2003):  # three users, each up to its share, never asking
                for _ in range(8 if uid < 2002 else 7):
                    idle.append(connect_as(srv, ids, Peer(9, uid, frozenset({uid}))))
            assert srv.clients == 23
            # The last slot is root's: anyone else is refused, with a line it can read.
            late = connect_as(srv, ids, READER)
            refusal = late.line()
            assert refusal["id"] is None and refusal["ok"] is False
            assert "slots are kept for root" in refusal["error"]
            late.close()
            # ... and the CLI says so with its own exit code, not "unreachable".
            ids.current = READER
            result = CliRunner().invoke(failover, ["status"], obj={"control_socket": str(srv.path)})
            assert result.exit_code == EXIT_REFUSED, result.output
            assert "running but refused this connection" in result.stderr
            assert "Broken pipe" not in result.stderr
            # Root gets in, and the daemon still fails over while the flood sits there.
            ids.current = ROOT
            with ControlClient(srv.path, timeout=5) as root:
                assert root.request("status")["charon_reachable"] is True
                fail_home_over(harness)
                row = root.request("status", conn="home")["connections"][0]
                assert (row["phase"], row["active_gateway"]) == ("up", "10.0.0.2")
            # Time passes without a request: the idle clients are told why, and closed.
            wait_until(lambda: srv.clients == 23)  # root's client is gone
            clock.now += srv.idle_timeout + 1
            assert srv.reap_idle() == 23
            assert "IdleTimeout" in idle[0].line()["error"]
            wait_until(lambda: srv.clients == 0)
            back = connect_as(srv, ids, READER)
            assert ask_line(back, {"cmd": "status"})["ok"] is True
            back.close()
        finally:
            for r in idle:
                r.close()
            srv.close()


def test_one_uid_gets_its_share_and_no_more(harness: Harness) -> None:
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s", max_per_uid=3)
        mine = [connect_as(srv, ids, READER) for _ in range(3)]
        try:
            extra = connect_as(srv, ids, READER)
            assert "uid 1000 has 3 connections open" in extra.line()["error"]
            extra.close()
            other = connect_as(srv, ids, OPERATOR)  # another uid is not held back
            assert ask_line(other, {"cmd": "ping"})["ok"] is True
            other.close()
            ids.current = READER
            with pytest.raises(DaemonRefused, match="TooManyClients"):
                ControlClient(srv.path, timeout=5).connect().request("status")
        finally:
            for r in mine:
                r.close()
            srv.close()


def test_a_client_that_asks_keeps_its_slot(harness: Harness) -> None:
    with short_dir() as d:
        srv, ids, clock = serve(harness, d / "s")
        busy = connect_as(srv, ids, READER)
        quiet = connect_as(srv, ids, READER)
        clock.now += srv.idle_timeout - 1
        assert ask_line(busy, {"cmd": "ping"})["ok"] is True
        clock.now += 2
        assert srv.reap_idle() == 1
        assert "IdleTimeout" in quiet.line()["error"]
        assert ask_line(busy, {"cmd": "ping"})["ok"] is True
        for r in (busy, quiet):
            r.close()
        srv.close()


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "allowed", "refused"),
    [
        (ROOT, ["status", "switch", "reload"], []),
        (OPERATOR, ["status", "switch", "reload"], []),
        (READER, ["status", "history", "health", "subscribe"], ["switch", "hold", "reload"]),
        (STRANGER, ["ping"], ["status", "history", "subscribe", "switch", "terminate", "unload"]),
    ],
)
def test_roles_by_group(
    harness: Harness, peer: Peer, allowed: list[str], refused: list[str]
) -> None:
    conn_commands = {"switch", "hold", "terminate", "unload"}
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s")
        for cmd in allowed + refused:
            raw = connect_as(srv, ids, peer)
            request: dict[str, Any] = {"id": 1, "cmd": cmd}
            if cmd in conn_commands:
                request["conn"] = "office"
            reply = ask_line(raw, request)
            if cmd in refused:
                assert reply["ok"] is False
                assert reply["error"].startswith(f"{cmd} failed: NotPermitted: '{cmd}' needs")
            else:
                assert reply["ok"] is True, reply
            raw.close()
        srv.close()


def test_without_a_control_section_anyone_reads_and_only_root_operates(harness: Harness) -> None:
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s", access=lambda: ControlAccess())
        ids.current = STRANGER
        with ControlClient(srv.path, timeout=5) as client:
            assert client.request("status")["charon_reachable"] is True
            with pytest.raises(NotPermitted, match="needs the operate role"):
                client.request("hold", conn="home")
        result = CliRunner().invoke(
            failover, ["hold", "home"], obj={"control_socket": str(srv.path)}
        )
        assert result.exit_code == EXIT_NOT_PERMITTED
        srv.close()


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no python3 that another uid can run")
def test_the_kernel_says_who_the_peer_is(harness: Harness) -> None:
    """No injection: a real process running as `nobody` is only a reader."""
    with short_dir() as d:
        d.chmod(0o755)
        srv = ControlServer(
            harness.operator, harness.publisher, d / "s", mode=0o666, access=lambda: ControlAccess()
        )
        srv.start()
        script = (
            "import json, socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')\n"
            "for cmd in ('status', 'hold'):\n"
            "    s.sendall(json.dumps({'cmd': cmd, 'conn': 'home'} if cmd == 'hold' "
            "else {'cmd': cmd}).encode() + b'\\n')\n"
            "    print(json.loads(f.readline())['ok'])\n"
        )
        done = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", script, str(srv.path)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        srv.close()
    assert done.stdout.split() == ["True", "False"], done.stderr


# --- subscribers -----------------------------------------------------------------------------


def test_a_subscriber_that_never_reads_holds_bounded_memory_then_goes(harness: Harness) -> None:
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s", subscriber_bytes=64 * 1024, send_timeout=0.5)
        sink = connect_as(srv, ids, READER)
        assert ask_line(sink, {"cmd": "subscribe", "events": ["reload-failed"]})["ok"] is True
        client = next(iter(srv.clients_snapshot()))
        padding = "x" * 8000

        def flood() -> None:
            for i in range(400):  # ~3 MB of events, to a reader that reads nothing
                harness.publisher.publish(ReloadFailedNotice(f"{i} {padding}"))

        started = time.monotonic()
        harness.on_loop(flood, timeout=10)
        assert time.monotonic() - started < 5.0  # the main loop never waited for it
        assert client.queued_bytes <= 64 * 1024
        assert client.dropped > 0
        ids.current = ROOT
        with ControlClient(srv.path, timeout=5) as root:
            assert root.request("status")["charon_reachable"] is True
        # It reads nothing, so its writer times out, and the slot and the memory come back.
        wait_until(lambda: srv.clients == 0, timeout=10)
        assert client.queued_bytes == 0
        sink.close()
        srv.close()


def test_subscribe_then_leave_a_thousand_times_writes_no_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="extsock")
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s")
        ids.current = READER
        for _ in range(300):
            raw = Raw(srv.path)
            raw.send(b'{"cmd":"subscribe"}\n')
            raw.close()
        wait_until(lambda: srv.clients == 0, timeout=10)
        srv.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


# --- what clients send ------------------------------------------------------------------------


HOSTILE_LINES = [
    b"{" * 100000,
    b"\xff\xfe garbage \x00\x01",
    b'{"cmd": "subscribe", "events": ["' + b"k" * 60000 + b'"]}',
    b'{"cmd": "' + b"c" * 60000 + b'"}',
    b'{"cmd": "status", "' + b"f" * 60000 + b'": 1}',
    b'{"cmd": "history", "limit": NaN}',
    b'{"cmd": "history", "since": Infinity}',
    b"[" * 50000 + b"]" * 50000,
    b'{"cmd": "load", "conn": "a\\nb", "body": {"remote_addrs": "1.2.3.4,5.6.7.8"}}',
]


def test_oversized_and_malformed_input_gets_short_answers_and_short_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="extsock")
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s")
        ids.current = OPERATOR
        raw = connect_as(srv, ids, OPERATOR)
        for line in HOSTILE_LINES:
            reply = ask_line_bytes(raw, line)
            assert reply["ok"] is False
            assert len(json.dumps(reply)) < 1200, reply["error"][:200]
        raw.send(b"x" * (5 * 1024 * 1024) + b"\n")  # 5 MB: refused once, skipped
        assert "longer than" in raw.line()["error"]
        assert ask_line(raw, {"cmd": "ping"})["ok"] is True
        raw.close()
        ids.current = ROOT
        with ControlClient(srv.path, timeout=5) as root:
            assert root.request("status")["charon_reachable"] is True
        srv.close()
    assert max((len(r.getMessage()) for r in caplog.records), default=0) < 600


def ask_line_bytes(raw: Raw, line: bytes) -> dict[str, Any]:
    raw.send(line + b"\n")
    return raw.line()


def test_refused_clients_do_not_flood_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="extsock")
    with short_dir() as d:
        srv, ids, _ = serve(harness, d / "s", max_per_uid=1)
        keep = connect_as(srv, ids, READER)
        for _ in range(200):
            connect_as(srv, ids, READER).close()
        assert srv.refused == 200
        keep.close()
        srv.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]


# --- pushed connections ------------------------------------------------------------------------

APP = {
    "remote_addrs": "203.0.113.1,203.0.113.2",
    "local": {"auth": "psk", "id": "app"},
    "remote": {"auth": "psk"},
    "children": {"app-net": {"remote_ts": ["10.9.0.0/16"]}},
}


@pytest.mark.parametrize(
    ("conn", "body", "error"),
    [
        ("app", {**APP, "children": {"c": {"updown": "/tmp/x.sh"}}}, "'children.c.updown'"),
        ("app", {**APP, "children": {"c": {"hostaccess": "yes"}}}, "'children.c.hostaccess'"),
        ("app", {**APP, "local": {"id": "app", "certs": ["/etc/x.pem"]}}, "'local.certs'"),
        ("app", {**APP, "remote": {"pubkeys": ["k.pem"]}}, "'remote.pubkeys'"),
        ("app", {**APP, "children": {"c": {"reqid": "1"}}}, "'children.c.reqid'"),
        ("app", {**APP, "secret": "x"}, "key 'secret' is not allowed"),
        ("app", {**APP, "local": {"auth": "psk"}}, "'local.id' is missing"),
        ("app\n", APP, "invalid connection name 'app\\\\n'"),
        ("app", {**APP, "remote_addrs": "0.0.0.0,255.255.255.255,127.0.0.1,::1"}, "found 0"),
        (
            "app",
            {**APP, "remote_addrs": ",".join(f"203.0.113.{i % 250}" for i in range(600))},
            "600 entries, at most 16",
        ),
        ("app", {**APP, "local": {"id": "me"}}, "ConnectionConflict: app: local id 'me'"),
        (
            "app",
            {**APP, "children": {"c": {"remote_ts": ["10.1.2.0/24"]}}},
            "overlaps 10.1.0.0/16, a traffic selector of configured connection 'home'",
        ),
        ("app", {**APP, "children": {"c": {"remote_ts": ["0.0.0.0/0"]}}}, "overlaps"),
        ("app", {**APP, "policy_x": 1}, "not allowed"),
    ],
)
def test_pushed_bodies_cannot_reach_root_or_a_configured_connection(
    harness: Harness, conn: str, body: dict[str, Any], error: str
) -> None:
    with short_dir() as d:
        srv, _, _ = serve(harness, d / "s")
        with ControlClient(srv.path, timeout=5) as root:
            with pytest.raises(Exception, match=error):
                root.request("load", conn=conn, body=body)
            names = [r["connection"] for r in root.request("status")["connections"]]
        srv.close()
    assert names == ["home", "office"]
    assert not any(str(c[1]).startswith("app") for c in harness.charon.commands("load_conn"))


def test_unbounded_durations_are_refused_naming_the_bound(harness: Harness) -> None:
    with short_dir() as d:
        srv, _, _ = serve(harness, d / "s")
        with (
            ControlClient(srv.path, timeout=5) as root,
            pytest.raises(Exception, match=r"connect_timeout.*too long: at most 10m"),
        ):
            root.request("load", conn="app", body=APP, policy={"connect_timeout": "9999d"})
        srv.close()


def test_load_answers_with_charons_own_refusal(harness: Harness) -> None:
    harness.charon.fail("load_conn", CharonError("invalid section 'bogus', config discarded"))
    with short_dir() as d:
        srv, _, _ = serve(harness, d / "s")
        with ControlClient(srv.path, timeout=5) as root:
            with pytest.raises(Exception, match="charon refused it: invalid section 'bogus'"):
                root.request("load", conn="app", body=APP)
            assert [r["connection"] for r in root.request("status")["connections"]] == [
                "home",
                "office",
            ]
            harness.charon.heal()
            result = root.request("load", conn="app", body=APP)
            assert result["started"] is True
        srv.close()


def test_configured_connections_cannot_be_unloaded_but_can_be_terminated(
    harness: Harness,
) -> None:
    with short_dir() as d:
        srv, _, _ = serve(harness, d / "s")
        with ControlClient(srv.path, timeout=5) as root:
            with pytest.raises(Exception, match="ConnectionConflict: 'home' is defined"):
                root.request("unload", conn="home")
            assert root.request("terminate", conn="home")["connection"]["phase"] == "stopped"
            root.request("load", conn="app", body=APP)
            assert root.request("unload", conn="app")["unloaded"] is True
        srv.close()


# --- the metrics listener ----------------------------------------------------------------------


def test_an_idle_flood_on_metrics_costs_no_threads_and_scrapes_still_work(
    harness: Harness,
) -> None:
    from extsock_py.adapters import metrics as m
    from tests.unit.test_metrics import get

    with m.attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0") as server:
        baseline = threading.active_count()
        idle = []
        try:
            for _ in range(300):
                idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            wait_until(lambda: server.connections <= m.MAX_CONNECTIONS, timeout=5)
            assert get(server, "/metrics")[0] == 200  # the oldest idle one made room
            assert threading.active_count() <= baseline + m.WORKERS
            assert server.connections <= m.MAX_CONNECTIONS
        finally:
            for sock in idle:
                sock.close()


def test_metrics_clients_that_leave_mid_answer_leave_no_traceback(
    harness: Harness, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from extsock_py.adapters import metrics as m
    from tests.unit.test_metrics import get

    caplog.set_level(logging.DEBUG, logger="extsock")
    with m.attach_metrics(harness.operator, harness.publisher, "127.0.0.1:0") as server:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, while the answer is being written
        garbage = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        garbage.sendall(b"\x00\xff" * 5000 + b"\r\n\r\n")
        garbage.recv(1000)
        garbage.close()
        assert get(server, "/health")[0] in (200, 503)
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert max(len(r.getMessage()) for r in caplog.records) < 600


def test_a_metrics_client_that_sends_nothing_is_closed(harness: Harness) -> None:
    from extsock_py.adapters import metrics as m

    address = "127.0.0.1:0"
    with m.MetricsServer(
        harness.operator, harness.publisher, address, request_timeout=0.2
    ) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert sock.recv(10) == b""  # closed by the server after its request timeout
        sock.close()
        wait_until(lambda: server.connections == 0)
