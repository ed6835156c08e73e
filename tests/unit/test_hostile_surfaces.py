"""Hostile clients against the operator surfaces (issue 24, findings 6 and 7).

Slow HTTP clients that trickle their request cannot hold the metrics endpoint's workers:
`/health` answers at once beside ten of them, and their request has one deadline, however
they spread their bytes. Many subscribers cost the main loop one encoding per event.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters import metrics as m
from extsock_py.adapters.control import protocol as p
from extsock_py.adapters.control.server import ControlServer
from extsock_py.domain.notices import ReloadFailedNotice
from tests.unit.test_control_server import Raw
from tests.unit.test_control_support import Harness, running_daemon, short_dir, wait_until
from tests.unit.test_metrics import get

SLOW_CLIENTS = 10
SUBSCRIBERS = 256


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running_daemon() as h:
        yield h


def closed_unanswered(sock: socket.socket) -> bool:
    """The server closed the connection without a byte of answer. A close with the client's
    last byte still unread makes the kernel reset instead of FIN: both are a close."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_slow_metrics_clients_hold_no_worker_and_health_answers_at_once(
    harness: Harness,
) -> None:
    """Ten clients send one byte of their request, and would send the next 1.5 s later:
    `/health` still answers in under 100 ms. Then, their deadline is on the whole request:
    a byte now and then does not keep them."""
    clock = Clock()
    with m.MetricsServer(harness.operator, harness.publisher, "127.0.0.1:0", clock=clock) as srv:
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(10)]
        try:
            for sock in slow:
                sock.sendall(b"G")
            wait_until(lambda: srv.connections == SLOW_CLIENTS)
            assert get(srv, "/health")[0] == 200  # the first one warms up the path
            took = []
            for _ in range(3):
                began = time.monotonic()
                code, _, body = get(srv, "/health")
                took.append(time.monotonic() - began)
                assert code == 200 and json.loads(body)["healthy"] is True
            assert min(took) < 0.100, took
            assert max(took) < 0.5, took  # never a worker's read timeout
            # One byte every 1.5 s (on the server's clock) until the request's deadline:
            for _ in range(int(m.REQUEST_TIMEOUT / 1.5)):
                clock.now += 1.5
                for sock in slow:
                    sock.sendall(b"E")
            clock.now += 1.5  # past the deadline now, with the request still not complete
            for sock in slow:  # the server may have closed it already: that is the point
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    sock.sendall(b"T")
            for sock in slow:
                assert closed_unanswered(sock)
            wait_until(lambda: srv.connections == 0)
            assert get(srv, "/metrics")[0] == 200
        finally:
            for sock in slow:
                sock.close()


def test_a_request_sent_in_pieces_within_its_deadline_is_answered(harness: Harness) -> None:
    with m.MetricsServer(harness.operator, harness.publisher, "127.0.0.1:0") as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            for piece in (b"GET /hea", b"lth HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
                sock.sendall(piece)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["healthy"] is True


def test_an_event_is_encoded_once_for_256_subscribers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[str] = []
    real = p.encode_event

    def counting(kind: str, fields: Any, when: float) -> Any:
        encoded.append(kind)
        return real(kind, fields, when)

    monkeypatch.setattr(p, "encode_event", counting)
    with short_dir() as d:
        path: Path = d / "s"
        srv = ControlServer(
            harness.operator,
            harness.publisher,
            path,
            max_clients=SUBSCRIBERS + 8,
            max_per_uid=SUBSCRIBERS + 8,
        )
        srv.start()
        subscribers: list[Raw] = []
        try:
            for _ in range(SUBSCRIBERS):
                raw = Raw(path)
                assert raw.ask({"cmd": "subscribe", "events": ["reload-failed"]})["ok"] is True
                subscribers.append(raw)
            harness.publish(ReloadFailedNotice("swanctl.conf:3: section 'x' is not closed"))
            lines = [raw.line() for raw in subscribers]
            assert encoded == ["reload-failed"]  # once, not once per subscriber
            assert all(line == lines[0] for line in lines)  # the same bytes, the same time
            assert lines[0]["event"] == "reload-failed"
            harness.publish(ReloadFailedNotice("another"))
            assert {raw.line()["error"] for raw in subscribers} == {"another"}
            assert encoded == ["reload-failed"] * 2
        finally:
            for raw in subscribers:
                raw.close()
            srv.close()
