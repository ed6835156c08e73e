"""The monitor's prober with real sockets on loopback: ECONNREFUSED is an answer, silence is not."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator

import pytest

from extsock_py.adapters.monitor_prober import Prober, check_local, describe_error, open_socket


def closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A bound UDP socket that never answers: probes to it are lost."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def wait_answers(prober: Prober, timeout: float = 1.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = prober.poll()
        if answers:
            return answers
        time.sleep(0.005)
    return 0


def test_a_closed_port_answers_with_econnrefused() -> None:
    prober = Prober("127.0.0.1", "127.0.0.1", closed_port())
    prober.open()
    try:
        assert prober.send() == 0
        assert wait_answers(prober) == 1
        assert prober.poll() == 0  # drained
        for _ in range(3):  # and again, probe after probe
            prober.send()
            assert wait_answers(prober) == 1
    finally:
        prober.close()


def test_a_pending_refusal_found_by_send_counts_and_the_probe_still_goes() -> None:
    prober = Prober("127.0.0.1", "127.0.0.1", closed_port())
    prober.open()
    try:
        prober.send()
        time.sleep(0.05)  # the ICMP error is pending on the socket
        assert prober.send() == 1
        assert wait_answers(prober) == 1  # the second probe was answered too
    finally:
        prober.close()


def test_a_silent_peer_gives_no_answer(silent_peer: int) -> None:
    prober = Prober("127.0.0.1", "127.0.0.1", silent_peer)
    prober.open()
    try:
        for _ in range(3):
            prober.send()
        assert wait_answers(prober, timeout=0.3) == 0
    finally:
        prober.close()


def test_any_datagram_back_is_an_answer() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(1.0)
    prober = Prober("127.0.0.1", "127.0.0.1", server.getsockname()[1])
    prober.open()
    try:
        prober.send()
        data, peer = server.recvfrom(100)
        server.sendto(b"pong " + data, peer)
        assert wait_answers(prober) == 1
    finally:
        prober.close()
        server.close()


def test_calls_on_a_closed_prober_raise_oserror() -> None:
    prober = Prober("127.0.0.1", "127.0.0.1", 9)
    with pytest.raises(OSError):
        prober.send()
    with pytest.raises(OSError):
        prober.poll()
    prober.close()  # twice is fine


def test_an_address_not_on_the_host_is_refused_clearly() -> None:
    check_local("127.0.0.1")
    with pytest.raises(OSError) as info:
        check_local("192.0.2.123")  # TEST-NET-1: on no interface here
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert describe_error(info.value, "192.0.2.123", None) == (
        "address 192.0.2.123 is not an address of this host"
    )


def test_a_missing_namespace_is_refused_clearly() -> None:
    with pytest.raises(OSError) as info:
        open_socket("127.0.0.1", netns="ex8-no-such-namespace")
    assert info.value.errno == errno.ENOENT
    assert "no network namespace 'ex8-no-such-namespace'" in describe_error(
        info.value, "127.0.0.1", "ex8-no-such-namespace"
    )


def test_what_a_sandbox_forbids_names_the_setting() -> None:
    """Under systemd/extsock.service, setns(2) is refused (EPERM): the error says which
    unit settings forbid it, not only the errno."""
    refused = OSError(errno.EPERM, "Operation not permitted")
    message = describe_error(refused, "10.100.0.1", "ns1")
    assert "cannot enter network namespace 'ns1'" in message
    assert "CAP_SYS_ADMIN" in message and "RestrictNamespaces=" in message
    family = OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    assert "RestrictAddressFamilies=" in describe_error(family, "10.100.0.1", None)
