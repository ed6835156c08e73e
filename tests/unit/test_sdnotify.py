"""sd_notify client against a real unix datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from extsock_py.adapters import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    with sock:
        yield sock, {"NOTIFY_SOCKET": str(path)}


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_one_datagram(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert sdnotify.notify("READY=1\nSTATUS=hi", env=env)
    assert receive(sock) == "READY=1\nSTATUS=hi"


def test_helpers(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert sdnotify.ready(env=env)
    assert receive(sock) == "READY=1"
    assert sdnotify.ready("2 tunnels up", env=env)
    assert receive(sock) == "READY=1\nSTATUS=2 tunnels up"
    assert sdnotify.stopping(env=env)
    assert receive(sock) == "STOPPING=1"
    assert sdnotify.watchdog(env=env)
    assert receive(sock) == "WATCHDOG=1"
    assert sdnotify.status("line one\nline two", env=env)
    assert receive(sock) == "STATUS=line one line two"


def test_reloading_carries_monotonic_usec(
    listener: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, env = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(env=env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receive(sock).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket() -> None:
    name = f"extsock-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert receive(sock) == "WATCHDOG=1"


def test_uses_the_process_environment(
    listener: tuple[socket.socket, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, env = listener
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert sdnotify.ready()
    assert receive(sock) == "READY=1"


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": ""}) is False


def test_unsupported_or_dead_socket_returns_false(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval(env={}) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "10000000"}) == 10.0
    both = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": pid}
    assert sdnotify.watchdog_interval(env=both) == 2.5
    other = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert sdnotify.watchdog_interval(env=other) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "soon"}) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}) is None
