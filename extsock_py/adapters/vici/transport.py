"""VICI socket URIs (as swanctl's `-u`) and connecting to them."""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Literal

from extsock_py.domain.errors import CharonUnreachable

DEFAULT_URI = "unix:///var/run/charon.vici"
DEFAULT_TCP_PORT = 4502
_ACCEPTED = "unix:///path/to/charon.vici or tcp://host:port"


@dataclass(frozen=True)
class ViciAddress:
    """Where charon's VICI socket is: a unix socket path or a TCP host and port."""

    uri: str
    scheme: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0


def _bad_uri(uri: str, why: str) -> CharonUnreachable:
    return CharonUnreachable(f"invalid VICI URI '{uri}': {why}; expected {_ACCEPTED}")


def parse_uri(uri: str) -> ViciAddress:
    """Parse `unix:///path` or `tcp://host:port` (`tcp://[v6]:port`); raise CharonUnreachable."""
    if uri.startswith("unix://"):
        path = uri[len("unix://") :]
        if not path:
            raise _bad_uri(uri, "no socket path")
        return ViciAddress(uri=uri, scheme="unix", path=path)
    if uri.startswith("tcp://"):
        rest = uri[len("tcp://") :].rstrip("/")
        if rest.startswith("["):
            host, sep, tail = rest[1:].partition("]")
            if not sep or (tail and not tail.startswith(":")):
                raise _bad_uri(uri, "unterminated IPv6 address")
            port_text = tail[1:]
        else:
            host, _, port_text = rest.rpartition(":")
            if not host:
                host, port_text = port_text, ""
        if not host:
            raise _bad_uri(uri, "no host")
        if not port_text:
            return ViciAddress(uri=uri, scheme="tcp", host=host, port=DEFAULT_TCP_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _bad_uri(uri, f"port '{port_text}' is not a number in 1-65535")
        return ViciAddress(uri=uri, scheme="tcp", host=host, port=int(port_text))
    raise _bad_uri(uri, "unknown scheme")


def _hint(address: ViciAddress, exc: OSError) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "charon did not accept the connection in time; is it overloaded or hung?"
    if isinstance(exc, FileNotFoundError):
        return (
            f"no socket at {address.path}; start charon, and check that its "
            "charon.plugins.vici.socket setting names this URI"
        )
    if isinstance(exc, PermissionError):
        return "permission denied; run as root or give this user access to the socket"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there; start charon (with the vici plugin loaded)"
    return "check that charon runs with the vici plugin and listens on this URI"


_BACKLOG_PAUSE = 0.01


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """A unix socket connected to `path`. With a timeout set, a full listen backlog (a busy
    charon accepting slowly, several sessions opened at once) fails at once with EAGAIN
    instead of waiting: tried again until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() + _BACKLOG_PAUSE > deadline:
                raise
            time.sleep(_BACKLOG_PAUSE)
        except BaseException:
            sock.close()
            raise


def open_socket(uri: str, timeout: float = 2.0) -> socket.socket:
    """Open a connected, blocking socket to `uri` (connect bounded by `timeout` seconds)."""
    address = parse_uri(uri)
    sock: socket.socket | None = None
    try:
        if address.scheme == "unix":
            sock = _connect_unix(address.path, timeout)
        else:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
        sock.settimeout(None)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise CharonUnreachable(
            f"cannot connect to charon at {uri}: {exc.strerror or exc}; {_hint(address, exc)}"
        ) from exc


_LENGTH = struct.Struct("!I")
_LOG_EVENT = b"\x07\x03log"
"""An EVENT packet (type 7) named `log` (name length 3)."""
MAX_FRAME = 16 * 1024 * 1024
"""Larger than anything charon sends (its own limit is 512 KiB): a bigger length is garbage."""


def send_frame(sock: socket.socket, packet: bytes) -> None:
    """Send one VICI packet: a 4-byte big-endian length, then the packet."""
    sock.sendall(len(packet).to_bytes(4, "big") + packet)


class FrameReader:
    """VICI packets from a stream socket, read in large chunks.

    One `recv` takes whatever charon has written so far, however many packets that is; the
    `vici` package's transport makes two `recv` calls (and four timeout changes) per packet,
    which at a thousand log events a second is most of a listener's cost.
    """

    def __init__(self, sock: socket.socket, chunk: int = 65536) -> None:
        self._sock = sock
        self._chunk = chunk
        self.behind = False
        """The last `recv` filled the whole chunk: more is probably waiting in the socket."""
        self._buf = bytearray()

    def read_batch(self, keep_log: re.Pattern[bytes] | None = None) -> tuple[list[bytes], int]:
        """Every whole packet buffered, after one `recv` if there is none yet, and how many
        `log` events were dropped: with `keep_log`, a log event whose payload it does not
        match is skipped where it lies, never copied. OSError when the socket closes,
        ValueError on a garbage length."""
        buf = self._buf
        while True:
            packets: list[bytes] = []
            dropped, pos, size_all = 0, 0, len(buf)
            # One search of the whole buffer first: where it finds nothing (nearly every
            # read under chatter), no log event in it can match, and none is searched alone.
            scan = keep_log is not None and keep_log.search(buf) is not None
            while size_all - pos >= 4:
                (size,) = _LENGTH.unpack_from(buf, pos)
                if size > MAX_FRAME:
                    raise ValueError(f"VICI packet of {size} bytes announced: not charon")
                end = pos + 4 + size
                if end > size_all:
                    break
                if (
                    keep_log is not None
                    and buf.startswith(_LOG_EVENT, pos + 4)
                    and (not scan or keep_log.search(buf, pos + 4 + len(_LOG_EVENT), end) is None)
                ):
                    dropped += 1
                else:
                    packets.append(bytes(buf[pos + 4 : end]))
                pos = end
            if pos:
                del buf[:pos]
            if packets or dropped:
                return packets, dropped
            self._fill()

    def _fill(self) -> None:
        chunk = self._sock.recv(self._chunk)
        self.behind = len(chunk) == self._chunk
        if not chunk:
            raise ConnectionResetError("charon closed the VICI socket")
        self._buf += chunk
