"""The tunnel monitor's sockets: one connected UDP socket per monitored tunnel.

The socket is bound to `local` (an address inside the local traffic selector, so the
kernel's policy sends the datagram through the CHILD_SA) and connected to `remote:port`
(a closed port of an address inside the remote selector). Because it is connected, the
ICMP port-unreachable the remote sends back surfaces as ECONNREFUSED on the next recv or
send: the round trip is proven without a raw socket or any privilege. Any datagram that
comes back (a port that does answer) counts as well. Other ICMP errors (host or net
unreachable from a router on the way) are not raised on a connected UDP socket without
IP_RECVERR; they are no answer from `remote` anyway.

Every call is non-blocking: the daemon's main loop sends and drains between its other
work, and no thread of ours ever blocks on the network.

Network namespaces (`monitor.netns`): a socket belongs to the namespace it was created
in, for its whole life, whoever uses it later. So the socket is created on a short-lived
dedicated thread that first enters `/run/netns/<name>` with setns(2) (`os.setns` from
Python 3.12, libc's `setns` through ctypes on 3.11), creates, binds and connects the
socket, hands the file object back and exits. setns(CLONE_NEWNET) changes only the
calling thread's namespace, and that thread is never reused, so the rest of the process
stays where it was. Chosen over a helper process (`ip netns exec ... prober`): nothing
to supervise or restart, no protocol between the two, no `ip` binary needed, and an
error (no such namespace, address not there, no CAP_SYS_ADMIN) is an exception at the
call, with its errno. It needs CAP_SYS_ADMIN, which extsock next to charon has as root.

Beware the remote's ICMP rate limit: Linux answers port-unreachable at most about once a
second per source by default (net.ipv4.icmp_ratelimit = 1000 ms, a burst of 6 first).
With a 500 ms interval about every other probe is answered, which the monitor's rule
(silence for misses * interval) tolerates as long as misses * interval stays well above
one second; or pick a port where something answers, since any datagram counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
PAYLOAD = b"extsock-monitor"


def _enter_netns(name: str) -> None:
    """Move the CALLING THREAD into network namespace `name` (see the module docstring)."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if sys.version_info >= (3, 12):
            os.setns(fd, os.CLONE_NEWNET)
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"setns({NETNS_DIR / name}): {os.strerror(code)}")
    finally:
        os.close(fd)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def open_socket(
    local: str, remote: str | None = None, port: int = 0, netns: str | None = None
) -> socket.socket:
    """A non-blocking UDP socket bound to `local` (and connected to `remote:port` if given),
    created inside `netns` when given. Raises OSError (ENOENT: no such namespace,
    EADDRNOTAVAIL: `local` is not an address there, ENETUNREACH: no route to `remote`)."""

    def udp(family: socket.AddressFamily) -> socket.socket:
        return socket.socket(family, socket.SOCK_DGRAM)

    return open_bound(udp, local, remote, port, netns)


def open_bound(
    factory: Callable[[socket.AddressFamily], socket.socket],
    local: str,
    remote: str | None = None,
    port: int = 0,
    netns: str | None = None,
) -> socket.socket:
    """A socket from `factory`, non-blocking, bound to `local` (and connected to
    `remote:port` if given), created inside `netns` when given: `open_socket` for any kind."""

    def make() -> socket.socket:
        sock = factory(_family(local))
        try:
            sock.setblocking(False)
            sock.bind((local, 0))
            if remote is not None:
                sock.connect((remote, port))
        except BaseException:
            sock.close()
            raise
        return sock

    if netns is None:
        return make()
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def in_namespace() -> None:
        try:
            _enter_netns(netns)
            result.append(make())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=in_namespace, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def check_local(local: str, netns: str | None = None) -> None:
    """Raise OSError unless a socket can be bound to `local` (in `netns`): the load-time check."""
    open_socket(local, netns=netns).close()


def describe_error(exc: OSError, local: str, netns: str | None) -> str:
    where = f"network namespace {netns!r}" if netns else "this host"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {local} is not an address of {where}"
    if netns and exc.errno == errno.ENOENT:
        return f"no network namespace {netns!r} ({NETNS_DIR / netns} does not exist)"
    if netns and exc.errno == errno.EPERM:
        return (
            f"cannot enter network namespace {netns!r}: setns is refused; it needs"
            " CAP_SYS_ADMIN, and under systemd CapabilityBoundingSet= must keep CAP_SYS_ADMIN"
            " and RestrictNamespaces= must allow net (systemd/extsock.service forbids both)"
        )
    if exc.errno in (errno.EPERM, errno.EACCES, errno.EAFNOSUPPORT):
        return (
            f"cannot bind {local} in {where}: {exc.strerror or exc}"
            " (under systemd: check RestrictAddressFamilies= and SystemCallFilter=)"
        )
    return f"cannot bind {local} in {where}: {exc.strerror or exc}"


class Prober:
    """One tunnel's probe socket. `send` and `poll` never block; both report replies seen."""

    def __init__(self, local: str, remote: str, port: int, netns: str | None = None) -> None:
        self.local, self.remote, self.port, self.netns = local, remote, port, netns
        self._sock: socket.socket | None = None

    def open(self) -> None:
        self.close()
        self._sock = open_socket(self.local, self.remote, self.port, self.netns)

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def send(self) -> int:
        """Send one probe; returns the replies found on the way (a pending ECONNREFUSED).

        A send the kernel refuses (no route: the tunnel's route is gone) raises OSError;
        the probe is lost all the same, which the monitor counts as silence."""
        sock = self._require()
        replies = 0
        for _ in range(2):
            try:
                sock.send(PAYLOAD)
                return replies
            except ConnectionRefusedError:
                replies += 1  # the answer to an earlier probe; the error is now cleared
        return replies

    def poll(self) -> int:
        """Drain the socket: the number of answers (ECONNREFUSED or datagrams) waiting."""
        sock = self._require()
        replies = 0
        for _ in range(64):  # bounded: a flood cannot hold the main loop
            try:
                sock.recv(2048)
            except ConnectionRefusedError:
                pass
            except BlockingIOError:
                break
            except OSError:
                break  # another error (no IP_RECVERR: rare); it is no answer from remote
            replies += 1
        return replies

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "probe socket not open")
        return self._sock
