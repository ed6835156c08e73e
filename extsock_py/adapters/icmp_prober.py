"""The tunnel monitor's ICMP echo prober: one echo socket per monitored tunnel.

An echo request goes from `local` (inside the local traffic selector, so the kernel's policy
sends it through the CHILD_SA) to `remote` (inside the remote selector); the echo reply is the
answer. Unlike the UDP prober's port-unreachable, Linux does not rate-limit echo replies
(`net.ipv4.icmp_ratemask` leaves them out), so the interval can go well below a second.

The socket, created in `netns` like the UDP prober's (see `monitor_prober`):
- an ICMP datagram ("ping") socket, `SOCK_DGRAM` + `IPPROTO_ICMP` (`IPPROTO_ICMPV6`), when
  the namespace's `net.ipv4.ping_group_range` includes the process's group (Debian's systemd
  allows every group in the host's namespace). The kernel then owns the identifier: it
  rewrites it to the socket's "port" and delivers only the replies carrying it;
- otherwise a raw socket, `SOCK_RAW` (needs CAP_NET_RAW: extsock next to charon runs as
  root). It sees every ICMP message of the namespace from `remote` (it is connected), IPv4
  ones with their IP header; the identifier is ours.

A reply counts once, only when everything matches: an echo reply (type 0, ICMPv6 129), code
0, the identifier (ours or the socket's port, either may come back), a sequence number among
the last `window` probes sent and not yet answered, and our payload (a random token per
socket). A duplicate, a reply to a probe older than the window (late), another program's
echo and every other ICMP message are ignored.

Every call is non-blocking. The packet code (`echo_request`, `parse_reply`, `EchoMatcher`)
is pure; the socket comes from an opener the tests replace with a fake.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from extsock_py.adapters.monitor_prober import open_bound

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
TOKEN_BYTES = 8
MAGIC = b"extsock-echo"
log = logging.getLogger("extsock.monitor")
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request. IPv4: with its checksum (a raw socket sends it as is). ICMPv6: the
    checksum covers a pseudo-header only the kernel knows; it fills it in (raw and ping)."""
    fields = (ECHO_REQUEST[version], 0)
    packet = _HEADER.pack(*fields, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    if version == 6:
        return packet
    return _HEADER.pack(*fields, checksum(packet), ident & 0xFFFF, seq & 0xFFFF) + payload


@dataclass(frozen=True)
class Echo:
    """What an echo reply carries."""

    ident: int
    seq: int
    payload: bytes


def parse_reply(version: int, data: bytes, with_ip_header: bool) -> Echo | None:
    """The echo reply in `data` (as a socket read it), or None for anything else.

    A raw IPv4 socket reads the IP header too; ping sockets and raw ICMPv6 sockets do not."""
    if with_ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < _HEADER.size:
        return None
    kind, code, _sum, ident, seq = _HEADER.unpack_from(data)
    if kind != ECHO_REPLY[version] or code != 0:
        return None
    return Echo(ident, seq, data[_HEADER.size :])


class EchoMatcher:
    """Sequence numbers out and replies in: which replies are answers (pure, no I/O)."""

    def __init__(self, ident: int, token: bytes, window: int) -> None:
        self.ident = ident & 0xFFFF
        self.payload = MAGIC + token
        self.window = max(1, window)
        self.kernel_ident: int | None = None  # a ping socket's port, which replaces ours
        self._seq = 0
        self._outstanding: OrderedDict[int, None] = OrderedDict()

    def next_seq(self) -> int:
        """The sequence number of the next probe, which is then awaited."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._outstanding.pop(self._seq, None)
        self._outstanding[self._seq] = None
        while len(self._outstanding) > self.window:
            self._outstanding.popitem(last=False)  # too old: a reply to it is late
        return self._seq

    def accept(self, echo: Echo) -> bool:
        """Whether `echo` answers one of our awaited probes (each at most once)."""
        if echo.ident not in (self.ident, self.kernel_ident):
            return False
        if echo.payload != self.payload or echo.seq not in self._outstanding:
            return False
        del self._outstanding[echo.seq]
        return True

    def forget(self) -> None:
        """A new socket: nothing sent on it is awaited."""
        self._outstanding.clear()


class EchoSocket(Protocol):
    """What the prober needs of a socket (a real one, or a test's fake)."""

    @property
    def type(self) -> int: ...

    def send(self, data: bytes, /) -> int: ...

    def recv(self, bufsize: int, /) -> bytes: ...

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]: ...

    def close(self) -> None: ...


Opener = Callable[[str, str, "str | None"], EchoSocket]


def _echo_socket(family: socket.AddressFamily) -> socket.socket:
    """A ping socket if this namespace allows our group one, else a raw socket."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto)
    except OSError as exc:  # EACCES: not in ping_group_range; EPROTONOSUPPORT: no ping sockets
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT):
            raise
    return socket.socket(family, socket.SOCK_RAW, proto)


def open_echo_socket(local: str, remote: str, netns: str | None = None) -> socket.socket:
    """A non-blocking echo socket bound to `local`, connected to `remote`, made in `netns`.
    Raises OSError: as `open_socket`, and EPERM when neither kind of socket is allowed."""
    return open_bound(_echo_socket, local, remote, 0, netns)


def check_echo(local: str, netns: str | None = None) -> None:
    """Raise OSError unless an echo socket can be made on `local` (the load-time check)."""
    open_bound(_echo_socket, local, None, 0, netns).close()


def describe_echo_error(exc: OSError, netns: str | None) -> str:
    where = f"network namespace {netns!r}" if netns else "this host"
    return (
        f"cannot open an ICMP echo socket in {where}: {exc.strerror or exc}; it needs"
        " net.ipv4.ping_group_range to include extsock's group (a ping socket) or"
        " CAP_NET_RAW (a raw socket)"
    )


class IcmpProber:
    """One tunnel's echo socket. `send` and `poll` never block; `poll` counts answers."""

    def __init__(
        self,
        local: str,
        remote: str,
        netns: str | None = None,
        window: int = 3,
        opener: Opener = open_echo_socket,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.local, self.remote, self.netns = local, remote, netns
        self.version = ipaddress.ip_address(local).version
        self._opener = opener
        self._random = random_bytes
        self._window = window
        self._sock: EchoSocket | None = None
        self._raw_v4 = False
        self.matcher = EchoMatcher(0, b"", window)

    def open(self) -> None:
        self.close()
        sock = self._opener(self.local, self.remote, self.netns)
        seed = self._random(2 + TOKEN_BYTES)
        self.matcher = EchoMatcher(int.from_bytes(seed[:2], "big"), seed[2:], self._window)
        if sock.type == socket.SOCK_DGRAM:
            self.matcher.kernel_ident = int(sock.getsockname()[1]) & 0xFFFF
        self._raw_v4 = sock.type == socket.SOCK_RAW and self.version == 4
        self._sock = sock
        log.debug(
            "echo socket %s -> %s: %s, identifier %d%s",
            self.local, self.remote, "ping" if sock.type == socket.SOCK_DGRAM else "raw",
            self.matcher.ident,
            "" if self.matcher.kernel_ident is None else f" (kernel: {self.matcher.kernel_ident})",
        )  # fmt: skip

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def send(self) -> int:
        """Send one echo request. Raises OSError when the kernel refuses it (no route: the
        tunnel's route is gone); the probe is lost all the same. Never finds answers."""
        sock = self._require()
        seq = self.matcher.next_seq()
        sock.send(echo_request(self.version, self.matcher.ident, seq, self.matcher.payload))
        return 0

    def poll(self) -> int:
        """Drain the socket: the number of echo replies that answer our probes."""
        sock = self._require()
        answers = 0
        for _ in range(64):  # bounded: a flood cannot hold the main loop
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            except OSError:
                break  # an ICMP error queued on the socket (host unreachable...): no answer
            echo = parse_reply(self.version, data, self._raw_v4)
            if echo is not None and self.matcher.accept(echo):
                answers += 1
        return answers

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self.matcher.forget()

    def _require(self) -> EchoSocket:
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "echo socket not open")
        return self._sock
