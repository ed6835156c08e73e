"""The ICMP echo prober with a fake socket and a fake clock: packets, matching, back-off.

No real socket, no sleep: the fake socket records what is sent and hands back what a test
queues, as a raw socket (IPv4 replies with their IP header) or a ping socket (the kernel's
identifier, the socket's port, in place of ours) would.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters import config_reader
from extsock_py.adapters.icmp_prober import (
    MAGIC,
    Echo,
    EchoMatcher,
    IcmpProber,
    checksum,
    echo_request,
    parse_reply,
)
from extsock_py.domain import events as ev
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.failover import Phase
from extsock_py.domain.policy import FailoverPolicy, MonitorPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.interfaces.ports import ProbePort
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.tunnel_monitor import TunnelMonitor
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher
from tests.unit.test_policy_conf import error, policies

LOCAL, REMOTE = "10.1.0.1", "10.2.0.1"
SEED = bytes(range(1, 11))  # ident 0x0102, token 03..0a
IDENT = 0x0102
PAYLOAD = MAGIC + SEED[2:]
KERNEL_PORT = 4242


def ip_header(src: str = REMOTE, dst: str = LOCAL) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 1, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip


def reply(ident: int, seq: int, payload: bytes = PAYLOAD, kind: int = 0, code: int = 0) -> bytes:
    body = struct.pack("!BBHHH", kind, code, 0, ident, seq) + payload
    return struct.pack("!BBHHH", kind, code, checksum(body), ident, seq) + payload


class FakeSocket:
    """A non-blocking socket: `sent` holds what went out, `inbox` what recv returns."""

    def __init__(self, kind: int = socket.SOCK_RAW, port: int = 0) -> None:
        self.type = kind
        self.port = port
        self.sent: list[bytes] = []
        self.inbox: list[bytes | OSError] = []
        self.closed = False
        self.refuse_send: OSError | None = None

    def send(self, data: bytes, /) -> int:
        if self.refuse_send is not None:
            raise self.refuse_send
        self.sent.append(data)
        return len(data)

    def recv(self, bufsize: int, /) -> bytes:
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "nothing")
        item = self.inbox.pop(0)
        if isinstance(item, OSError):
            raise item
        return item[:bufsize]

    def getsockname(self) -> tuple[str, int]:
        return (LOCAL, self.port)

    def close(self) -> None:
        self.closed = True

    def answer_all(self) -> None:
        """The remote echoes every request sent so far (as the kernel delivers it: a ping
        socket's replies carry the socket's port as identifier)."""
        for packet in self.sent:
            _t, _c, _s, sent_ident, seq = struct.unpack_from("!BBHHH", packet)
            ident = self.port if self.type == socket.SOCK_DGRAM else sent_ident
            back = reply(ident, seq, packet[8:])
            self.inbox.append(ip_header() + back if self.type == socket.SOCK_RAW else back)
        self.sent.clear()


def prober(sock: FakeSocket, window: int = 3, local: str = LOCAL) -> IcmpProber:
    remote = REMOTE if ":" not in local else "fd00:2::1"
    p = IcmpProber(local, remote, None, window, lambda *_: sock, lambda n: SEED[:n])
    p.open()
    return p


# --- packets ------------------------------------------------------------------------------


def test_an_ipv4_request_carries_type_ident_seq_payload_and_a_valid_checksum() -> None:
    packet = echo_request(4, 0x1234, 7, b"abc")
    assert packet[0] == 8 and packet[1] == 0
    assert struct.unpack_from("!HH", packet, 4) == (0x1234, 7) and packet[8:] == b"abc"
    assert checksum(packet) == 0  # a packet with its checksum in sums to zero


def test_an_icmpv6_request_leaves_the_checksum_to_the_kernel() -> None:
    packet = echo_request(6, 1, 2, b"x")
    assert packet[0] == 128 and struct.unpack_from("!H", packet, 2) == (0,)


def test_a_reply_is_parsed_with_or_without_its_ip_header() -> None:
    body = reply(5, 6)
    assert parse_reply(4, body, with_ip_header=False) == Echo(5, 6, PAYLOAD)
    assert parse_reply(4, ip_header() + body, with_ip_header=True) == Echo(5, 6, PAYLOAD)
    v6 = struct.pack("!BBHHH", 129, 0, 0, 5, 6) + PAYLOAD
    assert parse_reply(6, v6, with_ip_header=False) == Echo(5, 6, PAYLOAD)


@pytest.mark.parametrize(
    "data",
    [
        reply(5, 6, kind=8),  # an echo request (another host pinging us), not a reply
        reply(5, 6, kind=3, code=3),  # port unreachable
        reply(5, 6, code=1),
        b"\x00\x00\x00",  # truncated
    ],
)
def test_anything_but_an_echo_reply_is_not_parsed(data: bytes) -> None:
    assert parse_reply(4, data, with_ip_header=False) is None


# --- matching ------------------------------------------------------------------------------


def test_the_matcher_accepts_each_awaited_sequence_once() -> None:
    m = EchoMatcher(IDENT, SEED[2:], window=3)
    seq = m.next_seq()
    assert m.accept(Echo(IDENT, seq, PAYLOAD))
    assert not m.accept(Echo(IDENT, seq, PAYLOAD))  # duplicate


def test_the_matcher_refuses_wrong_ident_wrong_seq_and_foreign_payload() -> None:
    m = EchoMatcher(IDENT, SEED[2:], window=3)
    seq = m.next_seq()
    assert not m.accept(Echo(IDENT + 1, seq, PAYLOAD))  # another program's ping
    assert not m.accept(Echo(IDENT, seq + 1, PAYLOAD))  # never sent
    assert not m.accept(Echo(IDENT, seq, b"ping payload"))  # same id and seq, not ours
    assert m.accept(Echo(IDENT, seq, PAYLOAD))


def test_a_reply_older_than_the_window_is_late_and_ignored() -> None:
    m = EchoMatcher(IDENT, SEED[2:], window=3)
    first = m.next_seq()
    second = m.next_seq()
    for _ in range(3):
        m.next_seq()
    assert not m.accept(Echo(IDENT, first, PAYLOAD))  # 5 probes ago: late
    assert not m.accept(Echo(IDENT, second, PAYLOAD))
    within = m.next_seq() - 2
    assert m.accept(Echo(IDENT, within, PAYLOAD))  # a slow answer still inside the window


def test_the_kernel_identifier_of_a_ping_socket_is_accepted_as_well() -> None:
    m = EchoMatcher(IDENT, SEED[2:], window=3)
    m.kernel_ident = KERNEL_PORT
    seq = m.next_seq()
    assert m.accept(Echo(KERNEL_PORT, seq, PAYLOAD))
    assert not m.accept(Echo(KERNEL_PORT + 1, m.next_seq(), PAYLOAD))


def test_sequence_numbers_wrap_at_16_bits() -> None:
    m = EchoMatcher(IDENT, SEED[2:], window=2)
    for _ in range(0xFFFF):
        m.next_seq()
    assert m.next_seq() == 0
    assert m.accept(Echo(IDENT, 0, PAYLOAD)) and m.accept(Echo(IDENT, 0xFFFF, PAYLOAD))


# --- the prober over a fake socket ---------------------------------------------------------


def test_raw_socket_round_trip_counts_one_answer_per_probe() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock)
    assert p.send() == 0
    sent = sock.sent[0]
    assert struct.unpack_from("!HH", sent, 4) == (IDENT, 1) and sent[8:] == PAYLOAD
    sock.answer_all()
    assert p.poll() == 1
    assert p.poll() == 0


def test_ping_socket_replies_carry_the_kernel_identifier() -> None:
    sock = FakeSocket(socket.SOCK_DGRAM, port=KERNEL_PORT)
    p = prober(sock)
    p.send()
    p.send()
    sock.answer_all()  # as the kernel delivers them: ident = the socket's port, no IP header
    assert p.poll() == 2


def test_a_raw_socket_ignores_other_traffic_and_duplicates() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock)
    p.send()
    sock.inbox += [
        ip_header() + reply(IDENT ^ 0xFFFF, 1),  # another pinger's reply
        ip_header() + reply(IDENT, 9),  # a sequence never sent
        ip_header() + reply(IDENT, 1, kind=8),  # an echo request to us
        ip_header() + reply(IDENT, 1, b"x" * 20),  # a foreign payload
    ]
    assert p.poll() == 0
    sock.inbox += [ip_header() + reply(IDENT, 1), ip_header() + reply(IDENT, 1)]
    assert p.poll() == 1  # the second is a duplicate


def test_a_socket_error_stops_the_drain_and_counts_nothing() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock)
    p.send()
    sock.inbox += [OSError(errno.EHOSTUNREACH, "unreachable"), ip_header() + reply(IDENT, 1)]
    assert p.poll() == 0
    assert p.poll() == 1  # the next drain finds the answer behind the error


def test_reopening_forgets_what_the_old_socket_awaited() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock)
    p.send()
    p.open()  # a new tunnel
    sock.inbox.append(ip_header() + reply(IDENT, 1))
    assert p.poll() == 0


def test_a_refused_send_raises_and_a_closed_prober_raises() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock)
    sock.refuse_send = OSError(errno.ENETUNREACH, "no route")
    with pytest.raises(OSError):
        p.send()
    p.close()
    assert sock.closed
    with pytest.raises(OSError):
        p.poll()
    with pytest.raises(OSError):
        p.send()


def test_icmpv6_replies_have_no_ip_header() -> None:
    sock = FakeSocket(socket.SOCK_RAW)
    p = prober(sock, local="fd00:1::1")
    p.send()
    assert sock.sent[0][0] == 128
    sock.inbox.append(struct.pack("!BBHHH", 129, 0, 0, IDENT, 1) + PAYLOAD)
    assert p.poll() == 1


# --- the monitor with the ICMP prober: interval, back-off, detection -----------------------

MONITOR = MonitorPolicy(
    enabled=True, local=LOCAL, remote=REMOTE, interval=0.1, misses=3, probe="icmp"
)
GW1, GW2 = "10.0.0.1", "10.0.0.2"


class World:
    def __init__(self) -> None:
        self.charon = FakeCharonPort()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.manager = FailoverManager(self.charon, self.clock, self.publisher)
        body: dict[str, Any] = {"remote_addrs": [GW1, GW2], "children": {"net": {}}}
        policy = FailoverPolicy(monitor=MONITOR)
        self.manager.manage(ConnectionProfile("home", (GW1, GW2), body, policy))
        self.sock = FakeSocket(socket.SOCK_RAW)
        self.answering = True
        self.requests = 0

        def make(policy: MonitorPolicy) -> ProbePort:
            return IcmpProber(
                LOCAL, REMOTE, None, policy.misses, lambda *_: self.sock, lambda n: SEED[:n]
            )

        self.monitor = TunnelMonitor(self.manager, self.charon, self.clock, self.publisher, make)
        self.manager.handle("home", ev.Start())
        sa = self.charon.add_sa(f"home@{GW1}")
        self.ike_id = sa.unique_id
        self.manager.handle("home", ev.TunnelUp(GW1, sa.unique_id))

    def run_for(self, seconds: float, step: float = 0.01, traffic: int = 0) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            if traffic:
                self.add_packets(traffic)
            self.monitor.run_once()  # the main loop's side
            self.monitor.probe_pass()  # the probe timer's side
            self.requests += len(self.sock.sent)
            if self.answering:
                self.sock.answer_all()  # the round trip is shorter than a step
            self.sock.sent.clear()

    def add_packets(self, n: int) -> None:
        sa = self.charon.sas[self.ike_id]
        child = sa.children[0]
        child = replace(child, packets_in=child.packets_in + n)
        self.charon.sas[self.ike_id] = replace(sa, children=(child,))

    def phase(self) -> Phase:
        managed = self.manager.get("home")
        assert managed is not None
        return managed.state.phase


def test_idle_an_echo_every_interval_all_answered_no_failover() -> None:
    w = World()
    w.run_for(10.0)
    # One every 100 ms; the 10 ms ticks of the fake clock (float sums) may land a tick late.
    assert 88 <= w.requests <= 101
    status = w.monitor.status()["home"]
    replies = status["replies_total"]
    assert status["probe"] == "icmp" and isinstance(replies, int) and replies >= w.requests - 1
    assert w.phase() is Phase.UP
    assert all(kind != "monitor-dead" for kind, _ in w.publisher.events)


def test_while_traffic_flows_no_echo_goes_out() -> None:
    w = World()
    w.run_for(1.0)
    before = w.requests
    w.run_for(10.0, traffic=5)  # inbound packets grow between every look
    assert w.requests - before <= 1  # the back-off: traffic is life
    assert w.phase() is Phase.UP


def test_echo_resumes_when_traffic_stops_and_silence_is_detected_in_misses_x_interval() -> None:
    w = World()
    w.run_for(1.0, traffic=5)
    w.run_for(1.0)  # idle again: echoes resume, answered
    resumed = w.requests
    assert resumed >= 8
    w.answering = False
    silent_at = w.clock.now
    for _ in range(100):
        w.run_for(0.01)
        if w.phase() is not Phase.UP:
            break
    took = w.clock.now - silent_at
    assert w.phase() is not Phase.UP
    assert 0.2 <= took <= 0.31, took  # between (misses - 1) and misses intervals
    assert any(kind == "monitor-dead" for kind, _ in w.publisher.events)


def test_foreign_echo_replies_do_not_keep_a_dead_tunnel_alive() -> None:
    w = World()
    w.run_for(0.5)
    w.answering = False
    for _ in range(100):
        w.sock.inbox.append(ip_header() + reply(IDENT ^ 1, 1))  # someone else's pings
        w.run_for(0.01)
        if w.phase() is not Phase.UP:
            break
    assert w.phase() is not Phase.UP


# --- configuration -------------------------------------------------------------------------


def test_probe_is_udp_by_default_and_icmp_when_asked() -> None:
    assert policies("extsock {}\n")["home"].monitor.probe == "udp"
    got = policies("extsock {\n  monitor {\n    probe = ICMP\n  }\n}\n")["home"].monitor
    assert got.probe == "icmp"


def test_a_bad_probe_names_file_line_key_and_the_accepted_values() -> None:
    err = error("extsock {\n  monitor {\n    probe = tcp\n  }\n}\n")
    assert err.key == "extsock.monitor.probe" and err.line == 3
    assert "invalid probe 'tcp': expected udp or icmp" in err.message


CONF = """\
connections {
    home {
        remote_addrs = 192.0.2.1, 192.0.2.2
        local { auth = psk }
        remote { auth = psk }
        children { net { local_ts = 10.1.0.0/24 } }
    }
}
extsock {
    monitor {
        enabled = yes
        local = %s
        remote = 10.2.0.1
        probe = icmp
    }
}
"""


def test_icmp_with_a_local_address_absent_from_the_host_names_local(tmp_path: Path) -> None:
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % "192.0.2.123")
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    err = caught.value
    assert (err.file, err.line, err.key) == (str(conf), 12, "extsock.monitor.local")


def test_icmp_sockets_refused_at_load_names_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(local: str, netns: str | None = None) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(config_reader, "check_echo", refuse)  # a host without CAP_NET_RAW
    conf = tmp_path / "swanctl.conf"
    conf.write_text(CONF % "127.0.0.1")
    with pytest.raises(ConfigError) as caught:
        read_desired_config(conf)
    err = caught.value
    assert (err.file, err.line, err.key) == (str(conf), 14, "extsock.monitor.probe")
    assert "ping_group_range" in str(err) and "CAP_NET_RAW" in str(err)


read_desired_config = config_reader.read_desired_config


def test_a_stall_of_the_process_is_no_false_failover() -> None:
    w = World()
    w.run_for(1.0)
    w.clock.advance(0.8)  # the daemon was not scheduled for 800 ms: no probe went out
    w.run_for(1.0)
    assert w.phase() is Phase.UP
    assert w.monitor.status()["home"]["stalls"] == 1


def test_a_slow_list_sas_is_no_false_failover() -> None:
    # charon busy: each list-sas (a look at the counters, before every probe) takes 250 ms,
    # longer than 2 intervals; the answers come back meanwhile. (A scenario check: it also
    # passed before the monitor re-read the clock after list-sas.)
    w = World()
    w.run_for(0.5)
    real = w.charon.list_sas

    def slow() -> Any:
        w.clock.advance(0.25)
        w.sock.answer_all()
        return real()

    w.charon.list_sas = slow  # type: ignore[method-assign]
    w.run_for(5.0)
    assert w.phase() is Phase.UP
    assert not any(kind == "monitor-dead" for kind, _ in w.publisher.events)
