"""A small client of the control socket, for the CLI and for applications."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from extsock_py.adapters.control.wire import DEFAULT_SOCKET, VERSION, encode_line
from extsock_py.domain.errors import ExtsockError


class DaemonUnreachable(ExtsockError):
    """The control socket is missing, refuses connections, or is not ours to open."""


class ControlError(ExtsockError):
    """The daemon answered a request with an error (the text is the daemon's)."""


class NotPermitted(ControlError):
    """The daemon refused the request: this uid lacks the role the command needs."""


class DaemonRefused(ExtsockError):
    """The daemon is up but closed this connection: too many clients (of this uid), or idle
    for too long. The text is the daemon's own line."""


def _refusal(message: dict[str, Any]) -> DaemonRefused | None:
    """The daemon's line that it closes this connection (it has no request id)."""
    error = message.get("error")
    if (
        message.get("ok") is False
        and message.get("id") is None
        and isinstance(error, str)
        and error.startswith("connect failed:")
    ):
        return DaemonRefused(error)
    return None


class ControlClient:
    """One connection to the daemon: `request(cmd, **fields)` and `events()`."""

    def __init__(self, path: str | Path = DEFAULT_SOCKET, timeout: float | None = 15.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._events: deque[dict[str, Any]] = deque()

    def connect(self) -> ControlClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            self._connect(sock)
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"permission denied on {self.path}: run as root or as a member of the "
                "socket's group"
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(
                f"cannot reach the daemon at {self.path}: is 'extsock run' running? "
                f"(set --control-socket) [{exc.strerror or exc}]"
            ) from None
        self._sock = sock
        return self

    def _connect(self, sock: socket.socket) -> None:
        """Connect; a full listen backlog (EAGAIN on unix sockets) is retried briefly."""
        deadline = time.monotonic() + (self.timeout if self.timeout is not None else 15.0)
        delay = 0.005
        while True:
            try:
                sock.connect(self.path)
                return
            except BlockingIOError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- lines --------------------------------------------------------------------------

    def _read_message(self) -> dict[str, Any]:
        sock = self._sock
        if sock is None:
            raise DaemonUnreachable("not connected")
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if not line.strip():
                    continue
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ControlError(f"the daemon sent a line that is not an object: {line!r}")
                refused = _refusal(message)
                if refused is not None:
                    raise refused
                return message
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise DaemonUnreachable(
                    f"the daemon at {self.path} did not answer within {self.timeout:g}s"
                ) from None
            except ConnectionResetError:
                data = b""  # a close with our request still unread arrives as a reset
            except OSError as exc:
                raise DaemonUnreachable(f"lost the daemon at {self.path}: {exc}") from None
            if not data:
                raise DaemonUnreachable(f"the daemon at {self.path} closed the connection")
            self._buffer += data

    # --- requests and events ------------------------------------------------------------

    def request(self, cmd: str, **fields: Any) -> Any:
        """Send one request and return its result; ControlError carries the daemon's error."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        request_id = next(self._ids)
        message = {"v": VERSION, "id": request_id, "cmd": cmd}
        message.update({k: v for k, v in fields.items() if v is not None})
        try:
            self._sock.sendall(encode_line(message))
        except OSError as exc:
            self._raise_pending_refusal()
            raise DaemonUnreachable(f"lost the daemon at {self.path}: {exc}") from None
        while True:
            reply = self._read_message()
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") not in (request_id, None):
                continue  # a late answer to an earlier request that timed out
            if reply.get("ok"):
                return reply.get("result")
            error = str(reply.get("error", "the daemon refused the request"))
            if ": NotPermitted: " in error:
                raise NotPermitted(error)
            raise ControlError(error)

    def _raise_pending_refusal(self) -> None:
        """A send failed: if the daemon said why it closed us before it did, raise that."""
        sock = self._sock
        if sock is None:
            return
        try:
            while b"\n" not in self._buffer:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
                if not data:
                    break
                self._buffer += data
        except OSError:
            pass
        for line in bytes(self._buffer).split(b"\n"):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            refused = _refusal(message) if isinstance(message, dict) else None
            if refused is not None:
                raise refused

    def subscribe(self, events: list[str] | None = None) -> list[str]:
        result = self.request("subscribe", events=events)
        return list(result.get("events", [])) if isinstance(result, dict) else []

    def next_event(self) -> dict[str, Any]:
        """The next event after subscribe (blocks up to the timeout)."""
        if self._events:
            return self._events.popleft()
        while True:
            message = self._read_message()
            if "event" in message:
                return message

    def events(self) -> Iterator[dict[str, Any]]:
        """Events until the daemon closes the connection (DaemonUnreachable then)."""
        while True:
            yield self.next_event()
