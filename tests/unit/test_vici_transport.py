"""Parsing VICI URIs and connecting to them."""

from __future__ import annotations

import os
import re
import socket
import tempfile

import pytest

from extsock_py.adapters.vici.transport import (
    MAX_FRAME,
    FrameReader,
    ViciAddress,
    open_socket,
    parse_uri,
    send_frame,
)
from extsock_py.domain.errors import CharonUnreachable


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "unix:///var/run/charon.vici",
            ViciAddress("unix:///var/run/charon.vici", "unix", path="/var/run/charon.vici"),
        ),
        ("unix://rel.vici", ViciAddress("unix://rel.vici", "unix", path="rel.vici")),
        (
            "tcp://127.0.0.1:4502",
            ViciAddress("tcp://127.0.0.1:4502", "tcp", host="127.0.0.1", port=4502),
        ),
        ("tcp://gw.example", ViciAddress("tcp://gw.example", "tcp", host="gw.example", port=4502)),
        ("tcp://[::1]:4600", ViciAddress("tcp://[::1]:4600", "tcp", host="::1", port=4600)),
    ],
)
def test_parse(uri: str, expected: ViciAddress) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("/var/run/charon.vici", "unknown scheme"),
        ("unix://", "no socket path"),
        ("tcp://host:port", "port 'port'"),
        ("tcp://host:70000", "port '70000'"),
        ("tcp://[::1", "unterminated"),
        ("tcp://", "no host"),
    ],
)
def test_parse_errors_name_uri_and_form(uri: str, why: str) -> None:
    with pytest.raises(CharonUnreachable) as info:
        parse_uri(uri)
    assert f"'{uri}'" in str(info.value)
    assert why in str(info.value)
    assert "unix:///path/to/charon.vici or tcp://host:port" in str(info.value)


def test_missing_socket_says_what_to_do() -> None:
    with tempfile.TemporaryDirectory() as d:
        uri = f"unix://{d}/charon.vici"
        with pytest.raises(CharonUnreachable) as info:
            open_socket(uri, 0.2)
    assert uri in str(info.value)
    assert "start charon" in str(info.value)


def test_refused_socket() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "charon.vici")
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()  # the file stays, nothing listens: as after charon crashed
        with pytest.raises(CharonUnreachable, match="nothing listens there"):
            open_socket(f"unix://{path}", 0.2)


def test_connects_blocking() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "charon.vici")
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(1)
        sock = open_socket(f"unix://{path}", 0.2)
        assert sock.gettimeout() is None
        sock.close()
        server.close()


def test_tcp_refused() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(CharonUnreachable, match=f"tcp://127.0.0.1:{port}"):
        open_socket(f"tcp://127.0.0.1:{port}", 0.2)


def test_frame_reader_splits_and_joins_packets() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(b, chunk=5)  # small reads: packets cross chunk boundaries
        send_frame(a, b"\x07\x03logone")
        send_frame(a, b"")
        a.sendall(len(b"two").to_bytes(4, "big") + b"tw")
        assert reader.read_batch() == ([b"\x07\x03logone"], 0)
        assert reader.read_batch() == ([b""], 0)
        a.sendall(b"o")
        assert reader.read_batch() == ([b"two"], 0)
        a.sendall((MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="not charon"):
            reader.read_batch()


def test_frame_reader_reports_a_closed_socket() -> None:
    a, b = socket.socketpair()
    with b:
        reader = FrameReader(b)
        a.sendall(b"\x00\x00")  # half a length, then EOF
        a.close()
        with pytest.raises(OSError, match="closed"):
            reader.read_batch()


def test_frame_reader_batches_what_one_recv_brought() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(b)
        for body in (b"one", b"two", b"three"):
            send_frame(a, body)
        a.sendall(len(b"four").to_bytes(4, "big") + b"fo")  # a partial packet stays buffered
        assert reader.read_batch() == ([b"one", b"two", b"three"], 0)
        a.sendall(b"ur")
        assert reader.read_batch() == ([b"four"], 0)
        send_frame(a, b"five")
        assert reader.read_batch() == ([b"five"], 0)


def test_frame_reader_skips_log_events_the_pattern_does_not_find() -> None:
    keep = re.compile(rb"wanted")
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(b)
        send_frame(a, b"\x07\x03log chatter")
        send_frame(a, b"\x07\x03log a wanted line")
        send_frame(a, b"\x07\x0aike-updown chatter")  # not a log event: always kept
        send_frame(a, b"\x07\x03log more chatter")
        packets, dropped = reader.read_batch(keep)
        assert packets == [b"\x07\x03log a wanted line", b"\x07\x0aike-updown chatter"]
        assert dropped == 2
        send_frame(a, b"\x07\x03log only chatter")
        assert reader.read_batch(keep) == ([], 1)  # a batch of nothing but dropped lines


def test_frame_reader_judges_each_log_event_on_its_own_bytes() -> None:
    """The reader searches its whole buffer once; a match there (here in a packet not yet
    whole) must not keep the chatter beside it, nor a miss drop a line still arriving."""
    keep = re.compile(rb"wanted")
    a, b = socket.socketpair()
    with a, b:
        reader = FrameReader(b)
        line = b"\x07\x03log a wanted line"
        send_frame(a, b"\x07\x03log chatter")
        a.sendall(len(line).to_bytes(4, "big") + line[:-6])  # "wanted" is there, not whole
        assert reader.read_batch(keep) == ([], 1)
        a.sendall(line[-6:])
        send_frame(a, b"\x07\x03log chatter")
        assert reader.read_batch(keep) == ([line], 1)
        send_frame(a, b"\x07\x03log unwan")  # a match across two packets is none
        send_frame(a, b"\x07\x03logted")
        assert reader.read_batch(keep) == ([], 2)


def test_a_full_listen_backlog_is_waited_out_not_taken_as_charon_gone() -> None:
    """A busy charon accepts slowly: with a timeout set, connect() to a unix socket whose
    backlog is full fails at once with EAGAIN; open_socket tries again until its timeout."""
    import threading

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "charon.vici")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(0)
        pending: list[socket.socket] = []
        try:
            for _ in range(64):  # fill the backlog
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                try:
                    client.connect(path)
                except BlockingIOError:
                    client.close()
                    break
                pending.append(client)
            else:
                pytest.skip("this kernel never refused a connect to a full backlog")
            accepted: list[socket.socket] = []

            def accept_all() -> None:
                for _ in range(len(pending) + 1):
                    accepted.append(server.accept()[0])

            threading.Timer(0.05, accept_all).start()
            sock = open_socket(f"unix://{path}", timeout=2.0)
            sock.close()
            with pytest.raises(CharonUnreachable, match="Resource temporarily unavailable"):
                for _ in range(64):  # nobody accepts any more: the backlog fills, then bounded
                    pending.append(open_socket(f"unix://{path}", timeout=0.05))
        finally:
            for s in pending:
                s.close()
            server.close()
